//! Resumable JSONL jobs: input records with ids, the output file's finished ids, and the run's
//! config saved beside the output so that a resumed run can check it continues the same job.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use cai_core::jsonl::{read_complete_records, read_jsonl_values, JsonlWriter};
use serde::Serialize;
use serde_json::{Map, Value};

/// One input record.
#[derive(Debug, Clone)]
pub struct InputRecord {
    /// Its id as text: the `"id"` field (a string, or a number written out), else the 0-based
    /// line index.
    pub id: String,
    /// 1-based line number in the input file, for error messages.
    pub line: usize,
    /// The record as read, with `"id"` added when it had none.
    pub object: Map<String, Value>,
}

/// Read a JSONL input of objects, giving each an id. Fails on a line that is not an object,
/// an `"id"` that is neither a string nor a number, and an id used twice (resume would
/// confuse the two records).
pub fn read_input(path: &Path) -> anyhow::Result<Vec<InputRecord>> {
    let mut seen = HashSet::new();
    let mut records = Vec::new();
    for (line, value) in read_jsonl_values(path)? {
        let Value::Object(mut object) = value else {
            unreachable!("read_jsonl_values only returns objects")
        };
        let id = match object.get("id") {
            None => {
                let id = (line - 1).to_string();
                object.insert("id".into(), Value::String(id.clone()));
                id
            }
            Some(value) => id_text(value)
                .with_context(|| format!("{}:{line}: \"id\" is {value}", path.display()))?,
        };
        if !seen.insert(id.clone()) {
            bail!(
                "{}:{line}: id {id:?} appears twice; expected every record to have its own id",
                path.display()
            );
        }
        records.push(InputRecord { id, line, object });
    }
    Ok(records)
}

/// The text of an id: a string as is, a number written out.
fn id_text(value: &Value) -> anyhow::Result<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => bail!("expected a string or a number"),
    }
}

/// The `field` of `record`, which must be a string.
pub fn string_field<'a>(
    path: &Path,
    record: &'a InputRecord,
    field: &str,
) -> anyhow::Result<&'a str> {
    match record.object.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => bail!(
            "{}:{}: \"{field}\" is {}; expected a string",
            path.display(),
            record.line,
            kind(other)
        ),
        None => bail!(
            "{}:{}: missing \"{field}\"; found {}",
            path.display(),
            record.line,
            keys(&record.object)
        ),
    }
}

/// "keys a, b" or "no keys", for messages about records that lack a field.
pub fn keys(object: &Map<String, Value>) -> String {
    if object.is_empty() {
        return "an empty object".into();
    }
    let names: Vec<String> = object.keys().map(|k| format!("\"{k}\"")).collect();
    format!("keys {}", names.join(", "))
}

/// The kind of a JSON value, for messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// An output file opened for a resumable run over items of type `T`.
pub struct ResumedOutput<T> {
    /// The items still to do, in input order.
    pub todo: Vec<T>,
    /// How many input records the output already holds.
    pub done: usize,
    /// Where the new records go (after the finished ones).
    pub writer: JsonlWriter,
}

impl<T> ResumedOutput<T> {
    /// Records of the whole run, done and to do.
    pub fn total(&self) -> usize {
        self.done + self.todo.len()
    }

    /// True, after telling the user, when `output` already holds every record.
    pub fn all_done(&self, output: &Path) -> bool {
        if self.todo.is_empty() {
            eprintln!(
                "{}: all {} records already done; pass --overwrite to start again",
                output.display(),
                self.total()
            );
        }
        self.todo.is_empty()
    }
}

/// Open `output` for a run over `items`, each with the id `id(item)`. With `overwrite`, or
/// when `output` does not exist, start afresh; otherwise keep its complete records (a cut-off
/// last line is dropped) and leave out the items whose ids it holds.
///
/// The run's `config` is saved beside the output (see [`config_path`]). When resuming, a
/// saved config that differs from `config` (ignoring the `volatile` top-level fields, which
/// do not change results) is an error naming the differing fields.
pub fn open_output<T>(
    items: Vec<T>,
    id: impl Fn(&T) -> &str,
    output: &Path,
    overwrite: bool,
    config: &impl Serialize,
    volatile: &[&str],
) -> anyhow::Result<ResumedOutput<T>> {
    let config = serde_json::to_value(config).expect("configs serialise");
    let config_file = config_path(output);
    let resuming = !overwrite && output.exists();
    if resuming {
        check_same_config(&config_file, &config, volatile, output)?;
    }
    let done_ids = if resuming {
        finished_ids(output)?
    } else {
        HashSet::new()
    };
    let writer = if resuming {
        JsonlWriter::append(output)?
    } else {
        JsonlWriter::create(output)?
    };
    let json = serde_json::to_string_pretty(&config).expect("configs serialise") + "\n";
    std::fs::write(&config_file, json)
        .with_context(|| format!("writing {}", config_file.display()))?;
    let total = items.len();
    let todo: Vec<T> = items
        .into_iter()
        .filter(|item| !done_ids.contains(id(item)))
        .collect();
    Ok(ResumedOutput {
        done: total - todo.len(),
        todo,
        writer,
    })
}

/// Where a run's config is saved: `out.jsonl` → `out.config.json`.
pub fn config_path(output: &Path) -> PathBuf {
    output.with_extension("config.json")
}

/// The ids of the complete records of an existing output file.
fn finished_ids(output: &Path) -> anyhow::Result<HashSet<String>> {
    let mut ids = HashSet::new();
    for (i, record) in read_complete_records(output)?.iter().enumerate() {
        let id = record.get("id").map(id_text).transpose().ok().flatten();
        let Some(id) = id else {
            bail!(
                "{}: record {} has no string or number \"id\", so it was not written by cai; \
                 pass --overwrite to replace the file, or choose another --output",
                output.display(),
                i + 1
            );
        };
        ids.insert(id);
    }
    Ok(ids)
}

fn check_same_config(
    config_file: &Path,
    config: &Value,
    volatile: &[&str],
    output: &Path,
) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(config_file) else {
        return Ok(());
    };
    let saved: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", config_file.display()))?;
    let (Value::Object(saved), Value::Object(now)) = (&saved, config) else {
        return Ok(());
    };
    let mut keys: Vec<&str> = now.keys().chain(saved.keys()).map(String::as_str).collect();
    keys.sort_unstable();
    keys.dedup();
    let differing: Vec<String> = keys
        .into_iter()
        // The output's own path may change (a moved file) without changing its records.
        .filter(|k| *k != "output" && !volatile.contains(k) && saved.get(*k) != now.get(*k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or_else(|| "unset".to_owned(), Value::to_string);
            format!("{k} was {}, now {}", show(saved.get(k)), show(now.get(k)))
        })
        .collect();
    if differing.is_empty() {
        return Ok(());
    }
    bail!(
        "{} was started with other settings ({}; see {}); resume with the same settings, \
         pass --overwrite to start again, or choose another --output",
        output.display(),
        differing.join("; "),
        config_file.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_sits_beside_output() {
        assert_eq!(
            config_path(Path::new("a/out.jsonl")),
            Path::new("a/out.config.json")
        );
        assert_eq!(config_path(Path::new("out")), Path::new("out.config.json"));
        assert_eq!(
            config_path(Path::new("x.config.json")),
            Path::new("x.config.config.json")
        );
    }

    #[test]
    fn ids_are_strings_or_numbers() {
        assert_eq!(id_text(&Value::from("a")).unwrap(), "a");
        assert_eq!(id_text(&Value::from(7)).unwrap(), "7");
        assert!(id_text(&Value::Null).is_err());
    }
}
