//! Importers for published datasets: each maps one row (a `serde_json::Value` object, as read
//! from JSONL, Parquet or the Hub) to cai's records — a red-team prompt, a preference pair or
//! a critique/revision example — keeping the dataset's ids and categories. The shape is
//! detected from the columns ([`detect_shape`]) or named ([`Shape::from_name`]).
//!
//! | shape | columns |
//! |---|---|
//! | `cai` | `prompt` or `messages` (cai's own prompt files) |
//! | `hh-rlhf` | `chosen`, `rejected` transcripts (`\n\nHuman: …\n\nAssistant: …`) |
//! | `cai-conversation` | Hugging Face's `cai-conversation-harmless`: `init_prompt`, `init_response`, `critic_prompt`, `critic_response`, `revision_prompt`, `revision_response` (and `prompt`, `messages`, `chosen`, `rejected`) |
//! | `harmbench` | `Behavior`/`behavior`, `SemanticCategory`/`category`, `BehaviorID`, `ContextString` |
//! | `do-not-answer` | `question`, `risk_area`, `types_of_harm`, `specific_harms`, `id` |
//! | `red-team-attempts` | hh-rlhf's `red-team-attempts`: `transcript` (`\n\nHuman: …`), `task_description`, `rating`, `min_harmlessness_score_transcript`, `tags`, `model_type`, `num_params` |

mod cai_conversation;
mod columns;
mod do_not_answer;
mod harmbench;
mod hh_rlhf;
mod red_team_attempts;

use std::collections::BTreeMap;
use std::fmt;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use crate::dialogue::{Message, Role};
use crate::few_shot::CritiqueExample;
use crate::prompts::prompt_messages;

/// A dataset shape that cai imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// cai's own prompt records: `prompt` (text or transcript) or `messages`.
    Cai,
    /// Anthropic's hh-rlhf: `chosen` and `rejected` transcripts.
    HhRlhf,
    /// Hugging Face's `cai-conversation-harmless` columns.
    CaiConversation,
    /// HarmBench behaviours.
    HarmBench,
    /// Do-Not-Answer questions.
    DoNotAnswer,
    /// hh-rlhf's red-team attempts: a `transcript` per attempt.
    RedTeamAttempts,
}

impl Shape {
    /// Every shape, in the order [`detect_shape`] tries them.
    pub const ALL: [Shape; 6] = [
        Shape::CaiConversation,
        Shape::HarmBench,
        Shape::DoNotAnswer,
        Shape::Cai,
        Shape::HhRlhf,
        Shape::RedTeamAttempts,
    ];

    /// The shape's name, as [`Shape::from_name`] takes it.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Cai => "cai",
            Shape::HhRlhf => "hh-rlhf",
            Shape::CaiConversation => "cai-conversation",
            Shape::HarmBench => "harmbench",
            Shape::DoNotAnswer => "do-not-answer",
            Shape::RedTeamAttempts => "red-team-attempts",
        }
    }

    /// A shape by name (`cai`, `hh-rlhf`, `cai-conversation`, `harmbench`, `do-not-answer`,
    /// `red-team-attempts`); the error lists the names.
    pub fn from_name(name: &str) -> Result<Shape, ImportError> {
        Shape::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| ImportError::UnknownShape(name.to_owned()))
    }

    /// Whether rows with these columns are in this shape.
    fn matches(self, has: &dyn Fn(&str) -> bool) -> bool {
        match self {
            Shape::CaiConversation => has("init_prompt") && has("revision_response"),
            Shape::HarmBench => has("Behavior") || has("behavior") || has("BehaviorID"),
            Shape::DoNotAnswer => has("question") && (has("risk_area") || has("types_of_harm")),
            Shape::Cai => has("prompt") || has("messages"),
            Shape::HhRlhf => has("chosen") && has("rejected"),
            Shape::RedTeamAttempts => has("transcript"),
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The shape of rows with these columns (the most specific first: `cai-conversation` rows
/// also have `prompt`, `chosen` and `rejected`); the error names the columns found.
pub fn detect_shape(columns: &[&str]) -> Result<Shape, ImportError> {
    let has = |name: &str| columns.contains(&name);
    Shape::ALL
        .into_iter()
        .find(|shape| shape.matches(&has))
        .ok_or_else(|| ImportError::NoShape(columns.iter().map(|c| (*c).to_owned()).collect()))
}

/// A failure to import a row or to choose a shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// A column is missing or holds the wrong type.
    #[error("row {row}: column \"{column}\": {message}")]
    Column {
        /// 0-based row index.
        row: usize,
        /// The column at fault.
        column: String,
        /// What was wrong and what was expected.
        message: String,
    },
    /// The row is not an object, or its columns disagree.
    #[error("row {row}: {message}")]
    Row {
        /// 0-based row index.
        row: usize,
        /// What was wrong and what was expected.
        message: String,
    },
    /// The shape cannot give the record asked for (HarmBench has no preference pairs).
    #[error("{shape} rows hold no {record}; {hint}")]
    NoSuchRecord {
        /// The shape.
        shape: Shape,
        /// What was asked for.
        record: &'static str,
        /// What to use instead.
        hint: &'static str,
    },
    /// No shape has these columns.
    #[error(
        "no known dataset shape has the columns {0:?}; expected prompt/messages (cai), \
         chosen+rejected (hh-rlhf), init_prompt+revision_response (cai-conversation), \
         Behavior (harmbench), question+risk_area (do-not-answer) or transcript \
         (red-team-attempts), or name the shape"
    )]
    NoShape(Vec<String>),
    /// A shape name that is none of cai's.
    #[error(
        "unknown dataset shape {0:?}; expected cai, hh-rlhf, cai-conversation, harmbench, \
         do-not-answer or red-team-attempts"
    )]
    UnknownShape(String),
}

impl ImportError {
    /// The message without its `row N: ` prefix, for callers that name the row themselves
    /// (a file's line).
    pub fn detail(&self) -> String {
        match self {
            ImportError::Column {
                column, message, ..
            } => format!("column \"{column}\": {message}"),
            ImportError::Row { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// A prompt to answer (a red-team prompt, or any request), with the dataset's id and
/// categories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptRecord {
    /// The dataset's id (`BehaviorID`, `id`), else the 0-based row index.
    pub id: String,
    /// The dialogue, ending with the user's request.
    pub messages: Vec<Message>,
    /// The dataset's harm category (`SemanticCategory`, `risk_area`), if it has one.
    pub category: Option<String>,
    /// Other descriptive columns, by cai's name (`functional_category`, `types_of_harm`, …).
    pub fields: BTreeMap<String, String>,
}

/// Written as cai's prompt record: `{"id", "prompt"}` for a single request (`"messages"`
/// otherwise), then `"category"` and the other fields; `--prompts` reads it back.
impl Serialize for PromptRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("id", &self.id)?;
        match self.messages.as_slice() {
            [only] if only.role == Role::User => map.serialize_entry("prompt", &only.content)?,
            messages => map.serialize_entry("messages", messages)?,
        }
        if let Some(category) = &self.category {
            map.serialize_entry("category", category)?;
        }
        for (key, value) in &self.fields {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// Two answers to one prompt, the first preferred; written as TRL's conversational
/// preference record (`{"id", "prompt", "chosen", "rejected"}`, lists of messages), which
/// `cai train-pm` reads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PairRecord {
    /// The dataset's id, else the 0-based row index.
    pub id: String,
    /// The turns both answers follow, ending with a user turn.
    pub prompt: Vec<Message>,
    /// The preferred answer's turns.
    pub chosen: Vec<Message>,
    /// The other answer's turns.
    pub rejected: Vec<Message>,
}

/// The red-team prompt of a row in `shape`; `row` is its 0-based index.
pub fn prompt_record(shape: Shape, value: &Value, row: usize) -> Result<PromptRecord, ImportError> {
    let object = columns::object(value, row)?;
    match shape {
        Shape::Cai => {
            let messages =
                prompt_messages(object).map_err(|message| ImportError::Row { row, message })?;
            Ok(PromptRecord {
                id: columns::id(object, "id", row)?,
                messages,
                category: columns::optional_text(object, "category", row)?,
                fields: BTreeMap::new(),
            })
        }
        Shape::HhRlhf => hh_rlhf::prompt(object, row),
        Shape::CaiConversation => cai_conversation::prompt(object, row),
        Shape::HarmBench => harmbench::prompt(object, row),
        Shape::DoNotAnswer => do_not_answer::prompt(object, row),
        Shape::RedTeamAttempts => red_team_attempts::prompt(object, row),
    }
}

/// The preference pair of a row in `shape` (hh-rlhf and cai-conversation rows have one).
pub fn pair_record(shape: Shape, value: &Value, row: usize) -> Result<PairRecord, ImportError> {
    let object = columns::object(value, row)?;
    match shape {
        Shape::HhRlhf => hh_rlhf::pair(object, row),
        Shape::CaiConversation => cai_conversation::pair(object, row),
        Shape::Cai | Shape::HarmBench | Shape::DoNotAnswer | Shape::RedTeamAttempts => {
            Err(ImportError::NoSuchRecord {
                shape,
                record: "preference pairs",
                hint: "use an hh-rlhf or cai-conversation dataset (hh-rlhf's harmless-base \
                       subset has chosen/rejected pairs), or label pairs with cai label",
            })
        }
    }
}

/// The critique/revision example of a row in `shape` (cai-conversation rows have one: the
/// prompt, the first answer, and one round).
pub fn critique_example(
    shape: Shape,
    value: &Value,
    row: usize,
) -> Result<CritiqueExample, ImportError> {
    let object = columns::object(value, row)?;
    match shape {
        Shape::CaiConversation => cai_conversation::example(object, row),
        _ => Err(ImportError::NoSuchRecord {
            shape,
            record: "critique/revision examples",
            hint: "use a cai-conversation dataset (init_prompt, init_response, critic_prompt, \
                   …), or make examples with cai critique",
        }),
    }
}

/// The dialogues of a pair split where they part: the shared turns up to the last user turn
/// before the first difference, and each side's rest.
fn split_pair(
    chosen: Vec<Message>,
    rejected: Vec<Message>,
    id: String,
    row: usize,
) -> Result<PairRecord, ImportError> {
    let same = chosen
        .iter()
        .zip(&rejected)
        .take_while(|(a, b)| a == b)
        .count();
    let Some(last_user) = chosen[..same].iter().rposition(|m| m.role == Role::User) else {
        return Err(ImportError::Row {
            row,
            message: "chosen and rejected share no user turn; expected two answers to the same \
                      prompt"
                .into(),
        });
    };
    let split = last_user + 1;
    if split == chosen.len() || split == rejected.len() {
        return Err(ImportError::Row {
            row,
            message: "chosen or rejected has no answer after the shared prompt; expected each \
                      to end with the assistant's answer"
                .into(),
        });
    }
    if chosen == rejected {
        return Err(ImportError::Row {
            row,
            message: "chosen and rejected are the same dialogue; expected two different answers"
                .into(),
        });
    }
    Ok(PairRecord {
        id,
        prompt: chosen[..split].to_vec(),
        chosen: chosen[split..].to_vec(),
        rejected: rejected[split..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_are_detected_from_columns_most_specific_first() {
        let cases: [(&[&str], Shape); 10] = [
            (&["prompt"], Shape::Cai),
            (&["id", "messages"], Shape::Cai),
            (&["chosen", "rejected"], Shape::HhRlhf),
            (&["prompt", "chosen", "rejected"], Shape::Cai),
            (
                &[
                    "init_prompt",
                    "init_response",
                    "revision_response",
                    "prompt",
                    "chosen",
                    "rejected",
                ],
                Shape::CaiConversation,
            ),
            (
                &["Behavior", "SemanticCategory", "BehaviorID"],
                Shape::HarmBench,
            ),
            (&["behavior", "category"], Shape::HarmBench),
            (
                &["id", "question", "risk_area", "types_of_harm"],
                Shape::DoNotAnswer,
            ),
            (
                &["transcript", "task_description", "rating", "tags"],
                Shape::RedTeamAttempts,
            ),
            (&["prompt", "transcript"], Shape::Cai),
        ];
        for (columns, shape) in cases {
            assert_eq!(detect_shape(columns).unwrap(), shape, "{columns:?}");
        }
        let err = detect_shape(&["text", "label"]).unwrap_err().to_string();
        assert!(err.contains("[\"text\", \"label\"]"), "{err}");
        for shape in Shape::ALL {
            assert_eq!(Shape::from_name(shape.name()).unwrap(), shape);
        }
        let err = Shape::from_name("harm-bench").unwrap_err().to_string();
        assert!(
            err.contains("unknown dataset shape \"harm-bench\""),
            "{err}"
        );
    }

    #[test]
    fn cai_rows_keep_their_id_and_category() {
        let row = json!({"id": 3, "prompt": "Hi?", "category": "misc"});
        let record = prompt_record(Shape::Cai, &row, 9).unwrap();
        assert_eq!(record.id, "3");
        assert_eq!(record.messages, [Message::user("Hi?")]);
        assert_eq!(record.category.as_deref(), Some("misc"));
        let record = prompt_record(Shape::Cai, &json!({"prompt": "Hi?"}), 9).unwrap();
        assert_eq!(record.id, "9");
        let err = prompt_record(Shape::Cai, &json!({"prompt": 3}), 4).unwrap_err();
        assert_eq!(
            err.to_string(),
            "row 4: \"prompt\" is not a string; expected the user's request"
        );
        assert_eq!(
            err.detail(),
            "\"prompt\" is not a string; expected the user's request"
        );
        let err = prompt_record(Shape::HarmBench, &json!({"Behavior": 1}), 4).unwrap_err();
        assert_eq!(
            err.detail(),
            "column \"Behavior\": is a number; expected text"
        );
        let err = prompt_record(Shape::Cai, &json!([1]), 2)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("row 2: expected an object"), "{err}");
    }

    #[test]
    fn prompt_records_serialize_as_cai_prompt_records() {
        let record = PromptRecord {
            id: "b1".into(),
            messages: vec![Message::user("Q")],
            category: Some("crime".into()),
            fields: BTreeMap::from([("tags".to_owned(), "x".to_owned())]),
        };
        assert_eq!(
            serde_json::to_value(&record).unwrap(),
            json!({"id": "b1", "prompt": "Q", "category": "crime", "tags": "x"})
        );
        let record = PromptRecord {
            messages: vec![Message::system("S"), Message::user("Q")],
            category: None,
            fields: BTreeMap::new(),
            ..record
        };
        assert_eq!(
            serde_json::to_value(&record).unwrap(),
            json!({"id": "b1", "messages": [
                {"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]})
        );
    }

    #[test]
    fn shapes_without_pairs_or_examples_say_so() {
        let row = json!({"Behavior": "x"});
        let err = pair_record(Shape::HarmBench, &row, 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("harmbench rows hold no preference pairs"),
            "{err}"
        );
        let err = pair_record(Shape::RedTeamAttempts, &json!({"transcript": "x"}), 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("red-team-attempts rows hold no preference pairs"),
            "{err}"
        );
        let err = critique_example(Shape::HhRlhf, &row, 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("hh-rlhf rows hold no critique/revision examples"),
            "{err}"
        );
    }

    #[test]
    fn pairs_split_where_the_dialogues_part() {
        let (u, a) = (Message::user, Message::assistant);
        let pair = split_pair(
            vec![u("Q1"), a("A1"), u("Q2"), a("good")],
            vec![u("Q1"), a("A1"), u("Q2"), a("bad")],
            "7".into(),
            0,
        )
        .unwrap();
        assert_eq!(pair.prompt, [u("Q1"), a("A1"), u("Q2")]);
        assert_eq!(
            (pair.chosen, pair.rejected),
            (vec![a("good")], vec![a("bad")])
        );
        let same = vec![u("Q"), a("A")];
        let err = split_pair(same.clone(), same, "x".into(), 5)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("row 5: chosen and rejected are the same"),
            "{err}"
        );
        let err = split_pair(vec![u("Q")], vec![u("Q"), a("A")], "x".into(), 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no answer after the shared prompt"), "{err}");
        let err = split_pair(vec![u("Q"), a("A")], vec![u("R"), a("A")], "x".into(), 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("share no user turn"), "{err}");
    }
}
