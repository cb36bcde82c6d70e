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
    /// Training diverged: the loss, the gradients or the weights stopped being finite, or the
    /// loss or the weights grew far past their size at the start of the run. Nothing was
    /// saved after the step that went wrong.
    #[error(
        "training diverged at step {step}: {what}. Stopped without saving it; {}",
        diverged_advice(*step, last_good.as_deref())
    )]
    Diverged {
        /// The optimiser step at which it was seen (1-based).
        step: u64,
        /// What went wrong, with the numbers.
        what: String,
        /// The newest checkpoint, all of whose steps came before the divergence (`None`:
        /// no checkpoint was saved before it).
        last_good: Option<PathBuf>,
    },
    /// The context of a distillation run does not fit the model's window.
    #[error(
        "the context is {tokens} tokens but the model's window is {window} positions, \
         leaving {room} for the sequences to distil on (at least 2 needed); shorten the context \
         or use a model with a longer window"
    )]
    ContextTooLong {
        /// Tokens of the context (with bos).
        tokens: usize,
        /// The model's `max_position_embeddings`.
        window: usize,
        /// Positions left for a sequence.
        room: usize,
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

/// The second half of a divergence message: where to resume from, and how.
fn diverged_advice(step: u64, last_good: Option<&std::path::Path>) -> String {
    match last_good {
        Some(dir) => format!(
            "the last good checkpoint is {} (saved before step {step}). Lower the learning rate \
             (or set max_grad_norm) and resume from it, allowing the change: \
             --resume --learning-rate LOWER --allow-config-change learning_rate",
            dir.display()
        ),
        None => "no checkpoint was saved before it. Start again with a lower learning rate \
                 (or set max_grad_norm)"
            .to_string(),
    }
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
    fn divergence_message_names_the_good_checkpoint_and_the_way_back() {
        let text = TrainError::Diverged {
            step: 12,
            what: "the loss is NaN".into(),
            last_good: Some(PathBuf::from("out/checkpoints/checkpoint-10")),
        }
        .to_string();
        assert!(
            text.starts_with("training diverged at step 12: the loss is NaN"),
            "{text}"
        );
        assert!(
            text.contains("last good checkpoint is out/checkpoints/checkpoint-10"),
            "{text}"
        );
        assert!(
            text.contains("--allow-config-change learning_rate"),
            "{text}"
        );
        let text = TrainError::Diverged {
            step: 1,
            what: "x".into(),
            last_good: None,
        }
        .to_string();
        assert!(text.contains("no checkpoint was saved before it"), "{text}");
    }
}
