//! The step after a LoRA training stage: its adapter merged into a plain model that later
//! stages read.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::words::Words;
use super::{Job, RunContext, Step};
use crate::recipe::Stage;

/// `cai merge-lora --overwrite`: `adapter` merged into `model`, written to `output`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeLoraJob {
    /// The base model the adapter was trained on.
    pub model: String,
    /// The adapter folder.
    pub adapter: PathBuf,
    /// The merged model's folder.
    pub output: PathBuf,
}

impl MergeLoraJob {
    /// The equivalent command's words.
    pub fn words(&self) -> Vec<String> {
        Words::new(&["merge-lora"])
            .flag("--model", &self.model)
            .path("--adapter", &self.adapter)
            .path("--output", &self.output)
            .switch("--overwrite", true)
            .done()
    }
}

/// A LoRA stage's merge step: `<stage>/model` (the adapter) into `<stage>/merged`.
pub(super) fn step(ctx: &RunContext, stage: Stage, base: &str) -> Step {
    let dir = ctx.stage_dir(stage);
    Step::Job(Box::new(Job::MergeLora(MergeLoraJob {
        model: base.into(),
        adapter: dir.join("model"),
        output: dir.join("merged"),
    })))
}
