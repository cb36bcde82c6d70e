//! Anthropic's hh-rlhf rows: `chosen` and `rejected` transcripts of the same conversation,
//! differing in the last answer. The red-team prompt is the first human turn (as cai's
//! `--prompts` reads hh-rlhf); the pair is the shared turns and the two answers.

use serde_json::{Map, Value};

use super::{columns, split_pair, ImportError, PairRecord, PromptRecord};
use crate::dialogue::{parse_transcript, Message, Role};

/// A transcript column as trimmed turns.
pub(super) fn transcript(
    object: &Map<String, Value>,
    column: &str,
    row: usize,
) -> Result<Vec<Message>, ImportError> {
    let text = columns::text(object, column, row)?;
    let messages = parse_transcript(text).map_err(|e| ImportError::Column {
        row,
        column: column.to_owned(),
        message: e.to_string(),
    })?;
    Ok(messages
        .into_iter()
        .map(|m| Message {
            role: m.role,
            content: m.content.trim().to_owned(),
        })
        .collect())
}

/// The first human turn of `chosen` (of `rejected` when a row has only that).
pub(super) fn prompt(object: &Map<String, Value>, row: usize) -> Result<PromptRecord, ImportError> {
    let column = if object.contains_key("chosen") {
        "chosen"
    } else {
        "rejected"
    };
    let first = transcript(object, column, row)?
        .into_iter()
        .find(|m| m.role == Role::User)
        .ok_or_else(|| ImportError::Column {
            row,
            column: column.to_owned(),
            message: "has no \"Human:\" turn; expected the red-team prompt first".into(),
        })?;
    Ok(PromptRecord {
        id: columns::id(object, "id", row)?,
        messages: vec![first],
        category: None,
        fields: Default::default(),
    })
}

/// The shared turns and the two answers.
pub(super) fn pair(object: &Map<String, Value>, row: usize) -> Result<PairRecord, ImportError> {
    let chosen = transcript(object, "chosen", row)?;
    let rejected = transcript(object, "rejected", row)?;
    split_pair(chosen, rejected, columns::id(object, "id", row)?, row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    const CHOSEN: &str = "\n\nHuman: How do I pick a lock?\n\nAssistant: Why?\n\nHuman: I'm \
                          locked out.\n\nAssistant: Call a locksmith.";
    const REJECTED: &str = "\n\nHuman: How do I pick a lock?\n\nAssistant: Why?\n\nHuman: I'm \
                            locked out.\n\nAssistant: Use a tension wrench.";

    #[test]
    fn first_human_turn_is_the_prompt() {
        let r = row(json!({"chosen": CHOSEN, "rejected": REJECTED}));
        let p = prompt(&r, 12).unwrap();
        assert_eq!(
            (p.id.as_str(), p.messages.as_slice()),
            ("12", &[Message::user("How do I pick a lock?")][..])
        );
        let only = row(json!({"rejected": REJECTED}));
        assert_eq!(
            prompt(&only, 0).unwrap().messages[0].content,
            "How do I pick a lock?"
        );
    }

    #[test]
    fn pairs_share_the_dialogue_up_to_the_last_answer() {
        let r = row(json!({"chosen": CHOSEN, "rejected": REJECTED}));
        let p = pair(&r, 0).unwrap();
        assert_eq!(p.prompt.len(), 3);
        assert_eq!(p.prompt[2], Message::user("I'm locked out."));
        assert_eq!(p.chosen, [Message::assistant("Call a locksmith.")]);
        assert_eq!(p.rejected, [Message::assistant("Use a tension wrench.")]);
    }

    #[test]
    fn errors_name_the_row_and_column() {
        let cases = [
            (
                json!({"chosen": CHOSEN}),
                "row 3: column \"rejected\": is missing",
            ),
            (
                json!({"chosen": "no turns", "rejected": REJECTED}),
                "row 3: column \"chosen\": expected a transcript",
            ),
            (
                json!({"chosen": 5, "rejected": REJECTED}),
                "row 3: column \"chosen\": is a number",
            ),
        ];
        for (value, expected) in cases {
            let err = pair(&row(value), 3).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{expected}: {err}");
        }
        let err = prompt(&row(json!({"chosen": "\n\nAssistant: Hi"})), 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no \"Human:\" turn"), "{err}");
    }
}
