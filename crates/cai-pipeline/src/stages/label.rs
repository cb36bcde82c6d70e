//! The label stage: RL-CAI feedback — the policy samples two responses per prompt (the second
//! after the context, if asked), the feedback model compares them under constitutional
//! principles, giving soft preference labels.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::words::Words;
use super::{DeviceFlags, Job, PlanError, RunContext, StagePlan, Step};
use crate::recipe::Stage;

/// `cai label`. Unset settings take the command's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelJob {
    /// The model sampled.
    pub policy: String,
    /// The model that answers the multiple-choice questions.
    pub feedback: String,
    /// The prompts.
    pub prompts: PathBuf,
    /// The constitution: a built-in name or a path.
    pub constitution: String,
    /// The labels (JSONL).
    pub output: PathBuf,
    /// Principles per label: a number, or "all".
    pub ensemble: Option<String>,
    /// Ask both orders and average.
    pub swap: bool,
    /// The context the second response is sampled after.
    pub context_b: Option<PathBuf>,
    /// Most new tokens per response.
    pub max_new_tokens: Option<usize>,
    /// Device and dtype.
    pub device: DeviceFlags,
    /// The recipe's `args`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

impl LabelJob {
    /// The equivalent command's words.
    pub fn words(&self) -> Vec<String> {
        Words::new(&["label"])
            .flag("--policy", &self.policy)
            .flag("--feedback", &self.feedback)
            .path("--prompts", &self.prompts)
            .flag("--constitution", &self.constitution)
            .path("--output", &self.output)
            .opt("--ensemble", self.ensemble.as_ref())
            .switch("--swap", self.swap)
            .opt_path("--context-b", self.context_b.as_deref())
            .opt("--max-new-tokens", self.max_new_tokens)
            .device(&self.device)
            .extra(&self.args)
            .done()
    }
}

pub(super) fn plan(ctx: &RunContext) -> Result<StagePlan, PlanError> {
    let r = ctx.recipe();
    let s = r.label.as_ref().expect("planned stages exist");
    let dir = ctx.stage_dir(Stage::Label);
    let mut p = StagePlan::new(Stage::Label, json!({ "label": s }));
    let policy = ctx.model(s.policy);
    let feedback = ctx.model(s.feedback);
    let sets = r.data.sets_or_default(s.prompts.as_deref());
    let prompts = dir.join("prompts.jsonl");
    p.join(
        sets.iter().map(|s| ctx.prompt_set(*s)).collect(),
        prompts.clone(),
        None,
    );
    let out = dir.join("prefs.jsonl");
    let context_b = if s.context_b {
        let context = ctx
            .context_path()?
            .expect("validated: context_b has a context");
        p.input_path("context", context.clone());
        Some(context)
    } else {
        None
    };
    p.steps.push(Step::Job(Box::new(Job::Label(LabelJob {
        policy: policy.clone(),
        feedback: feedback.clone(),
        prompts: prompts.clone(),
        constitution: ctx.constitution()?,
        output: out.clone(),
        ensemble: s.ensemble.clone(),
        swap: s.swap,
        context_b,
        max_new_tokens: s.max_new_tokens,
        device: ctx.inference_device(),
        args: s.args.clone(),
    }))));
    p.input_model("policy", policy);
    p.input_model("feedback", feedback);
    for set in sets {
        p.input_path(set.name(), ctx.prompt_set(set));
    }
    p.expect_ids.push((out.clone(), vec![prompts]));
    p.outputs.push(("labels".into(), out));
    Ok(p)
}
