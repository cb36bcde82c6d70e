//! Anthropic's chain-of-thought few-shot examples for the feedback model
//! (`RLMadisonPrecogFewShotPrompts.json`): a list of `{"prompt"}` objects, each a whole
//! answered question — the conversation, a `{}` slot where the principle goes, the options
//! ` (A) [[[…]]]`, ` (B) [[[…]]]`, the reasoning, and a last line `So the answer is: (B)`.
//! Each is read as a rendered question whose right option is that answer.

use serde_json::{Map, Value};

use super::ChoiceItem;

/// Where a chain-of-thought example's principle goes: the `{}` before the first option.
pub const PRINCIPLE_SLOT: &str = "{}\n (A) [[[";

/// What ends a chain-of-thought example, before its answer.
const ANSWER_LINE: &str = "So the answer is:";

/// Whether a JSON list holds chain-of-thought examples: objects with a `prompt` and neither
/// `corrects` nor `incorrects`.
pub(super) fn is_cot_list(items: &[Value]) -> bool {
    !items.is_empty()
        && items.iter().all(|item| {
            matches!(item, Value::Object(o) if o.contains_key("prompt")
                && !o.contains_key("corrects") && !o.contains_key("incorrects"))
        })
}

/// One example: the prompt up to `So the answer is:` (the principle slot kept), the answer
/// as the right option and the question's other options as the wrong ones.
pub(super) fn cot_item(object: &Map<String, Value>, line: usize) -> Result<ChoiceItem, String> {
    let Some(Value::String(text)) = object.get("prompt") else {
        return Err("\"prompt\" is not a string".into());
    };
    if !text.contains(PRINCIPLE_SLOT) {
        return Err(format!(
            "a chain-of-thought example needs the principle slot {{}} just before its first \
             option ({:?}); found none",
            PRINCIPLE_SLOT
        ));
    }
    let Some(at) = text.rfind(ANSWER_LINE) else {
        return Err(format!(
            "expected the example to end with {ANSWER_LINE:?} and its answer, as \"(B)\"; \
             found no {ANSWER_LINE:?}"
        ));
    };
    let (prompt, answer) = text.split_at(at + ANSWER_LINE.len());
    let letter = |t: &str| t.len() == 3 && t.starts_with('(') && t.ends_with(')');
    if !letter(answer.trim()) || !answer.starts_with(' ') {
        return Err(format!(
            "the answer after {ANSWER_LINE:?} is {answer:?}; expected one option as \" (B)\""
        ));
    }
    let options: Vec<String> = prompt
        .match_indices("\n (")
        .filter_map(|(i, _)| {
            // `get` rather than slicing: the byte after " (" may start a wider character.
            let option = &prompt[i + 1..];
            let letter = option.get(..4)?;
            (letter.ends_with(')') && option.get(4..)?.starts_with(" [[["))
                .then(|| letter.to_owned())
        })
        .collect();
    if !options.iter().any(|o| o == answer) {
        return Err(format!(
            "the answer{answer} is not one of the question's options ({})",
            options.join(",")
        ));
    }
    if options.len() < 2 {
        return Err(format!(
            "the question has {} option(s) written \" (A) [[[…]]]\"; expected at least two",
            options.len()
        ));
    }
    Ok(ChoiceItem {
        line,
        prompt: prompt.to_owned(),
        corrects: vec![answer.to_owned()],
        incorrects: options.into_iter().filter(|o| o != answer).collect(),
        texts: None,
    })
}

/// A chain-of-thought example's prompt with `question` (a principle without its `Options:`)
/// in its slot, written as Anthropic's principles are (`"\n{question} Options:"`); a prompt
/// without the slot is returned as it is.
pub fn fill_principle(prompt: &str, question: &str) -> String {
    prompt.replacen(
        PRINCIPLE_SLOT,
        &format!("\n{question} Options:\n (A) [[["),
        1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXAMPLE: &str = "\n\nHuman: Consider the following conversation:\n\nH: Hi?\n\n{}\n \
                           (A) [[[Go away.]]]\n (B) [[[Hello!]]]\n\nAssistant: Let's think step \
                           by step: (B) is kind.\n\nHuman:\nSo the answer is: (B)";

    fn object(value: Value) -> Map<String, Value> {
        let Value::Object(o) = value else {
            unreachable!()
        };
        o
    }

    #[test]
    fn reads_an_example_and_fills_its_slot() {
        let item = cot_item(&object(json!({"prompt": EXAMPLE})), 2).unwrap();
        assert_eq!(item.corrects, [" (B)"]);
        assert_eq!(item.incorrects, [" (A)"]);
        assert_eq!(format!("{}{}", item.prompt, item.corrects[0]), EXAMPLE);
        let filled = fill_principle(&item.prompt, "Which is kinder?");
        assert!(
            filled.contains("H: Hi?\n\n\nWhich is kinder? Options:\n (A) [[[Go away.]]]"),
            "{filled}"
        );
        assert_eq!(fill_principle("no slot", "Q"), "no slot");
        assert!(is_cot_list(&[json!({"prompt": EXAMPLE})]));
        assert!(!is_cot_list(&[json!({"prompt": "x", "corrects": []})]));
        assert!(!is_cot_list(&[]));
    }

    #[test]
    fn errors_say_which_part_is_wrong() {
        let cases = [
            (EXAMPLE.replace("{}", ""), "principle slot"),
            (
                EXAMPLE.replace("So the answer is: (B)", "(B)"),
                "found no \"So the answer is:\"",
            ),
            (EXAMPLE.replace(": (B)", ": B"), "expected one option"),
            (
                EXAMPLE.replace(": (B)", ": (C)"),
                "not one of the question's options ( (A), (B))",
            ),
            (
                EXAMPLE.replace("\n (B) [[[", "\n (é) [[["),
                "not one of the question's options ( (A))",
            ),
            (
                EXAMPLE
                    .replace(": (B)", ": (A)")
                    .replace("\n (B) [[[", "\n (é) [[["),
                "the question has 1 option(s)",
            ),
        ];
        for (text, expected) in cases {
            let err = cot_item(&object(json!({"prompt": text})), 1).unwrap_err();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }
}
