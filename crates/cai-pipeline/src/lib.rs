//! cai-pipeline: the stages of Constitutional AI as library calls over the
//! [`LanguageModel`](cai_core::LanguageModel) trait, so that each runs the same against a local
//! model or a remote endpoint.
//!
//! - [`critique`]: SL-CAI data — for each red-team prompt, an answer, then rounds of critique
//!   and revision against principles drawn at random from a constitution; and answers to
//!   helpfulness prompts to mix into the fine-tuning data.
//! - [`label`]: RL-CAI feedback — two responses per prompt, compared by a feedback model in a
//!   multiple-choice question under constitutional principles, as soft preference labels.
//! - [`eval`]: pairwise Elo of model snapshots under a judge (Bradley–Terry with bootstrap
//!   intervals, the harmlessness-against-helpfulness plot) and harm rates.
//! - [`recipe`], [`runner`], [`manifest`]: `cai pipeline`'s recipes (TOML), the run directory's
//!   stage manifests, fingerprints and the skip/resume/restart decision; [`rundir`]: what cai
//!   owns in a run directory (a marker, the names each manifest lists) and its writer lock.
//! - [`stages`]: a recipe planned in a run directory — one file per stage, each stage's
//!   typed jobs (`SftJob`, `RlJob`, …) with their inputs and outputs, and the equivalent
//!   `cai` command lines for people to read.
#![deny(missing_docs)]

mod chunks;
pub mod critique;
mod error;
pub mod eval;
pub mod label;
pub mod manifest;
pub mod recipe;
pub mod record;
pub mod render;
pub mod rundir;
pub mod runner;
pub mod stages;

pub use error::{PipelineError, Result};
