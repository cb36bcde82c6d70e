//! The rl stage: RL-CAI — the SL-CAI policy optimised against the preference model (PPO,
//! RLOO) or on the labelled pairs (DPO), with helpful prompts mixed in (then, with LoRA, the
//! adapter is merged).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::words::Words;
use super::{merge, ConfigFile, DeviceFlags, Job, PlanError, RunContext, StagePlan, Step};
use crate::recipe::{PromptSet, Stage};

/// `cai rl`. Unset settings take the command's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RlJob {
    /// ppo, rloo or dpo.
    pub algo: String,
    /// The policy (and the KL reference).
    pub policy: String,
    /// The output folder.
    pub output: PathBuf,
    /// The labelled pairs (dpo).
    pub data: Option<PathBuf>,
    /// The preference model (ppo, rloo).
    pub reward: Option<PathBuf>,
    /// The red-team prompts.
    pub prompts: PathBuf,
    /// Helpful prompts mixed in.
    pub helpful_prompts: Option<PathBuf>,
    /// Helpful prompts per red-team prompt.
    pub helpful_ratio: Option<f64>,
    /// Optimisation steps.
    pub steps: Option<u64>,
    /// KL coefficient β.
    pub kl_coef: Option<f64>,
    /// Learning rate.
    pub learning_rate: Option<f64>,
    /// Checkpoint every N steps.
    pub save_every: Option<u64>,
    /// Keep every checkpoint (each is a snapshot the eval stage measures).
    pub keep_all: bool,
    /// Train LoRA adapters.
    pub lora: bool,
    /// Device and dtype.
    pub device: DeviceFlags,
    /// The recipe's `[stage.config]` table: written as the `--config` file before the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigFile>,
    /// The recipe's `args`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

impl RlJob {
    /// The equivalent command's words.
    pub fn words(&self) -> Vec<String> {
        Words::new(&["rl"])
            .flag("--algo", &self.algo)
            .flag("--policy", &self.policy)
            .path("--output", &self.output)
            .opt_path("--data", self.data.as_deref())
            .opt_path("--reward", self.reward.as_deref())
            .path("--prompts", &self.prompts)
            .opt_path("--helpful-prompts", self.helpful_prompts.as_deref())
            .opt("--helpful-ratio", self.helpful_ratio)
            .opt("--steps", self.steps)
            .opt("--kl-coef", self.kl_coef)
            .opt("--learning-rate", self.learning_rate)
            .opt("--save-every", self.save_every)
            .opt("--keep-last", self.keep_all.then_some("all"))
            .switch("--lora", self.lora)
            .device(&self.device)
            .opt_path("--config", self.config.as_ref().map(|c| c.path.as_path()))
            .extra(&self.args)
            .done()
    }
}

pub(super) fn plan(ctx: &RunContext) -> Result<StagePlan, PlanError> {
    let r = ctx.recipe();
    let s = r.rl.as_ref().expect("planned stages exist");
    let dir = ctx.stage_dir(Stage::Rl);
    let mut p = StagePlan::new(Stage::Rl, json!({ "rl": s }));
    let policy = ctx.model(s.policy);
    let out = dir.join("model");
    let (data, reward) = if s.algo == "dpo" {
        let labels = ctx.stage_dir(Stage::Label).join("prefs.jsonl");
        p.input_path("labels", labels.clone());
        (Some(labels), None)
    } else {
        let pm = ctx.stage_dir(Stage::TrainPm).join("model");
        p.input_path("reward", pm.clone());
        (None, Some(pm))
    };
    let prompts = dir.join("prompts.jsonl");
    p.join(
        s.prompts.iter().map(|set| ctx.prompt_set(*set)).collect(),
        prompts.clone(),
        None,
    );
    let helpful_sets = s.helpful_prompts.clone().unwrap_or_else(|| {
        if r.data.helpful.is_empty() {
            Vec::new()
        } else {
            vec![PromptSet::Helpful]
        }
    });
    let helpful_prompts = if helpful_sets.is_empty() {
        None
    } else {
        let helpful = dir.join("helpful_prompts.jsonl");
        p.join(
            helpful_sets
                .iter()
                .map(|set| ctx.prompt_set(*set))
                .collect(),
            helpful.clone(),
            None,
        );
        Some(helpful)
    };
    p.steps.push(Step::Job(Box::new(Job::Rl(RlJob {
        algo: s.algo.clone(),
        policy: policy.clone(),
        output: out.clone(),
        data,
        reward,
        prompts,
        helpful_ratio: s.helpful_ratio.filter(|_| helpful_prompts.is_some()),
        helpful_prompts,
        steps: s.steps,
        kl_coef: s.kl_coef,
        learning_rate: s.learning_rate,
        save_every: s.save_every,
        keep_all: r.eval.as_ref().is_some_and(|e| e.rl_checkpoints),
        lora: s.uses_lora(),
        device: ctx.device(),
        config: ConfigFile::of(ctx, Stage::Rl, s.config.as_ref()),
        args: s.args.clone(),
    }))));
    if s.uses_lora() {
        p.steps.push(merge::step(ctx, Stage::Rl, &policy));
    }
    p.input_model("policy", policy);
    for set in s.prompts.iter().chain(&helpful_sets) {
        p.input_path(set.name(), ctx.prompt_set(*set));
    }
    p.outputs.push(("model".into(), ctx.stage_model(Stage::Rl)));
    p.metrics_from = Some(out.join("metrics.jsonl"));
    Ok(p)
}
