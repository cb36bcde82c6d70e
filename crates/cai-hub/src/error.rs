//! The error type of cai-hub: every message names the repository (and file) and what to do.

use std::path::PathBuf;

/// Errors from finding or downloading a repository's files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The text given is not a repository id (`org/name`, optionally `@revision`).
    #[error("'{spec}' is not a Hugging Face {kind} id: {message}")]
    InvalidId {
        /// What the user passed.
        spec: String,
        /// "model" or "dataset".
        kind: &'static str,
        /// What was wrong and what was expected.
        message: String,
    },
    /// `HF_HUB_OFFLINE` is set and what is needed is not in the cache.
    #[error(
        "{what} is not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE is set, so cai \
         does not download it: unset HF_HUB_OFFLINE where there is network access, or fill \
         the cache with `huggingface-cli download {cli_args}`"
    )]
    Offline {
        /// The repository (and file) looked for.
        what: String,
        /// The cache folder looked in.
        cache: PathBuf,
        /// Arguments for `huggingface-cli download` that fetch it.
        cli_args: String,
    },
    /// The Hub answered 404: no such repository, revision or file.
    #[error("{what} was not found on {endpoint} (HTTP 404{code}): {hint}")]
    NotFound {
        /// The repository, revision or file.
        what: String,
        /// The Hub asked.
        endpoint: String,
        /// The Hub's `X-Error-Code`, as ", Code".
        code: String,
        /// What to check.
        hint: String,
    },
    /// The Hub refused access (401/403): a gated or private repository, or a bad token.
    #[error("{what}: access refused by {endpoint} (HTTP {status}{code}): {hint}")]
    Unauthorized {
        /// The repository or file.
        what: String,
        /// The Hub asked.
        endpoint: String,
        /// 401 or 403.
        status: u16,
        /// The Hub's `X-Error-Code`, as ", Code".
        code: String,
        /// Which token was sent and what to do.
        hint: String,
    },
    /// Any other HTTP status.
    #[error("{url}: HTTP {status}{message}")]
    Http {
        /// The URL asked.
        url: String,
        /// The status.
        status: u16,
        /// The Hub's `X-Error-Message`, as ": message", if any.
        message: String,
    },
    /// The connection failed or broke off.
    #[error("{url}: the network failed ({message}){kept}")]
    Network {
        /// The URL asked.
        url: String,
        /// The transport's reason.
        message: String,
        /// What was kept for a resume, as a sentence starting "; ".
        kept: String,
    },
    /// The Hub's answer lacks something the download needs, or a file arrived short.
    #[error("{url}: {message}")]
    Protocol {
        /// The URL asked.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// No cache folder is named by the environment.
    #[error(
        "{what} needs the Hugging Face cache, but no cache folder is named: set HF_HUB_CACHE \
         (or HF_HOME, or HOME)"
    )]
    NoCache {
        /// The repository asked for.
        what: String,
    },
    /// A cache file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// A `map_err` closure wrapping an I/O error with its path.
pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> HubError + '_ {
    move |source| HubError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Results of cai-hub.
pub type Result<T, E = HubError> = std::result::Result<T, E>;
