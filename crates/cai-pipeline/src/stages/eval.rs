//! The eval stage: every snapshot (base, prompted, distilled, SL-CAI, RL-CAI and the RL
//! checkpoints) measured by the recipe's judges — the lab's oracle measures, one snapshot per
//! line of `eval/lab_eval.jsonl`, and the Elo of every snapshot (`cai eval elo`) in
//! `eval/elo/`. Which snapshots and the Elo job are fixed here; the caller measures them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::words::Words;
use super::{DeviceFlags, Job, PlanError, RunContext, StagePlan, Step};
use crate::recipe::{ModelRef, PromptSet, RecipeError, Snapshot, Stage};

/// The lab measures, one snapshot per line.
pub const LAB_EVAL_FILE: &str = "lab_eval.jsonl";

/// The folder of the Elo evaluation, inside the eval stage's.
pub const ELO_DIR: &str = "elo";

/// A model the eval stage measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotModel {
    /// Its name in tables: base, distilled, sl-cai, rl-cai, rl-step-N.
    pub name: String,
    /// The model spec.
    pub model: String,
}

/// The snapshots with a model of their own, in the recipe's order (`prompted` is the base
/// model's with-context measure, not a model). RL checkpoints come at run time.
pub fn snapshots(ctx: &RunContext) -> Vec<SnapshotModel> {
    let recipe = ctx.recipe();
    let Some(eval) = &recipe.eval else {
        return Vec::new();
    };
    eval.snapshots
        .iter()
        .filter(|s| **s != Snapshot::Prompted)
        .filter(|s| s.stage().is_none_or(|stage| recipe.has_stage(stage)))
        .map(|s| SnapshotModel {
            name: s.name().into(),
            model: match s.stage() {
                None => recipe.models.base.clone(),
                Some(stage) => ctx.stage_model(stage).display().to_string(),
            },
        })
        .collect()
}

/// Every snapshot measured now: [`snapshots`], then (with `rl_checkpoints`) the RL run's
/// intermediate checkpoints that load as models, by step — all but the newest, which is the
/// final model, already measured as rl-cai.
pub fn snapshots_now(ctx: &RunContext) -> Vec<SnapshotModel> {
    let recipe = ctx.recipe();
    let mut all = snapshots(ctx);
    let keep = recipe.eval.as_ref().is_some_and(|e| e.rl_checkpoints);
    if keep && recipe.has_stage(Stage::Rl) {
        let mut checkpoints = rl_checkpoints(&ctx.stage_dir(Stage::Rl).join("model"));
        checkpoints.pop();
        all.extend(checkpoints);
    }
    all
}

/// The checkpoints in `<output>/checkpoints` that load as models, by step.
fn rl_checkpoints(output: &Path) -> Vec<SnapshotModel> {
    let dir = output.join("checkpoints");
    let mut steps: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
                    let path = e.path();
                    path.join("config.json").is_file().then_some((step, path))
                })
                .collect()
        })
        .unwrap_or_default();
    steps.sort();
    steps
        .into_iter()
        .map(|(step, path)| SnapshotModel {
            name: format!("rl-step-{step}"),
            model: path.display().to_string(),
        })
        .collect()
}

/// `cai lab eval`'s equivalent command of one snapshot, for its line in `lab_eval.jsonl`.
pub fn lab_eval_words(model: &str, world_seed: u64, max_items: Option<usize>) -> Vec<String> {
    Words::new(&["lab", "eval"])
        .flag("--model", model)
        .flag("--world-seed", world_seed)
        .opt("--max-items", max_items)
        .done()
}

/// `cai eval elo` over the snapshots. Unset settings take the command's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EloJob {
    /// The output folder (`eval/elo`).
    pub output: PathBuf,
    /// The judge, as `--judge` takes it.
    pub judge: String,
    /// Held-out red-team prompts.
    pub red_team: PathBuf,
    /// Held-out helpful prompts.
    pub benign: PathBuf,
    /// `NAME=MODEL` of each snapshot, each with the context in front of its prompts if it
    /// has one (the prompted snapshot).
    pub snapshots: Vec<(SnapshotModel, Option<PathBuf>)>,
    /// At most this many prompts of each set.
    pub samples: Option<usize>,
    /// Bootstrap resamples.
    pub bootstrap: Option<u64>,
    /// Most new tokens per answer.
    pub max_new_tokens: Option<usize>,
    /// Device and dtype.
    pub device: DeviceFlags,
    /// The recipe's `[eval.elo] args`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

impl EloJob {
    /// The job over `snapshots` (the prompted one added after the base when the recipe asks
    /// for it and has a context).
    pub fn new(ctx: &RunContext, snapshots: &[SnapshotModel]) -> Result<Self, RecipeError> {
        let recipe = ctx.recipe();
        let eval = recipe.eval.as_ref().expect("the eval stage has a table");
        let elo = eval.elo.as_ref().expect("called with an elo table");
        let judge = match elo.judge.as_str() {
            "pm" => format!(
                "pm:{}",
                ctx.stage_dir(Stage::TrainPm).join("model").display()
            ),
            "feedback" => format!("feedback:{}", ctx.model(ModelRef::Feedback)),
            other => other.to_owned(),
        };
        let mut all = Vec::new();
        for snapshot in snapshots {
            all.push((snapshot.clone(), None));
            let prompted = eval.snapshots.contains(&Snapshot::Prompted);
            if snapshot.name == Snapshot::Base.name() && prompted {
                if let Some(context) = ctx.context_path()? {
                    let with_context = SnapshotModel {
                        name: Snapshot::Prompted.name().into(),
                        model: snapshot.model.clone(),
                    };
                    all.push((with_context, Some(context)));
                }
            }
        }
        Ok(Self {
            output: ctx.stage_dir(Stage::Eval).join(ELO_DIR),
            judge,
            red_team: ctx.prompt_set(PromptSet::EvalRedTeam),
            benign: ctx.prompt_set(PromptSet::EvalHelpful),
            snapshots: all,
            samples: elo.samples,
            bootstrap: elo.bootstrap,
            max_new_tokens: elo.max_new_tokens,
            device: ctx.device(),
            args: elo.args.clone(),
        })
    }

    /// The equivalent command's words.
    pub fn words(&self) -> Vec<String> {
        let mut w = Words::new(&["eval", "elo"]);
        w.path("--output", &self.output)
            .flag("--judge", &self.judge)
            .path("--red-team", &self.red_team)
            .path("--benign", &self.benign);
        for (snapshot, context) in &self.snapshots {
            w.flag(
                "--snapshot",
                format!("{}={}", snapshot.name, snapshot.model),
            );
            if let Some(context) = context {
                w.flag(
                    "--context",
                    format!("{}={}", snapshot.name, context.display()),
                );
            }
        }
        w.opt("--samples", self.samples)
            .opt("--bootstrap", self.bootstrap)
            .opt("--max-new-tokens", self.max_new_tokens)
            .device(&self.device)
            .extra(&self.args)
            .done()
    }
}

pub(super) fn plan(ctx: &RunContext) -> Result<StagePlan, PlanError> {
    let r = ctx.recipe();
    let s = r.eval.as_ref().expect("planned stages exist");
    let dir = ctx.stage_dir(Stage::Eval);
    let mut p = StagePlan::new(Stage::Eval, json!({ "eval": s, "models": r.models }));
    for snapshot in snapshots(ctx) {
        p.input_model(snapshot.name.as_str(), snapshot.model);
    }
    if s.elo.is_some() {
        for set in [PromptSet::EvalRedTeam, PromptSet::EvalHelpful] {
            p.input_path(set.name(), ctx.prompt_set(set));
        }
        if let Some(context) = ctx.context_path()? {
            p.input_path("context", context);
        }
        p.outputs
            .push(("elo".into(), dir.join(ELO_DIR).join("elo.json")));
    }
    p.steps.push(Step::Eval);
    p.outputs.push(("lab eval".into(), dir.join(LAB_EVAL_FILE)));
    Ok(p)
}

/// The eval stage's Elo job as a [`Job`], for running and for its command line.
pub fn elo_job(ctx: &RunContext, snapshots: &[SnapshotModel]) -> Result<Job, RecipeError> {
    Ok(Job::Elo(EloJob::new(ctx, snapshots)?))
}
