//! The distill stage: context distillation of `[data] context` into the model — the prompted
//! model answers the training prompts, the model without the context learns its next-token
//! distributions (then, with LoRA, the adapter is merged).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::words::Words;
use super::{
    merge, ConfigFile, DeviceFlags, Job, PlanError, RunContext, StagePlan, Step, TrainingFlags,
};
use crate::recipe::Stage;

/// `cai distill`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistillJob {
    /// The model distilled (teacher, and the student's start).
    pub model: String,
    /// The context distilled.
    pub context: PathBuf,
    /// The prompts.
    pub data: PathBuf,
    /// The output folder.
    pub output: PathBuf,
    /// Let the prompted teacher answer the prompts first.
    pub sample: bool,
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

impl DistillJob {
    /// The equivalent command's words.
    pub fn words(&self) -> Vec<String> {
        Words::new(&["distill"])
            .flag("--model", &self.model)
            .path("--context", &self.context)
            .path("--data", &self.data)
            .path("--output", &self.output)
            .switch("--sample", self.sample)
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
    let s = r.distill.as_ref().expect("planned stages exist");
    let dir = ctx.stage_dir(Stage::Distill);
    let mut p = StagePlan::new(Stage::Distill, json!({ "distill": s }));
    let model = ctx.model(s.model);
    let context = ctx
        .context_path()?
        .expect("validated: distill has a context");
    let sets = r.data.sets_or_default(s.data.as_deref());
    let data = dir.join("data.jsonl");
    p.join(
        sets.iter().map(|s| ctx.prompt_set(*s)).collect(),
        data.clone(),
        None,
    );
    let out = dir.join("model");
    p.steps.push(Step::Job(Box::new(Job::Distill(DistillJob {
        model: model.clone(),
        context: context.clone(),
        data,
        output: out.clone(),
        sample: s.sample,
        lora: s.uses_lora(),
        training: TrainingFlags::of(&s.training(), s.config.as_ref()),
        device: ctx.device(),
        config: ConfigFile::of(ctx, Stage::Distill, s.config.as_ref()),
        args: s.args.clone(),
    }))));
    if s.uses_lora() {
        p.steps.push(merge::step(ctx, Stage::Distill, &model));
    }
    p.input_model("model", model);
    p.input_path("context", context);
    for set in sets {
        p.input_path(set.name(), ctx.prompt_set(set));
    }
    p.outputs
        .push(("model".into(), ctx.stage_model(Stage::Distill)));
    p.metrics_from = Some(out.join("metrics.jsonl"));
    Ok(p)
}
