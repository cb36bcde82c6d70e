//! The completions calls behind the trait: a generation is one completion (`n` = 1, the
//! request's seed, `logprobs` 0 and token ids where the server returns them); a score is one
//! completion that echoes the text with its log-probabilities — or, on servers that return
//! vLLM's `prompt_logprobs` instead, one that asks for those — from which the
//! continuation's tokens are picked by their character offsets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};

use cai_core::{
    FinishReason, GenerateRequest, Generation, OutputFormat, Score, ScoreRequest, TokenLogprob,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::endpoint::{Endpoint, Failure};

#[derive(Debug, Deserialize)]
struct Completion {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
struct Usage {
    prompt_tokens: usize,
}

#[derive(Debug, Deserialize)]
struct Choice {
    text: String,
    #[serde(default)]
    logprobs: Option<Logprobs>,
    #[serde(default)]
    finish_reason: Option<String>,
    /// vLLM: the stop string (or token id) that ended the text; `null` for end of sequence.
    #[serde(default)]
    stop_reason: Option<Value>,
    #[serde(default)]
    prompt_logprobs: Option<Vec<Option<HashMap<String, PromptLogprob>>>>,
    #[serde(default)]
    prompt_token_ids: Option<Vec<u32>>,
}

#[derive(Debug, Deserialize)]
struct Logprobs {
    tokens: Vec<String>,
    token_logprobs: Vec<Option<f32>>,
    #[serde(default)]
    top_logprobs: Option<Vec<Option<HashMap<String, f32>>>>,
    text_offset: Vec<usize>,
}

#[derive(Debug, Deserialize)]
struct PromptLogprob {
    logprob: f32,
    #[serde(default)]
    decoded_token: Option<String>,
}

/// The id in a `token_id:<id>` label.
fn label_id(label: &str) -> Option<u32> {
    label.strip_prefix("token_id:")?.parse().ok()
}

fn first_choice(c: Completion, path: &str) -> Result<(Choice, Option<usize>), Failure> {
    let prompt_tokens = c.usage.map(|u| u.prompt_tokens);
    let choice = c
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| Failure::Protocol(format!("{path} answered with no choice")))?;
    Ok((choice, prompt_tokens))
}

/// One generation through `/completions`.
pub(crate) fn generate(endpoint: &Endpoint, r: &GenerateRequest) -> Result<Generation, Failure> {
    let mut body = json!({
        "model": endpoint.model,
        "prompt": format!("{}{}", r.prefix, r.prompt),
        "max_tokens": r.max_new_tokens,
        "temperature": r.sampling.temperature,
        "n": 1,
        "seed": r.seed,
        "logprobs": 0,
        "return_tokens_as_token_ids": true,
    });
    if !r.stop.is_empty() {
        body["stop"] = json!(r.stop);
    }
    if let Some(p) = r.sampling.top_p {
        body["top_p"] = json!(p);
    }
    if let Some(k) = r.sampling.top_k {
        body["top_k"] = json!(k);
    }
    if r.format == OutputFormat::JsonObject {
        body["response_format"] = json!({"type": "json_object"});
    }
    let (choice, prompt_tokens) =
        first_choice(endpoint.post("/completions", &body)?, "/completions")?;
    let finish_reason = match (choice.finish_reason.as_deref(), &choice.stop_reason) {
        (Some("length"), _) => FinishReason::Length,
        (_, Some(Value::String(_))) => FinishReason::Stop,
        // A JSON answer ends when its object is whole, as a local model's does.
        _ if r.format == OutputFormat::JsonObject => FinishReason::Stop,
        _ => FinishReason::Eos,
    };
    let (token_ids, token_logprobs) = match choice.logprobs {
        Some(lp) => {
            let ids: Option<Vec<u32>> = lp.tokens.iter().map(|t| label_id(t)).collect();
            let lps = lp.token_logprobs.iter().map(|x| x.unwrap_or(0.0)).collect();
            (ids.unwrap_or_default(), lps)
        }
        None => (Vec::new(), Vec::new()),
    };
    Ok(Generation {
        text: choice.text,
        token_ids,
        token_logprobs,
        prompt_tokens: prompt_tokens.unwrap_or(0),
        finish_reason,
    })
}

/// How an endpoint gives prompt log-probabilities: untried, echo, vLLM's `prompt_logprobs`.
pub(crate) struct ScoreWay(AtomicU8);

const UNTRIED: u8 = 0;
const ECHO: u8 = 1;
const PROMPT_LOGPROBS: u8 = 2;

impl ScoreWay {
    pub fn new() -> Self {
        Self(AtomicU8::new(UNTRIED))
    }
}

/// A scored token of the sent text: its id (if known), log-prob, alternatives, and the
/// character span it covers.
struct Scored {
    id: Option<u32>,
    logprob: Option<f32>,
    top: Vec<TokenLogprob>,
    end: usize,
}

/// One score through `/completions`: echo with log-probs, or `prompt_logprobs`.
pub(crate) fn score(
    endpoint: &Endpoint,
    way: &ScoreWay,
    r: &ScoreRequest,
) -> Result<Score, Failure> {
    let text = format!("{}{}{}", r.prefix, r.prompt, r.continuation);
    let mut body = json!({
        "model": endpoint.model,
        "prompt": text,
        "max_tokens": 1,
        "temperature": 0,
        "return_tokens_as_token_ids": true,
    });
    let tried = way.0.load(Ordering::Relaxed);
    if tried != PROMPT_LOGPROBS {
        body["echo"] = json!(true);
        body["logprobs"] = json!(r.top_k);
        let (choice, prompt_tokens) =
            first_choice(endpoint.post("/completions", &body)?, "/completions")?;
        if let Some(tokens) = echoed(&choice, prompt_tokens, &text) {
            way.0.store(ECHO, Ordering::Relaxed);
            return continuation(tokens, &r.continuation, r.top_k);
        }
        if tried == ECHO {
            return Err(Failure::Protocol(
                "/completions with echo returned no prompt log-probabilities".into(),
            ));
        }
        body.as_object_mut().expect("an object").remove("echo");
        body.as_object_mut().expect("an object").remove("logprobs");
    }
    body["prompt_logprobs"] = json!(r.top_k);
    let (choice, _) = first_choice(endpoint.post("/completions", &body)?, "/completions")?;
    let tokens = vllm_prompt(&choice, r.top_k).ok_or_else(|| {
        Failure::Protocol(
            "returns no prompt log-probabilities (neither echo with logprobs nor vLLM's \
             prompt_logprobs); scoring needs one of them"
                .into(),
        )
    })?;
    way.0.store(PROMPT_LOGPROBS, Ordering::Relaxed);
    continuation(tokens, &r.continuation, r.top_k)
}

/// The prompt's tokens from an echo answer, or `None` if it has no prompt log-probs.
fn echoed(
    choice: &Choice,
    prompt_tokens: Option<usize>,
    sent: &str,
) -> Option<(Vec<Scored>, usize)> {
    let lp = choice.logprobs.as_ref()?;
    let sent_chars = sent.chars().count();
    // The prompt's tokens: as many as the usage says, else those that start inside it.
    let n = prompt_tokens
        .unwrap_or_else(|| {
            lp.text_offset
                .iter()
                .take_while(|&&o| o < sent_chars)
                .count()
        })
        .min(lp.tokens.len());
    // The echo must hold log-probs for the prompt: the first token has none, the rest do.
    if n == 0 || lp.token_logprobs[1..n].iter().any(Option::is_none) {
        return None;
    }
    let text_end = lp
        .text_offset
        .get(n)
        .copied()
        .unwrap_or_else(|| choice.text.chars().count());
    let tokens = (0..n)
        .map(|i| Scored {
            id: label_id(&lp.tokens[i]),
            logprob: lp.token_logprobs[i],
            top: lp
                .top_logprobs
                .as_ref()
                .and_then(|t| t.get(i).cloned().flatten())
                .map(alternatives)
                .unwrap_or_default(),
            end: lp
                .text_offset
                .get(i + 1)
                .copied()
                .filter(|_| i + 1 < n)
                .unwrap_or(text_end),
        })
        .collect();
    Some((tokens, text_end))
}

/// The prompt's tokens from vLLM's `prompt_logprobs`, or `None` without them.
fn vllm_prompt(choice: &Choice, top_k: usize) -> Option<(Vec<Scored>, usize)> {
    let entries = choice.prompt_logprobs.as_ref()?;
    let ids = choice.prompt_token_ids.as_ref();
    let mut end = 0;
    let mut tokens = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let (id, logprob, text, top) = match entry {
            None => (
                ids.and_then(|ids| ids.get(i).copied()),
                None,
                String::new(),
                Vec::new(),
            ),
            Some(map) => {
                // The prompt's own token: named by the ids, or the only entry without alternatives.
                let id = ids.and_then(|ids| ids.get(i).copied()).or_else(|| {
                    (top_k == 0 && map.len() == 1).then(|| map.keys().next()?.parse().ok())?
                })?;
                let own = map.get(&id.to_string())?;
                let top = map
                    .iter()
                    .filter_map(|(k, v)| {
                        Some(TokenLogprob {
                            id: k.parse().ok()?,
                            token: v.decoded_token.clone().unwrap_or_default(),
                            logprob: v.logprob,
                        })
                    })
                    .collect::<Vec<_>>();
                (
                    Some(id),
                    Some(own.logprob),
                    own.decoded_token.clone().unwrap_or_default(),
                    top,
                )
            }
        };
        end += text.chars().count();
        let mut top = top;
        top.sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
        top.truncate(top_k);
        tokens.push(Scored {
            id,
            logprob,
            top,
            end,
        });
    }
    Some((tokens, end))
}

/// Alternatives from a completions `top_logprobs` map, best first.
fn alternatives(map: HashMap<String, f32>) -> Vec<TokenLogprob> {
    let mut top: Vec<TokenLogprob> = map
        .into_iter()
        .map(|(label, logprob)| TokenLogprob {
            id: label_id(&label).unwrap_or(u32::MAX),
            token: if label_id(&label).is_some() {
                String::new()
            } else {
                label
            },
            logprob,
        })
        .collect();
    top.sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
    top
}

/// The continuation's tokens: those whose text reaches past the point where the
/// continuation starts (counted back from the end of the echoed text, so that a server that
/// normalises the start of the text still lines up).
fn continuation(
    (tokens, text_end): (Vec<Scored>, usize),
    continuation: &str,
    top_k: usize,
) -> Result<Score, Failure> {
    let start = text_end.saturating_sub(continuation.chars().count());
    let mut score = Score {
        logprob: 0.0,
        token_logprobs: Vec::new(),
        token_ids: Vec::new(),
        top_logprobs: Vec::new(),
    };
    let mut ids_known = true;
    for t in tokens.into_iter().filter(|t| t.end > start) {
        let logprob = t.logprob.ok_or_else(|| {
            Failure::Protocol(
                "the continuation starts at the first token, which has no log-probability; \
                 give a prompt (or a model that adds a bos token)"
                    .into(),
            )
        })?;
        score.logprob += logprob as f64;
        score.token_logprobs.push(logprob);
        match t.id {
            Some(id) => score.token_ids.push(id),
            None => ids_known = false,
        }
        if top_k > 0 {
            score
                .top_logprobs
                .push(t.top.into_iter().take(top_k).collect());
        }
    }
    if !ids_known {
        score.token_ids.clear();
    }
    Ok(score)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(tokens: &[(&str, Option<f32>, usize)], text: &str) -> Choice {
        Choice {
            text: text.into(),
            logprobs: Some(Logprobs {
                tokens: tokens.iter().map(|t| t.0.to_owned()).collect(),
                token_logprobs: tokens.iter().map(|t| t.1).collect(),
                top_logprobs: None,
                text_offset: tokens.iter().map(|t| t.2).collect(),
            }),
            finish_reason: Some("length".into()),
            stop_reason: None,
            prompt_logprobs: None,
            prompt_token_ids: None,
        }
    }

    #[test]
    fn the_continuation_is_the_tokens_past_its_start() {
        // "The answer is: (A)" + one generated token "!": prompt tokens are the first four.
        let sent = "The answer is: (A)";
        let c = echo(
            &[
                ("token_id:5", None, 0),
                ("token_id:6", Some(-1.0), 3),
                ("token_id:7", Some(-2.0), 14),
                ("token_id:8", Some(-0.5), 16),
                ("token_id:9", Some(-3.0), 18),
            ],
            "The answer is: (A)!",
        );
        let scored = echoed(&c, Some(4), sent).unwrap();
        assert_eq!(scored.1, 18);
        let s = continuation(scored, " (A)", 0).unwrap();
        assert_eq!(s.token_ids, vec![7, 8]);
        assert_eq!(s.token_logprobs, vec![-2.0, -0.5]);
        assert!((s.logprob + 2.5).abs() < 1e-12);
        // Without usage: the tokens that start inside the sent text.
        let scored = echoed(&c, None, sent).unwrap();
        assert_eq!(continuation(scored, "A)", 0).unwrap().token_ids, vec![8]);
        // An echo without prompt log-probs is not an echo.
        let bare = echo(&[("a", None, 0), ("b", None, 1)], "ab");
        assert!(echoed(&bare, Some(2), "ab").is_none());
    }

    #[test]
    fn vllm_prompt_logprobs_name_the_prompt_tokens() {
        let entry = |pairs: &[(&str, f32, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(id, lp, t)| {
                        (
                            id.to_string(),
                            PromptLogprob {
                                logprob: *lp,
                                decoded_token: Some(t.to_string()),
                            },
                        )
                    })
                    .collect(),
            )
        };
        let c = Choice {
            text: String::new(),
            logprobs: None,
            finish_reason: None,
            stop_reason: None,
            prompt_logprobs: Some(vec![
                None,
                entry(&[("11", -1.0, " is")]),
                entry(&[("12", -0.25, " (A)")]),
            ]),
            prompt_token_ids: None,
        };
        let scored = vllm_prompt(&c, 0).unwrap();
        assert_eq!(scored.1, 7);
        let s = continuation(scored, " (A)", 0).unwrap();
        assert_eq!((s.token_ids, s.token_logprobs), (vec![12], vec![-0.25]));
        assert_eq!(label_id("token_id:42"), Some(42));
        assert_eq!(label_id("hello"), None);
    }
}
