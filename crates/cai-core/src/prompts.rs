//! Prompt inputs of the stages: JSONL records with `prompt` (a user request) or `messages`
//! (a dialogue ending with a user turn), hh-rlhf records whose `chosen`/`rejected`
//! transcripts give the red-team prompt as their first human turn, and the rows of the
//! datasets [`crate::import`] knows (HarmBench, Do-Not-Answer, `cai-conversation-harmless`,
//! hh-rlhf's `red-team-attempts`).
//! Every prompt has an id.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::dialogue::{first_user_turn, parse_transcript, Message, Role, HUMAN};
use crate::import::{detect_shape, prompt_record, Shape};
use crate::jsonl::read_jsonl_values;
use crate::Error;

/// One prompt: the dialogue to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The record's `"id"` (a string, or a number written out), else the 0-based line index.
    pub id: String,
    /// 1-based line in the input file, for messages.
    pub line: usize,
    /// The dialogue, ending with a user turn; a system message may come first.
    pub messages: Vec<Message>,
}

impl Prompt {
    /// The last user turn: the request itself.
    pub fn request(&self) -> &str {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map_or("", |m| m.content.as_str())
    }
}

/// Read a prompt file. Each line is an object with one of (in this order of preference):
/// - `"prompt"`: the user's request as a string; a string that is itself a transcript
///   (`"\n\nHuman: …"`) is parsed into its turns;
/// - `"messages"`: `[{role, content}]`, ending with a user turn (a trailing empty assistant
///   turn is dropped);
/// - `"chosen"` or `"rejected"`: hh-rlhf transcripts; the prompt is the first human turn;
/// - without `"prompt"` or `"messages"`, a row of a dataset shape that [`detect_shape`] finds
///   from its keys: HarmBench (`Behavior`; id `BehaviorID`), Do-Not-Answer (`question`),
///   Hugging Face's `cai-conversation-harmless` (`init_prompt`) or hh-rlhf's
///   `red-team-attempts` (`transcript`: its first human turn).
///
/// An optional `"id"` (string or number) names the record; without one, the 0-based line
/// index does (stable across runs of the same file). Errors name the file, line and field.
pub fn read_prompts(path: &Path) -> Result<Vec<Prompt>, Error> {
    prompts_from_records(path, read_jsonl_values(path)?)
}

/// The prompts of records already read (`(line, object)` pairs, as
/// [`read_jsonl_values`] gives them), checked as [`read_prompts`] checks each line; `path`
/// names the source in errors.
pub fn prompts_from_records(
    path: &Path,
    records: Vec<(usize, Value)>,
) -> Result<Vec<Prompt>, Error> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut prompts = Vec::new();
    for (line, value) in records {
        let bad = |message: String| Error::Jsonl {
            path: path.to_path_buf(),
            line,
            message,
        };
        let Value::Object(object) = value else {
            return Err(bad(format!(
                "{value} is not an object; expected a JSON object"
            )));
        };
        if let Some(shape) = dataset_shape(&object) {
            let record = prompt_record(shape, &Value::Object(object), line - 1)
                .map_err(|e| bad(format!("{shape} row: {}", e.detail())))?;
            if let Some(first) = seen.insert(record.id.clone(), line) {
                return Err(bad(format!(
                    "id {:?} was already used on line {first}; expected every record to have \
                     its own id",
                    record.id
                )));
            }
            prompts.push(Prompt {
                id: record.id,
                line,
                messages: record.messages,
            });
            continue;
        }
        let id = match object.get("id") {
            None => (line - 1).to_string(),
            Some(Value::String(id)) => id.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(bad(format!(
                    "\"id\" is {other}; expected a string or a number"
                )))
            }
        };
        if let Some(first) = seen.insert(id.clone(), line) {
            return Err(bad(format!(
                "id {id:?} was already used on line {first}; expected every record to have \
                 its own id"
            )));
        }
        let messages = prompt_messages(&object).map_err(bad)?;
        prompts.push(Prompt { id, line, messages });
    }
    Ok(prompts)
}

/// The id a dataset row gives itself in a column other than `"id"` (HarmBench's
/// `BehaviorID`) when [`read_prompts`] reads the row in that dataset's shape, so that a tool
/// joining prompt files can write it as the record's `"id"` and both agree.
pub fn dataset_row_id(object: &Map<String, Value>) -> Option<String> {
    match dataset_shape(object)? {
        Shape::HarmBench => match object.get("BehaviorID")? {
            Value::String(id) if !id.is_empty() => Some(id.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// The dataset shape of a record without `prompt` or `messages`, when [`detect_shape`]
/// finds one other than cai's own and hh-rlhf's (which [`prompt_messages`] reads): such
/// records were errors before, so files in cai's shapes read as they always did.
fn dataset_shape(object: &Map<String, Value>) -> Option<Shape> {
    if object.contains_key("prompt") || object.contains_key("messages") {
        return None;
    }
    let columns: Vec<&str> = object.keys().map(String::as_str).collect();
    detect_shape(&columns)
        .ok()
        .filter(|shape| !matches!(shape, Shape::Cai | Shape::HhRlhf))
}

/// The dialogue a record asks to answer, read as [`read_prompts`] reads each line; the error
/// says which field is wrong and what was expected.
pub fn prompt_messages(object: &Map<String, Value>) -> Result<Vec<Message>, String> {
    if let Some(prompt) = object.get("prompt") {
        let Value::String(text) = prompt else {
            return Err("\"prompt\" is not a string; expected the user's request".into());
        };
        if text.trim().is_empty() {
            return Err("\"prompt\" is empty; expected the user's request".into());
        }
        let transcript = text.starts_with(HUMAN) || text.starts_with(&format!("\n\n{HUMAN}"));
        if transcript {
            let messages = parse_transcript(text).map_err(|e| format!("\"prompt\": {e}"))?;
            return check_dialogue(messages, "prompt");
        }
        return Ok(vec![Message::user(text.trim())]);
    }
    if let Some(messages) = object.get("messages") {
        let messages: Vec<Message> = serde_json::from_value(messages.clone()).map_err(|e| {
            format!(
                "\"messages\" is not a list of {{\"role\", \"content\"}} objects with role \
                 system, user or assistant ({e})"
            )
        })?;
        return check_dialogue(messages, "messages");
    }
    for key in ["chosen", "rejected"] {
        if let Some(value) = object.get(key) {
            let Value::String(text) = value else {
                return Err(format!(
                    "\"{key}\" is not a string; expected an hh-rlhf transcript"
                ));
            };
            let request = first_user_turn(text).map_err(|e| format!("\"{key}\": {e}"))?;
            return Ok(vec![Message::user(request)]);
        }
    }
    let keys: Vec<String> = object.keys().map(|k| format!("\"{k}\"")).collect();
    Err(format!(
        "expected \"prompt\" (a string), \"messages\" ([{{role, content}}]) or hh-rlhf's \
         \"chosen\"/\"rejected\" transcripts; found {}",
        if keys.is_empty() {
            "an empty object".to_owned()
        } else {
            format!("keys {}", keys.join(", "))
        }
    ))
}

/// Drop a trailing empty assistant turn, then require a user turn last and a system message
/// only first.
fn check_dialogue(mut messages: Vec<Message>, field: &str) -> Result<Vec<Message>, String> {
    if messages
        .last()
        .is_some_and(|m| m.role == Role::Assistant && m.content.trim().is_empty())
    {
        messages.pop();
    }
    if messages.iter().skip(1).any(|m| m.role == Role::System) {
        return Err(format!(
            "\"{field}\": a system message is only allowed first"
        ));
    }
    match messages.last() {
        Some(m) if m.role == Role::User => Ok(messages),
        Some(_) => Err(format!(
            "\"{field}\" ends with an assistant turn; expected the user's request last"
        )),
        None => Err(format!("\"{field}\" is empty; expected a user turn")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<Prompt>, Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prompts.jsonl");
        std::fs::write(&path, text).unwrap();
        read_prompts(&path)
    }

    #[test]
    fn reads_every_shape_with_ids() {
        let prompts = read(concat!(
            "{\"prompt\": \" How do I pick a lock? \"}\n",
            "\n",
            "{\"id\": \"m\", \"messages\": [{\"role\": \"system\", \"content\": \"S\"}, ",
            "{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"\"}]}\n",
            "{\"id\": 7, \"chosen\": \"\\n\\nHuman: Steal a car?\\n\\nAssistant: No.\", ",
            "\"rejected\": \"\\n\\nHuman: Steal a car?\\n\\nAssistant: Yes.\"}\n",
            "{\"rejected\": \"\\n\\nHuman: Rob a bank?\\n\\nAssistant: Sure.\"}\n",
            "{\"prompt\": \"\\n\\nHuman: Q1\\n\\nAssistant: A1\\n\\nHuman: Q2\\n\\nAssistant:\"}\n",
        ))
        .unwrap();
        let ids: Vec<&str> = prompts.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["0", "m", "7", "4", "5"]);
        assert_eq!(
            prompts[0].messages,
            [Message::user("How do I pick a lock?")]
        );
        assert_eq!(
            prompts[1].messages,
            [Message::system("S"), Message::user("Hi")]
        );
        assert_eq!(prompts[2].request(), "Steal a car?");
        assert_eq!(prompts[2].line, 4);
        assert_eq!(prompts[3].request(), "Rob a bank?");
        assert_eq!(prompts[4].messages.len(), 3);
        assert_eq!(prompts[4].request(), "Q2");
    }

    #[test]
    fn reads_harmbench_do_not_answer_and_cai_conversation_rows() {
        let prompts = read(concat!(
            "{\"Behavior\": \"Write a threat\", \"SemanticCategory\": \"harassment\", ",
            "\"ContextString\": \"\", \"BehaviorID\": \"threat_1\"}\n",
            "{\"Behavior\": \"Summarise it\", \"ContextString\": \"An article.\"}\n",
            "{\"id\": 12, \"question\": \"Tell me a secret.\", \"risk_area\": \"Information Hazards\"}\n",
            "{\"init_prompt\": \"Hotwire a car?\", \"init_response\": \"Sure.\", ",
            "\"revision_response\": \"No.\", \"chosen\": [], \"rejected\": []}\n",
        ))
        .unwrap();
        let got: Vec<(&str, &str)> = prompts
            .iter()
            .map(|p| (p.id.as_str(), p.request()))
            .collect();
        assert_eq!(
            got,
            [
                ("threat_1", "Write a threat"),
                ("1", "An article.\n\n---\n\nSummarise it"),
                ("12", "Tell me a secret."),
                ("3", "Hotwire a car?"),
            ]
        );
        let err = read("{\"Behavior\": 7}\n").unwrap_err().to_string();
        assert!(
            err.contains("prompts.jsonl:1: harmbench row: column \"Behavior\": is a number"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let cases = [
            ("{\"prompt\": 3}\n", 1, "\"prompt\" is not a string"),
            ("{}\n{\"prompt\": \"\"}\n", 1, "found an empty object"),
            ("{\"prompt\": \"a\"}\n{\"text\": \"a\"}\n", 2, "found keys \"text\""),
            ("{\"prompt\": \"a\"}\n{\"prompt\": \"\"}\n", 2, "\"prompt\" is empty"),
            (
                "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}\n",
                1,
                "ends with an assistant turn",
            ),
            ("{\"messages\": [{\"role\": \"robot\", \"content\": \"a\"}]}\n", 1, "role system, user or assistant"),
            ("{\"chosen\": \"no transcript\"}\n", 1, "\"chosen\": expected a transcript"),
            ("{\"id\": 1, \"prompt\": \"a\"}\n{\"id\": \"1\", \"prompt\": \"b\"}\n", 2, "already used on line 1"),
            ("{\"id\": null, \"prompt\": \"a\"}\n", 1, "\"id\" is null"),
            ("{\"prompt\": \"a\"}\n{\"prompt\": \n", 2, "not valid JSON"),
        ];
        for (text, line, expected) in cases {
            let err = read(text).unwrap_err();
            assert!(
                matches!(&err, Error::Jsonl { line: l, .. } if *l == line),
                "{text}: {err:?}"
            );
            let err = err.to_string();
            assert!(err.contains(&format!("prompts.jsonl:{line}: ")), "{err}");
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }
}
