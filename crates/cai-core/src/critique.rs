//! The critique/revision transcript of the CAI paper: the `CritiqueRequest:`, `Critique:`,
//! `RevisionRequest:` and `Revision:` turns that follow a `Human:`/`Assistant:` dialogue,
//! rendered as transcript text or as chat turns, and parsed back.

use serde::{Deserialize, Serialize};

use crate::dialogue::{self, Message, Role, ASSISTANT, HUMAN};
use crate::Error;

/// The marker of a critique request turn.
pub const CRITIQUE_REQUEST: &str = "CritiqueRequest:";
/// The marker of a critique turn.
pub const CRITIQUE: &str = "Critique:";
/// The marker of a revision request turn.
pub const REVISION_REQUEST: &str = "RevisionRequest:";
/// The marker of a revision turn.
pub const REVISION: &str = "Revision:";

/// One round of critique and revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CritiqueRound {
    /// What the critique is asked to look for.
    pub critique_request: String,
    /// The critique of the previous answer.
    pub critique: String,
    /// How the answer is to be rewritten.
    pub revision_request: String,
    /// The rewritten answer.
    pub revision: String,
}

/// One transcript turn: `"\n\n{marker} {content}"`, or the bare marker when `content` is
/// empty (the convention of [`dialogue::render_transcript`]).
fn push_turn(text: &mut String, marker: &str, content: &str) {
    text.push_str("\n\n");
    text.push_str(marker);
    if !content.is_empty() {
        text.push(' ');
        text.push_str(content);
    }
}

/// The text that asks for a critique: `"\n\nCritiqueRequest: {request}\n\nCritique:"`; the
/// model's critique follows, starting with a space.
pub fn critique_prompt(request: &str) -> String {
    let mut text = String::new();
    push_turn(&mut text, CRITIQUE_REQUEST, request);
    push_turn(&mut text, CRITIQUE, "");
    text
}

/// The text that asks for a revision: `"\n\nRevisionRequest: {request}\n\nRevision:"`.
pub fn revision_prompt(request: &str) -> String {
    let mut text = String::new();
    push_turn(&mut text, REVISION_REQUEST, request);
    push_turn(&mut text, REVISION, "");
    text
}

/// Rounds as transcript text, to follow a rendered dialogue that ends with the answer they
/// critique.
///
/// ```
/// use cai_core::critique::{render_rounds, CritiqueRound};
///
/// let round = CritiqueRound {
///     critique_request: "Is it harmful?".into(),
///     critique: "Yes.".into(),
///     revision_request: "Make it harmless.".into(),
///     revision: "No.".into(),
/// };
/// assert_eq!(
///     render_rounds(&[round]),
///     "\n\nCritiqueRequest: Is it harmful?\n\nCritique: Yes.\n\n\
///      RevisionRequest: Make it harmless.\n\nRevision: No."
/// );
/// ```
pub fn render_rounds(rounds: &[CritiqueRound]) -> String {
    let mut text = String::new();
    for round in rounds {
        push_turn(&mut text, CRITIQUE_REQUEST, &round.critique_request);
        push_turn(&mut text, CRITIQUE, &round.critique);
        push_turn(&mut text, REVISION_REQUEST, &round.revision_request);
        push_turn(&mut text, REVISION, &round.revision);
    }
    text
}

/// Rounds as chat turns: each request is a user turn and each critique or revision is the
/// assistant's answer to it.
pub fn rounds_as_messages(rounds: &[CritiqueRound]) -> Vec<Message> {
    rounds
        .iter()
        .flat_map(|round| {
            [
                Message::user(&round.critique_request),
                Message::assistant(&round.critique),
                Message::user(&round.revision_request),
                Message::assistant(&round.revision),
            ]
        })
        .collect()
}

/// Strings that end a sampled turn in the critique transcript: the next turn's marker, for
/// each of the six turns (`"\n\nHuman:"`, `"\n\nAssistant:"`, `"\n\nCritiqueRequest:"`, …).
pub fn stop_strings() -> Vec<String> {
    [
        HUMAN,
        ASSISTANT,
        CRITIQUE_REQUEST,
        CRITIQUE,
        REVISION_REQUEST,
        REVISION,
    ]
    .iter()
    .map(|marker| format!("\n\n{marker}"))
    .collect()
}

/// A request text without the transcript markers around it: `"\n\nCritiqueRequest: Is it
/// harmful?\n\nCritique:"` → `"Is it harmful?"` (Anthropic's files carry the markers). Text
/// without markers is only trimmed.
pub fn bare_request(text: &str, request_marker: &str, answer_marker: &str) -> String {
    let text = text.trim();
    let text = text.strip_prefix(request_marker).unwrap_or(text).trim();
    let text = text.strip_suffix(answer_marker).unwrap_or(text).trim_end();
    text.to_owned()
}

/// Parse a critique transcript (`Human:` … `Assistant:` … then rounds of `CritiqueRequest:`,
/// `Critique:`, `RevisionRequest:`, `Revision:`) into the dialogue and its rounds.
///
/// Markers open a turn at the start of the text or after a blank line (`"\n\n"`); contents
/// are trimmed. A last `Human:` turn with nothing in it (the opening of the next example in
/// Anthropic's few-shot file) is not part of the example and is dropped. The dialogue must alternate `Human:`/`Assistant:` turns from a `Human:` turn
/// and end with an `Assistant:` turn; at least one complete round must follow.
pub fn parse_critique_transcript(text: &str) -> Result<(Vec<Message>, Vec<CritiqueRound>), Error> {
    let mut turns = split_turns(text)?;
    // Anthropic's published few-shot transcripts end with the bare `"\n\nHuman:"` that opens
    // the next example (or the request the examples are put in front of): not a turn of
    // this example.
    if turns.len() > 1
        && turns
            .last()
            .is_some_and(|(marker, content)| *marker == HUMAN && content.is_empty())
    {
        turns.pop();
    }
    let dialogue_len = turns
        .iter()
        .take_while(|(marker, _)| *marker == HUMAN || *marker == ASSISTANT)
        .count();
    let mut dialogue = Vec::with_capacity(dialogue_len);
    for (i, (marker, content)) in turns[..dialogue_len].iter().enumerate() {
        let (expected, role) = if i % 2 == 0 {
            (HUMAN, Role::User)
        } else {
            (ASSISTANT, Role::Assistant)
        };
        if *marker != expected {
            return Err(Error::Invalid(format!(
                "turn {}: found {marker:?} where {expected:?} was expected; the dialogue \
                 alternates \"Human:\" and \"Assistant:\" turns",
                i + 1
            )));
        }
        dialogue.push(Message {
            role,
            content: content.clone(),
        });
    }
    if !dialogue.len().is_multiple_of(2) || dialogue.is_empty() {
        return Err(Error::Invalid(
            "expected a \"Human:\" turn and the \"Assistant:\" answer that the rounds critique \
             before the first \"CritiqueRequest:\""
                .into(),
        ));
    }
    let rest = &turns[dialogue_len..];
    let order = [CRITIQUE_REQUEST, CRITIQUE, REVISION_REQUEST, REVISION];
    for (i, (marker, _)) in rest.iter().enumerate() {
        let expected = order[i % 4];
        if *marker != expected {
            return Err(Error::Invalid(format!(
                "turn {}: found {marker:?} where {expected:?} was expected; rounds are \
                 CritiqueRequest, Critique, RevisionRequest, Revision",
                dialogue_len + i + 1
            )));
        }
    }
    if rest.is_empty() || !rest.len().is_multiple_of(4) {
        return Err(Error::Invalid(format!(
            "expected complete rounds of CritiqueRequest, Critique, RevisionRequest and \
             Revision after the dialogue; found {} turns after it",
            rest.len()
        )));
    }
    let rounds = rest
        .chunks(4)
        .map(|round| CritiqueRound {
            critique_request: round[0].1.clone(),
            critique: round[1].1.clone(),
            revision_request: round[2].1.clone(),
            revision: round[3].1.clone(),
        })
        .collect();
    Ok((dialogue, rounds))
}

/// The turns of a critique transcript in order: (marker, trimmed content).
fn split_turns(text: &str) -> Result<Vec<(&'static str, String)>, Error> {
    const MARKERS: [&str; 6] = [
        HUMAN,
        ASSISTANT,
        CRITIQUE_REQUEST,
        CRITIQUE,
        REVISION_REQUEST,
        REVISION,
    ];
    // (marker start, content start, marker)
    let mut found: Vec<(usize, usize, &'static str)> = Vec::new();
    for marker in MARKERS {
        if text.starts_with(marker) {
            found.push((0, marker.len(), marker));
        }
        let separated = format!("\n\n{marker}");
        found.extend(
            text.match_indices(&separated)
                .map(|(start, _)| (start, start + separated.len(), marker)),
        );
    }
    found.sort_unstable_by_key(|&(start, _, _)| start);
    let Some(&(first, _, _)) = found.first() else {
        return Err(Error::Invalid(
            "found no \"Human:\" turn; expected a transcript of \"\\n\\nHuman: …\\n\\n\
             Assistant: …\\n\\nCritiqueRequest: …\" turns"
                .into(),
        ));
    };
    if !text[..first].trim().is_empty() {
        let preview: String = text[..first].trim().chars().take(40).collect();
        return Err(Error::Invalid(format!(
            "text before the first turn ({preview:?}); expected the transcript to start with \
             \"Human:\""
        )));
    }
    Ok(found
        .iter()
        .enumerate()
        .map(|(i, &(_, content_start, marker))| {
            let end = found.get(i + 1).map_or(text.len(), |&(next, _, _)| next);
            (marker, text[content_start..end].trim().to_owned())
        })
        .collect())
}

/// The dialogue and rounds rendered as one transcript: the inverse of
/// [`parse_critique_transcript`] for trimmed contents.
pub fn render_critique_transcript(dialogue: &[Message], rounds: &[CritiqueRound]) -> String {
    dialogue::render_transcript(dialogue, false) + &render_rounds(rounds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(n: u32) -> CritiqueRound {
        CritiqueRound {
            critique_request: format!("request {n}"),
            critique: format!("critique {n}"),
            revision_request: format!("revise {n}"),
            revision: format!("revision {n}"),
        }
    }

    #[test]
    fn prompts_open_the_answer_turn() {
        assert_eq!(
            critique_prompt("Is it rude?"),
            "\n\nCritiqueRequest: Is it rude?\n\nCritique:"
        );
        assert_eq!(
            revision_prompt("Be kind."),
            "\n\nRevisionRequest: Be kind.\n\nRevision:"
        );
    }

    #[test]
    fn rounds_render_as_chat_turns() {
        let messages = rounds_as_messages(&[round(1)]);
        assert_eq!(
            messages,
            [
                Message::user("request 1"),
                Message::assistant("critique 1"),
                Message::user("revise 1"),
                Message::assistant("revision 1"),
            ]
        );
    }

    #[test]
    fn stop_strings_cover_every_marker() {
        assert_eq!(
            stop_strings(),
            [
                "\n\nHuman:",
                "\n\nAssistant:",
                "\n\nCritiqueRequest:",
                "\n\nCritique:",
                "\n\nRevisionRequest:",
                "\n\nRevision:"
            ]
        );
    }

    #[test]
    fn bare_request_strips_anthropic_markers() {
        let text = "\n\nCritiqueRequest: Identify harms.\n\nCritique:";
        assert_eq!(
            bare_request(text, CRITIQUE_REQUEST, CRITIQUE),
            "Identify harms."
        );
        let text = "\n\nRevisionRequest: Remove them.\n\nRevision:";
        assert_eq!(
            bare_request(text, REVISION_REQUEST, REVISION),
            "Remove them."
        );
        assert_eq!(
            bare_request("  Plain text. ", CRITIQUE_REQUEST, CRITIQUE),
            "Plain text."
        );
    }

    #[test]
    fn parses_two_rounds_and_round_trips() {
        let dialogue = vec![Message::user("Q?"), Message::assistant("A.")];
        let rounds = vec![round(1), round(2)];
        let text = render_critique_transcript(&dialogue, &rounds);
        assert!(text.starts_with("\n\nHuman: Q?\n\nAssistant: A.\n\nCritiqueRequest: request 1"));
        assert_eq!(
            parse_critique_transcript(&text).unwrap(),
            (dialogue, rounds)
        );
    }

    #[test]
    fn parses_text_starting_with_a_bare_marker_and_trims() {
        let text = "Human: Q?\n\nAssistant:  A. \n\nCritiqueRequest: r\n\nCritique: c\n\n\
                    RevisionRequest: rr\n\nRevision: v\n";
        let (dialogue, rounds) = parse_critique_transcript(text).unwrap();
        assert_eq!(dialogue, [Message::user("Q?"), Message::assistant("A.")]);
        assert_eq!(rounds[0].revision, "v");
        assert_eq!(rounds[0].critique_request, "r");
    }

    #[test]
    fn a_trailing_empty_human_marker_is_the_next_examples_opening() {
        // Anthropic's CritiqueRevisionFewShotPrompts.json: each example ends with the
        // `\n\nHuman:` that opens the next one.
        let dialogue = vec![
            Message::user("Q1?"),
            Message::assistant("A1."),
            Message::user("Q2?"),
            Message::assistant("A2."),
        ];
        let rounds = vec![round(1)];
        let text = render_critique_transcript(&dialogue, &rounds) + "\n\nHuman:";
        assert_eq!(
            parse_critique_transcript(&text).unwrap(),
            (dialogue.clone(), rounds.clone())
        );
        let spaced = render_critique_transcript(&dialogue, &rounds) + "\n\nHuman: \n";
        assert_eq!(parse_critique_transcript(&spaced).unwrap().1, rounds);
        // A human turn with text after the rounds is still an error.
        let err = parse_critique_transcript(
            &(render_critique_transcript(&dialogue, &rounds) + "\n\nHuman: more?"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("turn 9: found \"Human:\""), "{err}");
    }

    #[test]
    fn rejects_incomplete_or_disordered_transcripts() {
        let cases = [
            ("no markers at all", "found no \"Human:\" turn"),
            (
                "Intro\n\nHuman: Q\n\nAssistant: A",
                "text before the first turn",
            ),
            ("\n\nHuman: Q\n\nAssistant: A", "found 0 turns"),
            (
                "\n\nHuman: Q\n\nAssistant: A\n\nCritiqueRequest: r\n\nCritique: c",
                "found 2 turns",
            ),
            (
                "\n\nHuman: Q\n\nAssistant: A\n\nCritique: c",
                "found \"Critique:\" where \"CritiqueRequest:\" was expected",
            ),
            (
                "\n\nAssistant: A\n\nCritiqueRequest: r",
                "where \"Human:\" was expected",
            ),
            (
                "\n\nHuman: Q\n\nCritiqueRequest: r",
                "the \"Assistant:\" answer",
            ),
        ];
        for (text, expected) in cases {
            let err = parse_critique_transcript(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }
}
