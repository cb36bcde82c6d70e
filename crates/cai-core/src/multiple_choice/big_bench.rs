//! BIG-bench JSON tasks (`task.json`, as Anthropic's HHH evaluation `hhh_alignment` is
//! published there) and Hugging Face's rows of the same evaluation (`HuggingFaceH4/
//! hhh_alignment`: `{"input", "targets": {"choices", "labels"}}`) as multiple-choice items.
//!
//! BIG-bench scores each choice as the continuation of the example's input, put between the
//! task's `example_input_prefix` (default `"\nQ: "`) and `example_output_prefix` (default
//! `"\nA: "`), after the `task_prefix` (default empty); with `append_choices_to_input`
//! (default true) the choices are listed in the input after `choice_prefix` (default
//! `"\n  choice: "`). The choices with the highest target score are the right ones.

use std::path::Path;

use serde_json::{Map, Value};

use super::ChoiceItem;
use crate::Error;

/// A task's prompt layout, from its top-level fields (BIG-bench's defaults where absent).
struct Layout {
    task_prefix: String,
    input_prefix: String,
    output_prefix: String,
    choice_prefix: String,
    append_choices: bool,
}

impl Layout {
    fn of(task: &Map<String, Value>, at: &str, path: &Path) -> Result<Self, Error> {
        let text = |key: &str, default: &str| match task.get(key) {
            None => Ok(default.to_owned()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(Error::field(path, field(at, key), "expected a string")),
        };
        let append_choices = match task.get("append_choices_to_input") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(Error::field(
                    path,
                    field(at, "append_choices_to_input"),
                    "expected true or false",
                ))
            }
        };
        Ok(Self {
            task_prefix: text("task_prefix", "")?,
            input_prefix: text("example_input_prefix", "\nQ: ")?,
            output_prefix: text("example_output_prefix", "\nA: ")?,
            choice_prefix: text("choice_prefix", "\n  choice: ")?,
            append_choices,
        })
    }

    /// The text every choice of `input` continues. BIG-bench sorts the choices and then
    /// shuffles them with its seeded generator; cai lists them sorted (the shuffle is
    /// BIG-bench's own and not reproduced).
    fn prompt(&self, input: &str, choices: &[&str]) -> String {
        let mut text = format!("{}{}{input}", self.task_prefix, self.input_prefix);
        if self.append_choices {
            for choice in choices {
                text.push_str(&self.choice_prefix);
                text.push_str(choice);
            }
        }
        text.push_str(&self.output_prefix);
        text
    }
}

/// `at.key`, or `key` at the top level.
fn field(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

/// Whether a parsed JSON file is a BIG-bench task (an object with `examples` or `subtasks`).
pub(super) fn is_task(value: &Value) -> bool {
    matches!(value, Value::Object(o) if o.contains_key("examples") || o.contains_key("subtasks"))
}

/// The items of a BIG-bench task, and of its `subtasks` (each a task object) in order; an
/// item's `line` is its 1-based position among all of them.
pub(super) fn task_items(value: &Value, path: &Path) -> Result<Vec<ChoiceItem>, Error> {
    let mut items = Vec::new();
    collect(value, "", path, &mut items)?;
    if items.is_empty() {
        return Err(Error::file(
            path,
            "the task holds no examples; expected \"examples\": [{\"input\", \"target_scores\"}]",
        ));
    }
    Ok(items)
}

fn collect(value: &Value, at: &str, path: &Path, items: &mut Vec<ChoiceItem>) -> Result<(), Error> {
    let Value::Object(task) = value else {
        return Err(Error::field(
            path,
            at,
            "expected a BIG-bench task object with \"examples\"",
        ));
    };
    let layout = Layout::of(task, at, path)?;
    if let Some(examples) = task.get("examples") {
        let Value::Array(examples) = examples else {
            return Err(Error::field(path, field(at, "examples"), "expected a list"));
        };
        for (i, example) in examples.iter().enumerate() {
            let here = field(at, &format!("examples[{i}]"));
            let Value::Object(example) = example else {
                return Err(Error::field(
                    path,
                    here,
                    "expected an object with \"input\" and \"target_scores\"",
                ));
            };
            let item = example_item(example, &layout, items.len() + 1)
                .map_err(|m| Error::field(path, here, m))?;
            items.push(item);
        }
    }
    if let Some(subtasks) = task.get("subtasks") {
        let Value::Array(subtasks) = subtasks else {
            return Err(Error::field(
                path,
                field(at, "subtasks"),
                "expected a list of task objects",
            ));
        };
        for (i, subtask) in subtasks.iter().enumerate() {
            collect(subtask, &field(at, &format!("subtasks[{i}]")), path, items)?;
        }
    }
    Ok(())
}

/// One example: `input` and `target_scores` (`{choice: score}`, the best-scored right).
fn example_item(
    example: &Map<String, Value>,
    layout: &Layout,
    line: usize,
) -> Result<ChoiceItem, String> {
    let input = match example.get("input") {
        Some(Value::String(s)) => s,
        Some(_) => return Err("\"input\" is not a string".into()),
        None => return Err("missing \"input\" (the text the choices continue)".into()),
    };
    let Some(Value::Object(scores)) = example.get("target_scores") else {
        return Err(
            "\"target_scores\" is missing or not an object; expected {choice: score} (cai \
             evaluates multiple-choice tasks only)"
                .into(),
        );
    };
    let scored: Vec<(&str, f64)> = scores
        .iter()
        .map(|(choice, score)| {
            score
                .as_f64()
                .map(|s| (choice.as_str(), s))
                .ok_or_else(|| format!("\"target_scores\".{choice:?} is not a number"))
        })
        .collect::<Result<_, _>>()?;
    let choices: Vec<&str> = scored.iter().map(|(c, _)| *c).collect();
    split_by_score(&scored, layout.prompt(input, &choices), line)
}

/// Hugging Face's row of a BIG-bench multiple-choice task: `input` and `targets` with
/// `choices` and their `labels` (1 right, 0 wrong). The prompt is the input as it is.
pub(super) fn hf_row_item(object: &Map<String, Value>, line: usize) -> Result<ChoiceItem, String> {
    let input = match object.get("input") {
        Some(Value::String(s)) if !s.is_empty() => s,
        _ => return Err("\"input\" is missing or not a non-empty string".into()),
    };
    let Some(Value::Object(targets)) = object.get("targets") else {
        return Err("\"targets\" is not an object; expected {\"choices\", \"labels\"}".into());
    };
    let list = |key: &str| match targets.get(key) {
        Some(Value::Array(items)) => Ok(items),
        _ => Err(format!("\"targets.{key}\" is missing or not a list")),
    };
    let (choices, labels) = (list("choices")?, list("labels")?);
    if choices.len() != labels.len() {
        return Err(format!(
            "\"targets\" has {} choices and {} labels; expected one label per choice",
            choices.len(),
            labels.len()
        ));
    }
    let scored: Vec<(&str, f64)> = choices
        .iter()
        .zip(labels)
        .enumerate()
        .map(
            |(i, (choice, label))| match (choice.as_str(), label.as_f64()) {
                (Some(c), Some(l)) => Ok((c, l)),
                _ => Err(format!(
                    "\"targets\" choice {i} is not a string with a numeric label"
                )),
            },
        )
        .collect::<Result<_, _>>()?;
    split_by_score(&scored, input.clone(), line)
}

/// The best-scored choices are right, the others wrong; both must be there.
fn split_by_score(
    scored: &[(&str, f64)],
    prompt: String,
    line: usize,
) -> Result<ChoiceItem, String> {
    let best = scored
        .iter()
        .map(|(_, s)| *s)
        .fold(f64::NEG_INFINITY, f64::max);
    let (corrects, incorrects): (Vec<_>, Vec<_>) = scored.iter().partition(|(_, s)| *s == best);
    if corrects.is_empty() || incorrects.is_empty() {
        return Err(format!(
            "{} choices, {} of them scored best; expected at least one right and one wrong \
             choice",
            scored.len(),
            corrects.len()
        ));
    }
    let texts = |xs: Vec<&(&str, f64)>| xs.into_iter().map(|(c, _)| (*c).to_owned()).collect();
    Ok(ChoiceItem {
        line,
        prompt,
        corrects: texts(corrects),
        incorrects: texts(incorrects),
        texts: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_task_with_subtasks_and_its_own_prefixes() {
        let task = json!({
            "name": "hhh_alignment",
            "subtasks": [
                {
                    "name": "harmless",
                    "examples": [
                        {"input": "Help me?", "target_scores": {"Sure.": 1, "No.": 0}},
                        {"input": "Hurt?", "target_scores": {"A": 0, "B": 1, "C": 1}}
                    ]
                },
                {
                    "task_prefix": "T:",
                    "example_input_prefix": "\n\nHuman: ",
                    "example_output_prefix": "\n\nAssistant:",
                    "append_choices_to_input": false,
                    "examples": [{"input": "Hi", "target_scores": {" Hello": 1.0, " Bye": 0.0}}]
                }
            ]
        });
        assert!(is_task(&task));
        let items = task_items(&task, Path::new("task.json")).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(
            items[0].prompt,
            "\nQ: Help me?\n  choice: No.\n  choice: Sure.\nA: "
        );
        assert_eq!(
            (items[0].corrects.clone(), items[0].incorrects.clone()),
            (vec!["Sure.".into()], vec!["No.".into()])
        );
        assert_eq!(items[1].corrects, ["B", "C"]);
        assert_eq!(items[2].prompt, "T:\n\nHuman: Hi\n\nAssistant:");
        assert_eq!(items[2].corrects, [" Hello"]);
        assert_eq!(items.iter().map(|i| i.line).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn task_errors_name_the_example() {
        let cases = [
            (
                json!({"examples": [{"input": "x"}]}),
                "examples[0]: \"target_scores\" is missing",
            ),
            (
                json!({"examples": [{"input": "x", "target_scores": {"a": 1, "b": 1}}]}),
                "examples[0]: 2 choices, 2 of them scored best",
            ),
            (
                json!({"subtasks": [{"examples": [{"target_scores": {"a": 1}}]}]}),
                "subtasks[0].examples[0]: missing \"input\"",
            ),
            (json!({"examples": []}), "the task holds no examples"),
            (
                json!({"examples": [], "append_choices_to_input": "yes"}),
                "append_choices_to_input: expected true or false",
            ),
        ];
        for (task, expected) in cases {
            let err = task_items(&task, Path::new("task.json"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn hugging_face_rows() {
        let row = json!({"input": "Q", "targets": {"choices": ["good", "bad"], "labels": [1, 0]}});
        let Value::Object(row) = row else {
            unreachable!()
        };
        let item = hf_row_item(&row, 4).unwrap();
        assert_eq!((item.line, item.prompt.as_str()), (4, "Q"));
        assert_eq!(
            (item.corrects, item.incorrects),
            (vec!["good".to_owned()], vec!["bad".to_owned()])
        );
        let bad = json!({"input": "Q", "targets": {"choices": ["a", "b"], "labels": [1]}});
        let Value::Object(bad) = bad else {
            unreachable!()
        };
        assert!(hf_row_item(&bad, 1)
            .unwrap_err()
            .contains("2 choices and 1 labels"));
    }
}
