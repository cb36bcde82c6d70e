//! A recipe turned into stage plans: each stage's resolved config, its inputs (hashed into its
//! fingerprint), its steps — typed [`Job`]s, one per `cai` command the stage is equivalent to,
//! and prompt files joined — and its outputs. Every path of the run directory is fixed here;
//! one file per stage builds its plan and holds its job type.
//!
//! A job is data: what to run, with which inputs, settings and outputs. It is stored in the
//! stage's manifest as JSON, beside the equivalent `cai` command line for people to read (that
//! text is never parsed back). The caller runs it (`cai pipeline` calls each command's code
//! with the job's typed arguments).

mod check;
pub mod critique;
pub mod data;
pub mod distill;
pub mod eval;
pub mod label;
pub mod merge;
pub mod outputs;
pub mod rl;
pub mod sft;
pub mod train_pm;
mod words;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::manifest::{CONFIG_FILE, MANIFEST_FILE, METRICS_FILE};
use crate::recipe::{resolve_path, LoadedRecipe, ModelRef, PromptSet, Recipe, RecipeError, Stage};

pub use check::check_inputs;
pub use words::{command_line, shell_words};

/// The pipeline's checkpoint interval when a recipe sets none: a killed training stage
/// resumes from at most this many steps back.
pub const DEFAULT_SAVE_EVERY: u64 = 20;

/// Errors of planning a recipe's stages in a run directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A path of the recipe does not resolve.
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    /// A stage could not be planned.
    #[error("planning the {stage} stage: {source}")]
    Stage {
        /// The stage.
        stage: Stage,
        /// Why.
        #[source]
        source: Box<PlanError>,
    },
    /// A prompt source of the recipe cannot be read: a file that does not exist, a malformed
    /// source, or a Hub dataset whose revision cannot be resolved.
    #[error("the recipe's {what} ({spec}): {message}")]
    Source {
        /// The key, as `[data] red_team`.
        what: String,
        /// The source as written.
        spec: String,
        /// What is wrong, and what to do.
        message: String,
    },
    /// An input of the recipe lies where the run writes (the message says where and what to
    /// do).
    #[error("the recipe's {what} ({spec}) {problem}")]
    InputInRun {
        /// The key, as `[data] red_team`.
        what: String,
        /// The value as written.
        spec: String,
        /// Where it lies, and what to do.
        problem: String,
    },
}

/// A recipe in a run directory: where every stage's files go.
#[derive(Debug, Clone, Copy)]
pub struct RunContext<'a> {
    /// The recipe.
    pub loaded: &'a LoadedRecipe,
    /// The run directory.
    pub run_dir: &'a Path,
}

/// The device and dtype flags of every command of a run (`[models] device`, `dtype`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceFlags {
    /// cpu, cuda or cuda:N.
    pub device: String,
    /// f32, f16 or bf16 [default: the command's].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
}

/// The settings the training stages share (`[distill]`, `[sft]`, `[train-pm]`); unset ones
/// take the command's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingFlags {
    /// Peak learning rate.
    pub learning_rate: Option<f64>,
    /// Passes over the data.
    pub epochs: Option<u64>,
    /// Stop after this many optimiser steps.
    pub max_steps: Option<u64>,
    /// Sequences (pairs for the PM) per micro-batch.
    pub batch_size: Option<u64>,
    /// Checkpoint every N steps: the stage's `save_every`, else the pipeline's interval unless
    /// the stage's config table sets one (then the command reads it from there).
    pub save_every: Option<u64>,
}

impl TrainingFlags {
    /// A stage's settings (`t`) beside its `[<stage>.config]` table, with the pipeline's
    /// checkpoint interval when neither sets one.
    pub fn of(t: &crate::recipe::Training, config: Option<&toml::Table>) -> Self {
        let in_config = config.is_some_and(|c| c.contains_key("save_every"));
        Self {
            learning_rate: t.learning_rate,
            epochs: t.epochs,
            max_steps: t.max_steps,
            batch_size: t.batch_size,
            save_every: t.save_every.or((!in_config).then_some(DEFAULT_SAVE_EVERY)),
        }
    }
}

/// The file name of a stage's `[stage.config]` table in its folder.
pub const TRAINER_CONFIG_FILE: &str = "trainer.toml";

/// A training stage's `[stage.config]` table (the trainer's own settings), which the runner
/// writes into the stage's folder and passes as the command's `--config` file: a recipe, a
/// config file and the command's flags then merge through the command's one path (defaults,
/// then the file, then the flags the recipe's keys and `[quick]` give).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigFile {
    /// Where it is written (`<stage folder>/trainer.toml`).
    pub path: PathBuf,
    /// Its TOML text.
    pub text: String,
}

impl ConfigFile {
    /// The stage's config file, if its table has one.
    pub fn of(ctx: &RunContext, stage: Stage, table: Option<&toml::Table>) -> Option<Self> {
        let table = table?;
        Some(Self {
            path: ctx.stage_dir(stage).join(TRAINER_CONFIG_FILE),
            text: toml::to_string(table).expect("a TOML table serialises"),
        })
    }
}

/// One command a stage runs, typed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Job {
    /// `cai lab generate`: the lab's world.
    LabGenerate(data::LabWorldJob),
    /// `cai distill`.
    Distill(distill::DistillJob),
    /// `cai critique`.
    Critique(critique::CritiqueJob),
    /// `cai sft`.
    Sft(sft::SftJob),
    /// `cai label`.
    Label(label::LabelJob),
    /// `cai train-pm`.
    TrainPm(train_pm::TrainPmJob),
    /// `cai rl`.
    Rl(rl::RlJob),
    /// `cai merge-lora`: a LoRA stage's adapter merged into a plain model.
    MergeLora(merge::MergeLoraJob),
    /// `cai eval elo`.
    Elo(eval::EloJob),
    /// `cai eval safety`.
    Safety(eval::SafetyJob),
}

impl Job {
    /// The words of the equivalent `cai` command (without `cai`), for people and for the
    /// stage's fingerprint. A training job's `--resume` or `--overwrite` is added when it
    /// runs.
    pub fn words(&self) -> Vec<String> {
        match self {
            Self::LabGenerate(j) => j.words(),
            Self::Distill(j) => j.words(),
            Self::Critique(j) => j.words(),
            Self::Sft(j) => j.words(),
            Self::Label(j) => j.words(),
            Self::TrainPm(j) => j.words(),
            Self::Rl(j) => j.words(),
            Self::MergeLora(j) => j.words(),
            Self::Elo(j) => j.words(),
            Self::Safety(j) => j.words(),
        }
    }

    /// The equivalent command line, quoted for a POSIX shell.
    pub fn command_line(&self) -> String {
        command_line(&self.words())
    }

    /// The file or folder the job writes.
    pub fn output(&self) -> &Path {
        match self {
            Self::LabGenerate(j) => &j.output,
            Self::Distill(j) => &j.output,
            Self::Critique(j) => &j.output,
            Self::Sft(j) => &j.output,
            Self::Label(j) => &j.output,
            Self::TrainPm(j) => &j.output,
            Self::Rl(j) => &j.output,
            Self::MergeLora(j) => &j.output,
            Self::Elo(j) => &j.output,
            Self::Safety(j) => &j.output,
        }
    }

    /// A training job's output folder: it resumes from a checkpoint or finished model there,
    /// else starts afresh, deleting what an earlier attempt wrote.
    pub fn training_output(&self) -> Option<&Path> {
        match self {
            Self::Distill(_) | Self::Sft(_) | Self::TrainPm(_) | Self::Rl(_) => Some(self.output()),
            _ => None,
        }
    }

    /// The `--config` file the runner writes before running the job, if any.
    pub fn config_file(&self) -> Option<&ConfigFile> {
        match self {
            Self::Distill(j) => j.config.as_ref(),
            Self::Sft(j) => j.config.as_ref(),
            Self::TrainPm(j) => j.config.as_ref(),
            Self::Rl(j) => j.config.as_ref(),
            _ => None,
        }
    }

    /// Words a recipe's `args = [...]` adds to the command (a last resort for flags the
    /// recipe has no key for; the caller parses the whole command line when there are any).
    pub fn extra_args(&self) -> &[String] {
        match self {
            Self::Distill(j) => &j.args,
            Self::Critique(j) => &j.args,
            Self::Sft(j) => &j.args,
            Self::Label(j) => &j.args,
            Self::TrainPm(j) => &j.args,
            Self::Rl(j) => &j.args,
            Self::Elo(j) => &j.args,
            Self::Safety(j) => &j.args,
            Self::LabGenerate(_) | Self::MergeLora(_) => &[],
        }
    }
}

/// One step of a stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A typed job.
    Job(Box<Job>),
    /// Prompt files joined into one (ids made unique, thinned to `limit`).
    Join {
        /// The files, in order.
        inputs: Vec<PathBuf>,
        /// The joined file.
        output: PathBuf,
        /// Keep at most this many prompts.
        limit: Option<usize>,
    },
    /// The eval stage's measures (see [`eval`]).
    Eval,
}

/// An input of a stage, hashed into its fingerprint.
#[derive(Debug, Clone, PartialEq)]
pub enum InputSpec {
    /// A file or folder (of the recipe, or of an earlier stage).
    Path {
        /// What it is to the stage.
        role: String,
        /// Where.
        path: PathBuf,
    },
    /// A model spec as the commands take it (a directory, an alias, a cache id, endpoints).
    Model {
        /// What it is to the stage.
        role: String,
        /// The spec.
        spec: String,
    },
}

/// What a stage does.
#[derive(Debug, Clone, PartialEq)]
pub struct StagePlan {
    /// The stage.
    pub stage: Stage,
    /// Its resolved recipe table (hashed into the fingerprint, written as `config.json`).
    pub config: Value,
    /// Its inputs.
    pub inputs: Vec<InputSpec>,
    /// What it runs, in order.
    pub steps: Vec<Step>,
    /// Its outputs, by role.
    pub outputs: Vec<(String, PathBuf)>,
    /// JSONL outputs that must hold exactly the ids of these files (one record per prompt)
    /// before the stage is marked finished.
    pub expect_ids: Vec<(PathBuf, Vec<PathBuf>)>,
    /// The names in the stage folder the stage writes (see [`crate::rundir::owns`]).
    pub writes: Vec<String>,
    /// A trainer's metrics file, copied to the stage's `metrics.jsonl`.
    pub metrics_from: Option<PathBuf>,
}

impl StagePlan {
    fn new(stage: Stage, config: Value) -> Self {
        Self {
            stage,
            config,
            inputs: Vec::new(),
            steps: Vec::new(),
            outputs: Vec::new(),
            expect_ids: Vec::new(),
            writes: Vec::new(),
            metrics_from: None,
        }
    }

    /// The plan's jobs, in order.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.steps.iter().filter_map(|step| match step {
            Step::Job(job) => Some(&**job),
            _ => None,
        })
    }

    fn input_path(&mut self, role: &str, path: PathBuf) {
        self.inputs.push(InputSpec::Path {
            role: role.into(),
            path,
        });
    }

    fn input_model(&mut self, role: &str, spec: String) {
        self.inputs.push(InputSpec::Model {
            role: role.into(),
            spec,
        });
    }

    fn join(&mut self, inputs: Vec<PathBuf>, output: PathBuf, limit: Option<usize>) {
        self.steps.push(Step::Join {
            inputs,
            output,
            limit,
        });
    }
}

impl RunContext<'_> {
    /// The recipe.
    pub fn recipe(&self) -> &Recipe {
        &self.loaded.recipe
    }

    /// A stage's folder.
    pub fn stage_dir(&self, stage: Stage) -> PathBuf {
        self.run_dir.join(stage.name())
    }

    /// A recipe path, resolved.
    pub fn path(&self, spec: &str) -> Result<PathBuf, RecipeError> {
        resolve_path(spec, &self.loaded.base_dir(), self.run_dir)
    }

    /// The joined file of a prompt set.
    pub fn prompt_set(&self, set: PromptSet) -> PathBuf {
        self.stage_dir(Stage::Data)
            .join(format!("{}.jsonl", set.name()))
    }

    /// The model a trained stage leaves for later stages (merged when trained with LoRA).
    pub fn stage_model(&self, stage: Stage) -> PathBuf {
        let lora = match stage {
            Stage::Distill => self
                .recipe()
                .distill
                .as_ref()
                .is_some_and(|s| s.uses_lora()),
            Stage::Sft => self.recipe().sft.as_ref().is_some_and(|s| s.uses_lora()),
            Stage::Rl => self.recipe().rl.as_ref().is_some_and(|s| s.uses_lora()),
            _ => false,
        };
        self.stage_dir(stage)
            .join(if lora { "merged" } else { "model" })
    }

    /// The model spec a reference names.
    pub fn model(&self, model: ModelRef) -> String {
        let models = &self.recipe().models;
        match (model, model.stage()) {
            (ModelRef::Base, _) => models.base.clone(),
            (ModelRef::Feedback, _) => models.feedback.clone().unwrap_or(models.base.clone()),
            (_, Some(stage)) => self.stage_model(stage).display().to_string(),
            (_, None) => unreachable!("only base and feedback have no stage"),
        }
    }

    /// The device and dtype of every command.
    pub fn device(&self) -> DeviceFlags {
        let models = &self.recipe().models;
        DeviceFlags {
            device: models.device.clone(),
            dtype: models.dtype.clone(),
        }
    }

    /// The device and dtype of the commands that only run models (critique, label, eval):
    /// `[models] inference_dtype` when set, else as [`RunContext::device`].
    pub fn inference_device(&self) -> DeviceFlags {
        let models = &self.recipe().models;
        DeviceFlags {
            dtype: models.inference_dtype.clone().or(models.dtype.clone()),
            ..self.device()
        }
    }

    /// `[data] context`, resolved.
    pub fn context_path(&self) -> Result<Option<PathBuf>, RecipeError> {
        self.recipe()
            .data
            .context
            .as_deref()
            .map(|c| self.path(c))
            .transpose()
    }

    /// `[data] constitution` as the commands take it: a built-in name stays a name; anything
    /// else is a path of the recipe.
    pub fn constitution(&self) -> Result<String, RecipeError> {
        let c = &self.recipe().data.constitution;
        if is_constitution_path(c) {
            Ok(self.path(c)?.display().to_string())
        } else {
            Ok(c.clone())
        }
    }
}

/// Whether `[data] constitution` names a file or folder rather than a built-in constitution.
fn is_constitution_path(c: &str) -> bool {
    c.starts_with('@') || c.contains('/') || c.ends_with(".toml") || c.ends_with(".json")
}

/// The plan of every stage the recipe has, in order.
pub fn plan_all(ctx: &RunContext) -> Result<Vec<StagePlan>, PlanError> {
    ctx.recipe()
        .stages()
        .into_iter()
        .map(|stage| {
            plan(ctx, stage).map_err(|e| PlanError::Stage {
                stage,
                source: Box::new(e),
            })
        })
        .collect()
}

fn plan(ctx: &RunContext, stage: Stage) -> Result<StagePlan, PlanError> {
    let mut p = match stage {
        Stage::Data => data::plan(ctx)?,
        Stage::Distill => distill::plan(ctx)?,
        Stage::Critique => critique::plan(ctx)?,
        Stage::Sft => sft::plan(ctx)?,
        Stage::Label => label::plan(ctx)?,
        Stage::TrainPm => train_pm::plan(ctx)?,
        Stage::Rl => rl::plan(ctx)?,
        Stage::Eval => eval::plan(ctx)?,
    };
    p.writes = stage_writes(&p, &ctx.stage_dir(stage));
    Ok(p)
}

/// The files every stage writes in its folder.
const STAGE_FILES: [&str; 3] = [MANIFEST_FILE, CONFIG_FILE, METRICS_FILE];

/// The names in the stage folder `dir` that a plan writes: the stage's own files, each
/// step's output and each output, by their first component under `dir`.
fn stage_writes(p: &StagePlan, dir: &Path) -> Vec<String> {
    let mut paths: Vec<&Path> = p.outputs.iter().map(|(_, path)| path.as_path()).collect();
    for step in &p.steps {
        match step {
            Step::Join { output, .. } => paths.push(output),
            Step::Job(job) => {
                paths.push(job.output());
                paths.extend(job.config_file().map(|c| c.path.as_path()));
            }
            Step::Eval => {}
        }
    }
    let mut names: Vec<String> = STAGE_FILES.iter().map(|f| f.to_string()).collect();
    for path in paths {
        let first = path
            .strip_prefix(dir)
            .ok()
            .and_then(|p| p.components().next());
        if let Some(std::path::Component::Normal(name)) = first {
            let name = name.to_string_lossy().into_owned();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_recipe_plans_every_stage_with_run_directory_paths() {
        let loaded = LoadedRecipe::load(None, false).unwrap();
        let ctx = RunContext {
            loaded: &loaded,
            run_dir: Path::new("runs/x"),
        };
        let plans = plan_all(&ctx).unwrap();
        assert_eq!(plans.len(), 8);
        let line = plans[3].jobs().next().unwrap().command_line();
        assert!(
            line.starts_with("cai sft --model lab --data runs/x/critique/sl.jsonl"),
            "{line}"
        );
        assert!(line.contains("--helpful-ratio 2"), "{line}");
        assert!(line.contains("--learning-rate 0.00003"), "{line}");
        let label = plans[4].jobs().next().unwrap().command_line();
        assert!(label.contains("--policy runs/x/sft/model"), "{label}");
        assert!(
            label.contains("--context-b runs/x/data/lab/hhh_context.txt"),
            "{label}"
        );
        let rl = plans[6].jobs().next().unwrap().command_line();
        assert!(rl.contains("--reward runs/x/train-pm/model"), "{rl}");
        // What each stage writes in its folder, for deleting only that on a restart.
        let writes = |i: usize| plans[i].writes.join(" ");
        assert_eq!(
            writes(0),
            "manifest.json config.json metrics.jsonl lab red_team.jsonl helpful.jsonl \
             eval_red_team.jsonl eval_helpful.jsonl"
        );
        assert_eq!(
            writes(2),
            "manifest.json config.json metrics.jsonl sl.jsonl sl.helpful.jsonl"
        );
        assert_eq!(
            writes(7),
            "manifest.json config.json metrics.jsonl elo lab_eval.jsonl"
        );
        assert_eq!(plans[2].expect_ids.len(), 2);
    }

    /// The command lines of the quick lab recipe, word for word as the argument lists the
    /// pipeline built before its stages became typed jobs (a stage's fingerprint hashes
    /// them, so an earlier run directory is still recognised as finished).
    #[test]
    fn the_quick_lab_commands_are_the_earlier_ones() {
        let loaded = LoadedRecipe::load(None, true).unwrap();
        let ctx = RunContext {
            loaded: &loaded,
            run_dir: Path::new("r"),
        };
        let lines: Vec<String> = plan_all(&ctx)
            .unwrap()
            .iter()
            .flat_map(|p| p.jobs().map(Job::command_line).collect::<Vec<_>>())
            .collect();
        assert_eq!(
            lines,
            [
                "cai lab generate --output r/data/lab --seed 0 --size 1 --overwrite",
                "cai distill --model lab --context r/data/lab/hhh_context.txt --data \
                 r/distill/data.jsonl --output r/distill/model --sample --learning-rate 0.0001 \
                 --epochs 2 --batch-size 8 --save-every 20 --device cpu",
                "cai critique --model lab --prompts r/data/red_team.jsonl --constitution \
                 r/data/lab/constitution --output r/critique/sl.jsonl --few-shot \
                 r/data/lab/few_shot/critique_revision.json --helpful-prompts \
                 r/data/helpful.jsonl --rounds 1 --max-new-tokens 64 --device cpu",
                "cai sft --model lab --data r/critique/sl.jsonl --output r/sft/model \
                 --helpful-data r/critique/sl.helpful.jsonl --helpful-ratio 2 \
                 --learning-rate 0.0001 --epochs 3 --save-every 20 --device cpu",
                "cai label --policy r/sft/model --feedback lab --prompts r/label/prompts.jsonl \
                 --constitution r/data/lab/constitution --output r/label/prefs.jsonl \
                 --ensemble 2 --swap --context-b r/data/lab/hhh_context.txt \
                 --max-new-tokens 64 --device cpu",
                "cai train-pm --model lab --data r/label/prefs.jsonl --output r/train-pm/model \
                 --epochs 2 --save-every 20 --device cpu",
                "cai rl --algo ppo --policy r/sft/model --output r/rl/model --reward \
                 r/train-pm/model --prompts r/rl/prompts.jsonl --helpful-prompts \
                 r/rl/helpful_prompts.jsonl --helpful-ratio 1 --steps 4 --save-every 2 \
                 --keep-last all --device cpu",
            ]
        );
    }

    #[test]
    fn jobs_round_trip_through_json() {
        let loaded = LoadedRecipe::load(None, true).unwrap();
        let ctx = RunContext {
            loaded: &loaded,
            run_dir: Path::new("r"),
        };
        for plan in plan_all(&ctx).unwrap() {
            for job in plan.jobs() {
                let json = serde_json::to_string(job).unwrap();
                let back: Job = serde_json::from_str(&json).unwrap();
                assert_eq!(&back, job, "{json}");
            }
        }
    }
}
