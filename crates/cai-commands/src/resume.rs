//! Resumable JSONL jobs: input records with ids, the output file's finished ids, and the run's
//! config saved beside the output so that a resumed run can check it continues the same job.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use cai_core::jsonl::{read_complete_records, JsonlWriter};
use cai_core::lock::WriterLock;
use cai_data::read_input_values;
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
    for (line, value) in read_input_values(path)? {
        let Value::Object(mut object) = value else {
            unreachable!("read_input_values only returns objects")
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

/// An output file claimed for writing: locked against other writers (see
/// [`cai_core::lock::WriterLock`]) and checked not to be one of the run's inputs. Claim the
/// output first thing, before loading a model, so that a second writer fails at once.
pub struct Claim {
    output: PathBuf,
    _lock: WriterLock,
}

/// Claim `output` for a run that reads `inputs`: take its writer lock and refuse an output
/// that is one of the inputs (writing it would destroy what the run reads).
pub fn claim(output: &Path, inputs: &[&Path]) -> anyhow::Result<Claim> {
    for input in inputs {
        if same_path(input, output) {
            bail!(
                "the output {} is also an input of this run ({}); writing it would destroy what \
                 the run reads: choose another output",
                output.display(),
                input.display()
            );
        }
    }
    let lock = WriterLock::acquire(output)?;
    Ok(Claim {
        output: output.to_path_buf(),
        _lock: lock,
    })
}

/// Whether `a` and `b` name the same file: the same inode when both exist, else the same
/// absolute path (with `.` and `..` resolved as far as the folders exist).
fn same_path(a: &Path, b: &Path) -> bool {
    if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
        use std::os::unix::fs::MetadataExt;
        return x.dev() == y.dev() && x.ino() == y.ino();
    }
    fn resolved(path: &Path) -> Option<PathBuf> {
        let name = path.file_name()?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let parent = std::fs::canonicalize(parent)
            .or_else(|_| std::path::absolute(parent))
            .ok()?;
        Some(parent.join(name))
    }
    matches!((resolved(a), resolved(b)), (Some(x), Some(y)) if x == y)
}

/// An output file opened for a resumable run over items of type `T`.
pub struct ResumedOutput<T> {
    /// The items still to do, in input order.
    pub todo: Vec<T>,
    /// How many input records the output already holds.
    pub done: usize,
    /// Where the new records go (after the finished ones).
    pub writer: JsonlWriter,
    /// Held while the records are written: no other cai process writes this output.
    _claim: Claim,
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

/// What a resumable output is: which command writes it, with what settings, and the fields
/// every record it writes carries.
pub struct OutputKind<'a, C: Serialize> {
    /// The command, for messages: `"cai generate"`.
    pub command: &'a str,
    /// The run's settings, saved beside the output (see [`config_path`]).
    pub config: &'a C,
    /// Top-level config fields that do not change results (batch size, device): a resume
    /// may change them.
    pub volatile: &'a [&'a str],
    /// Fields of which every record this command writes has at least one (`"completion"`):
    /// a record without any of them was not written by this command.
    pub marks: &'a [&'a str],
}

impl Claim {
    /// Open the claimed output for a run over `items`, each with the id `id(item)`. With
    /// `overwrite`, or when the output does not exist, start afresh; otherwise keep its
    /// complete records (a cut-off last line is dropped) and leave out the items whose ids it
    /// holds.
    ///
    /// Only what cai provably wrote with the same settings is resumed: an existing output
    /// needs the config cai saved beside it, equal to this run's but for the `volatile`
    /// fields, and records that carry the command's `marks`; anything else is refused with
    /// the reason, and the file is left as it is.
    pub fn open<T>(
        self,
        items: Vec<T>,
        id: impl Fn(&T) -> &str,
        overwrite: bool,
        kind: &OutputKind<'_, impl Serialize>,
    ) -> anyhow::Result<ResumedOutput<T>> {
        let output = self.output.as_path();
        if items.is_empty() {
            bail!(
                "{}: nothing to write: the run has no input records; expected at least one",
                output.display()
            );
        }
        let config = serde_json::to_value(kind.config).expect("configs serialise");
        let config_file = config_path(output);
        let resuming = !overwrite && has_records(output)?;
        let done_ids = if resuming {
            check_same_config(&config_file, &config, kind, output)?;
            finished_ids(output, kind)?
        } else {
            HashSet::new()
        };
        let writer = if resuming {
            JsonlWriter::append(output)?
        } else {
            JsonlWriter::create(output)?
        };
        let json = serde_json::to_string_pretty(&config).expect("configs serialise") + "\n";
        write_atomic(&config_file, json.as_bytes())?;
        let total = items.len();
        let todo: Vec<T> = items
            .into_iter()
            .filter(|item| !done_ids.contains(id(item)))
            .collect();
        Ok(ResumedOutput {
            done: total - todo.len(),
            todo,
            writer,
            _claim: self,
        })
    }
}

/// Whether `output` exists with anything in it (an empty file holds no progress to keep).
fn has_records(output: &Path) -> anyhow::Result<bool> {
    match std::fs::metadata(output) {
        Ok(meta) if meta.is_dir() => bail!(
            "{}: is a folder; expected a JSONL file to write",
            output.display()
        ),
        Ok(meta) => Ok(meta.len() > 0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("reading {}", output.display())),
    }
}

/// Write `bytes` to `path` through a temporary file renamed over it, so that a crash leaves
/// the old file or the new one.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing {}", path.display()))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

/// Where a run's config is saved: `out.jsonl` → `out.config.json`.
pub fn config_path(output: &Path) -> PathBuf {
    output.with_extension("config.json")
}

/// The ids of the complete records of an existing output file, each of which must carry one
/// of the command's marks.
fn finished_ids(
    output: &Path,
    kind: &OutputKind<'_, impl Serialize>,
) -> anyhow::Result<HashSet<String>> {
    let mut ids = HashSet::new();
    for (i, record) in read_complete_records(output)?.iter().enumerate() {
        let id = record.get("id").map(id_text).transpose().ok().flatten();
        let marked = kind.marks.iter().any(|m| record.get(*m).is_some());
        let (Some(id), true) = (id, marked) else {
            let lacks = if marked {
                "a string or number \"id\"".to_owned()
            } else {
                kind.marks
                    .iter()
                    .map(|m| format!("\"{m}\""))
                    .collect::<Vec<_>>()
                    .join(" or ")
            };
            bail!(
                "{}: record {} has no {lacks}, so it was not written by {}; pass --overwrite \
                 to replace the file, or choose another --output",
                output.display(),
                i + 1,
                kind.command
            );
        };
        ids.insert(id);
    }
    Ok(ids)
}

fn check_same_config(
    config_file: &Path,
    config: &Value,
    kind: &OutputKind<'_, impl Serialize>,
    output: &Path,
) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(config_file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} holds records but there is no {} beside it, so cai cannot tell that {} wrote \
             it with these settings; pass --overwrite to replace it, or choose another --output",
            output.display(),
            config_file.display(),
            kind.command
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", config_file.display())),
    };
    let saved: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not valid JSON, so the settings {} was written with are unknown; pass \
             --overwrite to start again",
            config_file.display(),
            output.display()
        )
    })?;
    let (Value::Object(saved), Value::Object(now)) = (&saved, config) else {
        bail!(
            "{}: expected the JSON object of settings cai saved; pass --overwrite to start again",
            config_file.display()
        );
    };
    let volatile = kind.volatile;
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
