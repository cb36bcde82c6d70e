//! SFT examples: `messages` dialogues (chat template or transcript) or `prompt`/`completion`
//! pairs, tokenized with a loss mask that covers only the assistant's tokens; optional packing;
//! seeded, resumable batching.

use std::path::Path;

use cai_core::dialogue::{Message, Role};
use cai_model::tokenizer::{DialogueFormat, Tokenizer};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Deserialize;

use crate::{Result, TrainError};

/// One SFT record as read from JSONL: a dialogue, or a prompt and its completion.
#[derive(Debug, Clone, Deserialize)]
pub struct SftRecord {
    /// Record id (optional here; stages always write one).
    #[serde(default)]
    pub id: Option<serde_json::Value>,
    /// A dialogue; the loss covers every assistant turn.
    #[serde(default)]
    pub messages: Option<Vec<Message>>,
    /// A prompt, with `completion`.
    #[serde(default)]
    pub prompt: Option<String>,
    /// The completion of `prompt`; the loss covers it and the end-of-sequence token.
    #[serde(default)]
    pub completion: Option<String>,
    /// Plain text (language modelling, e.g. pre-training): the loss covers every token.
    #[serde(default)]
    pub text: Option<String>,
}

/// A tokenized example: ids and a per-token loss weight (1 = learn to predict this token).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Token ids.
    pub ids: Vec<u32>,
    /// 1.0 where the token is a target (assistant text), else 0.0.
    pub loss_mask: Vec<f32>,
}

impl Example {
    /// Number of tokens that carry loss (excluding the first, which nothing predicts).
    pub fn target_tokens(&self) -> usize {
        self.loss_mask.iter().skip(1).filter(|&&m| m > 0.0).count()
    }
}

/// Read and tokenize an SFT file. A record with neither `messages` nor `prompt`+`completion`,
/// or a dialogue without an assistant turn, is an error naming the file and line.
pub fn load_examples(
    path: &Path,
    tokenizer: &Tokenizer,
    format: DialogueFormat,
    max_length: usize,
) -> Result<Vec<Example>> {
    let values = cai_core::jsonl::read_jsonl_values(path)?;
    let mut out = Vec::with_capacity(values.len());
    for (line, value) in values {
        let bad = |message: String| TrainError::Data {
            path: path.to_path_buf(),
            line,
            message,
        };
        let record: SftRecord = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        let example = match (&record.messages, &record.prompt, &record.completion) {
            (Some(messages), _, _) => {
                tokenize_dialogue(messages, tokenizer, format).map_err(|e| bad(e.to_string()))?
            }
            (None, Some(prompt), Some(completion)) => {
                tokenize_pair(prompt, completion, tokenizer).map_err(|e| bad(e.to_string()))?
            }
            (None, None, None) if record.text.is_some() => {
                let text = record.text.as_deref().unwrap_or_default();
                tokenize_pair("", text, tokenizer).map_err(|e| bad(e.to_string()))?
            }
            _ => {
                return Err(bad(
                    "expected `messages` ([{role, content}]), both `prompt` and \
                     `completion`, or `text`"
                        .into(),
                ))
            }
        };
        out.push(truncate(example, max_length));
    }
    Ok(out)
}

fn truncate(mut e: Example, max_length: usize) -> Example {
    e.ids.truncate(max_length);
    e.loss_mask.truncate(max_length);
    e
}

/// `prompt` (with bos if the tokenizer wants one) then `completion` and eos; loss on the latter.
pub fn tokenize_pair(prompt: &str, completion: &str, tokenizer: &Tokenizer) -> Result<Example> {
    let p = tokenizer.encode(prompt, tokenizer.add_bos_token())?;
    let mut c = tokenizer.encode(completion, false)?;
    c.extend(tokenizer.eos_ids().first().copied());
    let loss_mask = std::iter::repeat_n(0.0, p.len())
        .chain(std::iter::repeat_n(1.0, c.len()))
        .collect();
    Ok(Example {
        ids: p.into_iter().chain(c).collect(),
        loss_mask,
    })
}

/// A dialogue rendered turn by turn: the text each assistant turn adds is a target, the rest
/// (system, user turns, role markers, the generation prompt) is context. In the transcript
/// format an eos token follows each assistant turn, so the model learns where a turn ends;
/// chat templates carry their own end-of-turn tokens.
pub fn tokenize_dialogue(
    messages: &[Message],
    tokenizer: &Tokenizer,
    format: DialogueFormat,
) -> Result<Example> {
    if !messages.iter().any(|m| m.role == Role::Assistant) {
        return Err(TrainError::Config(
            "a dialogue needs at least one assistant turn to learn from".into(),
        ));
    }
    let transcript = matches!(format, DialogueFormat::Transcript)
        || (format == DialogueFormat::Auto && tokenizer.chat_template().is_none());
    let mut out = Example {
        ids: Vec::new(),
        loss_mask: Vec::new(),
    };
    let push = |out: &mut Example, text: &str, target: bool, first: bool| -> Result<()> {
        let t = tokenizer.encode(text, first && tokenizer.add_bos_token())?;
        out.loss_mask
            .extend(std::iter::repeat_n(if target { 1.0 } else { 0.0 }, t.len()));
        out.ids.extend(t);
        Ok(())
    };
    let mut done = String::new();
    for (i, m) in messages.iter().enumerate() {
        if m.role != Role::Assistant {
            continue;
        }
        let context = tokenizer.render_dialogue(&messages[..i], true, format)?;
        let full = tokenizer.render_dialogue(&messages[..=i], false, format)?;
        let before = context.strip_prefix(done.as_str()).ok_or_else(|| {
            TrainError::Config("the chat template does not render dialogues incrementally".into())
        })?;
        let answer = full.strip_prefix(context.as_str()).ok_or_else(|| {
            TrainError::Config(
                "the chat template's generation prompt is not a prefix of the assistant turn"
                    .into(),
            )
        })?;
        push(&mut out, before, false, done.is_empty())?;
        push(&mut out, answer, true, false)?;
        if transcript {
            if let Some(&eos) = tokenizer.eos_ids().first() {
                out.ids.push(eos);
                out.loss_mask.push(1.0);
            }
        }
        done = full;
    }
    Ok(out)
}

/// Concatenate examples into rows of exactly `max_length` tokens (the last may be shorter).
/// Attention is not separated between the packed examples (as in TRL's packing); positions
/// run on across the row.
pub fn pack(examples: &[Example], max_length: usize) -> Vec<Example> {
    let mut rows = Vec::new();
    let mut cur = Example {
        ids: Vec::new(),
        loss_mask: Vec::new(),
    };
    for e in examples {
        for (&id, &m) in e.ids.iter().zip(&e.loss_mask) {
            cur.ids.push(id);
            cur.loss_mask.push(m);
            if cur.ids.len() == max_length {
                rows.push(std::mem::replace(
                    &mut cur,
                    Example {
                        ids: Vec::new(),
                        loss_mask: Vec::new(),
                    },
                ));
            }
        }
    }
    if cur.ids.len() > 1 {
        rows.push(cur);
    }
    rows
}

/// The order of examples in `epoch`: a permutation seeded by (seed, epoch), so a resumed run
/// sees the same order.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng =
        rand_chacha::ChaCha8Rng::seed_from_u64(cai_core::rng::derive_seed_u64(seed, &[epoch]));
    order.shuffle(&mut rng);
    order
}
