//! Deserialising the fields that take one of several shapes (a prompt, stop strings, a
//! message's content) straight from the JSON, without serde's untagged buffering: a wrong
//! shape is named with what was expected (`expected a string or a list of content parts`),
//! and a long list costs only its own elements.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Unexpected, Visitor};

use super::{Content, ContentPart, Prompt, Stop};

/// Most stop strings a request may give: each is checked after every generated token, and
/// more than a handful is a mistake (OpenAI allows 4).
pub const MAX_STOP_STRINGS: usize = 64;

/// What a prompt may be, for error messages.
const PROMPT_SHAPES: &str =
    "a string, a list of strings, a list of token ids, or a list of token-id lists";

impl<'de> Deserialize<'de> for Prompt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PromptVisitor)
    }
}

struct PromptVisitor;

/// One element of a prompt list, whose kind fixes the kind of the rest.
enum PromptItem {
    Text(String),
    Token(u32),
    Tokens(Vec<u32>),
}

impl<'de> Deserialize<'de> for PromptItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = PromptItem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a token id (0 to 4294967295), or a list of token ids")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PromptItem, E> {
                Ok(PromptItem::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<PromptItem, E> {
                Ok(PromptItem::Text(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PromptItem, E> {
                token_id(v).map(PromptItem::Token)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PromptItem, E> {
                Err(E::invalid_value(Unexpected::Signed(v), &self))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<PromptItem, A::Error> {
                TokenIds.visit_seq(seq).map(PromptItem::Tokens)
            }
        }
        d.deserialize_any(ItemVisitor)
    }
}

/// A token id: a JSON number that fits a `u32`.
fn token_id<E: de::Error>(v: u64) -> Result<u32, E> {
    u32::try_from(v)
        .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &"a token id (0 to 4294967295)"))
}

/// A list of token ids.
struct TokenIds;

impl<'de> Visitor<'de> for TokenIds {
    type Value = Vec<u32>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of token ids (0 to 4294967295)")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u32>, A::Error> {
        let mut ids = Vec::new();
        while let Some(id) = seq.next_element::<u32>()? {
            ids.push(id);
        }
        Ok(ids)
    }
}

impl<'de> Visitor<'de> for PromptVisitor {
    type Value = Prompt;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(PROMPT_SHAPES)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Prompt, E> {
        Ok(Prompt::Text(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Prompt, E> {
        Ok(Prompt::Text(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Prompt, A::Error> {
        let mixed = || {
            de::Error::custom(format!(
                "a list mixing strings, token ids and token-id lists; expected {PROMPT_SHAPES}"
            ))
        };
        let prompt = match seq.next_element::<PromptItem>()? {
            None => return Ok(Prompt::Texts(Vec::new())),
            Some(PromptItem::Text(first)) => {
                let mut texts = vec![first];
                while let Some(item) = seq.next_element::<PromptItem>()? {
                    let PromptItem::Text(t) = item else {
                        return Err(mixed());
                    };
                    texts.push(t);
                }
                Prompt::Texts(texts)
            }
            Some(PromptItem::Token(first)) => {
                let mut ids = vec![first];
                while let Some(item) = seq.next_element::<PromptItem>()? {
                    let PromptItem::Token(id) = item else {
                        return Err(mixed());
                    };
                    ids.push(id);
                }
                Prompt::Tokens(ids)
            }
            Some(PromptItem::Tokens(first)) => {
                let mut lists = vec![first];
                while let Some(item) = seq.next_element::<PromptItem>()? {
                    let PromptItem::Tokens(ids) = item else {
                        return Err(mixed());
                    };
                    lists.push(ids);
                }
                Prompt::TokenLists(lists)
            }
        };
        Ok(prompt)
    }
}

impl<'de> Deserialize<'de> for Stop {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StopVisitor;
        impl<'de> Visitor<'de> for StopVisitor {
            type Value = Stop;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Stop, E> {
                Ok(Stop::One(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Stop, E> {
                Ok(Stop::One(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Stop, A::Error> {
                let mut stops = Vec::new();
                while let Some(stop) = seq.next_element::<String>()? {
                    if stops.len() == MAX_STOP_STRINGS {
                        return Err(de::Error::custom(format!(
                            "more than {MAX_STOP_STRINGS} stop strings; expected at most \
                             {MAX_STOP_STRINGS}"
                        )));
                    }
                    stops.push(stop);
                }
                Ok(Stop::Many(stops))
            }
        }
        d.deserialize_any(StopVisitor)
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = Content;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of content parts")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Content, E> {
                Ok(Content::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Content, E> {
                Ok(Content::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Content, A::Error> {
                ContentParts.visit_seq(seq).map(Content::Parts)
            }
        }
        d.deserialize_any(ContentVisitor)
    }
}

/// A message's list of content parts.
struct ContentParts;

impl<'de> Visitor<'de> for ContentParts {
    type Value = Vec<ContentPart>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of content parts")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<ContentPart>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ChatMessage;

    fn prompt(json: &str) -> Result<Prompt, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn a_prompt_takes_each_of_its_four_shapes() {
        assert_eq!(prompt(r#""hi""#), Ok(Prompt::Text("hi".into())));
        assert_eq!(
            prompt(r#"["a", "b"]"#),
            Ok(Prompt::Texts(vec!["a".into(), "b".into()]))
        );
        assert_eq!(prompt("[1, 2]"), Ok(Prompt::Tokens(vec![1, 2])));
        assert_eq!(
            prompt("[[1], [2, 3]]"),
            Ok(Prompt::TokenLists(vec![vec![1], vec![2, 3]]))
        );
        assert_eq!(prompt("[]"), Ok(Prompt::Texts(Vec::new())));
    }

    #[test]
    fn a_wrong_prompt_says_what_was_expected() {
        let e = prompt("12").unwrap_err();
        assert!(e.contains("expected a string, a list of strings"), "{e}");
        let e = prompt(r#"["a", 1]"#).unwrap_err();
        assert!(e.contains("a list mixing strings, token ids"), "{e}");
        let e = prompt("[1, 4294967296]").unwrap_err();
        assert!(e.contains("a token id (0 to 4294967295)"), "{e}");
        let e = prompt("[-1]").unwrap_err();
        assert!(e.contains("a token id"), "{e}");
    }

    #[test]
    fn content_and_stop_name_their_shapes() {
        let m: ChatMessage = serde_json::from_str(r#"{"role": "user", "content": "hi"}"#).unwrap();
        assert_eq!(m.content, Content::Text("hi".into()));
        let m: ChatMessage =
            serde_json::from_str(r#"{"role": "user", "content": [{"type": "text", "text": "a"}]}"#)
                .unwrap();
        assert!(matches!(m.content, Content::Parts(p) if p.len() == 1));
        let e = serde_json::from_str::<ChatMessage>(r#"{"role": "user", "content": 12}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("invalid type: integer `12`, expected a string or a list of content parts"),
            "{e}"
        );
        let e = serde_json::from_str::<Stop>("{}").unwrap_err().to_string();
        assert!(e.contains("expected a string or a list of strings"), "{e}");
        assert_eq!(
            serde_json::from_str::<Stop>(r#"["x"]"#).unwrap(),
            Stop::Many(vec!["x".into()])
        );
        let many = serde_json::to_string(&vec!["x"; MAX_STOP_STRINGS + 1]).unwrap();
        let e = serde_json::from_str::<Stop>(&many).unwrap_err().to_string();
        assert!(e.contains("more than 64 stop strings"), "{e}");
    }
}
