//! JSONL datasets: reading with file:line errors, crash-safe incremental writing and resume,
//! and atomic whole-file writes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::Error;

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn jsonl_error(path: &Path, line: usize, message: String) -> Error {
    Error::Jsonl {
        path: path.to_path_buf(),
        line,
        message,
    }
}

/// serde_json's reason without its " at line 1 column N" suffix, plus the column.
fn serde_reason(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let reason = full.strip_suffix(&suffix).unwrap_or(&full);
    format!("{reason} at column {}", e.column())
}

/// The longest JSONL line cai reads (16 MiB). A record longer than this cannot fit any
/// model's context, and reading it whole first (then parsing and tokenizing it) would cost
/// many times its size in memory: it is refused before it is read.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Call `f(line_number, line, terminated)` for every non-blank line of `reader` (1-based
/// numbers; `terminated` is false for a last line without `\n`). A line longer than
/// [`MAX_LINE_BYTES`] is an error, found after reading at most that much of it.
fn for_each_line(
    path: &Path,
    reader: impl Read,
    mut f: impl FnMut(usize, &str, bool) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    for number in 1.. {
        buf.clear();
        let limit = MAX_LINE_BYTES as u64 + 1;
        if (&mut reader)
            .take(limit)
            .read_until(b'\n', &mut buf)
            .map_err(io_error(path))?
            == 0
        {
            break;
        }
        let terminated = buf.last() == Some(&b'\n');
        if !terminated && buf.len() > MAX_LINE_BYTES {
            return Err(jsonl_error(
                path,
                number,
                format!(
                    "the line is longer than {} MiB; expected one record per line, each at \
                     most {} MiB (is this a JSONL file, one JSON object per line?)",
                    MAX_LINE_BYTES >> 20,
                    MAX_LINE_BYTES >> 20
                ),
            ));
        }
        let line = std::str::from_utf8(&buf).map_err(|e| {
            jsonl_error(
                path,
                number,
                format!("not valid UTF-8 ({e}); expected UTF-8 JSON text"),
            )
        })?;
        if !line.trim().is_empty() {
            f(number, line.trim_end_matches(['\n', '\r']), terminated)?;
        }
    }
    Ok(())
}

fn parse_value(path: &Path, number: usize, line: &str) -> Result<Value, Error> {
    serde_json::from_str(line).map_err(|e| {
        let reason = serde_reason(&e);
        jsonl_error(
            path,
            number,
            format!("not valid JSON ({reason}); expected one JSON value per line"),
        )
    })
}

/// Read a JSONL file into records of type `T`, skipping blank lines.
///
/// A line that is not JSON, or does not fit `T`, is an [`Error::Jsonl`] naming the file, the
/// line and serde's reason (e.g. "missing field `prompt`").
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, Error> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut records = Vec::new();
    for_each_line(path, file, |number, line, _| {
        let record = serde_json::from_str(line).map_err(|e| {
            let reason = serde_reason(&e);
            let message = if e.is_data() {
                format!(
                    "{reason}; expected a record of type `{}`",
                    std::any::type_name::<T>()
                )
            } else {
                format!("not valid JSON ({reason}); expected one JSON object per line")
            };
            jsonl_error(path, number, message)
        })?;
        records.push(record);
        Ok(())
    })?;
    Ok(records)
}

/// Read a JSONL file of JSON objects, each with its 1-based line number; blank lines are
/// skipped and a line holding anything but an object is an error naming the line.
pub fn read_jsonl_values(path: &Path) -> Result<Vec<(usize, Value)>, Error> {
    let file = File::open(path).map_err(io_error(path))?;
    read_jsonl_values_from(path, file)
}

/// [`read_jsonl_values`] over any reader (a decompressed `.jsonl.gz`, say); `path` names it
/// in errors.
pub fn read_jsonl_values_from(
    path: &Path,
    reader: impl Read,
) -> Result<Vec<(usize, Value)>, Error> {
    let mut records = Vec::new();
    for_each_line(path, reader, |number, line, _| {
        let found = match parse_value(path, number, line)? {
            value @ Value::Object(_) => {
                records.push((number, value));
                return Ok(());
            }
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
        };
        Err(jsonl_error(
            path,
            number,
            format!("expected a JSON object, found {found}"),
        ))
    })?;
    Ok(records)
}

/// [`read_jsonl_values`] for a run's input, which must hold at least one record: a file that
/// is empty or holds only blank lines is an error naming it (a run over it would do nothing
/// and report success).
pub fn read_input_values(path: &Path) -> Result<Vec<(usize, Value)>, Error> {
    let records = read_jsonl_values(path)?;
    if records.is_empty() {
        return Err(Error::file(
            path,
            "no records (the file is empty or holds only blank lines); expected one JSON \
             object per line",
        ));
    }
    Ok(records)
}

/// The complete records of a JSONL output file that a crash may have cut short: an
/// unterminated last line is ignored, and a missing file gives no records.
///
/// Stages call this to find what is already done before resuming with
/// [`JsonlWriter::append`].
pub fn read_complete_records(path: &Path) -> Result<Vec<Value>, Error> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(path)(e)),
    };
    let mut records = Vec::new();
    for_each_line(path, file, |number, line, terminated| {
        if terminated {
            records.push(parse_value(path, number, line)?);
        }
        Ok(())
    })?;
    Ok(records)
}

fn create_parent_dir(path: &Path) -> Result<(), Error> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            fs::create_dir_all(parent).map_err(io_error(parent))
        }
        _ => Ok(()),
    }
}

fn to_json_line(path: &Path, record: &impl Serialize) -> Result<Vec<u8>, Error> {
    let mut line = serde_json::to_vec(record).map_err(|e| {
        Error::Invalid(format!(
            "{}: cannot write a record as JSON: {e}",
            path.display()
        ))
    })?;
    line.push(b'\n');
    Ok(line)
}

/// Length of the part of `file` that ends with its last `\n` (0 when it has none).
fn complete_len(file: &mut File) -> io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let mut end = file.seek(SeekFrom::End(0))?;
    let mut buf = vec![0; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Incremental JSONL output: one record per line, each line flushed as it is written, so
/// that a crash loses at most the line being written.
#[derive(Debug)]
pub struct JsonlWriter {
    path: PathBuf,
    file: File,
}

impl JsonlWriter {
    /// Create (or truncate) `path`, creating its parent directories.
    pub fn create(path: &Path) -> Result<Self, Error> {
        create_parent_dir(path)?;
        let file = File::create(path).map_err(io_error(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Open `path` to add records after those already there (creating it and its parent
    /// directories if needed).
    ///
    /// If the file ends with a partial line (a crash mid-write), that tail is cut off first,
    /// so the file holds only complete records: the ones [`read_complete_records`] returns.
    pub fn append(path: &Path) -> Result<Self, Error> {
        create_parent_dir(path)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_error(path))?;
        let complete = complete_len(&mut file).map_err(io_error(path))?;
        if complete < file.metadata().map_err(io_error(path))?.len() {
            file.set_len(complete).map_err(io_error(path))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Write `record` as one JSON line and flush it to the operating system.
    pub fn write(&mut self, record: &impl Serialize) -> Result<(), Error> {
        let line = to_json_line(&self.path, record)?;
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .map_err(io_error(&self.path))
    }

    /// Ask the operating system to put the written lines on disk (fsync), so that they
    /// survive a power loss too.
    pub fn sync(&mut self) -> Result<(), Error> {
        self.file.sync_data().map_err(io_error(&self.path))
    }
}

/// Write `records` as JSONL to `path` atomically: into a temporary file in the same
/// directory, synced, then renamed over `path`, so readers see the old file or the new one
/// and never a half-written one. Creates parent directories.
pub fn write_jsonl_atomic(path: &Path, records: &[impl Serialize]) -> Result<(), Error> {
    create_parent_dir(path)?;
    let name = path.file_name().ok_or_else(|| {
        Error::Invalid(format!(
            "{}: expected a file path, not a directory",
            path.display()
        ))
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = io::BufWriter::new(File::create(&tmp).map_err(io_error(&tmp))?);
        for record in records {
            file.write_all(&to_json_line(path, record)?)
                .map_err(io_error(&tmp))?;
        }
        let file = file
            .into_inner()
            .map_err(|e| io_error(&tmp)(e.into_error()))?;
        file.sync_all().map_err(io_error(&tmp))?;
        fs::rename(&tmp, path).map_err(io_error(path))
    })();
    if result.is_err() {
        // Best effort: the error being returned matters more than a failed clean-up.
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Prompt {
        id: u32,
        prompt: String,
    }

    fn prompt(id: u32, text: &str) -> Prompt {
        Prompt {
            id,
            prompt: text.to_owned(),
        }
    }

    /// A fresh temporary directory (removed when dropped) and a path `name` inside it.
    fn temp_path(name: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        (dir, path)
    }

    #[test]
    fn reads_records_skipping_blank_lines() {
        let (_dir, path) = temp_path("prompts.jsonl");
        fs::write(
            &path,
            "{\"id\":1,\"prompt\":\"a\"}\n\n  \r\n{\"id\":2,\"prompt\":\"b\"}\r\n",
        )
        .unwrap();
        assert_eq!(
            read_jsonl::<Prompt>(&path).unwrap(),
            [prompt(1, "a"), prompt(2, "b")]
        );
    }

    #[test]
    fn missing_field_names_file_line_and_field() {
        let (_dir, path) = temp_path("prompts.jsonl");
        fs::write(&path, "{\"id\":1,\"prompt\":\"a\"}\n\n{\"id\":2}\n").unwrap();
        let err = read_jsonl::<Prompt>(&path).unwrap_err();
        assert!(matches!(err, Error::Jsonl { line: 3, .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("{}:3: ", path.display())),
            "{text}"
        );
        assert!(
            text.contains("missing field `prompt` at column 8"),
            "{text}"
        );
        assert!(text.contains("Prompt`"), "{text}");
    }

    #[test]
    fn invalid_json_names_line() {
        let (_dir, path) = temp_path("bad.jsonl");
        fs::write(&path, "{\"id\":1,\"prompt\":\"a\"}\n{\"id\":2,\n").unwrap();
        let err = read_jsonl::<Prompt>(&path).unwrap_err().to_string();
        assert!(err.contains("bad.jsonl:2: not valid JSON"), "{err}");
    }

    #[test]
    fn missing_file_is_io_error_with_path() {
        let (_dir, path) = temp_path("absent.jsonl");
        let err = read_jsonl::<Prompt>(&path).unwrap_err();
        assert!(
            matches!(&err, Error::Io { path: p, .. } if *p == path),
            "{err:?}"
        );
    }

    #[test]
    fn values_are_objects_with_line_numbers() {
        let (_dir, path) = temp_path("v.jsonl");
        fs::write(&path, "{\"a\":1}\n\n{\"b\":2}\n").unwrap();
        assert_eq!(
            read_jsonl_values(&path).unwrap(),
            [(1, json!({"a": 1})), (3, json!({"b": 2}))]
        );
        fs::write(&path, "{\"a\":1}\n[1,2]\n").unwrap();
        let err = read_jsonl_values(&path).unwrap_err().to_string();
        assert!(
            err.ends_with("v.jsonl:2: expected a JSON object, found an array"),
            "{err}"
        );
    }

    #[test]
    fn append_cuts_partial_tail_then_resumes() {
        let (_dir, path) = temp_path("out/stage/responses.jsonl");
        let mut writer = JsonlWriter::create(&path).unwrap();
        writer.write(&prompt(1, "a")).unwrap();
        writer.write(&prompt(2, "b")).unwrap();
        writer.sync().unwrap();
        drop(writer);
        // A crash in the middle of the third record.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"id\":3,\"pro").unwrap();
        drop(file);

        let done = read_complete_records(&path).unwrap();
        assert_eq!(
            done,
            [
                json!({"id": 1, "prompt": "a"}),
                json!({"id": 2, "prompt": "b"})
            ]
        );

        let mut writer = JsonlWriter::append(&path).unwrap();
        writer.write(&prompt(3, "c")).unwrap();
        drop(writer);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "{\"id\":1,\"prompt\":\"a\"}\n{\"id\":2,\"prompt\":\"b\"}\n{\"id\":3,\"prompt\":\"c\"}\n"
        );
    }

    #[test]
    fn append_to_missing_or_lineless_file() {
        let (_dir, path) = temp_path("new.jsonl");
        JsonlWriter::append(&path)
            .unwrap()
            .write(&json!({"x": 1}))
            .unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"x\":1}\n");
        fs::write(&path, "{\"x\":").unwrap();
        JsonlWriter::append(&path)
            .unwrap()
            .write(&json!({"x": 2}))
            .unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"x\":2}\n");
    }

    #[test]
    fn complete_len_finds_newline_across_chunks() {
        let (_dir, path) = temp_path("long.jsonl");
        let long_tail = "x".repeat(200_000);
        fs::write(&path, format!("{{}}\n{long_tail}")).unwrap();
        let mut file = File::open(&path).unwrap();
        assert_eq!(complete_len(&mut file).unwrap(), 3);
    }

    #[test]
    fn complete_records_of_missing_file_is_empty() {
        let (_dir, path) = temp_path("none.jsonl");
        assert!(read_complete_records(&path).unwrap().is_empty());
    }

    #[test]
    fn create_truncates() {
        let (_dir, path) = temp_path("t.jsonl");
        fs::write(&path, "old\n").unwrap();
        JsonlWriter::create(&path).unwrap().write(&1).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "1\n");
    }

    #[test]
    fn atomic_write_replaces_file_and_leaves_no_temp() {
        let (_dir, path) = temp_path("sub/data.jsonl");
        write_jsonl_atomic(&path, &[prompt(1, "a")]).unwrap();
        write_jsonl_atomic(&path, &[prompt(2, "b"), prompt(3, "c")]).unwrap();
        assert_eq!(
            read_jsonl::<Prompt>(&path).unwrap(),
            [prompt(2, "b"), prompt(3, "c")]
        );
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["data.jsonl"]);
    }

    #[test]
    fn a_line_past_the_limit_is_refused_before_it_is_read_whole() {
        let (_dir, path) = temp_path("huge.jsonl");
        let mut text = String::from("{\"id\": 1, \"prompt\": \"short\"}\n{\"prompt\": \"");
        text.push_str(&"x".repeat(MAX_LINE_BYTES + 10));
        text.push_str("\"}\n");
        std::fs::write(&path, text).unwrap();
        let err = read_jsonl_values(&path).unwrap_err().to_string();
        assert!(err.contains("huge.jsonl:2:"), "{err}");
        assert!(err.contains("longer than 16 MiB"), "{err}");
    }

    #[test]
    fn a_line_at_the_limit_is_read() {
        let (_dir, path) = temp_path("big.jsonl");
        let head = "{\"prompt\": \"";
        let tail = "\"}";
        let fill = MAX_LINE_BYTES - head.len() - tail.len();
        let text = format!("{head}{}{tail}\n", "y".repeat(fill));
        std::fs::write(&path, text).unwrap();
        let records = read_jsonl_values(&path).unwrap();
        assert_eq!(records.len(), 1);
    }
}
