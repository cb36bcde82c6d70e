//! The train-pm stage: the preference model trained on the label stage's soft labels.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::words::Words;
use super::{ConfigFile, DeviceFlags, Job, PlanError, RunContext, StagePlan, Step, TrainingFlags};
use crate::recipe::Stage;

/// `cai train-pm`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainPmJob {
    /// The model the PM starts from.
    pub model: String,
    /// The labelled pairs.
    pub data: PathBuf,
    /// The output folder.
    pub output: PathBuf,
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

impl TrainPmJob {
    /// The equivalent command's words.
    pub fn words(&self) -> Vec<String> {
        Words::new(&["train-pm"])
            .flag("--model", &self.model)
            .path("--data", &self.data)
            .path("--output", &self.output)
            .training(&self.training)
            .device(&self.device)
            .opt_path("--config", self.config.as_ref().map(|c| c.path.as_path()))
            .extra(&self.args)
            .done()
    }
}

pub(super) fn plan(ctx: &RunContext) -> Result<StagePlan, PlanError> {
    let r = ctx.recipe();
    let s = r.train_pm.as_ref().expect("planned stages exist");
    let dir = ctx.stage_dir(Stage::TrainPm);
    let mut p = StagePlan::new(Stage::TrainPm, json!({ "train-pm": s }));
    let model = ctx.model(s.model);
    let labels = ctx.stage_dir(Stage::Label).join("prefs.jsonl");
    let out = dir.join("model");
    p.steps.push(Step::Job(Box::new(Job::TrainPm(TrainPmJob {
        model: model.clone(),
        data: labels.clone(),
        output: out.clone(),
        training: TrainingFlags::of(&s.training(), s.config.as_ref()),
        device: ctx.device(),
        config: ConfigFile::of(ctx, Stage::TrainPm, s.config.as_ref()),
        args: s.args.clone(),
    }))));
    p.input_model("model", model);
    p.input_path("labels", labels);
    p.outputs.push(("preference model".into(), out.clone()));
    p.metrics_from = Some(out.join("metrics.jsonl"));
    Ok(p)
}
