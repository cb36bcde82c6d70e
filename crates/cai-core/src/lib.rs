//! cai-core: dialogues and their rendering, chat templates, constitutions, few-shot and prompt
//! files, JSONL datasets, seeded randomness, and the `LanguageModel` trait that every
//! Constitutional AI stage talks to.
#![deny(missing_docs)]

pub mod chat_template;
pub mod constitution;
pub mod critique;
pub mod dialogue;
mod error;
pub mod few_shot;
pub mod import;
pub mod jsonl;
pub mod lm;
pub mod lock;
pub mod multiple_choice;
pub mod prompts;
pub mod rng;
pub mod scorer;
pub mod usage;

pub use error::Error;
pub use lm::{
    FinishReason, GenerateRequest, Generation, LanguageModel, OutputFormat, Sampling, Score,
    ScoreRequest, TokenLogprob,
};
pub use scorer::Scorer;
