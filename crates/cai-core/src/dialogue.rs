//! Dialogues (role-tagged messages) and the `Human:`/`Assistant:` transcript format of the
//! Anthropic papers and the hh-rlhf data.

use serde::{Deserialize, Serialize};

use crate::Error;

/// The marker that opens a human (user) turn in a transcript.
pub const HUMAN: &str = "Human:";
/// The marker that opens an assistant turn in a transcript.
pub const ASSISTANT: &str = "Assistant:";

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions that precede the conversation.
    System,
    /// The human side: red-team prompts, critique and revision requests.
    User,
    /// The model's side.
    Assistant,
}

/// One turn of a dialogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

impl Message {
    /// A user (human) turn.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }

    /// An assistant turn.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }

    /// A system message (only allowed as the first message of a dialogue).
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }
}

/// Strings that end an assistant turn when sampling in the transcript format:
/// `["\n\nHuman:", "\n\nAssistant:"]`.
pub fn transcript_stop_strings() -> Vec<String> {
    vec![format!("\n\n{HUMAN}"), format!("\n\n{ASSISTANT}")]
}

/// Render a dialogue in the transcript format of the Anthropic papers.
///
/// - A system message, allowed only first, is written as plain text with no role marker.
/// - Every user turn is `"\n\nHuman: {content}"` and every assistant turn is
///   `"\n\nAssistant: {content}"`; a turn with empty content is the bare marker
///   (`"\n\nAssistant:"`), without the space.
/// - With `add_generation_prompt`, `"\n\nAssistant:"` is appended, with no trailing space:
///   the model's sample starts with the space.
///
/// ```
/// use cai_core::dialogue::{render_transcript, Message};
///
/// let dialogue = [
///     Message::system("A chat."),
///     Message::user("Hi"),
///     Message::assistant("Hello!"),
///     Message::user("How do I pick a lock?"),
/// ];
/// assert_eq!(
///     render_transcript(&dialogue, true),
///     "A chat.\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How do I pick a lock?\n\nAssistant:"
/// );
/// ```
///
/// # Panics
///
/// If a system message comes after the first message: dialogues are built by the stages,
/// and a late system message is a bug in the stage, not bad input.
pub fn render_transcript(messages: &[Message], add_generation_prompt: bool) -> String {
    let mut text = String::new();
    for (i, message) in messages.iter().enumerate() {
        let marker = match message.role {
            Role::System => {
                assert!(
                    i == 0,
                    "a system message is only allowed first, found one at index {i}"
                );
                text.push_str(&message.content);
                continue;
            }
            Role::User => HUMAN,
            Role::Assistant => ASSISTANT,
        };
        text.push_str("\n\n");
        text.push_str(marker);
        if !message.content.is_empty() {
            text.push(' ');
            text.push_str(&message.content);
        }
    }
    if add_generation_prompt {
        text.push_str("\n\n");
        text.push_str(ASSISTANT);
    }
    text
}

/// Parse a transcript (`"\n\nHuman: ...\n\nAssistant: ..."`, as in hh-rlhf) into messages.
///
/// The inverse of [`render_transcript`] without generation prompt: each marker
/// `"\n\nHuman:"` / `"\n\nAssistant:"` (or `"Human:"` / `"Assistant:"` at the very start)
/// opens a turn that runs to the next marker; one space after the marker is dropped and the
/// rest of the content is kept as is. Text before the first marker becomes a system message
/// unless it is only whitespace. A transcript ending in a bare `"\n\nAssistant:"` gives a
/// final assistant message with empty content.
pub fn parse_transcript(text: &str) -> Result<Vec<Message>, Error> {
    let markers = find_markers(text);
    let Some(&(first_start, _, _)) = markers.first() else {
        let preview: String = text.chars().take(80).collect();
        return Err(Error::Invalid(format!(
            "expected a transcript of \"\\n\\n{HUMAN} ...\\n\\n{ASSISTANT} ...\" turns, \
             found no {HUMAN:?} or {ASSISTANT:?} marker in {preview:?}"
        )));
    };
    let mut messages = Vec::with_capacity(markers.len() + 1);
    let leading = &text[..first_start];
    if !leading.trim().is_empty() {
        messages.push(Message::system(leading));
    }
    for (i, &(_, content_start, role)) in markers.iter().enumerate() {
        let end = markers
            .get(i + 1)
            .map_or(text.len(), |&(next_start, _, _)| next_start);
        let content = &text[content_start..end];
        let content = content.strip_prefix(' ').unwrap_or(content);
        messages.push(Message {
            role,
            content: content.to_owned(),
        });
    }
    Ok(messages)
}

/// The first human turn of a transcript, trimmed: the red-team prompt of an hh-rlhf record.
pub fn first_user_turn(text: &str) -> Result<String, Error> {
    parse_transcript(text)?
        .into_iter()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.trim().to_owned())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "expected a {HUMAN:?} turn in the transcript, found none"
            ))
        })
}

/// Each turn marker in `text`, in order: (start of the marker including its leading
/// `"\n\n"`, start of the content, role).
fn find_markers(text: &str) -> Vec<(usize, usize, Role)> {
    let mut markers = Vec::new();
    for (marker, role) in [(HUMAN, Role::User), (ASSISTANT, Role::Assistant)] {
        if text.starts_with(marker) {
            markers.push((0, marker.len(), role));
        }
        let separated = format!("\n\n{marker}");
        markers.extend(
            text.match_indices(&separated)
                .map(|(start, _)| (start, start + separated.len(), role)),
        );
    }
    markers.sort_unstable_by_key(|&(start, _, _)| start);
    markers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_turns_with_generation_prompt() {
        let dialogue = [
            Message::user("Hi"),
            Message::assistant("Hello!"),
            Message::user("Bye"),
        ];
        assert_eq!(
            render_transcript(&dialogue, false),
            "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Bye"
        );
        assert_eq!(
            render_transcript(&dialogue, true),
            "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Bye\n\nAssistant:"
        );
    }

    #[test]
    fn renders_system_text_without_marker() {
        let dialogue = [Message::system("Few-shot block."), Message::user("Q")];
        assert_eq!(
            render_transcript(&dialogue, true),
            "Few-shot block.\n\nHuman: Q\n\nAssistant:"
        );
    }

    #[test]
    fn empty_turn_is_a_bare_marker() {
        let dialogue = [Message::user("Q"), Message::assistant("")];
        assert_eq!(
            render_transcript(&dialogue, false),
            render_transcript(&dialogue[..1], true)
        );
        assert_eq!(render_transcript(&[], false), "");
        assert_eq!(render_transcript(&[], true), "\n\nAssistant:");
    }

    #[test]
    #[should_panic(expected = "only allowed first")]
    fn late_system_message_panics() {
        render_transcript(&[Message::user("Q"), Message::system("late")], false);
    }

    #[test]
    fn parses_hh_rlhf_transcript() {
        let text = "\n\nHuman: What are some cuss words?\n\nAssistant: Here's a list.\n\n\
                    Human: Thanks\n\nAssistant: You're welcome.";
        assert_eq!(
            parse_transcript(text).unwrap(),
            vec![
                Message::user("What are some cuss words?"),
                Message::assistant("Here's a list."),
                Message::user("Thanks"),
                Message::assistant("You're welcome."),
            ]
        );
    }

    #[test]
    fn round_trips() {
        let dialogues = [
            vec![Message::user("Hi"), Message::assistant("Hello!")],
            vec![
                Message::system("Rules:\n1. Be kind."),
                Message::user("a\nb"),
                Message::assistant(""),
            ],
            vec![
                Message::user("  spaced  "),
                Message::user("twice"),
                Message::assistant("x\n"),
            ],
        ];
        for dialogue in dialogues {
            let text = render_transcript(&dialogue, false);
            assert_eq!(parse_transcript(&text).unwrap(), dialogue, "{text:?}");
            assert_eq!(
                render_transcript(&parse_transcript(&text).unwrap(), false),
                text
            );
        }
    }

    #[test]
    fn model_sample_after_generation_prompt_parses() {
        let prompt = render_transcript(&[Message::user("Q")], true);
        let text = format!("{prompt} An answer.");
        assert_eq!(
            parse_transcript(&text).unwrap(),
            vec![Message::user("Q"), Message::assistant("An answer.")]
        );
    }

    #[test]
    fn markers_at_start_and_blank_leading_text() {
        assert_eq!(
            parse_transcript("Human: Q\n\nAssistant: A").unwrap(),
            vec![Message::user("Q"), Message::assistant("A")]
        );
        assert_eq!(
            parse_transcript(" \n\nHuman: Q").unwrap(),
            vec![Message::user("Q")]
        );
        assert_eq!(
            parse_transcript("\n\nHuman:").unwrap(),
            vec![Message::user("")]
        );
    }

    #[test]
    fn marker_without_blank_line_is_content() {
        assert_eq!(
            parse_transcript("\n\nHuman: say Assistant: hi\nHuman: ok").unwrap(),
            vec![Message::user("say Assistant: hi\nHuman: ok")]
        );
    }

    #[test]
    fn rejects_text_without_markers() {
        for text in ["", "just some text", "Humans: no"] {
            let err = parse_transcript(text).unwrap_err().to_string();
            assert!(err.contains("expected a transcript"), "{err}");
        }
    }

    #[test]
    fn first_user_turn_is_trimmed_red_team_prompt() {
        let text = "\n\nHuman:  How do I hotwire a car? \n\nAssistant: I can't help.\n\nHuman: Why";
        assert_eq!(first_user_turn(text).unwrap(), "How do I hotwire a car?");
        let err = first_user_turn("\n\nAssistant: alone")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"Human:\" turn"), "{err}");
    }

    #[test]
    fn stop_strings_end_an_assistant_turn() {
        assert_eq!(transcript_stop_strings(), ["\n\nHuman:", "\n\nAssistant:"]);
    }

    #[test]
    fn roles_serialize_lowercase() {
        let json = serde_json::to_string(&Message::assistant("x")).unwrap();
        assert_eq!(json, r#"{"role":"assistant","content":"x"}"#);
        let m: Message = serde_json::from_str(r#"{"role":"system","content":"s"}"#).unwrap();
        assert_eq!(m, Message::system("s"));
    }
}
