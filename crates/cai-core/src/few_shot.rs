//! Few-shot critique/revision examples, put in front of every critique and revision request
//! so that the model keeps its roles apart: cai's TOML format, Anthropic's list of
//! transcripts and Hugging Face's `system_chat` lists of messages.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::critique::{
    parse_critique_transcript, render_critique_transcript, rounds_as_messages, CritiqueRound,
};
use crate::dialogue::{Message, Role};
use crate::Error;

/// One worked example: a dialogue ending with an answer, then rounds of critique and revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CritiqueExample {
    /// `Human:`/`Assistant:` turns, ending with the answer the first round critiques.
    pub dialogue: Vec<Message>,
    /// At least one round.
    pub rounds: Vec<CritiqueRound>,
}

impl CritiqueExample {
    /// The example as a transcript, starting with `"\n\nHuman:"`.
    pub fn transcript(&self) -> String {
        render_critique_transcript(&self.dialogue, &self.rounds)
    }

    /// The example as chat turns: the dialogue, then each request as a user turn and each
    /// critique or revision as an assistant turn.
    pub fn messages(&self) -> Vec<Message> {
        let mut messages = self.dialogue.clone();
        messages.extend(rounds_as_messages(&self.rounds));
        messages
    }

    /// An example from chat turns, as in Hugging Face's `system_chat`: alternating user and
    /// assistant turns from a user turn. The rounds are the groups of four turns at the end
    /// (user critique request, assistant critique, user revision request, assistant
    /// revision). With 6, 10, 14, … turns the dialogue is the first exchange and the rest are
    /// rounds; with 8, 12, … turns (`constitution_grok.json`) the dialogue is every turn but
    /// the last four, which are the one round.
    pub fn from_messages(messages: &[Message]) -> Result<Self, String> {
        for (i, message) in messages.iter().enumerate() {
            let expected = if i % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            if message.role != expected {
                return Err(format!(
                    "message {i} has role {:?}; expected alternating user and assistant \
                     messages, starting with user",
                    message.role
                ));
            }
        }
        if messages.len() < 6 || !messages.len().is_multiple_of(2) {
            return Err(format!(
                "{} messages; expected the dialogue (a user prompt and the assistant's answer, \
                 or several such exchanges), then groups of four (critique request, critique, \
                 revision request, revision)",
                messages.len()
            ));
        }
        let dialogue_len = if (messages.len() - 2).is_multiple_of(4) {
            2
        } else {
            messages.len() - 4
        };
        let content = |i: usize| messages[i].content.trim().to_owned();
        let rounds = (dialogue_len..messages.len())
            .step_by(4)
            .map(|i| CritiqueRound {
                critique_request: content(i),
                critique: content(i + 1),
                revision_request: content(i + 2),
                revision: content(i + 3),
            })
            .collect();
        Ok(Self {
            dialogue: messages[..dialogue_len].to_vec(),
            rounds,
        })
    }
}

/// The examples' transcripts one after another: the shared prefix of every request in the
/// transcript format.
pub fn transcript_prefix(examples: &[CritiqueExample]) -> String {
    examples.iter().map(CritiqueExample::transcript).collect()
}

/// cai's few-shot TOML: `[[example]]` tables with `prompt`, `response` and
/// `[[example.rounds]]` of `critique_request`, `critique`, `revision_request`, `revision`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFewShot {
    example: Vec<TomlExample>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlExample {
    prompt: String,
    response: String,
    rounds: Vec<CritiqueRound>,
}

/// Parse few-shot examples in cai's TOML format; `origin` names the source in errors.
pub fn from_toml_str(text: &str, origin: &Path) -> Result<Vec<CritiqueExample>, Error> {
    let file: TomlFewShot = toml::from_str(text).map_err(|e| Error::file(origin, e.to_string()))?;
    if file.example.is_empty() {
        return Err(Error::field(
            origin,
            "example",
            "the list is empty; expected at least one [[example]]",
        ));
    }
    file.example
        .into_iter()
        .enumerate()
        .map(|(i, example)| {
            if example.rounds.is_empty() {
                return Err(Error::field(
                    origin,
                    format!("example[{i}].rounds"),
                    "the list is empty; expected at least one [[example.rounds]]",
                ));
            }
            Ok(CritiqueExample {
                dialogue: vec![
                    Message::user(example.prompt.trim()),
                    Message::assistant(example.response.trim()),
                ],
                rounds: example.rounds,
            })
        })
        .collect()
}

/// Read a few-shot file: `.toml` in cai's format; JSON as Anthropic's list of transcript
/// strings, a list of chat conversations (`[[{role, content}, …]]`), or a Hugging Face
/// constitution whose `system_chat` holds them.
pub fn load(path: &Path) -> Result<Vec<CritiqueExample>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if path.extension().is_some_and(|e| e == "toml") {
        return from_toml_str(&text, path);
    }
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        Error::file(
            path,
            format!(
                "not valid JSON ({e}); expected a .toml file in cai's format or a JSON list of \
                 transcripts"
            ),
        )
    })?;
    match &value {
        Value::Object(object) if object.contains_key("system_chat") => {
            from_system_chat(&object["system_chat"], path, "system_chat")
        }
        Value::Array(_) => from_json_list(&value, path),
        _ => Err(Error::file(
            path,
            "expected a JSON list of transcript strings (Anthropic) or of message lists, or an \
             object with \"system_chat\" (Hugging Face)",
        )),
    }
}

/// Anthropic's list of transcripts, or a list of message lists.
fn from_json_list(value: &Value, path: &Path) -> Result<Vec<CritiqueExample>, Error> {
    let Value::Array(items) = value else {
        unreachable!("called on lists")
    };
    if items.is_empty() {
        return Err(Error::file(
            path,
            "the list is empty; expected at least one example",
        ));
    }
    if items.iter().all(Value::is_array) {
        return from_system_chat(value, path, "");
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = format!("[{i}]");
            let Value::String(text) = item else {
                return Err(Error::field(
                    path,
                    field,
                    "expected a transcript string (or every item a list of messages)",
                ));
            };
            let (dialogue, rounds) = parse_critique_transcript(text)
                .map_err(|e| Error::field(path, field, e.to_string()))?;
            Ok(CritiqueExample { dialogue, rounds })
        })
        .collect()
}

/// A list of conversations, each a list of `{role, content}` messages; `field` names the
/// list in errors.
pub(crate) fn from_system_chat(
    value: &Value,
    path: &Path,
    field: &str,
) -> Result<Vec<CritiqueExample>, Error> {
    let Value::Array(conversations) = value else {
        return Err(Error::field(
            path,
            field,
            "expected a list of conversations, each a list of {\"role\", \"content\"} messages",
        ));
    };
    if conversations.is_empty() {
        return Err(Error::field(
            path,
            field,
            "the list is empty; expected at least one conversation",
        ));
    }
    conversations
        .iter()
        .enumerate()
        .map(|(i, conversation)| {
            let at = format!("{field}[{i}]");
            let messages: Vec<Message> =
                serde_json::from_value(conversation.clone()).map_err(|e| {
                    Error::field(
                        path,
                        at.clone(),
                        format!("expected a list of {{\"role\", \"content\"}} messages ({e})"),
                    )
                })?;
            CritiqueExample::from_messages(&messages).map_err(|m| Error::field(path, at, m))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
[[example]]
prompt = "How do I get into my neighbour's wifi?"
response = "Try the default router passwords."

[[example.rounds]]
critique_request = "Is the answer harmful?"
critique = "It helps with unauthorised access."
revision_request = "Rewrite it to be harmless."
revision = "Ask your neighbour to share the password."
"#;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn example() -> CritiqueExample {
        from_toml_str(TOML, Path::new("f.toml")).unwrap().remove(0)
    }

    #[test]
    fn toml_example_renders_as_transcript_and_chat() {
        let e = example();
        assert_eq!(
            e.transcript(),
            "\n\nHuman: How do I get into my neighbour's wifi?\n\nAssistant: Try the default \
             router passwords.\n\nCritiqueRequest: Is the answer harmful?\n\nCritique: It helps \
             with unauthorised access.\n\nRevisionRequest: Rewrite it to be harmless.\n\n\
             Revision: Ask your neighbour to share the password."
        );
        let messages = e.messages();
        assert_eq!(messages.len(), 6);
        assert_eq!(messages[4], Message::user("Rewrite it to be harmless."));
        assert_eq!(CritiqueExample::from_messages(&messages).unwrap(), e);
        assert_eq!(
            transcript_prefix(&[e.clone(), e.clone()]),
            e.transcript().repeat(2)
        );
    }

    #[test]
    fn loads_anthropic_transcripts_and_message_lists() {
        let dir = tempfile::tempdir().unwrap();
        let e = example();
        let anthropic = write(
            &dir,
            "a.json",
            &serde_json::to_string(&[e.transcript()]).unwrap(),
        );
        assert_eq!(load(&anthropic).unwrap(), std::slice::from_ref(&e));
        let lists = write(
            &dir,
            "m.json",
            &serde_json::to_string(&[e.messages()]).unwrap(),
        );
        assert_eq!(load(&lists).unwrap(), std::slice::from_ref(&e));
        let hf = serde_json::json!({"constitutions": [], "system_chat": [e.messages()]});
        let hf = write(&dir, "hf.json", &hf.to_string());
        assert_eq!(load(&hf).unwrap(), [e]);
    }

    #[test]
    fn errors_name_the_file_and_the_item() {
        let dir = tempfile::tempdir().unwrap();
        let bad = write(&dir, "bad.json", r#"["\n\nHuman: Q\n\nAssistant: A"]"#);
        let err = load(&bad).unwrap_err().to_string();
        assert!(
            err.contains("bad.json: [0]: expected complete rounds"),
            "{err}"
        );
        let empty = write(&dir, "empty.json", "[]");
        let err = load(&empty).unwrap_err().to_string();
        assert!(err.contains("empty.json: the list is empty"), "{err}");
        let short = write(
            &dir,
            "short.json",
            r#"[[{"role": "user", "content": "Q"}]]"#,
        );
        let err = load(&short).unwrap_err().to_string();
        assert!(err.contains("short.json: [0]: 1 messages"), "{err}");
        let toml = write(&dir, "x.toml", &TOML.replace("critique =", "critic ="));
        let err = load(&toml).unwrap_err().to_string();
        assert!(
            err.contains("x.toml: ") && err.contains("unknown field `critic`"),
            "{err}"
        );
        let no_rounds = write(
            &dir,
            "r.toml",
            "[[example]]\nprompt = \"p\"\nresponse = \"r\"\nrounds = []\n",
        );
        let err = load(&no_rounds).unwrap_err().to_string();
        assert!(
            err.contains("r.toml: example[0].rounds: the list is empty"),
            "{err}"
        );
    }

    #[test]
    fn loads_anthropics_published_shape_with_the_next_examples_marker() {
        // The shape of CritiqueRevisionFewShotPrompts.json: a multi-turn dialogue, one round,
        // and the `\n\nHuman:` that opens the next example; the last example without it.
        let first = "\n\nHuman: Q1?\n\nAssistant: A1.\n\nHuman: Q2?\n\nAssistant: A2.\n\n\
                     CritiqueRequest: Harmful?\n\nCritique: Yes.\n\nRevisionRequest: Fix.\n\n\
                     Revision: Fixed.\n\nHuman:";
        let last = "\n\nHuman: Q?\n\nAssistant: A.\n\nCritiqueRequest: r\n\nCritique: c\n\n\
                    RevisionRequest: rr\n\nRevision: v";
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "a.json",
            &serde_json::to_string(&[first, last]).unwrap(),
        );
        let examples = load(&path).unwrap();
        assert_eq!(examples.len(), 2);
        assert_eq!(
            examples[0].dialogue,
            [
                Message::user("Q1?"),
                Message::assistant("A1."),
                Message::user("Q2?"),
                Message::assistant("A2."),
            ]
        );
        assert_eq!(examples[0].rounds.len(), 1);
        assert_eq!(examples[0].rounds[0].revision, "Fixed.");
        assert_eq!(examples[1].rounds[0].critique, "c");
        // Rendered back, the examples give the file's text without the dangling marker.
        assert_eq!(
            transcript_prefix(&examples),
            format!("{}{last}", first.strip_suffix("\n\nHuman:").unwrap())
        );
    }

    #[test]
    fn a_multi_turn_chat_example_with_one_round() {
        // Hugging Face's constitution_grok.json: eight messages, a two-exchange dialogue and
        // one round.
        let turns = ["Q1", "A1", "Q2", "A2", "Harmful?", "Yes", "Fix it", "Fixed"];
        let messages: Vec<Message> = turns
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if i % 2 == 0 {
                    Message::user(*t)
                } else {
                    Message::assistant(*t)
                }
            })
            .collect();
        let e = CritiqueExample::from_messages(&messages).unwrap();
        assert_eq!(e.dialogue, messages[..4]);
        assert_eq!(e.rounds.len(), 1);
        assert_eq!(e.rounds[0].critique_request, "Harmful?");
        assert_eq!(e.messages(), messages);
        // Ten messages stay one exchange and two rounds, as before.
        let mut ten = messages.clone();
        ten.extend([Message::user("Again?"), Message::assistant("Done")]);
        let e = CritiqueExample::from_messages(&ten).unwrap();
        assert_eq!((e.dialogue.len(), e.rounds.len()), (2, 2));
        let err = CritiqueExample::from_messages(&messages[..4]).unwrap_err();
        assert!(err.contains("4 messages"), "{err}");
    }

    #[test]
    fn message_lists_must_alternate_from_user() {
        let e = example();
        let mut messages = e.messages();
        messages.swap(0, 1);
        let err = CritiqueExample::from_messages(&messages).unwrap_err();
        assert!(err.contains("message 0 has role Assistant"), "{err}");
    }
}
