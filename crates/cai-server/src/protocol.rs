//! The wire format: request and response bodies of the OpenAI-compatible routes, with the
//! vLLM extensions cai also speaks (`top_k`, `prompt_logprobs`, `return_tokens_as_token_ids`,
//! `stop_reason`) and cai's `/v1/score`. Shared by the server and by clients (the remote
//! backend, tests).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod shapes;

pub use shapes::MAX_STOP_STRINGS;

/// A prompt as OpenAI's completions API takes it: text, texts, token ids, or lists of ids.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One text.
    Text(String),
    /// Several texts, one completion (or `n`) each.
    Texts(Vec<String>),
    /// One prompt as token ids.
    Tokens(Vec<u32>),
    /// Several prompts as token ids.
    TokenLists(Vec<Vec<u32>>),
}

/// Stop strings: one or several (at most [`MAX_STOP_STRINGS`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Stop {
    /// One string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Prompt {
    /// How many prompts.
    pub fn count(&self) -> usize {
        match self {
            Prompt::Text(_) | Prompt::Tokens(_) => 1,
            Prompt::Texts(v) => v.len(),
            Prompt::TokenLists(v) => v.len(),
        }
    }
}

impl Stop {
    /// The strings.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// A struct with, after its own fields, the sampling fields that completions and chat
/// completions share. The requests carry them as their own fields (not flattened: serde
/// buffers a flattened struct's unknown fields, and loses the path of a wrong one); with
/// `requests:` each also gets a `take_sampling` that hands them over as [`SamplingFields`].
macro_rules! with_sampling_fields {
    (requests: $($(#[$meta:meta])* pub struct $name:ident { $($own:tt)* })+) => {
        $(
            with_sampling_fields!($(#[$meta])* pub struct $name { $($own)* });

            impl $name {
                /// The sampling fields, moved out of the request.
                pub fn take_sampling(&mut self) -> SamplingFields {
                    SamplingFields {
                        temperature: self.temperature,
                        top_p: self.top_p,
                        top_k: self.top_k,
                        n: self.n,
                        stop: self.stop.take(),
                        seed: self.seed,
                        stream: self.stream,
                        ignore_eos: self.ignore_eos,
                        presence_penalty: self.presence_penalty,
                        frequency_penalty: self.frequency_penalty,
                        response_format: self.response_format.take(),
                    }
                }
            }
        )+
    };
    ($(#[$meta:meta])* pub struct $name:ident { $($own:tt)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($own)*
            /// Softmax temperature, 0 for greedy [default 1].
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub temperature: Option<f32>,
            /// Nucleus mass in (0, 1] [default 1].
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub top_p: Option<f32>,
            /// Keep only the k most likely tokens; 0 or -1 turns it off (vLLM's extension).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub top_k: Option<i64>,
            /// Choices per prompt [default 1].
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub n: Option<usize>,
            /// Stop strings; the text returned ends before the first.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub stop: Option<Stop>,
            /// Seed of the sampler: the same seed gives the same text whatever else is running.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub seed: Option<u64>,
            /// Stream the answer as server-sent events.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub stream: Option<bool>,
            /// Generate past end-of-sequence tokens, to `max_tokens` or a stop string (vLLM's
            /// extension; for benchmarks).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub ignore_eos: Option<bool>,
            /// Not supported unless 0; present so that a request asking for it is refused, not
            /// silently answered without it.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub presence_penalty: Option<f32>,
            /// As `presence_penalty`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub frequency_penalty: Option<f32>,
            /// `{"type": "json_object"}`: the answer is one JSON object (sampled under that
            /// constraint); `{"type": "text"}` is the default.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub response_format: Option<ResponseFormat>,
        }
    };
}

/// `response_format`, as OpenAI's API has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseFormat {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type")]
    pub kind: String,
    /// With `json_schema`: the schema (refused: cai constrains to any JSON object only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<serde_json::Value>,
}

with_sampling_fields! {
    /// Sampling fields shared by completions and chat completions. The requests carry them as
    /// their own fields (not flattened: serde buffers a flattened struct's unknown fields, and
    /// loses the path of a wrong one) and hand them over with `take_sampling`.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct SamplingFields {
    }
}

with_sampling_fields! {
    requests:
    /// `POST /v1/completions`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct CompletionRequest {
        /// The served model's id.
        pub model: String,
        /// What to continue.
        pub prompt: Prompt,
        /// New tokens per choice [default: the server's, OpenAI's 16].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub max_tokens: Option<usize>,
        /// Return token log-probabilities with this many alternatives per position (0: none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub logprobs: Option<usize>,
        /// Put the prompt in front of the text (and its tokens in front of the log-probs).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub echo: Option<bool>,
        /// vLLM: log-probabilities of the prompt tokens, with this many alternatives.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub prompt_logprobs: Option<usize>,
        /// vLLM: tokens in log-probs as `token_id:<id>` instead of their text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub return_tokens_as_token_ids: Option<bool>,
    }
}

/// Log-probabilities in the completions format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionLogprobs {
    /// Each token's text (or `token_id:<id>`).
    pub tokens: Vec<String>,
    /// Each token's log-probability (`null` for a first prompt token, which has no context).
    pub token_logprobs: Vec<Option<f32>>,
    /// Per position, the alternatives (`null` where there are none).
    pub top_logprobs: Vec<Option<BTreeMap<String, f32>>>,
    /// Each token's offset in the returned text, in characters.
    pub text_offset: Vec<usize>,
}

/// One prompt token's entry in vLLM's `prompt_logprobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptLogprob {
    /// Its log-probability.
    pub logprob: f32,
    /// Its rank among the vocabulary (1 = most likely), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    /// Its text.
    pub decoded_token: String,
}

/// One choice of a completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    /// Position among the choices (prompt-major, then `n`).
    pub index: usize,
    /// The text (after the prompt when `echo`).
    pub text: String,
    /// Log-probabilities, when asked for.
    pub logprobs: Option<CompletionLogprobs>,
    /// `stop` (end of sequence or a stop string) or `length`.
    pub finish_reason: Option<String>,
    /// vLLM: the stop string that ended the text; `null` for the end-of-sequence token.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// vLLM: per prompt token, `null` for the first, else the token's id (as a string) and
    /// the alternatives, each with its log-probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_logprobs: Option<Vec<Option<BTreeMap<String, PromptLogprob>>>>,
    /// The prompt's token ids, when `prompt_logprobs` are returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_token_ids: Option<Vec<u32>>,
}

/// Token counts of a response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens (each prompt counted once per choice).
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Their sum.
    pub total_tokens: usize,
}

/// The response of `POST /v1/completions` (and each streamed chunk, with one choice).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionResponse {
    /// `cmpl-…`.
    pub id: String,
    /// `text_completion`.
    pub object: String,
    /// Unix time.
    pub created: u64,
    /// The model id.
    pub model: String,
    /// The choices.
    pub choices: Vec<CompletionChoice>,
    /// Token counts (absent from streamed chunks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// A chat message's content: text, or OpenAI's list of typed parts (text parts only).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Parts such as `{"type": "text", "text": "…"}`.
    Parts(Vec<ContentPart>),
}

/// One typed part of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    /// `text` (other kinds are refused).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a text part.
    #[serde(default)]
    pub text: Option<String>,
}

/// One message of a chat request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// What is said.
    pub content: Content,
}

with_sampling_fields! {
    requests:
    /// `POST /v1/chat/completions`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct ChatRequest {
        /// The served model's id.
        pub model: String,
        /// The dialogue so far; the reply is the assistant's next turn.
        pub messages: Vec<ChatMessage>,
        /// New tokens per choice [default: the rest of the context, within the server's cap].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub max_tokens: Option<usize>,
        /// OpenAI's newer name for `max_tokens`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub max_completion_tokens: Option<usize>,
        /// Return each generated token's log-probability.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub logprobs: Option<bool>,
        /// With `logprobs`, this many alternatives per position.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub top_logprobs: Option<usize>,
    }
}

/// A token and its log-probability in the chat format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatTokenLogprob {
    /// The token's text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    pub bytes: Vec<u8>,
    /// The alternatives (empty unless asked for; absent inside an alternative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<Vec<ChatTokenLogprob>>,
}

/// Log-probabilities of a chat choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatLogprobs {
    /// One entry per generated token.
    pub content: Vec<ChatTokenLogprob>,
}

/// The assistant's reply (or, streamed, a piece of it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatDelta {
    /// `assistant` (in the first streamed chunk of a choice, and in whole replies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// One choice of a chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    /// Which choice.
    pub index: usize,
    /// The whole reply (non-streamed responses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<ChatDelta>,
    /// A piece of the reply (streamed chunks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<ChatDelta>,
    /// Log-probabilities, when asked for.
    #[serde(default)]
    pub logprobs: Option<ChatLogprobs>,
    /// `stop` or `length` (`null` in chunks before the last).
    pub finish_reason: Option<String>,
}

/// The response of `POST /v1/chat/completions`, or one streamed chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// `chatcmpl-…`.
    pub id: String,
    /// `chat.completion`, or `chat.completion.chunk` when streamed.
    pub object: String,
    /// Unix time.
    pub created: u64,
    /// The model id.
    pub model: String,
    /// The choices.
    pub choices: Vec<ChatChoice>,
    /// Token counts (absent from streamed chunks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One entry of `/v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// The id requests name.
    pub id: String,
    /// `model`.
    pub object: String,
    /// Unix time the server started.
    pub created: u64,
    /// Who serves it: `cai`.
    pub owned_by: String,
    /// Context length in tokens (vLLM's field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_model_len: Option<usize>,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// `list`.
    pub object: String,
    /// The models.
    pub data: Vec<ModelCard>,
}

/// One text pair of `POST /v1/score`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreItem {
    /// Shared leading text, prefilled once for every item that has the same (may be empty).
    #[serde(default)]
    pub prefix: String,
    /// The conditioning text.
    pub prompt: String,
    /// The text scored.
    pub continuation: String,
}

/// `POST /v1/score`: a score for each (prompt, continuation) pair. A language model scores
/// by the continuation's log-probability (`score_type: "logprob"`); a served preference model
/// answers the same request with its reward (`"reward"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRequestBody {
    /// The served model's id.
    pub model: String,
    /// The pairs.
    pub items: Vec<ScoreItem>,
    /// Alternatives per continuation position (log-prob scores only).
    #[serde(default)]
    pub top_logprobs: usize,
}

/// One item's score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreData {
    /// The item's position in the request.
    pub index: usize,
    /// The score: the continuation's summed log-probability, or a reward.
    pub score: f64,
    /// The continuation's token ids (log-prob scores).
    #[serde(default)]
    pub token_ids: Vec<u32>,
    /// Each continuation token's log-probability (log-prob scores).
    #[serde(default)]
    pub token_logprobs: Vec<f32>,
    /// Per position, the alternatives as (token text, log-probability) (when asked for).
    #[serde(default)]
    pub top_logprobs: Vec<Vec<(String, f32)>>,
}

/// The response of `POST /v1/score`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreResponse {
    /// `list`.
    pub object: String,
    /// The model id.
    pub model: String,
    /// `logprob` (a language model) or `reward` (a preference model).
    pub score_type: String,
    /// One entry per item, in order.
    pub data: Vec<ScoreData>,
    /// Tokens read.
    pub usage: Usage,
}
