//! The error type of cai-pipeline.

/// Errors from the stages: bad settings, bad inputs and failures of the model backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// Reading inputs, writing outputs or rendering a dialogue failed.
    #[error(transparent)]
    Core(#[from] cai_core::Error),
    /// A stage setting is out of range or an input it needs is missing (the message says
    /// which and what was expected).
    #[error("{0}")]
    Config(String),
    /// The model failed on one wave of requests.
    #[error("{step} for prompts {first} … {last}: {source}")]
    Model {
        /// What was being generated ("round 2 critiques").
        step: String,
        /// Id of the first prompt of the wave.
        first: String,
        /// Id of the last prompt of the wave.
        last: String,
        /// The backend's error.
        #[source]
        source: Box<cai_core::Error>,
    },
    /// A judge (preference model, feedback model, or one a caller plugs in) failed.
    #[error("judge {judge}: {source}")]
    Judge {
        /// The judge's name ("oracle", "pm:DIR").
        judge: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A figure could not be drawn.
    #[error("drawing {figure}: {message}")]
    Plot {
        /// Which figure.
        figure: String,
        /// The plotting library's error.
        message: String,
    },
}

impl PipelineError {
    /// A [`PipelineError::Judge`] from any error of the judge `judge`.
    pub fn judge(judge: &str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Judge {
            judge: judge.to_owned(),
            source: Box::new(source),
        }
    }
}

/// Results of cai-pipeline.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
