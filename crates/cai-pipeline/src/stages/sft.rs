//! The sft stage: SL-CAI — the model fine-tuned on every round's revisions of the critique
//! stage, with its helpful answers mixed in (then, with LoRA, the adapter is merged).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::words::Words;
use super::{
    merge, ConfigFile, DeviceFlags, Job, PlanError, RunContext, StagePlan, Step, TrainingFlags,
};
use crate::recipe::Stage;

/// `cai sft`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftJob {
    /// The model fine-tuned.
    pub model: String,
    /// The critique records.
    pub data: PathBuf,
    /// The output folder.
    pub output: PathBuf,
    /// The helpful answers mixed in.
    pub helpful_data: Option<PathBuf>,
    /// Helpful examples per revision example.
    pub helpful_ratio: Option<f64>,
    /// Train on the revisions of rounds 1..=N only.
    pub revision_rounds: Option<u64>,
    /// Train LoRA adapters.
    pub lora: bool,
    /// The shared training settings.
    pub training: TrainingFlags,
    /// Device and dtype.
    pub device: DeviceFlags,
    /// The recipe's `[stage.config]` table: written as the `--config` file before the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigFile>,
    /// The recipe's `args`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

impl SftJob {
    /// The equivalent command's words.
    pub fn words(&self) -> Vec<String> {
        Words::new(&["sft"])
            .flag("--model", &self.model)
            .path("--data", &self.data)
            .path("--output", &self.output)
            .opt_path("--helpful-data", self.helpful_data.as_deref())
            .opt("--helpful-ratio", self.helpful_ratio)
            .opt("--revision-rounds", self.revision_rounds)
            .switch("--lora", self.lora)
            .training(&self.training)
            .device(&self.device)
            .opt_path("--config", self.config.as_ref().map(|c| c.path.as_path()))
            .extra(&self.args)
            .done()
    }
}

pub(super) fn plan(ctx: &RunContext) -> Result<StagePlan, PlanError> {
    let r = ctx.recipe();
    let s = r.sft.as_ref().expect("planned stages exist");
    let dir = ctx.stage_dir(Stage::Sft);
    let mut p = StagePlan::new(Stage::Sft, json!({ "sft": s }));
    let model = ctx.model(s.model);
    let critique = ctx.stage_dir(Stage::Critique);
    let out = dir.join("model");
    let has_helpful = r.critique.as_ref().is_some_and(|c| c.helpful) && !r.data.helpful.is_empty();
    p.steps.push(Step::Job(Box::new(Job::Sft(SftJob {
        model: model.clone(),
        data: critique.join("sl.jsonl"),
        output: out.clone(),
        helpful_data: has_helpful.then(|| critique.join("sl.helpful.jsonl")),
        helpful_ratio: s.helpful_ratio.filter(|_| has_helpful),
        revision_rounds: s.revision_rounds,
        lora: s.uses_lora(),
        training: TrainingFlags::of(&s.training(), s.config.as_ref()),
        device: ctx.device(),
        config: ConfigFile::of(ctx, Stage::Sft, s.config.as_ref()),
        args: s.args.clone(),
    }))));
    if s.uses_lora() {
        p.steps.push(merge::step(ctx, Stage::Sft, &model));
    }
    p.input_model("model", model);
    p.input_path("revisions", critique.join("sl.jsonl"));
    p.outputs
        .push(("model".into(), ctx.stage_model(Stage::Sft)));
    p.metrics_from = Some(out.join("metrics.jsonl"));
    Ok(p)
}
