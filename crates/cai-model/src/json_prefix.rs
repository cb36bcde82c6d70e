//! Whether a text can still become one JSON object: the check behind JSON-constrained
//! generation (`response_format: {"type": "json_object"}`). [`check`] reads the text from the
//! start with a small pushdown automaton (RFC 8259's grammar: objects, arrays, strings with
//! escapes, numbers, `true`/`false`/`null`, whitespace) and says whether it is a valid start of
//! an object, a whole object (then only whitespace may follow), or neither.

/// What a text is, read as the start of one JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonPrefix {
    /// No continuation makes it a JSON object.
    Invalid,
    /// A valid start that is not yet a whole object.
    Partial,
    /// A whole object, possibly with whitespace around it.
    Complete,
}

/// Where the reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the top-level object (whitespace may come first).
    Start,
    /// Before a value (after `:`, or after `,` in an array).
    Value,
    /// After `[`: a value or `]`.
    ValueOrEnd,
    /// After `{`: a key or `}`.
    KeyOrEnd,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value in a container: `,` or the container's end.
    CommaOrEnd,
    /// In a string: a key's when `key`.
    Str { key: bool, escape: Escape },
    /// In a number.
    Num(Number),
    /// In `true`, `false` or `null`: the bytes still to come.
    Literal(&'static [u8]),
    /// After the top-level object: only whitespace may follow.
    Done,
}

/// Where a string is in an escape. A `\uXXXX` high surrogate must be followed at once by a
/// `\uXXXX` low one (as serde_json and RFC 8259's UTF-16 reading require); a lone low one is
/// invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    /// Plain text.
    None,
    /// After `\`.
    Backslash,
    /// In `\uXXXX`: the hex digits still to come, the value so far, and whether this is the
    /// low half of a surrogate pair.
    Unicode { left: u8, value: u32, low: bool },
    /// After a high surrogate: the `\` of its low half must follow.
    LowNext,
    /// After that `\`: its `u` must follow.
    LowBackslash,
}

impl Escape {
    /// The escape state after `c` in a string, `Some(None)` when `c` is the closing quote, or
    /// `None` when `c` cannot come here.
    fn next(self, c: char) -> Option<Option<Self>> {
        let unicode = |low| Self::Unicode {
            left: 4,
            value: 0,
            low,
        };
        Some(Some(match (self, c) {
            (Self::None, '"') => return Some(None),
            (Self::None, '\\') => Self::Backslash,
            (Self::None, c) if (c as u32) < 0x20 => return None,
            (Self::None, _) => Self::None,
            (Self::Backslash, '"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't') => Self::None,
            (Self::Backslash, 'u') => unicode(false),
            (Self::LowNext, '\\') => Self::LowBackslash,
            (Self::LowBackslash, 'u') => unicode(true),
            (Self::Unicode { left, value, low }, c) => {
                let value = value * 16 + c.to_digit(16)?;
                if left > 1 {
                    Self::Unicode {
                        left: left - 1,
                        value,
                        low,
                    }
                } else {
                    match (value, low) {
                        (0xD800..=0xDBFF, false) => Self::LowNext,
                        (0xDC00..=0xDFFF, true) => Self::None,
                        (0xDC00..=0xDFFF, false) | (_, true) => return None,
                        _ => Self::None,
                    }
                }
            }
            _ => return None,
        }))
    }
}

/// Where a number is (`-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Number {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

impl Number {
    /// Whether a number may end here.
    fn can_end(self) -> bool {
        matches!(self, Self::Zero | Self::Int | Self::Frac | Self::Exp)
    }

    /// The state after `c`, or `None` when `c` is not part of the number.
    fn next(self, c: char) -> Option<Self> {
        let digit = c.is_ascii_digit();
        Some(match (self, c) {
            (Self::Minus, '0') => Self::Zero,
            (Self::Minus | Self::Int, _) if digit => Self::Int,
            (Self::Zero | Self::Int, '.') => Self::Dot,
            (Self::Dot | Self::Frac, _) if digit => Self::Frac,
            (Self::Zero | Self::Int | Self::Frac, 'e' | 'E') => Self::E,
            (Self::E, '+' | '-') => Self::ESign,
            (Self::E | Self::ESign | Self::Exp, _) if digit => Self::Exp,
            _ => return None,
        })
    }
}

/// The reader: its state and the open containers, innermost last (`true` for an object).
struct Reader {
    stack: Vec<bool>,
    state: State,
}

impl Reader {
    /// The state after a value ends: back in its container, or done at the top level.
    fn after_value(&self) -> State {
        if self.stack.is_empty() {
            State::Done
        } else {
            State::CommaOrEnd
        }
    }

    /// The state at the start of a value beginning with `c`, or `None` if no value does.
    fn open_value(&mut self, c: char) -> Option<State> {
        Some(match c {
            '{' => {
                self.stack.push(true);
                State::KeyOrEnd
            }
            '[' => {
                self.stack.push(false);
                State::ValueOrEnd
            }
            '"' => State::Str {
                key: false,
                escape: Escape::None,
            },
            '-' => State::Num(Number::Minus),
            '0' => State::Num(Number::Zero),
            '1'..='9' => State::Num(Number::Int),
            't' => State::Literal(b"rue"),
            'f' => State::Literal(b"alse"),
            'n' => State::Literal(b"ull"),
            _ => return None,
        })
    }

    /// The state after closing the innermost container.
    fn close(&mut self) -> State {
        self.stack.pop();
        self.after_value()
    }

    /// Read `c`; `false` when it cannot come here.
    fn push(&mut self, c: char) -> bool {
        let space = matches!(c, ' ' | '\t' | '\n' | '\r');
        let key_start = State::Str {
            key: true,
            escape: Escape::None,
        };
        let next = match self.state {
            State::Str { key, escape } => match escape.next(c) {
                None => None,
                Some(Some(escape)) => Some(State::Str { key, escape }),
                Some(None) if key => Some(State::Colon),
                Some(None) => Some(self.after_value()),
            },
            State::Num(number) => match number.next(c) {
                Some(next) => Some(State::Num(next)),
                None if number.can_end() => {
                    self.state = self.after_value();
                    return self.push(c);
                }
                None => None,
            },
            State::Literal(rest) => match rest.split_first() {
                Some((&first, tail)) if c == char::from(first) => Some(if tail.is_empty() {
                    self.after_value()
                } else {
                    State::Literal(tail)
                }),
                _ => None,
            },
            state if space => Some(state),
            State::Start => (c == '{').then(|| {
                self.stack.push(true);
                State::KeyOrEnd
            }),
            State::Value => self.open_value(c),
            State::ValueOrEnd if c == ']' => Some(self.close()),
            State::ValueOrEnd => self.open_value(c),
            State::KeyOrEnd if c == '}' => Some(self.close()),
            State::KeyOrEnd | State::Key => (c == '"').then_some(key_start),
            State::Colon => (c == ':').then_some(State::Value),
            State::CommaOrEnd => match (c, self.stack.last()) {
                (',', Some(true)) => Some(State::Key),
                (',', Some(false)) => Some(State::Value),
                ('}', Some(true)) | (']', Some(false)) => Some(self.close()),
                _ => None,
            },
            State::Done => None,
        };
        match next {
            Some(state) => {
                self.state = state;
                true
            }
            None => false,
        }
    }
}

/// Read `text` as the start of one JSON object.
pub fn check(text: &str) -> JsonPrefix {
    let mut reader = Reader {
        stack: Vec::new(),
        state: State::Start,
    };
    for c in text.chars() {
        if !reader.push(c) {
            return JsonPrefix::Invalid;
        }
    }
    if reader.state == State::Done {
        JsonPrefix::Complete
    } else {
        JsonPrefix::Partial
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_objects_are_complete() {
        for text in [
            "{}",
            " {\"a\": 1}\n",
            r#"{"verdict": "harmful", "p": 0.75, "tags": ["x", -1.5e+3, true, null, {}], "n": []}"#,
            r#"{"s": "quote \" and \\ and \u00e9 and \n", "k": false}"#,
            r#"{"emoji": "\ud83d\ude00"}"#,
            r#"{"nested": {"a": [[0], [1, 2]]}}"#,
        ] {
            assert_eq!(check(text), JsonPrefix::Complete, "{text}");
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            assert!(value.is_object(), "{text}");
        }
    }

    #[test]
    fn starts_of_objects_are_partial() {
        for text in [
            "",
            "  ",
            "{",
            "{\"ver",
            "{\"verdict\"",
            "{\"verdict\":",
            "{\"p\": 0",
            "{\"p\": -",
            "{\"p\": 1.",
            "{\"p\": 1e",
            "{\"p\": tr",
            "{\"s\": \"a\\",
            "{\"s\": \"\\u00",
            "{\"a\": [1,",
            "{\"a\": [",
        ] {
            assert_eq!(check(text), JsonPrefix::Partial, "{text:?}");
        }
    }

    #[test]
    fn anything_no_object_can_start_with_is_invalid() {
        for text in [
            "Sure! {",
            "[1]",
            "\"s\"",
            "{a: 1}",
            "{\"a\" 1}",
            "{\"a\": 01}",
            "{\"a\": 1.}",
            "{\"a\": .5}",
            "{\"a\": [1,]}",
            "{\"a\": 1,}",
            "{\"a\": tru}",
            "{\"a\": \"\\x\"}",
            "{\"a\": \"\\u12g4\"}",
            "{\"a\": \"line\nbreak\"}",
            "{} {}",
            "{}x",
            "{\"a\": 1]",
            // A lone surrogate, high or low, and a high one followed by anything else.
            "{\"a\": \"\\ud800\"}",
            "{\"a\": \"\\udc00\"}",
            "{\"a\": \"\\ud800x\"}",
            "{\"a\": \"\\ud800\\n\"}",
            "{\"a\": \"\\ud800\\u0041\"}",
        ] {
            assert_eq!(check(text), JsonPrefix::Invalid, "{text:?}");
        }
    }

    /// Every prefix of a valid object is partial, and every object the checker calls
    /// complete parses as JSON.
    #[test]
    fn agrees_with_serde_json() {
        let text = r#"{"a": [1, 2.5e-3, {"b": null}], "c": "\u0041\t", "d": -0}"#;
        for end in 0..text.len() {
            assert_eq!(
                check(&text[..end]),
                JsonPrefix::Partial,
                "{:?}",
                &text[..end]
            );
        }
        assert_eq!(check(text), JsonPrefix::Complete);
        assert!(serde_json::from_str::<serde_json::Value>(text)
            .unwrap()
            .is_object());
    }
}
