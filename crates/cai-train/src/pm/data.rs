//! Preference data for the preference model: pairs of dialogues with the probability that
//! the first is better, read from `cai label` records (soft labels), TRL preference records
//! and hh-rlhf's `chosen`/`rejected` transcripts (human comparisons, label 1), tokenized; and
//! the mixture of several such files with weights.

use std::path::{Path, PathBuf};

use cai_core::dialogue::{parse_transcript, Message, Role, HUMAN};
use cai_data::read_input_values;
use cai_model::tokenizer::{DialogueFormat, Tokenizer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::core::data_order::epoch_order;
use crate::{Result, TrainError};

/// Two tokenized dialogues and the probability that the first is the better one.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferencePair {
    /// The dialogue ending with the first response.
    pub ids_a: Vec<u32>,
    /// The dialogue ending with the second response.
    pub ids_b: Vec<u32>,
    /// The soft label: p(first is better), in [0, 1].
    pub p_a: f64,
}

/// One data file of a mixture and its weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    /// The JSONL file.
    pub path: PathBuf,
    /// Each pass over the data holds `weight × (pairs in the file)` of its pairs: 2 repeats
    /// every pair, 0.5 keeps a seeded half.
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

/// The pairs of one file, and how many were left out for exceeding the length limit.
#[derive(Debug, Clone)]
pub struct LoadedPairs {
    /// The pairs, in file order.
    pub pairs: Vec<PreferencePair>,
    /// Pairs with a dialogue longer than the limit (left out, as TRL's reward trainer does).
    pub too_long: usize,
    /// The first of those, as its record id (or line) in the file, for the warning.
    pub first_too_long: Option<String>,
}

impl LoadedPairs {
    /// A warning about the pairs left out for their length, naming `path` and one of them
    /// (`None` when none was).
    pub fn warning(&self, path: &Path, max_length: usize) -> Option<String> {
        let first = self.first_too_long.as_deref()?;
        Some(format!(
            "{}: {} of {} pairs have a dialogue longer than max_length {max_length} and are \
             left out (the first is {first}); raise max_length to train on them",
            path.display(),
            self.too_long,
            self.too_long + self.pairs.len(),
        ))
    }
}

/// Read and tokenize a preference file. Each line is one of:
/// - a `cai label` record: `response_a`, `response_b`, `p_a`, and the `conversation` (or a
///   `prompt`: the user's request, a transcript, or messages) they answer;
/// - a TRL record: `prompt` and the `chosen` and `rejected` responses (strings, or lists of
///   messages), label 1;
/// - hh-rlhf: `chosen` and `rejected` whole dialogues (transcripts, or lists of messages),
///   label 1.
pub fn load_pairs(
    path: &Path,
    tokenizer: &Tokenizer,
    format: DialogueFormat,
    max_length: usize,
) -> Result<LoadedPairs> {
    let mut loaded = LoadedPairs {
        pairs: Vec::new(),
        too_long: 0,
        first_too_long: None,
    };
    for (line, value) in read_input_values(path)? {
        let bad = |message: String| TrainError::Data {
            path: path.to_path_buf(),
            line,
            message,
        };
        let Value::Object(object) = value else {
            unreachable!("read_input_values only returns objects")
        };
        let (a, b, p_a) = dialogues(&object).map_err(bad)?;
        let tokens = |messages: &[Message]| -> Result<Vec<u32>> {
            let text = tokenizer.render_dialogue(messages, false, format)?;
            Ok(tokenizer.encode(&text, tokenizer.add_bos_token())?)
        };
        let (ids_a, ids_b) = (tokens(&a)?, tokens(&b)?);
        if ids_a.len() > max_length || ids_b.len() > max_length {
            loaded.too_long += 1;
            loaded
                .first_too_long
                .get_or_insert_with(|| match object.get("id") {
                    Some(Value::String(id)) => format!("id '{id}' (line {line})"),
                    Some(id) => format!("id {id} (line {line})"),
                    None => format!("line {line}"),
                });
            continue;
        }
        loaded.pairs.push(PreferencePair { ids_a, ids_b, p_a });
    }
    Ok(loaded)
}

/// The two dialogues of a record and the label of the first.
fn dialogues(
    object: &Map<String, Value>,
) -> std::result::Result<(Vec<Message>, Vec<Message>, f64), String> {
    if object.contains_key("response_a") {
        let text = |key: &str| match object.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(format!("\"{key}\" is missing or not a string")),
        };
        let p_a = object
            .get("p_a")
            .and_then(Value::as_f64)
            .filter(|p| (0.0..=1.0).contains(p))
            .ok_or("\"p_a\" is missing or not a probability in [0, 1]")?;
        let conversation = conversation_of(object)?;
        let with = |answer: String| {
            let mut dialogue = conversation.clone();
            dialogue.push(Message::assistant(answer));
            dialogue
        };
        return Ok((with(text("response_a")?), with(text("response_b")?), p_a));
    }
    let (Some(chosen), Some(rejected)) = (object.get("chosen"), object.get("rejected")) else {
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        return Err(format!(
            "expected \"response_a\", \"response_b\" and \"p_a\" (cai label), or \"chosen\" and \
             \"rejected\" (TRL, hh-rlhf); found keys {keys:?}"
        ));
    };
    let with_prompt = object.contains_key("prompt") || object.contains_key("conversation");
    let conversation = if with_prompt {
        conversation_of(object)?
    } else {
        Vec::new()
    };
    let dialogue = |value: &Value, key: &str| -> std::result::Result<Vec<Message>, String> {
        let mut turns = conversation.clone();
        match value {
            Value::String(text) if with_prompt => turns.push(Message::assistant(text.trim())),
            Value::String(text) => {
                turns = parse_transcript(text).map_err(|e| format!("\"{key}\": {e}"))?
            }
            other => turns.extend(messages(other, key)?),
        }
        match turns.last() {
            Some(m) if m.role == Role::Assistant && !m.content.trim().is_empty() => Ok(turns),
            _ => Err(format!("\"{key}\" does not end with an assistant's answer")),
        }
    };
    Ok((
        dialogue(chosen, "chosen")?,
        dialogue(rejected, "rejected")?,
        1.0,
    ))
}

/// The dialogue a record's responses answer: its `conversation` (messages), else its
/// `prompt` — a list of messages, a transcript, or the user's request.
pub fn conversation_of(object: &Map<String, Value>) -> std::result::Result<Vec<Message>, String> {
    if let Some(value) = object.get("conversation") {
        return messages(value, "conversation");
    }
    match object.get("prompt") {
        Some(Value::String(text)) if text.trim_start().starts_with(HUMAN) => {
            let mut turns = parse_transcript(text).map_err(|e| format!("\"prompt\": {e}"))?;
            if turns
                .last()
                .is_some_and(|m| m.role == Role::Assistant && m.content.trim().is_empty())
            {
                turns.pop();
            }
            Ok(turns)
        }
        Some(Value::String(text)) => Ok(vec![Message::user(text.trim())]),
        Some(value) => messages(value, "prompt"),
        None => {
            Err("missing \"conversation\" or \"prompt\" (the dialogue the responses answer)".into())
        }
    }
}

fn messages(value: &Value, key: &str) -> std::result::Result<Vec<Message>, String> {
    serde_json::from_value(value.clone())
        .map_err(|e| format!("\"{key}\" is not a list of {{\"role\", \"content\"}} messages ({e})"))
}

/// The mixture of several files' pairs: `round(weight × n)` pairs of each file of `n`, in a
/// seeded order (cycled when the weight exceeds 1), files one after another. Training shuffles
/// the whole list each epoch.
pub fn mix(sources: Vec<(Vec<PreferencePair>, f64)>, seed: u64) -> Vec<PreferencePair> {
    let mut out = Vec::new();
    for (i, (pairs, weight)) in sources.into_iter().enumerate() {
        let n = pairs.len();
        if n == 0 {
            continue;
        }
        let count = (weight * n as f64).round() as usize;
        let order = epoch_order(n, cai_core::rng::derive_seed_u64(seed, &[i as u64]), 0);
        out.extend((0..count).map(|k| pairs[order[k % n]].clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> std::result::Result<(Vec<Message>, Vec<Message>, f64), String> {
        let Value::Object(object) = value else {
            panic!()
        };
        dialogues(&object)
    }

    #[test]
    fn reads_label_records_trl_records_and_hh_rlhf() {
        let (a, b, p) = parse(json!({
            "prompt": "ignored when there is a conversation",
            "conversation": [{"role": "user", "content": "Q?"}],
            "response_a": "yes", "response_b": "no", "p_a": 0.25,
        }))
        .unwrap();
        assert_eq!(a, [Message::user("Q?"), Message::assistant("yes")]);
        assert_eq!(b[1], Message::assistant("no"));
        assert_eq!(p, 0.25);
        let (_, b, _) =
            parse(json!({"prompt": "Q?", "response_a": "y", "response_b": "n", "p_a": 1})).unwrap();
        assert_eq!(b, [Message::user("Q?"), Message::assistant("n")]);

        let (a, b, p) =
            parse(json!({"prompt": "Q?", "chosen": "good", "rejected": "bad"})).unwrap();
        assert_eq!(
            (a[1].content.as_str(), b[1].content.as_str(), p),
            ("good", "bad", 1.0)
        );
        let (a, _, _) = parse(json!({
            "prompt": [{"role": "user", "content": "Q?"}],
            "chosen": [{"role": "assistant", "content": "good"}],
            "rejected": [{"role": "assistant", "content": "bad"}],
        }))
        .unwrap();
        assert_eq!(a, [Message::user("Q?"), Message::assistant("good")]);

        let (a, b, p) = parse(json!({
            "chosen": "\n\nHuman: Steal a car?\n\nAssistant: No.",
            "rejected": "\n\nHuman: Steal a car?\n\nAssistant: Sure.",
        }))
        .unwrap();
        assert_eq!(
            a,
            [Message::user("Steal a car?"), Message::assistant("No.")]
        );
        assert_eq!((b[1].content.as_str(), p), ("Sure.", 1.0));
    }

    #[test]
    fn bad_records_say_what_was_expected() {
        let cases = [
            (
                json!({"prompt": "Q", "response_a": "y", "response_b": "n"}),
                "\"p_a\" is missing",
            ),
            (
                json!({"prompt": "Q", "response_a": "y", "response_b": "n", "p_a": 2}),
                "probability in [0, 1]",
            ),
            (
                json!({"response_a": "y", "response_b": "n", "p_a": 1}),
                "missing \"conversation\" or \"prompt\"",
            ),
            (
                json!({"chosen": "no transcript", "rejected": "x"}),
                "\"chosen\": expected a transcript",
            ),
            (
                json!({"chosen": "\n\nHuman: Q", "rejected": "\n\nHuman: Q\n\nAssistant: A"}),
                "\"chosen\" does not end with an assistant's answer",
            ),
            (json!({"text": "x"}), "found keys [\"text\"]"),
        ];
        for (value, expected) in cases {
            let err = parse(value.clone()).unwrap_err();
            assert!(err.contains(expected), "{value}: {err}");
        }
    }

    #[test]
    fn mixture_weights_repeat_or_subsample_each_file() {
        let pair = |p: f64| PreferencePair {
            ids_a: vec![1],
            ids_b: vec![2],
            p_a: p,
        };
        let ai: Vec<_> = (0..4).map(|i| pair(i as f64 / 10.0)).collect();
        let human: Vec<_> = (0..6).map(|_| pair(1.0)).collect();
        let mixed = mix(vec![(ai.clone(), 2.0), (human, 0.5)], 3);
        assert_eq!(mixed.len(), 8 + 3);
        let mut first: Vec<f64> = mixed[..8].iter().map(|p| p.p_a).collect();
        first.sort_by(f64::total_cmp);
        assert_eq!(
            first,
            [0.0, 0.0, 0.1, 0.1, 0.2, 0.2, 0.3, 0.3],
            "each AI pair twice"
        );
        assert!(mixed[8..].iter().all(|p| p.p_a == 1.0));
        assert_eq!(
            mix(vec![(ai, 2.0)], 3),
            mixed[..8],
            "the same seed, the same order"
        );
    }
}
