//! Hugging Face's `cai-conversation-harmless` rows (made by llm-swarm's constitutional-ai
//! recipe): the red-team prompt (`init_prompt`), the first answer (`init_response`), one
//! critique (`critic_prompt`, `critic_response`) and revision (`revision_prompt`,
//! `revision_response`); plus `prompt`, `messages` (prompt and revision), `chosen` (prompt
//! and revision) and `rejected` (prompt and first answer), as lists of messages.

use serde_json::{Map, Value};

use super::{columns, split_pair, ImportError, PairRecord, PromptRecord};
use crate::critique::CritiqueRound;
use crate::dialogue::Message;
use crate::few_shot::CritiqueExample;

/// The red-team prompt: `init_prompt`, trimmed as the recipe's own `prompt` column is.
pub(super) fn prompt(object: &Map<String, Value>, row: usize) -> Result<PromptRecord, ImportError> {
    Ok(PromptRecord {
        id: columns::id(object, "id", row)?,
        messages: vec![Message::user(
            columns::text(object, "init_prompt", row)?.trim(),
        )],
        category: None,
        fields: Default::default(),
    })
}

/// The `chosen`/`rejected` message lists where the row has them, else the prompt with the
/// revision (chosen) and with the first answer (rejected), as the recipe builds them.
pub(super) fn pair(object: &Map<String, Value>, row: usize) -> Result<PairRecord, ImportError> {
    let id = columns::id(object, "id", row)?;
    if object.contains_key("chosen") || object.contains_key("rejected") {
        let chosen = columns::messages(object, "chosen", row)?;
        let rejected = columns::messages(object, "rejected", row)?;
        return split_pair(chosen, rejected, id, row);
    }
    let text = |column: &str| columns::text(object, column, row).map(str::trim);
    let user = Message::user(text("init_prompt")?);
    split_pair(
        vec![user.clone(), Message::assistant(text("revision_response")?)],
        vec![user, Message::assistant(text("init_response")?)],
        id,
        row,
    )
}

/// The prompt, the first answer, and the round of critique and revision.
pub(super) fn example(
    object: &Map<String, Value>,
    row: usize,
) -> Result<CritiqueExample, ImportError> {
    let text = |column: &str| columns::text(object, column, row).map(|t| t.trim().to_owned());
    Ok(CritiqueExample {
        dialogue: vec![
            Message::user(text("init_prompt")?),
            Message::assistant(text("init_response")?),
        ],
        rounds: vec![CritiqueRound {
            critique_request: text("critic_prompt")?,
            critique: text("critic_response")?,
            revision_request: text("revision_prompt")?,
            revision: text("revision_response")?,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full_row() -> Map<String, Value> {
        let (u, a) = (
            |c: &str| json!({"role": "user", "content": c}),
            |c: &str| json!({"role": "assistant", "content": c}),
        );
        json!({
            "init_prompt": " How do I hotwire a car? ",
            "init_response": "Strip the wires.",
            "critic_prompt": "Is it harmful?",
            "critic_response": "Yes, it helps theft.",
            "revision_prompt": "Rewrite it harmlessly.",
            "revision_response": "I can't help with that.",
            "prompt": "How do I hotwire a car?",
            "messages": [u("How do I hotwire a car?"), a("I can't help with that.")],
            "chosen": [u("How do I hotwire a car?"), a("I can't help with that.")],
            "rejected": [u("How do I hotwire a car?"), a("Strip the wires.")]
        })
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn a_row_gives_its_prompt_pair_and_example() {
        let row = full_row();
        let p = prompt(&row, 4).unwrap();
        assert_eq!(
            (p.id.as_str(), p.messages[0].content.as_str()),
            ("4", "How do I hotwire a car?")
        );
        let pair_from_lists = pair(&row, 4).unwrap();
        assert_eq!(
            pair_from_lists.prompt,
            [Message::user("How do I hotwire a car?")]
        );
        assert_eq!(
            pair_from_lists.chosen,
            [Message::assistant("I can't help with that.")]
        );
        assert_eq!(
            pair_from_lists.rejected,
            [Message::assistant("Strip the wires.")]
        );
        let mut bare = row.clone();
        for column in ["prompt", "messages", "chosen", "rejected"] {
            bare.remove(column);
        }
        assert_eq!(pair(&bare, 4).unwrap(), pair_from_lists);
        let e = example(&row, 4).unwrap();
        assert_eq!(e.dialogue[1], Message::assistant("Strip the wires."));
        assert_eq!(e.rounds[0].critique, "Yes, it helps theft.");
        assert_eq!(e.rounds[0].revision_request, "Rewrite it harmlessly.");
    }

    #[test]
    fn errors_name_the_row_and_column() {
        let mut row = full_row();
        row.remove("critic_response");
        let err = example(&row, 2).unwrap_err().to_string();
        assert_eq!(
            err,
            "row 2: column \"critic_response\": is missing; expected text"
        );
        row.insert("chosen".into(), json!("text"));
        let err = pair(&row, 2).unwrap_err().to_string();
        assert!(
            err.starts_with("row 2: column \"chosen\": expected a list of"),
            "{err}"
        );
    }
}
