//! Rows of one local file as JSON objects: JSONL (as cai-core reads it), gzip-compressed
//! JSONL or JSON array (whatever its name says), a JSON array, or Parquet (each row's columns
//! as fields; nested lists and structs become JSON arrays and objects).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use cai_core::jsonl::{read_jsonl_values, read_jsonl_values_from};
use cai_core::Error;
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::Value;

/// The first bytes of a Parquet file.
const PARQUET_MAGIC: &[u8; 4] = b"PAR1";

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The rows of `path`, each with its 1-based number (the line of a JSONL file, the row of a
/// Parquet file or JSON array), at most `limit` of them. A Parquet file must hold every
/// column of `columns` (checked before any row is read).
pub fn read_file(
    path: &Path,
    limit: Option<usize>,
    columns: &[&str],
) -> Result<Vec<(usize, Value)>, Error> {
    let name = path.to_string_lossy().to_ascii_lowercase();
    let mut rows = if name.ends_with(".parquet") || starts_with_parquet_magic(path) {
        read_parquet(path, limit, columns)?
    } else if name.ends_with(".gz") {
        let file = File::open(path).map_err(io_error(path))?;
        let decoded = BufReader::new(flate2::read::MultiGzDecoder::new(file));
        // Any name: hh-rlhf's red_team_attempts.jsonl.gz holds one JSON array.
        read_json_or_jsonl(path, decoded, true)?
    } else if name.ends_with(".json") {
        let file = File::open(path).map_err(io_error(path))?;
        read_json_or_jsonl(path, BufReader::new(file), true)?
    } else {
        read_jsonl_values(path)?
    };
    if let Some(limit) = limit {
        rows.truncate(limit);
    }
    Ok(rows)
}

/// Whether the file starts with Parquet's magic bytes.
pub(crate) fn starts_with_parquet_magic(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| &magic == PARQUET_MAGIC)
}

/// A `.json` or gzip-compressed file holding one array of objects, or (as many `.json`
/// files on the Hub do) JSON lines.
fn read_json_or_jsonl(
    path: &Path,
    mut reader: impl BufRead,
    may_be_array: bool,
) -> Result<Vec<(usize, Value)>, Error> {
    let starts_array = may_be_array && {
        let buf = reader.fill_buf().map_err(io_error(path))?;
        buf.iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|&b| b == b'[')
    };
    if !starts_array {
        return read_jsonl_values_from(path, reader);
    }
    let value: Value = serde_json::from_reader(reader).map_err(|e| {
        Error::file(
            path,
            format!("not valid JSON ({e}); expected an array of objects or JSON lines"),
        )
    })?;
    let Value::Array(items) = value else {
        unreachable!("the text starts with '['")
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Object(_) => Ok((i + 1, item)),
            other => Err(Error::field(
                path,
                format!("[{i}]"),
                format!("{other} is not an object; expected an array of JSON objects"),
            )),
        })
        .collect()
}

/// The rows of a Parquet file as JSON objects.
fn read_parquet(
    path: &Path,
    limit: Option<usize>,
    columns: &[&str],
) -> Result<Vec<(usize, Value)>, Error> {
    let file = File::open(path).map_err(io_error(path))?;
    let reader = SerializedFileReader::new(file).map_err(|e| {
        Error::file(
            path,
            format!("not a readable Parquet file ({e}); expected a complete .parquet file"),
        )
    })?;
    let names: Vec<String> = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    for column in columns {
        if !names.iter().any(|n| n == column) {
            return Err(Error::field(
                path,
                *column,
                format!(
                    "no such column; the file's columns are {}. Name an existing column \
                     (FIELD=COLUMN after '?' reads a column under another name)",
                    names.join(", ")
                ),
            ));
        }
    }
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| Error::file(path, format!("cannot read the rows ({e})")))?;
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        if limit.is_some_and(|limit| out.len() >= limit) {
            break;
        }
        let row = row.map_err(|e| Error::Jsonl {
            path: path.to_path_buf(),
            line: i + 1,
            message: format!(
                "cannot read Parquet row {} ({e}); cai reads uncompressed, snappy, gzip, lz4 \
                 and zstd Parquet: rewrite the file with one of those",
                i + 1
            ),
        })?;
        out.push((i + 1, row.to_json_value()));
    }
    Ok(out)
}
