//! cai-core: dialogues and their rendering, chat templates, JSONL datasets, seeded
//! randomness, and the `LanguageModel` trait that every Constitutional AI stage talks to.
#![deny(missing_docs)]

pub mod chat_template;
pub mod dialogue;
mod error;
pub mod jsonl;
pub mod lm;
pub mod rng;

pub use error::Error;
pub use lm::{
    FinishReason, GenerateRequest, Generation, LanguageModel, Sampling, Score, ScoreRequest,
    TokenLogprob,
};
