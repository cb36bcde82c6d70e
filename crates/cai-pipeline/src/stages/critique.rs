//! The critique stage: SL-CAI data — the model answers each red-team prompt, then critiques
//! and revises its answer against the constitution's principles; and answers the helpful
//! prompts, mixed into fine-tuning.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::words::Words;
use super::{DeviceFlags, Job, PlanError, RunContext, StagePlan, Step};
use crate::recipe::{PromptSet, Stage};

/// `cai critique`. Unset settings take the command's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CritiqueJob {
    /// The model that answers (and critiques and revises, without a critic).
    pub model: String,
    /// The model that critiques and revises the answers, when not `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critic: Option<String>,
    /// The red-team prompts.
    pub prompts: PathBuf,
    /// The constitution: a built-in name or a path.
    pub constitution: String,
    /// The revisions (JSONL).
    pub output: PathBuf,
    /// Few-shot critique/revision examples.
    pub few_shot: Option<PathBuf>,
    /// Helpful prompts to answer too (into `<output stem>.helpful.jsonl`).
    pub helpful_prompts: Option<PathBuf>,
    /// Rounds of critique and revision.
    pub rounds: Option<usize>,
    /// Most new tokens per sample.
    pub max_new_tokens: Option<usize>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Prompts per wave.
    pub batch_size: Option<usize>,
    /// Device and dtype.
    pub device: DeviceFlags,
    /// The recipe's `args`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

impl CritiqueJob {
    /// The equivalent command's words.
    pub fn words(&self) -> Vec<String> {
        Words::new(&["critique"])
            .flag("--model", &self.model)
            .opt("--critic", self.critic.as_ref())
            .path("--prompts", &self.prompts)
            .flag("--constitution", &self.constitution)
            .path("--output", &self.output)
            .opt_path("--few-shot", self.few_shot.as_deref())
            .opt_path("--helpful-prompts", self.helpful_prompts.as_deref())
            .opt("--rounds", self.rounds)
            .opt("--max-new-tokens", self.max_new_tokens)
            .opt("--temperature", self.temperature)
            .opt("--batch-size", self.batch_size)
            .device(&self.device)
            .extra(&self.args)
            .done()
    }
}

pub(super) fn plan(ctx: &RunContext) -> Result<StagePlan, PlanError> {
    let r = ctx.recipe();
    let s = r.critique.as_ref().expect("planned stages exist");
    let dir = ctx.stage_dir(Stage::Critique);
    let mut p = StagePlan::new(Stage::Critique, json!({ "critique": s }));
    let model = ctx.model(s.model);
    let out = dir.join("sl.jsonl");
    let helpful = s.helpful && !r.data.helpful.is_empty();
    let few_shot = r
        .data
        .few_shot
        .as_deref()
        .map(|f| ctx.path(f))
        .transpose()?;
    if helpful {
        p.input_path("helpful", ctx.prompt_set(PromptSet::Helpful));
    }
    let critic = r.models.critic.clone().filter(|c| *c != model);
    p.steps.push(Step::Job(Box::new(Job::Critique(CritiqueJob {
        model: model.clone(),
        critic: critic.clone(),
        prompts: ctx.prompt_set(PromptSet::RedTeam),
        constitution: ctx.constitution()?,
        output: out.clone(),
        few_shot,
        helpful_prompts: helpful.then(|| ctx.prompt_set(PromptSet::Helpful)),
        rounds: s.rounds,
        max_new_tokens: s.max_new_tokens,
        temperature: s.temperature,
        batch_size: s.batch_size,
        device: ctx.inference_device(),
        args: s.args.clone(),
    }))));
    p.input_model("model", model);
    if let Some(critic) = critic {
        p.input_model("critic", critic);
    }
    p.input_path("red_team", ctx.prompt_set(PromptSet::RedTeam));
    p.expect_ids
        .push((out.clone(), vec![ctx.prompt_set(PromptSet::RedTeam)]));
    p.outputs.push(("revisions".into(), out));
    if helpful {
        let answers = dir.join("sl.helpful.jsonl");
        p.expect_ids
            .push((answers.clone(), vec![ctx.prompt_set(PromptSet::Helpful)]));
        p.outputs.push(("helpful answers".into(), answers));
    }
    Ok(p)
}
