//! The error type of cai-core.

use std::path::PathBuf;

/// Errors from cai-core: bad input files and failures of a language model backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSONL line is not valid JSON or lacks an expected field.
    #[error("{path}:{line}: {message}")]
    Jsonl {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A constitution, few-shot or prompt file is in no accepted format, lacks a field or
    /// has one of the wrong shape (the message says what was expected).
    #[error("{path}: {}{message}", field_prefix(.field.as_deref()))]
    File {
        /// The file.
        path: PathBuf,
        /// The field at fault (`"harmful3.edit_request"`, `"critique_revision"`), if one is.
        field: Option<String>,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A chat template failed to parse or render.
    #[error("chat template: {0}")]
    Template(String),
    /// Input that is well-formed but not acceptable (the message says what was expected).
    #[error("{0}")]
    Invalid(String),
    /// Another process (or another lock in this one) is writing the same output.
    #[error(
        "{} is being written by another cai process{}; wait for it to finish or stop it, \
         or choose another output",
        .target.display(),
        .pid.map_or_else(String::new, |pid| format!(" (PID {pid})"))
    )]
    Locked {
        /// The output file or folder.
        target: PathBuf,
        /// The holder's process id, when its lock file names one.
        pid: Option<u32>,
    },
    /// A language model backend failed.
    #[error("model backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// `"field: "` before a message about a field, nothing otherwise.
fn field_prefix(field: Option<&str>) -> String {
    field.map_or_else(String::new, |f| format!("{f}: "))
}

impl Error {
    /// Wrap any backend error.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Backend(Box::new(e))
    }

    /// An [`Error::File`] about the whole file.
    pub fn file(path: &std::path::Path, message: impl Into<String>) -> Self {
        Error::File {
            path: path.to_path_buf(),
            field: None,
            message: message.into(),
        }
    }

    /// An [`Error::File`] about one field of the file.
    pub fn field(
        path: &std::path::Path,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::File {
            path: path.to_path_buf(),
            field: Some(field.into()),
            message: message.into(),
        }
    }
}
