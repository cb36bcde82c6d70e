//! The `LanguageModel` trait: the one interface every stage sees, local or remote.

use serde::{Deserialize, Serialize};

use crate::Error;

/// How to pick the next token.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sampling {
    /// Softmax temperature; `0.0` means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (`None`: all).
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the smallest set of tokens whose mass reaches `p` (`None`: 1.0).
    pub top_p: Option<f32>,
}

impl Default for Sampling {
    /// Plain sampling at temperature 1, the CAI paper's setting for responses, critiques and
    /// revisions.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        }
    }
}

impl Sampling {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            top_p: None,
        }
    }

    /// True when this setting always picks the most likely token.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k == Some(1)
    }
}

/// What a generation must be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// Any text.
    #[default]
    Text,
    /// One JSON object and nothing after it (OpenAI's `response_format: {"type":
    /// "json_object"}`): a local model samples only tokens that keep the text a valid start of
    /// one, and stops when it is whole; an endpoint is sent the `response_format`.
    JsonObject,
}

impl OutputFormat {
    /// Whether this is plain text (the default, left out of serialised requests).
    pub fn is_text(&self) -> bool {
        *self == Self::Text
    }
}

/// One generation request.
///
/// `prefix` is text shared by many requests (a dialogue context, a few-shot block). A local
/// backend tokenizes it on its own, computes its KV cache once and reuses it for every request
/// with the same prefix; a remote backend sends `prefix + prompt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// Shared leading text (may be empty).
    #[serde(default)]
    pub prefix: String,
    /// The text to continue, after the prefix.
    pub prompt: String,
    /// Upper bound on new tokens.
    pub max_new_tokens: usize,
    /// Sampling settings.
    #[serde(default)]
    pub sampling: Sampling,
    /// Strings that end the generation; the returned text stops before the first of them.
    #[serde(default)]
    pub stop: Vec<String>,
    /// Seed of this request's sampler: the same seed gives the same tokens whatever the batch.
    #[serde(default)]
    pub seed: u64,
    /// What the generation must be: any text, or one JSON object.
    #[serde(default, skip_serializing_if = "OutputFormat::is_text")]
    pub format: OutputFormat,
}

impl GenerateRequest {
    /// A request with no prefix, no stop strings and seed 0.
    pub fn new(prompt: impl Into<String>, max_new_tokens: usize, sampling: Sampling) -> Self {
        Self {
            prefix: String::new(),
            prompt: prompt.into(),
            max_new_tokens,
            sampling,
            stop: Vec::new(),
            seed: 0,
            format: OutputFormat::Text,
        }
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced an end-of-sequence token.
    Eos,
    /// A stop string appeared.
    Stop,
    /// `max_new_tokens` was reached.
    Length,
}

/// The result of one [`GenerateRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The generated text, cut before any stop string, without the end-of-sequence token.
    pub text: String,
    /// The generated token ids (including a final end-of-sequence token if one was sampled).
    pub token_ids: Vec<u32>,
    /// Log-probability of each generated token under the model (temperature 1, unfiltered).
    pub token_logprobs: Vec<f32>,
    /// Number of prompt tokens (prefix included).
    pub prompt_tokens: usize,
    /// Why generation ended.
    pub finish_reason: FinishReason,
}

/// One scoring request: log p(continuation | prefix + prompt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRequest {
    /// Shared leading text (may be empty); see [`GenerateRequest::prefix`].
    #[serde(default)]
    pub prefix: String,
    /// The conditioning text after the prefix.
    pub prompt: String,
    /// The text whose log-probability is measured.
    pub continuation: String,
    /// Also return the `top_k` most likely next tokens at each continuation position.
    #[serde(default)]
    pub top_k: usize,
}

impl ScoreRequest {
    /// A request with no prefix and no top-k alternatives.
    pub fn new(prompt: impl Into<String>, continuation: impl Into<String>) -> Self {
        Self {
            prefix: String::new(),
            prompt: prompt.into(),
            continuation: continuation.into(),
            top_k: 0,
        }
    }
}

/// A candidate next token and its log-probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// Token id.
    pub id: u32,
    /// The token's text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
}

/// The result of one [`ScoreRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Sum of the continuation's token log-probabilities.
    pub logprob: f64,
    /// Log-probability of each continuation token.
    pub token_logprobs: Vec<f32>,
    /// The continuation's token ids.
    pub token_ids: Vec<u32>,
    /// For each continuation position, the `top_k` most likely tokens (empty when `top_k == 0`).
    pub top_logprobs: Vec<Vec<TokenLogprob>>,
}

/// What a CAI stage needs from a language model, local or remote.
pub trait LanguageModel: Send + Sync {
    /// Sample continuations of each prompt (batched; per-request sampling settings and stops).
    fn generate(&self, requests: &[GenerateRequest]) -> Result<Vec<Generation>, Error>;
    /// Log-probability of each continuation given its prompt (summed, and per token).
    fn score(&self, requests: &[ScoreRequest]) -> Result<Vec<Score>, Error>;
    /// The tokens left for generation in the model's context after `prefix` and `prompt` (as
    /// in a [`GenerateRequest`]), where the model has a fixed context and counts tokens itself
    /// (a local model); `None` where that is unknown (endpoints, and by default).
    fn room_after(&self, _prefix: &str, _prompt: &str) -> Result<Option<usize>, Error> {
        Ok(None)
    }
}
