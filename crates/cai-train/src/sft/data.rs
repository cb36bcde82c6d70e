//! SFT examples: `messages` dialogues (chat template or transcript) or `prompt`/`completion`
//! pairs, tokenized with a loss mask that covers only the assistant's tokens; SL-CAI records
//! of `cai critique` (one example per round's revision) and the helpful samples mixed in with
//! them; optional packing. The seeded order they are read in is [`crate::core::data_order`].

use std::path::Path;

use cai_core::dialogue::{Message, Role};
use cai_model::tokenizer::{DialogueFormat, Tokenizer};
use serde::Deserialize;

use crate::core::data_order::epoch_order;
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
    /// The rounds of a `cai critique` record: each round's revision, answering the prompt
    /// of `messages`, is a target (SL-CAI).
    #[serde(default)]
    pub rounds: Option<Vec<RevisionRound>>,
}

/// What SFT reads of a critique round: its revision.
#[derive(Debug, Clone, Deserialize)]
pub struct RevisionRound {
    /// The revised answer.
    pub revision: String,
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

/// The examples of an SFT file, less those that `max_length` left without a target.
#[derive(Debug, Clone, Default)]
pub struct LoadedExamples {
    /// The examples with at least one target token.
    pub examples: Vec<Example>,
    /// Examples left out because cutting them to `max_length` removed every target token
    /// (the prompt alone filled the length): they would train on nothing.
    pub without_targets: usize,
    /// The first of those, as its record id (or line) in the file, for the warning.
    pub first_without: Option<String>,
}

impl LoadedExamples {
    /// A warning about the examples left out, naming `path` and one of them (`None` when
    /// none was).
    pub fn warning(&self, path: &Path, max_length: usize) -> Option<String> {
        let first = self.first_without.as_deref()?;
        Some(format!(
            "{}: {} of {} examples lose every target token to max_length {max_length} and are left out (the first is {first}); raise max_length or shorten their prompts",
            path.display(),
            self.without_targets,
            self.without_targets + self.examples.len(),
        ))
    }
}

/// Read and tokenize an SFT file. A record with neither `messages` nor `prompt`+`completion`,
/// or a dialogue without an assistant turn, is an error naming the file and line. Examples
/// that `max_length` leaves without a target token are counted and left out.
///
/// A `cai critique` record (with `rounds`) gives one example per round up to
/// `revision_rounds` (`None`: every round, as in the CAI paper): its `messages` with the
/// final answer replaced by that round's revision.
pub fn load_examples(
    path: &Path,
    tokenizer: &Tokenizer,
    format: DialogueFormat,
    max_length: usize,
    revision_rounds: Option<usize>,
) -> Result<LoadedExamples> {
    let values = cai_data::read_input_values(path)?;
    let mut out = LoadedExamples {
        examples: Vec::with_capacity(values.len()),
        ..LoadedExamples::default()
    };
    let mut keep = |example: Example, name: &dyn Fn() -> String| {
        let example = truncate(example, max_length);
        if example.target_tokens() > 0 {
            out.examples.push(example);
        } else {
            out.without_targets += 1;
            out.first_without.get_or_insert_with(name);
        }
    };
    for (line, value) in values {
        let bad = |message: String| TrainError::Data {
            path: path.to_path_buf(),
            line,
            message,
        };
        let record: SftRecord = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        let name = || match &record.id {
            Some(serde_json::Value::String(id)) => format!("id '{id}' (line {line})"),
            Some(id) => format!("id {id} (line {line})"),
            None => format!("line {line}"),
        };
        if let Some(rounds) = &record.rounds {
            let dialogues = revision_dialogues(record.messages.as_deref(), rounds, revision_rounds)
                .map_err(bad)?;
            for (round, dialogue) in dialogues.iter().enumerate() {
                let example = tokenize_dialogue(dialogue, tokenizer, format)
                    .map_err(|e| bad(e.to_string()))?;
                keep(example, &|| format!("{}, round {}", name(), round + 1));
            }
            continue;
        }
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
        keep(example, &name);
    }
    Ok(out)
}

/// The SL-CAI dialogues of a critique record: `messages` without its final answer, followed
/// by each selected round's revision.
fn revision_dialogues(
    messages: Option<&[Message]>,
    rounds: &[RevisionRound],
    revision_rounds: Option<usize>,
) -> std::result::Result<Vec<Vec<Message>>, String> {
    let Some((last, prompt)) = messages.and_then(<[Message]>::split_last) else {
        return Err("a critique record (with `rounds`) needs `messages`: the prompt and the                     final revision"
            .into());
    };
    if last.role != Role::Assistant {
        return Err("a critique record's `messages` must end with the assistant's answer".into());
    }
    if rounds.is_empty() {
        return Err("`rounds` is empty; expected at least one round with a `revision`".into());
    }
    let selected = revision_rounds.unwrap_or(rounds.len());
    Ok(rounds
        .iter()
        .take(selected)
        .map(|round| {
            let mut dialogue = prompt.to_vec();
            dialogue.push(Message::assistant(&round.revision));
            dialogue
        })
        .collect())
}

/// The helpful examples to mix into `main` training examples: each helpful example once
/// (`ratio` `None`), or `round(ratio × main)` of them in a seeded order, repeating the
/// helpful set when it is smaller than that.
pub fn mix_helpful(
    main: usize,
    helpful: Vec<Example>,
    ratio: Option<f64>,
    seed: u64,
) -> Vec<Example> {
    let Some(ratio) = ratio else {
        return helpful;
    };
    if helpful.is_empty() {
        return helpful;
    }
    let wanted = (ratio * main as f64).round() as usize;
    let order = epoch_order(
        helpful.len(),
        cai_core::rng::derive_seed(seed, &["helpful"]),
        0,
    );
    order
        .iter()
        .cycle()
        .take(wanted)
        .map(|&i| helpful[i].clone())
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn round(text: &str) -> RevisionRound {
        RevisionRound {
            revision: text.into(),
        }
    }

    #[test]
    fn each_selected_round_revises_the_final_answer() {
        let messages = [Message::user("Q"), Message::assistant("final")];
        let rounds = [round("r1"), round("r2"), round("r3")];
        let all = revision_dialogues(Some(&messages), &rounds, None).unwrap();
        assert_eq!(
            all,
            [
                vec![Message::user("Q"), Message::assistant("r1")],
                vec![Message::user("Q"), Message::assistant("r2")],
                vec![Message::user("Q"), Message::assistant("r3")],
            ]
        );
        let first_two = revision_dialogues(Some(&messages), &rounds, Some(2)).unwrap();
        assert_eq!(first_two, all[..2]);
        assert_eq!(
            revision_dialogues(Some(&messages), &rounds, Some(9)).unwrap(),
            all
        );
    }

    #[test]
    fn critique_records_need_messages_ending_with_an_answer() {
        let rounds = [round("r1")];
        let err = revision_dialogues(None, &rounds, None).unwrap_err();
        assert!(err.contains("needs `messages`"), "{err}");
        let err = revision_dialogues(Some(&[Message::user("Q")]), &rounds, None).unwrap_err();
        assert!(
            err.contains("must end with the assistant's answer"),
            "{err}"
        );
        let messages = [Message::user("Q"), Message::assistant("A")];
        let err = revision_dialogues(Some(&messages), &[], None).unwrap_err();
        assert!(err.contains("`rounds` is empty"), "{err}");
    }

    fn examples(n: u32) -> Vec<Example> {
        (0..n)
            .map(|i| Example {
                ids: vec![i],
                loss_mask: vec![1.0],
            })
            .collect()
    }

    #[test]
    fn helpful_examples_are_mixed_at_the_ratio() {
        let first_ids =
            |mixed: &[Example]| -> Vec<u32> { mixed.iter().map(|e| e.ids[0]).collect() };
        // No ratio: each helpful example once, in file order.
        assert_eq!(first_ids(&mix_helpful(4, examples(3), None, 0)), [0, 1, 2]);
        // 0.5 × 4 = 2 of them.
        let half = mix_helpful(4, examples(3), Some(0.5), 0);
        assert_eq!(half.len(), 2);
        // 2 × 4 = 8 from a set of 3: the seeded order repeated, so counts 3, 3, 2.
        let double = first_ids(&mix_helpful(4, examples(3), Some(2.0), 7));
        assert_eq!(double.len(), 8);
        assert_eq!(double[..3], double[3..6]);
        let mut counts = [0; 3];
        for id in &double {
            counts[*id as usize] += 1;
        }
        counts.sort_unstable();
        assert_eq!(counts, [2, 3, 3]);
        assert_eq!(
            double,
            first_ids(&mix_helpful(4, examples(3), Some(2.0), 7))
        );
        assert!(mix_helpful(4, Vec::new(), Some(1.0), 0).is_empty());
        assert!(mix_helpful(4, examples(3), Some(0.0), 0).is_empty());
    }
}
