//! The stage runner's building blocks: content hashes and stage fingerprints, the decision to
//! skip, resume or restart a stage, atomic writes, and joining prompt sources (files of any
//! format `cai_data` reads, Hub datasets) into one data set with unique ids.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::manifest::{Manifest, Status};

/// Errors of the runner.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file or line is malformed.
    #[error("{path}: {message}")]
    Json {
        /// The file (with `:line` for a JSONL line).
        path: PathBuf,
        /// serde_json's message.
        message: String,
    },
    /// The run directory is held by another `cai pipeline` (the message names its PID), or
    /// its lock could not be taken.
    #[error(transparent)]
    Lock(#[from] cai_core::Error),
    /// A folder given as the run directory holds files, but cai did not make it one.
    #[error(
        "{path} is not empty and was not made by cai pipeline (it has no {marker} marker); \
         found {found}. cai never clears or writes into a folder it did not create: pass a new \
         or empty --run-dir (such as {suggestion}), or move those files away yourself",
        marker = crate::rundir::MARKER_FILE,
        suggestion = .path.join("cai-run").display()
    )]
    NotARunDir {
        /// The folder.
        path: PathBuf,
        /// What it holds (a few names, and how many more), and why it is not a run from
        /// before the marker.
        found: String,
    },
    /// A run directory of one kind given where the other is expected (`--sizes`).
    #[error("{path}: {message}")]
    WrongKind {
        /// The run directory.
        path: PathBuf,
        /// What it is and what was expected.
        message: String,
    },
    /// A path a stage is about to write exists, but no manifest of the stage says cai wrote it.
    #[error(
        "{path} exists, but the {stage} stage's manifest does not list it as written by cai, \
         so cai will not overwrite or delete it; move it out of the run directory, then run \
         again"
    )]
    NotOurs {
        /// The existing path.
        path: PathBuf,
        /// The stage that would write it.
        stage: String,
    },
    /// A stage ran but an output it promises is not there.
    #[error("{path} ({role}) was not written")]
    NotWritten {
        /// The output.
        path: PathBuf,
        /// What it is to the stage.
        role: String,
    },
    /// An earlier cai marked a stage finished with an output incomplete.
    #[error(
        "the {stage} stage was marked finished by an earlier cai with this output incomplete; \
         run with --from {stage} to redo it"
    )]
    FinishedIncomplete {
        /// The stage.
        stage: String,
        /// What is wrong with the output.
        #[source]
        source: Box<RunError>,
    },
    /// An output of a stage is incomplete or damaged (records missing, repeated or torn).
    #[error("{path}: {message}")]
    BadOutput {
        /// The output file.
        path: PathBuf,
        /// What is wrong, and what was expected.
        message: String,
    },
    /// A prompt source could not be read (a `.jsonl.gz`, JSON or Parquet file, a file with
    /// `?` options, a Hub dataset): the message names the file and the row.
    #[error("reading a prompt source: {0}")]
    Source(#[source] cai_core::Error),
    /// Two records of the joined prompt files share an id.
    #[error("{path}:{line}: id {id:?} is already used by an earlier record of the same prompt set; ids must be unique")]
    DuplicateId {
        /// The file.
        path: PathBuf,
        /// Its 1-based line.
        line: usize,
        /// The id.
        id: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_owned(),
        source,
    }
}

/// FNV-1a, 64 bits: a content hash that needs no dependency (inputs are not adversarial).
#[derive(Debug, Clone, Copy)]
pub struct Hasher(u64);

impl Default for Hasher {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher {
    /// Feed bytes.
    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    /// Feed a string followed by a separator, so that ("ab", "c") and ("a", "bc") differ.
    pub fn field(&mut self, text: &str) -> &mut Self {
        self.update(text.as_bytes()).update(&[0xff])
    }

    /// The hash as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// The hash of a file's bytes, or of a folder's files (names and bytes, sorted by name,
/// recursively).
pub fn hash_path(path: &Path) -> Result<String, RunError> {
    let mut hasher = Hasher::default();
    hash_into(path, &mut hasher)?;
    Ok(hasher.hex())
}

fn hash_into(path: &Path, hasher: &mut Hasher) -> Result<(), RunError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io(path))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io(path))?;
        entries.sort();
        for entry in entries {
            let name = entry.file_name().map(|n| n.to_string_lossy().into_owned());
            hasher.field(&name.unwrap_or_default());
            hash_into(&entry, hasher)?;
        }
    } else {
        let bytes = std::fs::read(path).map_err(io(path))?;
        hasher.update(&bytes);
    }
    Ok(())
}

/// Bytes of a file, or of every file in a folder.
pub fn size_on_disk(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::read_dir(path)
            .map(|dir| dir.flatten().map(|e| size_on_disk(&e.path())).sum())
            .unwrap_or(0),
        Ok(meta) => meta.len(),
        Err(_) => 0,
    }
}

/// Non-empty lines of a JSONL file (`None` if it cannot be read).
pub fn count_records(path: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.lines().filter(|l| !l.trim().is_empty()).count())
}

/// What to do with a stage, given its manifest from an earlier run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Finished with the same fingerprint: nothing to do.
    Skip,
    /// Started with the same fingerprint and not finished: continue where it stopped.
    Resume,
    /// Never started, changed since, or forced: start afresh.
    Fresh,
}

/// Skip a finished stage whose fingerprint is unchanged, resume an unfinished one, restart one
/// whose fingerprint changed (or every stage when `force`).
pub fn decide(previous: Option<&Manifest>, fingerprint: &str, force: bool) -> Decision {
    match previous {
        _ if force => Decision::Fresh,
        Some(m) if m.fingerprint != fingerprint => Decision::Fresh,
        Some(m) if m.status == Status::Finished => Decision::Skip,
        Some(_) => Decision::Resume,
        None => Decision::Fresh,
    }
}

/// The seconds an attempt ran before it was killed, for a manifest that still says it is
/// running (a SIGKILL leaves no time to record its own): from the attempt's start to the
/// newest file it wrote in `stage_dir`. 0 for an attempt that ended and recorded its time.
pub fn killed_attempt_seconds(previous: &Manifest, stage_dir: &Path) -> f64 {
    if previous.status != Status::Running {
        return 0.0;
    }
    newest_mtime(stage_dir).map_or(0.0, |t| t.saturating_sub(previous.started_at) as f64)
}

/// The newest modification time (Unix seconds) of `path` or anything under it.
fn newest_mtime(path: &Path) -> Option<u64> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let own = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    if !meta.is_dir() {
        return own;
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| newest_mtime(&e.path()))
        .chain(own)
        .max()
}

/// Write a file through a temporary sibling and a rename, so that readers (and a run killed
/// half-way) see the old contents or the new, never a part. The temporary file is made anew
/// (a leftover one, or a link planted under its name, is replaced, never written through),
/// and a link at `path` is replaced by the file rather than followed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&tmp)(e)),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// The id of a record as text (a string, or a number written as JSON), if it has one.
fn id_text(record: &serde_json::Value) -> Option<String> {
    match record.get("id")? {
        serde_json::Value::String(id) => Some(id.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The ids of a JSONL file's records, in order (records without an id are skipped).
pub fn jsonl_ids(path: &Path) -> Result<Vec<String>, RunError> {
    Ok(read_jsonl_objects(path)?
        .iter()
        .filter_map(id_text)
        .collect())
}

/// Every non-empty line of a JSONL file as a JSON object, failing on the first that is not
/// one (a torn or corrupt line), naming its line.
fn read_jsonl_objects(path: &Path) -> Result<Vec<serde_json::Value>, RunError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let mut records = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .ok()
            .filter(serde_json::Value::is_object)
            .ok_or_else(|| RunError::BadOutput {
                path: path.to_owned(),
                message: format!(
                    "line {} is not a JSON object (a torn or corrupt record)",
                    index + 1
                ),
            })?;
        records.push(value);
    }
    Ok(records)
}

/// Check a stage's JSONL output before its stage is marked finished: every line a JSON
/// object, no id twice and, given `expected` ids, exactly those. Returns the records.
pub fn check_jsonl_output(path: &Path, expected: Option<&[String]>) -> Result<usize, RunError> {
    let records = read_jsonl_objects(path)?;
    let bad = |message: String| RunError::BadOutput {
        path: path.to_owned(),
        message,
    };
    let mut seen = HashSet::new();
    let mut twice = Vec::new();
    for id in records.iter().filter_map(id_text) {
        if !seen.insert(id.clone()) {
            twice.push(id);
        }
    }
    let few = |ids: &[String]| {
        let shown: Vec<&str> = ids.iter().take(3).map(String::as_str).collect();
        let more = ids.len().saturating_sub(3);
        format!(
            "{}{}",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )
    };
    if !twice.is_empty() {
        return Err(bad(format!(
            "{} records, {} ids more than once ({}); expected each id once",
            records.len(),
            twice.len(),
            few(&twice)
        )));
    }
    if let Some(expected) = expected {
        let missing: Vec<String> = expected
            .iter()
            .filter(|id| !seen.contains(*id))
            .cloned()
            .collect();
        let wanted: HashSet<&String> = expected.iter().collect();
        let extra: Vec<String> = seen
            .iter()
            .filter(|id| !wanted.contains(id))
            .cloned()
            .collect();
        if !missing.is_empty() || !extra.is_empty() || records.len() != expected.len() {
            return Err(bad(format!(
                "{} records for {} input ids ({} missing{}, {} not among the inputs{})",
                records.len(),
                expected.len(),
                missing.len(),
                if missing.is_empty() {
                    String::new()
                } else {
                    format!(": {}", few(&missing))
                },
                extra.len(),
                if extra.is_empty() {
                    String::new()
                } else {
                    format!(": {}", few(&extra))
                },
            )));
        }
    }
    Ok(records.len())
}

/// Check a model folder a training stage wrote before the stage is marked finished: a
/// `config.json` that parses, and a `model.safetensors` whose header is whole and whose
/// size matches what the header describes (a truncated or missing weights file fails), or
/// a shard index that parses.
pub fn check_model_output(dir: &Path) -> Result<(), RunError> {
    let bad = |path: PathBuf, message: String| RunError::BadOutput { path, message };
    let config = dir.join("config.json");
    let text = std::fs::read_to_string(&config).map_err(io(&config))?;
    serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| bad(config.clone(), format!("not valid JSON: {e}")))?;
    let weights = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    if !weights.exists() && index.is_file() {
        // Sharded weights: the shards are checked when the model is loaded.
        let text = std::fs::read_to_string(&index).map_err(io(&index))?;
        serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|e| bad(index.clone(), format!("not valid JSON: {e}")))?;
        return Ok(());
    }
    let mut file = std::fs::File::open(&weights).map_err(io(&weights))?;
    let size = file.metadata().map_err(io(&weights))?.len();
    let mut len = [0u8; 8];
    std::io::Read::read_exact(&mut file, &mut len)
        .map_err(|_| bad(weights.clone(), "shorter than a safetensors header".into()))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > size.saturating_sub(8) {
        return Err(bad(
            weights,
            format!("its header claims {header_len} bytes, but the file has {size}"),
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    std::io::Read::read_exact(&mut file, &mut header).map_err(io(&weights))?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| {
            bad(
                weights.clone(),
                format!("its header is not valid JSON: {e}"),
            )
        })?;
    let data_end = header
        .values()
        .filter_map(|t| t.get("data_offsets")?.as_array()?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    if 8 + header_len + data_end != size {
        return Err(bad(
            weights,
            format!(
                "{size} bytes, but its header describes {} (a truncated or damaged file)",
                8 + header_len + data_end
            ),
        ));
    }
    Ok(())
}

/// Join prompt sources into `output` (atomically), keeping at most `limit` records spread
/// evenly over them. A source is a plain JSONL file, read line by line as ever, or anything
/// else `cai_data` reads (a `.jsonl.gz`, JSON or Parquet file, a file with `?` options, a
/// Hub dataset). A record without an `id` gets `<stem>-<index>` (the file's name without its
/// data endings, or the Hub dataset's name, and the 0-based line or row); two records with
/// the same id are an error naming the second. Returns the records written.
pub fn join_prompt_files(
    inputs: &[PathBuf],
    output: &Path,
    limit: Option<usize>,
) -> Result<usize, RunError> {
    join_prompt_files_with(inputs, output, limit, &cai_hub::Hub::from_env())
}

/// [`join_prompt_files`] with an explicit Hub client for Hub datasets.
pub fn join_prompt_files_with(
    inputs: &[PathBuf],
    output: &Path,
    limit: Option<usize>,
    hub: &cai_hub::Hub,
) -> Result<usize, RunError> {
    let mut records = Vec::new();
    let mut seen = HashSet::new();
    for path in inputs {
        let (stem, rows) = source_rows(path, hub)?;
        for (index, mut value) in rows {
            let Some(object) = value.as_object_mut() else {
                return Err(RunError::Json {
                    path: PathBuf::from(format!("{}:{}", path.display(), index + 1)),
                    message: "expected a JSON object".into(),
                });
            };
            // A HarmBench row is read by its BehaviorID: write that as its id.
            if let Some(own) = cai_core::prompts::dataset_row_id(object) {
                object.insert("id".into(), own.into());
            }
            let id = match object.get("id") {
                Some(serde_json::Value::String(id)) => id.clone(),
                Some(serde_json::Value::Number(n)) => n.to_string(),
                _ => {
                    let id = format!("{stem}-{index}");
                    object.insert("id".into(), id.clone().into());
                    id
                }
            };
            if !seen.insert(id.clone()) {
                return Err(RunError::DuplicateId {
                    path: path.clone(),
                    line: index + 1,
                    id,
                });
            }
            records.push(value);
        }
    }
    let kept: Vec<&serde_json::Value> = match limit {
        Some(limit) if limit < records.len() => (0..limit)
            .map(|i| &records[i * records.len() / limit])
            .collect(),
        _ => records.iter().collect(),
    };
    let mut text = String::new();
    for record in &kept {
        text += &serde_json::to_string(record).expect("JSON values serialise");
        text.push('\n');
    }
    write_atomic(output, text.as_bytes())?;
    Ok(kept.len())
}

/// The rows of one prompt source, `(0-based line or row index, value)`, and the stem of the
/// ids given to rows without one.
type SourceRows = (String, Vec<(usize, serde_json::Value)>);

/// The rows of a prompt source: a plain JSONL file line by line, as the pipeline always read
/// it; anything else through `cai_data`.
fn source_rows(path: &Path, hub: &cai_hub::Hub) -> Result<SourceRows, RunError> {
    if !cai_data::is_plain_jsonl(path) {
        let records = cai_data::read_records_with(path, hub).map_err(RunError::Source)?;
        let stem = source_stem(&records.source);
        let rows = records.rows.into_iter().map(|(n, v)| (n - 1, v)).collect();
        return Ok((stem, rows));
    }
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let stem = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || PathBuf::from(format!("{}:{}", path.display(), index + 1));
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| RunError::Json {
            path: at(),
            message: e.to_string(),
        })?;
        if !value.is_object() {
            return Err(RunError::Json {
                path: at(),
                message: "expected a JSON object".into(),
            });
        }
        rows.push((index, value));
    }
    Ok((stem, rows))
}

/// The stem of the ids of a source's rows: a Hub dataset's name (when its rows come from
/// several files), else the file's name without its data endings (`red_team_attempts` of
/// `red_team_attempts.jsonl.gz`).
fn source_stem(source: &Path) -> String {
    if !source.is_file() {
        if let Ok(spec) = cai_data::DataSpec::parse(&source.to_string_lossy()) {
            if let cai_data::Location::Hub { repo, .. } = spec.location {
                return repo.id.rsplit('/').next().unwrap_or_default().to_owned();
            }
        }
    }
    let name = source
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let lower = name.to_ascii_lowercase();
    let mut endings = cai_data::FILE_ENDINGS.to_vec();
    endings.sort_by_key(|e| std::cmp::Reverse(e.len()));
    match endings.iter().find(|e| lower.ends_with(*e)) {
        Some(ending) => name[..name.len() - ending.len()].to_owned(),
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    fn manifest(status: Status, fingerprint: &str) -> Manifest {
        Manifest {
            stage: "sft".into(),
            status,
            fingerprint: fingerprint.into(),
            inputs: vec![],
            outputs: vec![],
            writes: vec![],
            commands: vec![],
            jobs: vec![],
            attempts: 1,
            seconds: 0.0,
            peak_rss_mib: None,
            started_at: 0,
            finished_at: None,
            error: None,
        }
    }

    #[test]
    fn a_killed_attempt_ran_until_its_newest_file() {
        let dir = tempfile::tempdir().unwrap();
        let at = |secs: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        std::fs::create_dir(dir.path().join("model")).unwrap();
        for (file, secs) in [("sl.jsonl", 57), ("model/checkpoint", 107)] {
            let f = std::fs::File::create(dir.path().join(file)).unwrap();
            f.set_modified(at(secs)).unwrap();
        }
        // Directories' own times (set when their entries were made) are older too.
        for d in [dir.path().join("model"), dir.path().to_owned()] {
            std::fs::File::open(d)
                .unwrap()
                .set_modified(at(60))
                .unwrap();
        }
        let mut killed = manifest(Status::Running, "a");
        killed.started_at = 7;
        assert_eq!(killed_attempt_seconds(&killed, dir.path()), 100.0);
        let interrupted = Manifest {
            status: Status::Interrupted,
            ..killed.clone()
        };
        assert_eq!(killed_attempt_seconds(&interrupted, dir.path()), 0.0);
        assert_eq!(
            killed_attempt_seconds(&killed, &dir.path().join("gone")),
            0.0
        );
    }

    #[test]
    fn decisions_follow_status_and_fingerprint() {
        let finished = manifest(Status::Finished, "a");
        let running = manifest(Status::Running, "a");
        assert_eq!(decide(None, "a", false), Decision::Fresh);
        assert_eq!(decide(Some(&finished), "a", false), Decision::Skip);
        assert_eq!(decide(Some(&finished), "b", false), Decision::Fresh);
        assert_eq!(decide(Some(&running), "a", false), Decision::Resume);
        assert_eq!(decide(Some(&running), "b", false), Decision::Fresh);
        assert_eq!(decide(Some(&finished), "a", true), Decision::Fresh);
        let failed = manifest(Status::Failed, "a");
        assert_eq!(decide(Some(&failed), "a", false), Decision::Resume);
    }

    #[test]
    fn a_jsonl_output_must_be_whole_with_each_expected_id_once() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sl.jsonl");
        let ids: Vec<String> = ["a", "b", "3"].map(String::from).to_vec();
        std::fs::write(&out, "{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":3}\n").unwrap();
        assert_eq!(check_jsonl_output(&out, Some(&ids)).unwrap(), 3);
        assert_eq!(jsonl_ids(&out).unwrap(), ids);
        // Two writers: an id twice and a torn line.
        std::fs::write(&out, "{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"a\"}\n").unwrap();
        let err = check_jsonl_output(&out, Some(&ids))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sl.jsonl") && err.contains("more than once (a)"),
            "{err}"
        );
        std::fs::write(
            &out,
            "{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"3\", \"te\n",
        )
        .unwrap();
        let err = check_jsonl_output(&out, Some(&ids))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3 is not a JSON object"), "{err}");
        // Missing and foreign ids.
        std::fs::write(&out, "{\"id\":\"a\"}\n{\"id\":\"z\"}\n").unwrap();
        let err = check_jsonl_output(&out, Some(&ids))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("2 records for 3 input ids (2 missing: b, 3, 1 not among the inputs: z)"),
            "{err}"
        );
        assert_eq!(check_jsonl_output(&out, None).unwrap(), 2);
    }

    #[test]
    fn an_atomic_write_replaces_a_planted_link_instead_of_writing_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("theirs.txt");
        std::fs::write(&theirs, "keep").unwrap();
        let out = dir.path().join("report.md");
        std::fs::write(dir.path().join("report.md.tmp"), "stale").unwrap();
        write_atomic(&out, b"one").unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "one");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&theirs, dir.path().join("report.md.tmp")).unwrap();
            write_atomic(&out, b"two").unwrap();
            std::fs::remove_file(&out).unwrap();
            std::os::unix::fs::symlink(&theirs, &out).unwrap();
            write_atomic(&out, b"three").unwrap();
            assert_eq!(std::fs::read_to_string(&out).unwrap(), "three");
            assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "keep");
        }
    }

    #[test]
    fn a_model_output_needs_its_config_and_whole_weights() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_model_output(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0u8; 8]);
        let weights = dir.path().join("model.safetensors");
        std::fs::write(&weights, &bytes).unwrap();
        check_model_output(dir.path()).unwrap();
        std::fs::write(&weights, &bytes[..bytes.len() - 3]).unwrap();
        let err = check_model_output(dir.path()).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        std::fs::write(&weights, &bytes[..20]).unwrap();
        let err = check_model_output(dir.path()).unwrap_err().to_string();
        assert!(err.contains("header claims"), "{err}");
    }

    #[test]
    fn fnv_matches_its_published_values() {
        // FNV-1a 64 test vectors: "" and "a".
        assert_eq!(Hasher::default().hex(), "cbf29ce484222325");
        assert_eq!(Hasher::default().update(b"a").hex(), "af63dc4c8601ec8c");
        let ab_c = Hasher::default().field("ab").field("c").hex();
        let a_bc = Hasher::default().field("a").field("bc").hex();
        assert_ne!(ab_c, a_bc);
    }

    #[test]
    fn folders_hash_by_names_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "1").unwrap();
        std::fs::write(dir.path().join("b"), "2").unwrap();
        let before = hash_path(dir.path()).unwrap();
        std::fs::write(dir.path().join("b"), "3").unwrap();
        assert_ne!(hash_path(dir.path()).unwrap(), before);
        std::fs::write(dir.path().join("b"), "2").unwrap();
        assert_eq!(hash_path(dir.path()).unwrap(), before);
        assert_eq!(size_on_disk(dir.path()), 2);
    }

    #[test]
    fn joined_ids_are_the_ids_the_prompt_readers_give() {
        let dir = tempfile::tempdir().unwrap();
        let hb = dir.path().join("hb.jsonl");
        std::fs::write(
            &hb,
            "{\"Behavior\": \"Pick a lock\", \"BehaviorID\": \"lock_1\"}\n\
             {\"Behavior\": \"Write a threat\"}\n\
             {\"id\": \"x\", \"Behavior\": \"Steal\", \"BehaviorID\": \"steal_2\"}\n",
        )
        .unwrap();
        let out = dir.path().join("out.jsonl");
        join_prompt_files(&[hb], &out, None).unwrap();
        let joined = jsonl_ids(&out).unwrap();
        assert_eq!(joined, ["lock_1", "hb-1", "steal_2"]);
        let read: Vec<String> = cai_core::prompts::read_prompts(&out)
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(read, joined);
    }

    #[test]
    fn joined_prompts_get_ids_and_are_thinned_evenly() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        let b = dir.path().join("b.jsonl");
        std::fs::write(
            &a,
            "{\"id\": \"x\", \"prompt\": \"p\"}\n\n{\"prompt\": \"q\"}\n",
        )
        .unwrap();
        std::fs::write(&b, "{\"id\": 3, \"prompt\": \"r\"}\n{\"prompt\": \"s\"}\n").unwrap();
        let out = dir.path().join("out.jsonl");
        assert_eq!(
            join_prompt_files(&[a.clone(), b.clone()], &out, None).unwrap(),
            4
        );
        let text = std::fs::read_to_string(&out).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
            .collect();
        assert_eq!(ids, ["\"x\"", "\"a-2\"", "3", "\"b-1\""]);
        assert_eq!(
            join_prompt_files(&[a.clone(), b], &out, Some(2)).unwrap(),
            2
        );
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains("\"p\"") && text.contains("\"r\""), "{text}");
        let err = join_prompt_files(&[a.clone(), a], &out, None).unwrap_err();
        assert!(err.to_string().contains("a.jsonl:1: id \"x\""), "{err}");
    }
}
