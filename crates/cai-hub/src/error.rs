//! The error type of cai-hub: every message names the repository (and file) and what to do.

use std::path::PathBuf;

use crate::config::HubConfig;
use crate::repo::Repo;

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
    /// A downloaded file's sha256 is not the one the Hub announced for it (`X-Linked-Etag`):
    /// the bytes were damaged on the way. The partial file is deleted.
    #[error(
        "{what}: the downloaded bytes have sha256 {got}, but the Hub announced {expected} \
         ({url}); they were damaged on the way, so cai deleted them: run the same command \
         again to download the file afresh"
    )]
    Checksum {
        /// The repository and file (`model org/name file model.safetensors`).
        what: String,
        /// The URL the bytes came from.
        url: String,
        /// The sha256 the Hub announced, hex.
        expected: String,
        /// The sha256 of the bytes received, hex.
        got: String,
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

/// The error for a refused request: 401/403 (gated, private, bad token), 404, other.
pub(crate) fn status_error(
    config: &HubConfig,
    repo: &Repo,
    file: Option<&str>,
    url: &str,
    status: u16,
    headers: &ureq::http::HeaderMap,
) -> HubError {
    let endpoint = config.endpoint.clone();
    let code_name = header(headers, "x-error-code").unwrap_or_default();
    let code = if code_name.is_empty() {
        String::new()
    } else {
        format!(", {code_name}")
    };
    let what = match file {
        Some(file) => format!("{} file {file}", repo.describe()),
        None => repo.describe(),
    };
    let page = format!("{endpoint}/{}", repo.url_path());
    match status {
        401 | 403 => {
            let hint = match &config.token_source {
                Some(source) => format!(
                    "the token from {source} was refused or cannot read {id}: if it is a \
                     gated repository, accept its licence at {page} with that token's \
                     account; if it is private, use a token of an account that can read it",
                    id = repo.id
                ),
                None => format!(
                    "no token was sent: if {id} is gated, accept its licence at {page}, \
                     then set HF_TOKEN (or run `huggingface-cli login`); if it is private, \
                     use a token that can read it; if it does not exist, check the name \
                     (the Hub answers 401 for unknown repositories without a token)",
                    id = repo.id
                ),
            };
            HubError::Unauthorized {
                what,
                endpoint,
                status,
                code,
                hint,
            }
        }
        404 => {
            let hint = match (code_name.as_str(), file) {
                ("RevisionNotFound", _) => format!(
                    "check the revision '{}' (a branch, tag or commit of {})",
                    repo.revision(),
                    repo.id
                ),
                ("EntryNotFound", Some(file)) | ("", Some(file)) => format!(
                    "the repository has no file '{file}'; see its files at {page}/tree/{}",
                    repo.revision()
                ),
                _ => format!(
                    "check the {kind} id '{id}' (spelling, organisation) and that it is a \
                     {kind} repository",
                    kind = repo.kind.name(),
                    id = repo.id
                ),
            };
            HubError::NotFound {
                what,
                endpoint,
                code,
                hint,
            }
        }
        _ => HubError::Http {
            url: url.to_owned(),
            status,
            message: header_message(headers),
        },
    }
}

/// A header's value as text.
pub(crate) fn header(headers: &ureq::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The Hub's `X-Error-Message`, as ": message", or nothing.
pub(crate) fn header_message(headers: &ureq::http::HeaderMap) -> String {
    header(headers, "x-error-message").map_or_else(String::new, |m| format!(": {m}"))
}

/// Results of cai-hub.
pub type Result<T, E = HubError> = std::result::Result<T, E>;
