//! cai-data: where the stages' records come from. One reader takes the text given to
//! `--prompts`/`--data` — a JSONL, `.jsonl.gz`, JSON or Parquet file, or a Hugging Face Hub
//! dataset (`org/name`, `hf://datasets/org/name[@rev][/path]`) with `?split=`, `?subset=`,
//! `?limit=` and column renames (`?prompt=question`) — and gives JSON objects numbered as
//! cai-core's JSONL reader numbers lines, so every stage checks them the same way.
//!
//! It is a crate of its own so that Parquet and the Hub client stay out of cai-core, which
//! every crate builds on.
#![deny(missing_docs)]

mod files;
mod hub_dataset;
mod spec;

use std::path::{Path, PathBuf};

use cai_core::multiple_choice::ChoiceItem;
use cai_core::prompts::{prompts_from_records, Prompt};
use cai_core::Error;
use cai_hub::{Hub, HubError};
use serde_json::Value;

pub use hub_dataset::choose_files;
pub use spec::{DataSpec, Location, FILE_ENDINGS};

/// The rows of a source and the name its errors use.
#[derive(Debug, Clone, PartialEq)]
pub struct Records {
    /// The file (when the rows come from one file) or the spec as given.
    pub source: PathBuf,
    /// `(number, object)`: the 1-based line of a JSONL file or row of a Parquet file; rows
    /// of a source made of several files are numbered through them in order.
    pub rows: Vec<(usize, Value)>,
}

/// Read every record of `spec` (see [`DataSpec::parse`]), downloading a Hub dataset's files
/// into the Hugging Face cache as needed (`HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`).
pub fn read_records(spec: &Path) -> Result<Records, Error> {
    read_records_with(spec, &Hub::from_env())
}

/// [`read_records`] with an explicit Hub client.
pub fn read_records_with(spec: &Path, hub: &Hub) -> Result<Records, Error> {
    let Some(text) = spec.to_str() else {
        return Ok(Records {
            source: spec.to_path_buf(),
            rows: files::read_file(spec, None, &[])?,
        });
    };
    let parsed = DataSpec::parse(text).map_err(|message| Error::file(spec, message))?;
    let columns: Vec<&str> = parsed.renames.iter().map(|(_, c)| c.as_str()).collect();
    let paths = match &parsed.location {
        Location::File(path) => vec![path.clone()],
        Location::Hub { repo, path } => hub_dataset::dataset_files(
            hub,
            repo,
            path.as_deref(),
            parsed.subset.as_deref(),
            parsed.split.as_deref(),
        )
        .map_err(|e| match e {
            hub_dataset::HubOrChoice::Hub(e) => Error::file(spec, e.to_string()),
            hub_dataset::HubOrChoice::Choice(message) => {
                Error::file(spec, format!("{}: {message}", repo.describe()))
            }
        })?,
    };
    let mut records = match paths.as_slice() {
        [one] => Records {
            source: one.clone(),
            rows: files::read_file(one, parsed.limit, &columns)?,
        },
        many => {
            let mut rows = Vec::new();
            for path in many {
                let left = parsed.limit.map(|l| l.saturating_sub(rows.len()));
                if left == Some(0) {
                    break;
                }
                for (_, value) in files::read_file(path, left, &columns)? {
                    rows.push((rows.len() + 1, value));
                }
            }
            Records {
                source: spec.to_path_buf(),
                rows,
            }
        }
    };
    rename_columns(&mut records, &parsed)?;
    Ok(records)
}

/// Check, without reading or downloading anything, that `spec` names an existing file or a
/// well-formed Hub dataset source; the message says what is wrong (for a usage error).
pub fn check_source(spec: &Path) -> Result<(), String> {
    if spec.is_file() {
        return Ok(());
    }
    let text = spec.to_string_lossy();
    match DataSpec::parse(&text)?.location {
        Location::File(path) if !path.is_file() => Err(format!("{}: no such file", path.display())),
        _ => Ok(()),
    }
}

/// Apply `FIELD=COLUMN` renames to every row; a row without the column is an error.
fn rename_columns(records: &mut Records, spec: &DataSpec) -> Result<(), Error> {
    if spec.renames.is_empty() {
        return Ok(());
    }
    for (number, value) in &mut records.rows {
        let Value::Object(object) = value else {
            continue;
        };
        let mut taken = Vec::with_capacity(spec.renames.len());
        for (field, column) in &spec.renames {
            let Some(cell) = object.remove(column) else {
                let keys: Vec<&str> = object.keys().map(String::as_str).collect();
                return Err(Error::Jsonl {
                    path: records.source.clone(),
                    line: *number,
                    message: format!(
                        "no column \"{column}\" (asked for by {field}={column}); the record's \
                         columns are {}",
                        keys.join(", ")
                    ),
                });
            };
            taken.push((field.clone(), cell));
        }
        object.extend(taken);
    }
    Ok(())
}

/// The records of a run's input, which must hold at least one: as
/// [`cai_core::jsonl::read_input_values`] for a plain JSONL file (the same errors), and for
/// any other source, its rows.
pub fn read_input_values(spec: &Path) -> Result<Vec<(usize, Value)>, Error> {
    if is_plain_jsonl(spec) {
        return cai_core::jsonl::read_input_values(spec);
    }
    let records = read_records(spec)?;
    if records.rows.is_empty() {
        return Err(Error::file(
            &records.source,
            "no records (the source holds no rows); expected at least one",
        ));
    }
    Ok(records.rows)
}

/// The prompts of a source, read as [`cai_core::prompts::read_prompts`] reads a prompt file
/// (`prompt`, `messages`, or hh-rlhf's `chosen`/`rejected`; an optional `id`).
pub fn read_prompts(spec: &Path) -> Result<Vec<Prompt>, Error> {
    if is_plain_jsonl(spec) {
        return cai_core::prompts::read_prompts(spec);
    }
    let records = read_records(spec)?;
    prompts_from_records(&records.source, records.rows)
}

/// Multiple-choice items: a local JSONL or JSON file as
/// [`cai_core::multiple_choice::load_items`] reads it (Anthropic's shapes, BIG-bench tasks,
/// chain-of-thought lists), and the rows of any other source (Parquet, `.jsonl.gz`, a Hub
/// dataset such as Hugging Face's `hhh_alignment` with its `{"input", "targets"}` rows).
pub fn read_choice_items(spec: &Path) -> Result<Vec<ChoiceItem>, Error> {
    let name = spec.to_string_lossy().to_ascii_lowercase();
    if is_plain_jsonl(spec) || (spec.is_file() && name.ends_with(".json")) {
        return cai_core::multiple_choice::load_items(spec);
    }
    let records = read_records(spec)?;
    cai_core::multiple_choice::items_from_rows(&records.source, records.rows)
}

/// `spec` with a Hub dataset's revision replaced by the commit it names now (asked of `hub`;
/// offline, the cached snapshot's), as `hf://datasets/ORG/NAME@COMMIT…` with the same path
/// and options: reading the pinned text reads that commit whatever the branch does later,
/// and the text changes when the branch moves. A file source is given back as written.
pub fn pin_revision_with(spec: &DataSpec, hub: &Hub) -> Result<String, HubError> {
    let Location::Hub { repo, path } = &spec.location else {
        return Ok(spec.text.clone());
    };
    let commit = if hub.config().offline {
        let snapshot = hub
            .cache(repo)?
            .find_snapshot(repo)
            .map_err(|_| hub.offline_error(repo, path.as_deref()))?;
        snapshot
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .ok_or_else(|| hub.offline_error(repo, path.as_deref()))?
    } else {
        hub.repo_info(repo)?.commit
    };
    Ok(spec.at_commit(&commit).expect("a Hub source"))
}

/// An existing file that is neither compressed, JSON nor Parquet: cai-core reads it as it
/// always has.
pub fn is_plain_jsonl(spec: &Path) -> bool {
    let name = spec.to_string_lossy().to_ascii_lowercase();
    spec.is_file()
        && ![".gz", ".json", ".parquet"]
            .iter()
            .any(|e| name.ends_with(e))
        && !files::starts_with_parquet_magic(spec)
}
