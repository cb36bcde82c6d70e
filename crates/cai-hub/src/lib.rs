//! cai-hub: the Hugging Face Hub for cai. Repository ids, the shared local cache
//! (`models--org--name/{blobs,refs,snapshots}`, the layout `huggingface-cli` and transformers
//! use) and resumable downloads that land atomically, with `HF_ENDPOINT`, the token
//! (`HF_TOKEN`, `HF_TOKEN_PATH`, `~/.cache/huggingface/token`) and `HF_HUB_OFFLINE`
//! honoured.
//!
//! It is a crate of its own so that the HTTP client stays out of the model and data crates:
//! they ask it for a file path and never see a URL.
#![deny(missing_docs)]

mod cache;
mod client;
mod config;
mod error;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
mod repo;

pub use cache::{snapshot_files, Cache};
pub use client::{Hub, RepoInfo};
pub use config::{HubConfig, DEFAULT_ENDPOINT};
pub use error::{HubError, Result};
pub use repo::{is_safe_file_path, Repo, RepoKind};
