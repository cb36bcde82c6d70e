//! The error type of cai-train: every message says which file, step or setting is at fault
//! and what to do about it.

use std::path::PathBuf;

/// Errors from training: optimiser state, checkpoints, metrics and non-finite numbers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A file or directory could not be read, written or renamed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The model failed (forward pass, loading, saving).
    #[error(transparent)]
    Model(#[from] cai_model::ModelError),
    /// A cai-core helper failed (JSONL writing).
    #[error(transparent)]
    Core(#[from] cai_core::Error),
    /// A tensor operation failed.
    #[error("tensor op: {0}")]
    Candle(#[from] candle_core::Error),
    /// The loss or the gradients stopped being finite numbers.
    #[error(
        "non-finite {what} at step {step}: training stopped and the last good checkpoint is \
         kept; lower the learning rate or enable gradient clipping (max_grad_norm), then resume"
    )]
    NonFinite {
        /// The optimiser step at which it happened.
        step: u64,
        /// What was not finite ("loss", "gradient norm", …).
        what: String,
    },
    /// A checkpoint directory is incomplete or does not match the run.
    #[error("{path}: {message}")]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What is wrong and what was expected.
        message: String,
    },
    /// Optimiser state (moments, master weights) does not match the parameters.
    #[error("optimizer state: {0}")]
    OptimizerState(String),
    /// A training data record is malformed (the message says what was expected).
    #[error("{path}:{line}: {message}")]
    Data {
        /// The data file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A training setting is out of range (the message names the setting and the range).
    #[error("{0}")]
    Config(String),
    /// The reward could not be computed (a remote reward endpoint failed).
    #[error("the reward: {0}")]
    Reward(String),
}

/// Result alias for cai-train.
pub type Result<T> = std::result::Result<T, TrainError>;

impl TrainError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }

    /// A checkpoint problem at `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        TrainError::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_message_says_what_to_do() {
        let text = TrainError::NonFinite {
            step: 12,
            what: "loss".into(),
        }
        .to_string();
        assert!(text.starts_with("non-finite loss at step 12"), "{text}");
        assert!(text.contains("last good checkpoint is kept"), "{text}");
        assert!(text.contains("lower the learning rate"), "{text}");
    }
}
