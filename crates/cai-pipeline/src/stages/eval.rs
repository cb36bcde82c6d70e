//! The eval stage: every snapshot (base, prompted, distilled, SL-CAI, RL-CAI and the RL
//! checkpoints) measured by the recipe's judges — the lab's oracle measures, one snapshot per
//! line of `eval/lab_eval.jsonl`, the Elo of every snapshot (`cai eval elo`) in `eval/elo/`,
//! and attack success and over-refusal (`cai eval safety`) in `eval/safety/`. Which
//! snapshots, and the Elo and safety jobs, are fixed here; the caller measures them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::words::Words;
use super::{DeviceFlags, InputSpec, Job, PlanError, RunContext, StagePlan, Step};
use crate::recipe::{BenignSet, ModelRef, PromptSet, RecipeError, Snapshot, Stage};

/// The lab measures, one snapshot per line.
pub const LAB_EVAL_FILE: &str = "lab_eval.jsonl";

/// The folder of the Elo evaluation, inside the eval stage's.
pub const ELO_DIR: &str = "elo";

/// The folder of the safety evaluation, inside the eval stage's.
pub const SAFETY_DIR: &str = "safety";

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
            device: ctx.inference_device(),
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

/// `cai eval safety` over the snapshots. Unset settings take the command's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SafetyJob {
    /// The output folder (`eval/safety`).
    pub output: PathBuf,
    /// The judges, as `--judge` takes them (the recipe's `pm` resolved to the train-pm
    /// stage's model).
    pub judges: Vec<String>,
    /// The red-team prompts.
    pub red_team: PathBuf,
    /// The benign prompts: a joined prompt set, or `over-refusal` (the set cai ships).
    pub benign: String,
    /// `NAME=MODEL` of each snapshot.
    pub snapshots: Vec<SnapshotModel>,
    /// At most this many prompts of each set.
    pub samples: Option<usize>,
    /// Most new tokens per answer.
    pub max_new_tokens: Option<usize>,
    /// Bootstrap resamples.
    pub bootstrap: Option<u64>,
    /// Device and dtype.
    pub device: DeviceFlags,
    /// The recipe's `[eval.safety] args`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

impl SafetyJob {
    /// The job over `snapshots`. `prompted` is not among them: `cai eval safety` puts no
    /// context in front of a model's prompts.
    pub fn new(ctx: &RunContext, snapshots: &[SnapshotModel]) -> Self {
        let recipe = ctx.recipe();
        let eval = recipe.eval.as_ref().expect("the eval stage has a table");
        let safety = eval.safety.as_ref().expect("called with a safety table");
        Self {
            output: ctx.stage_dir(Stage::Eval).join(SAFETY_DIR),
            judges: safety
                .judges
                .iter()
                .map(|judge| safety_judge(ctx, judge))
                .collect(),
            red_team: ctx.prompt_set(safety.red_team),
            benign: match safety.benign {
                BenignSet::OverRefusal => safety.benign.name().to_owned(),
                BenignSet::Data(set) => ctx.prompt_set(set).display().to_string(),
            },
            snapshots: snapshots.to_vec(),
            samples: safety.samples,
            max_new_tokens: safety.max_new_tokens,
            bootstrap: safety.bootstrap,
            device: ctx.inference_device(),
            args: safety.args.clone(),
        }
    }

    /// The equivalent command's words.
    pub fn words(&self) -> Vec<String> {
        let mut w = Words::new(&["eval", "safety"]);
        w.path("--output", &self.output);
        for judge in &self.judges {
            w.flag("--judge", judge);
        }
        w.path("--red-team", &self.red_team)
            .flag("--benign", &self.benign);
        for snapshot in &self.snapshots {
            w.flag("--model", format!("{}={}", snapshot.name, snapshot.model));
        }
        w.opt("--samples", self.samples)
            .opt("--max-new-tokens", self.max_new_tokens)
            .opt("--bootstrap", self.bootstrap)
            .device(&self.device)
            .extra(&self.args)
            .done()
    }
}

/// A judge of `[eval.safety]` as `--judge` takes it: `pm` is the train-pm stage's model.
fn safety_judge(ctx: &RunContext, judge: &str) -> String {
    match judge {
        "pm" => format!("pm:{}", pm_dir(ctx).display()),
        other => other.to_owned(),
    }
}

/// The train-pm stage's model.
fn pm_dir(ctx: &RunContext) -> PathBuf {
    ctx.stage_dir(Stage::TrainPm).join("model")
}

/// The model a judge of `[eval.safety]` runs, if any, as a model spec: an input of the stage.
fn safety_judge_model(ctx: &RunContext, judge: &str) -> Option<String> {
    match judge.split_once(':') {
        _ if judge == "pm" => Some(pm_dir(ctx).display().to_string()),
        Some(("pm", dir)) => Some(dir.to_owned()),
        Some(("classifier", rest)) => rest.split_once('@').map(|(_, model)| model.to_owned()),
        _ => None,
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
    if let Some(safety) = &s.safety {
        let mut sets = vec![safety.red_team];
        if let BenignSet::Data(set) = safety.benign {
            sets.push(set);
        }
        for set in sets {
            let role = format!("safety {}", set.name());
            if !p
                .inputs
                .iter()
                .any(|i| matches!(i, InputSpec::Path { path, .. } if *path == ctx.prompt_set(set)))
            {
                p.input_path(&role, ctx.prompt_set(set));
            }
        }
        for (i, judge) in safety.judges.iter().enumerate() {
            if let Some(model) = safety_judge_model(ctx, judge) {
                p.input_model(&format!("safety judge {}", i + 1), model);
            }
        }
        p.outputs
            .push(("safety".into(), dir.join(SAFETY_DIR).join("safety.json")));
    }
    p.steps.push(Step::Eval);
    if s.lab.is_some() {
        p.outputs.push(("lab eval".into(), dir.join(LAB_EVAL_FILE)));
    }
    Ok(p)
}

/// The eval stage's Elo job as a [`Job`], for running and for its command line.
pub fn elo_job(ctx: &RunContext, snapshots: &[SnapshotModel]) -> Result<Job, RecipeError> {
    Ok(Job::Elo(EloJob::new(ctx, snapshots)?))
}

/// The eval stage's safety job as a [`Job`] (the snapshots with a model; `prompted` has
/// none).
pub fn safety_job(ctx: &RunContext, snapshots: &[SnapshotModel]) -> Job {
    Job::Safety(SafetyJob::new(ctx, snapshots))
}

/// The jobs the eval stage runs over `snapshots`, in order: the Elo job and the safety job,
/// those the recipe asks for.
pub fn jobs(ctx: &RunContext, snapshots: &[SnapshotModel]) -> Result<Vec<Job>, RecipeError> {
    let Some(eval) = &ctx.recipe().eval else {
        return Ok(Vec::new());
    };
    let mut jobs = Vec::new();
    if eval.elo.is_some() {
        jobs.push(elo_job(ctx, snapshots)?);
    }
    if eval.safety.is_some() {
        jobs.push(safety_job(ctx, snapshots));
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::recipe::{parse, LoadedRecipe};
    use crate::stages::plan_all;

    fn loaded(eval: &str) -> LoadedRecipe {
        let text = format!(
            "name = \"t\"\n[models]\nbase = \"org/base\"\ndevice = \"cuda\"\n[data]\n\
             red_team = [\"r.jsonl\"]\neval_red_team = [\"e.jsonl\"]\n\
             eval_helpful = [\"h.jsonl\"]\nconstitution = \"default\"\n\
             [critique]\n[sft]\n[label]\n[train-pm]\n{eval}"
        );
        LoadedRecipe {
            recipe: parse(&text, "r.toml", false).unwrap(),
            text,
            path: Some("/recipes/r.toml".into()),
            quick: false,
        }
    }

    #[test]
    fn the_safety_job_names_each_judge_set_and_snapshot() {
        let loaded = loaded(
            "[eval]\nsnapshots = [\"base\", \"sl-cai\"]\n[eval.safety]\n\
             judges = [\"refusal\", \"pm\", \"classifier:wildguard@org/guard\"]\n\
             samples = 8\nbootstrap = 100\n",
        );
        let ctx = RunContext {
            loaded: &loaded,
            run_dir: Path::new("run"),
        };
        let jobs = jobs(&ctx, &snapshots(&ctx)).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            jobs[0].command_line(),
            "cai eval safety --output run/eval/safety --judge refusal --judge \
             pm:run/train-pm/model --judge classifier:wildguard@org/guard --red-team \
             run/data/eval_red_team.jsonl --benign over-refusal --model base=org/base --model \
             sl-cai=run/sft/model --samples 8 --bootstrap 100 --device cuda"
        );
        let plan = plan_all(&ctx).unwrap().pop().unwrap();
        assert_eq!(plan.stage, Stage::Eval);
        let inputs: Vec<String> = plan
            .inputs
            .iter()
            .map(|i| match i {
                InputSpec::Path { role, path } => format!("{role}: {}", path.display()),
                InputSpec::Model { role, spec } => format!("{role}: model {spec}"),
            })
            .collect();
        assert_eq!(
            inputs,
            [
                "base: model org/base",
                "sl-cai: model run/sft/model",
                "safety eval_red_team: run/data/eval_red_team.jsonl",
                "safety judge 2: model run/train-pm/model",
                "safety judge 3: model org/guard",
            ]
        );
        // Without [eval.lab] no lab measures are promised.
        let outputs: Vec<&str> = plan.outputs.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(outputs, ["safety"]);
        assert_eq!(
            plan.writes.join(" "),
            "manifest.json config.json metrics.jsonl safety"
        );
    }

    #[test]
    fn elo_and_safety_share_their_prompt_sets_and_a_data_set_is_a_benign_set() {
        let loaded = loaded(
            "[eval]\nsnapshots = [\"base\"]\nelo = { judge = \"pm\" }\n[eval.safety]\n\
             judges = [\"llm:http://h:1/v1#j\"]\nred_team = \"red_team\"\n\
             benign = \"eval_helpful\"\nmax_new_tokens = 7\nargs = [\"--temperature\", \"0.5\"]\n",
        );
        let ctx = RunContext {
            loaded: &loaded,
            run_dir: Path::new("run"),
        };
        let jobs = jobs(&ctx, &snapshots(&ctx)).unwrap();
        assert!(matches!(jobs[0], Job::Elo(_)));
        assert_eq!(
            jobs[1].command_line(),
            "cai eval safety --output run/eval/safety --judge 'llm:http://h:1/v1#j' --red-team \
             run/data/red_team.jsonl --benign run/data/eval_helpful.jsonl --model base=org/base \
             --max-new-tokens 7 --device cuda --temperature 0.5"
        );
        let plan = plan_all(&ctx).unwrap().pop().unwrap();
        let roles: Vec<&str> = plan
            .inputs
            .iter()
            .map(|i| match i {
                InputSpec::Path { role, .. } | InputSpec::Model { role, .. } => role.as_str(),
            })
            .collect();
        // eval_helpful is Elo's already; the endpoint judge is named by the config only.
        assert_eq!(
            roles,
            ["base", "eval_red_team", "eval_helpful", "safety red_team"]
        );
    }
}
