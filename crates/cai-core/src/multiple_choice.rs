//! Multiple-choice items in Anthropic's shape, `{"prompt", "corrects": [..], "incorrects":
//! [..]}`: evaluation files (JSONL; the prompt is a whole question ending in `The answer is:`
//! and the options are `" (A)"`, `" (B)"`) and labelled few-shot examples for the feedback
//! model (a JSON list; the prompt is a conversation ending in `Assistant:` and the options are
//! the responses themselves). Also read: Anthropic's chain-of-thought few-shot examples
//! ([`cot`]), BIG-bench JSON tasks such as `hhh_alignment` and Hugging Face's rows of them
//! (`big_bench.rs`).

mod big_bench;
pub mod cot;

use std::path::Path;

use serde_json::{Map, Value};

use crate::jsonl::read_jsonl_values;
use crate::Error;

/// One multiple-choice item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChoiceItem {
    /// Where it came from: the 1-based line of a JSONL file, or the 1-based position in a
    /// JSON list.
    pub line: usize,
    /// The text the options continue.
    pub prompt: String,
    /// The right options (at least one).
    pub corrects: Vec<String>,
    /// The wrong options (at least one).
    pub incorrects: Vec<String>,
    /// Anthropic's evaluation files also hold the whole dialogue with the right and with the
    /// wrong answer (`text_correct`, `text_incorrect`), which a preference model compares.
    pub texts: Option<(String, String)>,
}

/// Read items from a JSONL file (one object per line), a JSON file holding a list of them
/// (or of Anthropic's chain-of-thought examples, see [`cot`]), or a BIG-bench JSON task
/// (`{"examples": [{"input", "target_scores"}]}`, with `subtasks`); JSONL rows may also be
/// Hugging Face's `{"input", "targets": {"choices", "labels"}}`. Errors name the file and
/// the line, list position or example.
pub fn load_items(path: &Path) -> Result<Vec<ChoiceItem>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if text.trim_start().starts_with('{') {
        if let Ok(value) = serde_json::from_str::<Value>(&text) {
            if big_bench::is_task(&value) {
                return big_bench::task_items(&value, path);
            }
        }
    }
    if text.trim_start().starts_with('[') {
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            Error::file(
                path,
                format!(
                    "not valid JSON ({e}); expected a list of {{\"prompt\", \"corrects\", \
                     \"incorrects\"}} objects"
                ),
            )
        })?;
        let Value::Array(items) = value else {
            unreachable!("the text starts with '['")
        };
        if items.is_empty() {
            return Err(Error::file(
                path,
                "the list is empty; expected at least one multiple-choice item",
            ));
        }
        if cot::is_cot_list(&items) {
            return items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let Value::Object(object) = item else {
                        unreachable!("is_cot_list checked every item is an object")
                    };
                    cot::cot_item(object, i + 1)
                        .map_err(|m| Error::field(path, format!("[{i}]"), m))
                })
                .collect();
        }
        return items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let Value::Object(object) = item else {
                    return Err(Error::field(
                        path,
                        format!("[{i}]"),
                        "expected an object with \"prompt\", \"corrects\" and \"incorrects\"",
                    ));
                };
                item_from(object, i + 1).map_err(|m| Error::field(path, format!("[{i}]"), m))
            })
            .collect();
    }
    let items = read_jsonl_values(path)?
        .into_iter()
        .map(|(line, value)| {
            let Value::Object(object) = value else {
                unreachable!("read_jsonl_values only returns objects")
            };
            item_from(&object, line).map_err(|message| Error::Jsonl {
                path: path.to_path_buf(),
                line,
                message,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if items.is_empty() {
        return Err(Error::file(
            path,
            "no items; expected JSONL of {\"prompt\", \"corrects\", \"incorrects\"} objects",
        ));
    }
    Ok(items)
}

/// Items from the rows of any record source (a Parquet file, a Hub dataset, gzipped JSONL):
/// each row is an object in one of the JSONL shapes [`load_items`] reads, numbered as the
/// source numbers it; errors name `source` and the row.
pub fn items_from_rows(source: &Path, rows: Vec<(usize, Value)>) -> Result<Vec<ChoiceItem>, Error> {
    if rows.is_empty() {
        return Err(Error::file(
            source,
            "no rows; expected {\"prompt\", \"corrects\", \"incorrects\"} or \
             {\"input\", \"targets\"} records",
        ));
    }
    rows.into_iter()
        .map(|(line, value)| {
            let Value::Object(object) = value else {
                return Err(Error::Jsonl {
                    path: source.to_path_buf(),
                    line,
                    message: "not an object; expected a multiple-choice record".into(),
                });
            };
            item_from(&object, line).map_err(|message| Error::Jsonl {
                path: source.to_path_buf(),
                line,
                message,
            })
        })
        .collect()
}

/// One item from its object; the message says which field is wrong.
fn item_from(object: &Map<String, Value>, line: usize) -> Result<ChoiceItem, String> {
    if !object.contains_key("prompt") && object.contains_key("targets") {
        return big_bench::hf_row_item(object, line);
    }
    let prompt = match object.get("prompt") {
        Some(Value::String(text)) if !text.is_empty() => text.clone(),
        Some(Value::String(_)) => return Err("\"prompt\" is empty; expected text".into()),
        Some(_) => return Err("\"prompt\" is not a string".into()),
        None => return Err("missing \"prompt\" (the text the options continue)".into()),
    };
    let options = |key: &str| -> Result<Vec<String>, String> {
        let Some(Value::Array(items)) = object.get(key) else {
            return Err(format!(
                "\"{key}\" is missing or not a list; expected a list of option strings"
            ));
        };
        if items.is_empty() {
            return Err(format!("\"{key}\" is empty; expected at least one option"));
        }
        items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("\"{key}\" holds a non-string; expected strings"))
            })
            .collect()
    };
    let text = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_owned);
    Ok(ChoiceItem {
        line,
        prompt,
        corrects: options("corrects")?,
        incorrects: options("incorrects")?,
        texts: text("text_correct").zip(text("text_incorrect")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn rows_of_any_source_become_items_and_bad_rows_are_named() {
        let rows = vec![
            (
                1,
                serde_json::json!({"prompt": "Q?", "corrects": [" (A)"], "incorrects": [" (B)"]}),
            ),
            (
                2,
                serde_json::json!({"input": "Q2?", "targets": {"choices": ["yes", "no"], "labels": [0, 1]}}),
            ),
        ];
        let items = items_from_rows(Path::new("hub:org/set"), rows).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].corrects, vec![" (A)".to_owned()]);
        assert_eq!(items[1].line, 2);
        assert_eq!(items[1].corrects.len(), 1);
        let bad = vec![(7, serde_json::json!({"prompt": "Q?", "corrects": []}))];
        let err = items_from_rows(Path::new("x.parquet"), bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.parquet") && err.contains('7') && err.contains("corrects"),
            "{err}"
        );
        let err = items_from_rows(Path::new("x.parquet"), vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no rows"), "{err}");
    }

    #[test]
    fn reads_anthropic_evaluation_jsonl_and_few_shot_lists() {
        let dir = tempfile::tempdir().unwrap();
        let eval = write(
            &dir,
            "eval.jsonl",
            "{\"prompt\": \"Q\\nThe answer is:\", \"corrects\": [\" (B)\"], \"incorrects\": \
             [\" (A)\"], \"text_correct\": \"good\", \"text_incorrect\": \"bad\"}\n\n\
             {\"prompt\": \"R\", \"corrects\": [\" (A)\"], \"incorrects\": [\" (B)\", \" (C)\"]}\n",
        );
        let items = load_items(&eval).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].corrects, [" (B)"]);
        assert_eq!(items[0].texts, Some(("good".into(), "bad".into())));
        assert_eq!((items[1].line, items[1].incorrects.len()), (3, 2));
        assert_eq!(items[1].texts, None);

        let few_shot = write(
            &dir,
            "few.json",
            r#"[{"prompt": "\n\nHuman: Hi?\n\nAssistant:", "corrects": ["Hello."], "incorrects": ["Go away."]}]"#,
        );
        let items = load_items(&few_shot).unwrap();
        assert_eq!(items[0].line, 1);
        assert_eq!(items[0].prompt, "\n\nHuman: Hi?\n\nAssistant:");
        assert_eq!(items[0].incorrects, ["Go away."]);
    }

    #[test]
    fn reads_cot_examples_big_bench_tasks_and_hf_rows() {
        let dir = tempfile::tempdir().unwrap();
        let cot = "\n\nHuman: Consider:\n\nH: Hi?\n\n{}\n (A) [[[No.]]]\n (B) [[[Hello!]]]\n\n\
                   Assistant: Let's think step by step: (B).\n\nHuman:\nSo the answer is: (B)";
        let path = write(
            &dir,
            "cot.json",
            &serde_json::json!([{"prompt": cot}]).to_string(),
        );
        let items = load_items(&path).unwrap();
        assert_eq!((items[0].line, items[0].corrects[0].as_str()), (1, " (B)"));
        let bad = write(
            &dir,
            "bad-cot.json",
            &serde_json::json!([{"prompt": cot}, {"prompt": "x"}]).to_string(),
        );
        let err = load_items(&bad).unwrap_err().to_string();
        assert!(
            err.contains("bad-cot.json: [1]: a chain-of-thought example needs"),
            "{err}"
        );

        let task = "{\n  \"name\": \"hhh\",\n  \"examples\": [{\"input\": \"Q\", \"target_scores\": {\"a\": 1, \"b\": 0}}]\n}\n";
        let items = load_items(&write(&dir, "task.json", task)).unwrap();
        assert_eq!(items[0].prompt, "\nQ: Q\n  choice: a\n  choice: b\nA: ");

        let rows =
            "{\"input\": \"Q\", \"targets\": {\"choices\": [\"x\", \"y\"], \"labels\": [0, 1]}}\n";
        let items = load_items(&write(&dir, "hhh.jsonl", rows)).unwrap();
        assert_eq!(
            (items[0].corrects.clone(), items[0].incorrects.clone()),
            (vec!["y".into()], vec!["x".into()])
        );
        let bad = write(&dir, "bad.jsonl", "{\"input\": \"Q\", \"targets\": 3}\n");
        let err = load_items(&bad).unwrap_err().to_string();
        assert!(
            err.contains("bad.jsonl:1: \"targets\" is not an object"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_file_and_the_item() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "a.jsonl",
                "{\"prompt\": \"Q\", \"corrects\": [\" (A)\"]}\n",
                "a.jsonl:1: \"incorrects\" is missing",
            ),
            (
                "b.jsonl",
                "{\"prompt\": \"Q\", \"corrects\": [], \"incorrects\": [\"x\"]}\n",
                "b.jsonl:1: \"corrects\" is empty",
            ),
            (
                "c.jsonl",
                "{\"corrects\": [\"a\"], \"incorrects\": [\"b\"]}\n",
                "c.jsonl:1: missing \"prompt\"",
            ),
            (
                "d.json",
                "[{\"prompt\": \"Q\", \"corrects\": [1], \"incorrects\": [\"b\"]}]",
                "d.json: [0]: \"corrects\" holds a non-string",
            ),
            ("e.json", "[]", "e.json: the list is empty"),
            ("f.jsonl", "\n", "f.jsonl: no items"),
            ("g.json", "[3]", "g.json: [0]: expected an object"),
        ];
        for (name, text, expected) in cases {
            let err = load_items(&write(&dir, name, text))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }
}
