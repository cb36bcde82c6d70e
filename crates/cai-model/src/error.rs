//! The error type of cai-model: every message names the file, field or tensor at fault.

use std::path::PathBuf;

/// Errors from loading, running and saving models.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A model was named that is neither a directory nor in the local Hugging Face cache.
    #[error("model '{spec}' not found: {searched}")]
    NotFound {
        /// What the user passed.
        spec: String,
        /// Where we looked.
        searched: String,
    },
    /// The Hugging Face Hub could not give the model (see cai-hub's message).
    #[error(transparent)]
    Hub(#[from] cai_hub::HubError),
    /// A Hub repository does not hold the files cai needs, or the GGUF file asked for.
    #[error("model '{spec}': {message}")]
    HubFiles {
        /// What the user passed.
        spec: String,
        /// What the repository holds and what to do.
        message: String,
    },
    /// `config.json` names an architecture cai does not implement.
    #[error("{path}: unsupported model_type '{model_type}'; supported: {supported}")]
    UnsupportedArchitecture {
        /// The config file.
        path: PathBuf,
        /// The value found.
        model_type: String,
        /// The supported values, comma-separated.
        supported: String,
    },
    /// A configuration file is malformed or lacks a field.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A weight the architecture needs is not in the checkpoint.
    #[error("{path}: missing tensor '{name}'")]
    MissingTensor {
        /// The checkpoint (file or directory).
        path: PathBuf,
        /// The tensor's Hugging Face name.
        name: String,
    },
    /// A weight has the wrong shape for the config.
    #[error("{path}: tensor '{name}' has shape {found:?}, expected {expected:?} from config.json")]
    ShapeMismatch {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// Shape implied by the config.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A safetensors file is truncated, corrupt or uses an unsupported dtype.
    #[error("{path}: not a valid safetensors file ({message})")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor is stored in a dtype cai does not compute with (an integer where a weight
    /// is expected, an 8-bit float that needs scales cai does not apply, …).
    #[error(
        "{path}: tensor '{name}' has dtype {found}, expected a floating-point dtype \
         (F32, F16, BF16 or F64); the file is not a checkpoint of this model's weights"
    )]
    Dtype {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The dtype in the file.
        found: String,
    },
    /// A tensor holds NaN or infinite values, or values the dtype asked for cannot hold.
    #[error("{path}: tensor '{name}' {problem}")]
    NonFinite {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// What was found, and what to do.
        problem: String,
    },
    /// A model would not fit in memory: refused before anything large is allocated.
    #[error(
        "{what} needs {} of memory but only {} is available ({basis}); choose smaller sizes \
         or a smaller dtype, or free memory",
        crate::memory::gigabytes(*.needed),
        crate::memory::gigabytes(*.available)
    )]
    Memory {
        /// The model and the sizes that make it this large.
        what: String,
        /// Bytes it needs.
        needed: u128,
        /// Bytes available.
        available: u128,
        /// Where the available figure comes from.
        basis: String,
    },
    /// Tokenizer files are missing, malformed or inconsistent with the model.
    #[error("{path}: {message}")]
    Tokenizer {
        /// The tokenizer file (or model directory).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An engine setting (an environment variable) has a value that cannot be used.
    #[error("{name}: {message}")]
    Setting {
        /// The setting's name.
        name: &'static str,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A request cannot be served (empty prompt, context too long, …).
    #[error("{0}")]
    Request(String),
    /// An error from a cai-core helper (chat template, JSONL).
    #[error(transparent)]
    Core(#[from] cai_core::Error),
    /// A tensor operation failed.
    #[error("tensor op: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias for cai-model.
pub type Result<T> = std::result::Result<T, ModelError>;

impl From<ModelError> for cai_core::Error {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Core(inner) => inner,
            other => cai_core::Error::backend(other),
        }
    }
}

impl ModelError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}
