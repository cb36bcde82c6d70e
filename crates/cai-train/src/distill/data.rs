//! Context distillation's data: the sequences x that the student reads without the context and
//! the teacher reads after it — corpus text (the paper), finished dialogues, or prompts, which
//! the teacher may first answer itself (samples from p0(y | C, x)).
//!
//! Each JSONL record is read as the first that fits:
//! - `{"text"}`: the text (with end-of-sequence after it);
//! - `{"prompt", "completion"}`: the two concatenated, as `cai sft` reads them;
//! - `{"messages"}` ending with an assistant turn: the dialogue, rendered;
//! - anything else is a prompt, read as the stages read prompt files (`prompt` is the user's
//!   request, `messages` end with a user turn, hh-rlhf's `chosen`): the dialogue with the
//!   assistant's turn opened, followed by the teacher's answer when sampling is on.

use std::collections::HashMap;
use std::path::Path;

use cai_core::dialogue::{transcript_stop_strings, Message, Role};
use cai_core::jsonl::write_jsonl_atomic;
use cai_core::rng::derive_seed;
use cai_core::{GenerateRequest, LanguageModel, Sampling};
use cai_model::local::LocalModel;
use cai_model::tokenizer::{DialogueFormat, Tokenizer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sft::data::{tokenize_dialogue, tokenize_pair};
use crate::{Result, TrainError};

/// One record of a distillation file, before tokenization.
#[derive(Debug, Clone, PartialEq)]
pub struct DistillRecord {
    /// The record's `"id"`, else its 0-based line index.
    pub id: String,
    /// 1-based line in the file.
    pub line: usize,
    /// What the record holds.
    pub source: Source,
}

/// What a record gives the student to read.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Plain text.
    Text(String),
    /// A prompt and its completion, concatenated.
    Pair {
        /// The prompt.
        prompt: String,
        /// Its completion.
        completion: String,
    },
    /// A dialogue that ends with the assistant's turn.
    Dialogue(Vec<Message>),
    /// A dialogue that ends with the user's turn: a prompt for the teacher to answer.
    Prompt(Vec<Message>),
}

/// How the teacher answers prompts (CAI and the HHH paper sample at temperature 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TeacherSampling {
    /// Most new tokens per answer (CAI paper: responses ≤ 128 tokens).
    pub max_new_tokens: usize,
    /// Softmax temperature (0: greedy).
    pub temperature: f32,
    /// Nucleus mass (`None`: 1).
    pub top_p: Option<f32>,
}

impl Default for TeacherSampling {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            temperature: 1.0,
            top_p: None,
        }
    }
}

/// A tokenized sequence: the student reads `ids`; the teacher reads the context and then
/// `ids[skip..]` (the student's beginning-of-sequence token stands in for the context).
#[derive(Debug, Clone, PartialEq)]
pub struct DistillExample {
    /// Student token ids.
    pub ids: Vec<u32>,
    /// Leading tokens the teacher does not read (1 when `ids[0]` is the bos token, else 0).
    pub skip: usize,
}

impl DistillExample {
    /// Positions whose next-token distributions are compared: every one that predicts a token
    /// of the sequence (`0..len − 1`).
    pub fn positions(&self) -> usize {
        self.ids.len().saturating_sub(1)
    }
}

/// Read a distillation file. Errors name the file and line.
pub fn read_records(path: &Path) -> Result<Vec<DistillRecord>> {
    let mut out = Vec::new();
    for (line, value) in cai_data::read_records(path)?.rows {
        let bad = |message: String| TrainError::Data {
            path: path.to_path_buf(),
            line,
            message,
        };
        let Value::Object(object) = value else {
            unreachable!("read_jsonl_values only returns objects")
        };
        let id = match object.get("id") {
            None => (line - 1).to_string(),
            Some(Value::String(id)) => id.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => return Err(bad(format!("\"id\" is {other}; expected a string"))),
        };
        let string = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_owned);
        let source = if let Some(text) = string("text") {
            Source::Text(text)
        } else if let (Some(prompt), Some(completion)) = (string("prompt"), string("completion")) {
            Source::Pair { prompt, completion }
        } else {
            let messages: Option<Vec<Message>> = object
                .get("messages")
                .and_then(|m| serde_json::from_value(m.clone()).ok());
            match messages {
                Some(m) if m.last().is_some_and(|t| t.role == Role::Assistant) => {
                    Source::Dialogue(m)
                }
                _ => Source::Prompt(cai_core::prompts::prompt_messages(&object).map_err(|e| {
                    bad(format!(
                        "{e}; or, for text to distil on, \"text\", \"prompt\" with \
                         \"completion\", or \"messages\" ending with the assistant's turn"
                    ))
                })?),
            }
        };
        out.push(DistillRecord { id, line, source });
    }
    Ok(out)
}

/// The teacher's answers to every prompt record, as finished dialogues `{"id", "messages"}`,
/// sampled after `context` with a seed per record id (the same answers whatever the batching).
/// `progress` sees (answered, total) after each batch.
pub fn sample_answers(
    teacher: &LocalModel,
    context: &str,
    records: &[DistillRecord],
    sampling: &TeacherSampling,
    format: DialogueFormat,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<SampledAnswer>> {
    let prompts: Vec<(&DistillRecord, &Vec<Message>)> = records
        .iter()
        .filter_map(|r| match &r.source {
            Source::Prompt(messages) => Some((r, messages)),
            _ => None,
        })
        .collect();
    let transcript = format == DialogueFormat::Transcript
        || (format == DialogueFormat::Auto && teacher.tokenizer().chat_template().is_none());
    let stop = if transcript {
        transcript_stop_strings()
    } else {
        Vec::new()
    };
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(SAMPLE_BATCH) {
        let requests = chunk
            .iter()
            .map(|(record, messages)| {
                Ok(GenerateRequest {
                    prefix: context.to_owned(),
                    prompt: teacher
                        .tokenizer()
                        .render_dialogue(messages, true, format)?,
                    max_new_tokens: sampling.max_new_tokens,
                    sampling: Sampling {
                        temperature: sampling.temperature,
                        top_k: None,
                        top_p: sampling.top_p,
                    },
                    stop: stop.clone(),
                    seed: derive_seed(seed, &["distill-sample", &record.id]),
                    format: cai_core::OutputFormat::Text,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let answers = teacher.generate(&requests)?;
        for ((record, messages), answer) in chunk.iter().zip(answers) {
            let mut dialogue = (*messages).clone();
            dialogue.push(Message::assistant(answer.text.trim()));
            out.push(SampledAnswer {
                id: record.id.clone(),
                messages: dialogue,
            });
        }
        progress(out.len(), prompts.len());
    }
    Ok(out)
}

/// Prompts answered per generation call.
const SAMPLE_BATCH: usize = 32;

/// A prompt record answered by the teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampledAnswer {
    /// The prompt record's id.
    pub id: String,
    /// The prompt's dialogue followed by the teacher's answer.
    pub messages: Vec<Message>,
}

/// Write sampled answers as JSONL (atomically: a file there is always complete).
pub fn save_answers(path: &Path, answers: &[SampledAnswer]) -> Result<()> {
    Ok(write_jsonl_atomic(path, answers)?)
}

/// Answers saved by [`save_answers`], if `path` holds exactly one per prompt record of
/// `records` (else `None`: they belong to other data and must be sampled again).
pub fn load_answers(path: &Path, records: &[DistillRecord]) -> Result<Option<Vec<SampledAnswer>>> {
    if !path.exists() {
        return Ok(None);
    }
    let answers: Vec<SampledAnswer> = cai_core::jsonl::read_jsonl(path)?;
    let wanted: Vec<&str> = records
        .iter()
        .filter(|r| matches!(r.source, Source::Prompt(_)))
        .map(|r| r.id.as_str())
        .collect();
    let have: Vec<&str> = answers.iter().map(|a| a.id.as_str()).collect();
    Ok((wanted == have).then_some(answers))
}

/// Tokenize the records (prompts with their sampled answer where `answers` has one), each
/// cut to `max_length` tokens.
pub fn tokenize(
    records: &[DistillRecord],
    answers: &[SampledAnswer],
    tokenizer: &Tokenizer,
    format: DialogueFormat,
    max_length: usize,
) -> Result<Vec<DistillExample>> {
    let bos = tokenizer.bos_id().filter(|_| tokenizer.add_bos_token());
    let answered: HashMap<&str, &Vec<Message>> = answers
        .iter()
        .map(|a| (a.id.as_str(), &a.messages))
        .collect();
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let ids = match &record.source {
            Source::Text(text) => tokenize_pair("", text, tokenizer)?.ids,
            Source::Pair { prompt, completion } => {
                tokenize_pair(prompt, completion, tokenizer)?.ids
            }
            Source::Dialogue(messages) => tokenize_dialogue(messages, tokenizer, format)?.ids,
            Source::Prompt(messages) => match answered.get(record.id.as_str()) {
                Some(dialogue) => tokenize_dialogue(dialogue, tokenizer, format)?.ids,
                None => {
                    let text = tokenizer.render_dialogue(messages, true, format)?;
                    tokenizer.encode(&text, tokenizer.add_bos_token())?
                }
            },
        };
        let mut ids = ids;
        ids.truncate(max_length);
        let skip = usize::from(bos.is_some() && ids.first() == bos.as_ref());
        if ids.len() < skip + 2 {
            continue;
        }
        out.push(DistillExample { ids, skip });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(lines: &[Value]) -> (tempfile::TempDir, Vec<DistillRecord>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.jsonl");
        let text: Vec<String> = lines.iter().map(Value::to_string).collect();
        std::fs::write(&path, text.join("\n") + "\n").unwrap();
        let read = read_records(&path).unwrap();
        (dir, read)
    }

    #[test]
    fn each_record_kind_is_recognised() {
        let (_dir, read) = records(&[
            serde_json::json!({"id": "t", "text": "1 2 3"}),
            serde_json::json!({"prompt": "a", "completion": "b"}),
            serde_json::json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}),
            serde_json::json!({"id": 7, "prompt": "how do I bake bread?"}),
            serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}),
        ]);
        let kinds: Vec<(&str, &str)> = read
            .iter()
            .map(|r| {
                let kind = match r.source {
                    Source::Text(_) => "text",
                    Source::Pair { .. } => "pair",
                    Source::Dialogue(_) => "dialogue",
                    Source::Prompt(_) => "prompt",
                };
                (r.id.as_str(), kind)
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("t", "text"),
                ("1", "pair"),
                ("2", "dialogue"),
                ("7", "prompt"),
                ("4", "prompt")
            ]
        );
        assert_eq!(
            read[3].source,
            Source::Prompt(vec![Message::user("how do I bake bread?")])
        );
    }

    #[test]
    fn a_record_of_nothing_known_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.jsonl");
        std::fs::write(&path, "{\"text\": \"ok\"}\n{\"label\": 1}\n").unwrap();
        let err = read_records(&path).unwrap_err().to_string();
        assert!(err.contains("bad.jsonl:2"), "{err}");
        assert!(err.contains("\"text\""), "{err}");
    }

    #[test]
    fn saved_answers_are_reused_only_for_the_same_prompts() {
        let (dir, read) = records(&[
            serde_json::json!({"id": "a", "prompt": "one"}),
            serde_json::json!({"id": "b", "text": "two"}),
        ]);
        let path = dir.path().join("answers.jsonl");
        assert_eq!(load_answers(&path, &read).unwrap(), None);
        let answers = vec![SampledAnswer {
            id: "a".into(),
            messages: vec![Message::user("one"), Message::assistant("1")],
        }];
        save_answers(&path, &answers).unwrap();
        assert_eq!(load_answers(&path, &read).unwrap(), Some(answers));
        assert_eq!(load_answers(&path, &read[1..]).unwrap(), None);
    }
}
