//! Pipeline recipes: a TOML file naming the models, the data and each stage's settings, read
//! into typed structs that reject unknown keys (a typo is an error naming the key and line).
//!
//! A recipe lists the stages of Constitutional AI in their fixed order — data, distill,
//! critique, sft, label, train-pm, rl, eval — each an optional table; a missing table leaves
//! the stage out. Paths are relative to the recipe's folder, or to a stage's folder in the
//! run directory when they start with `@stage/` (`@data/lab/hhh_context.txt`). A `[quick]`
//! table holds overrides of any key for a smoke run (`cai pipeline --quick`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod eval;
mod stages;
#[cfg(test)]
mod tests;
mod validate;

pub use eval::*;
pub use stages::*;
use validate::validate;

/// The stages in the order they run.
pub const STAGES: [Stage; 8] = [
    Stage::Data,
    Stage::Distill,
    Stage::Critique,
    Stage::Sft,
    Stage::Label,
    Stage::TrainPm,
    Stage::Rl,
    Stage::Eval,
];

/// One stage of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// The inputs: the prompt sets joined into one file each (and a lab world written, if
    /// the recipe asks for one).
    Data,
    /// Context distillation of the context into the base model.
    Distill,
    /// SL-CAI data: critiques and revisions of answers to red-team prompts.
    Critique,
    /// SL-CAI: fine-tuning on the revisions and helpful answers.
    Sft,
    /// RL-CAI feedback: soft preference labels from the feedback model.
    Label,
    /// The preference model trained on the labels.
    TrainPm,
    /// RL-CAI: the SL-CAI model optimised against the preference model.
    Rl,
    /// Every snapshot measured.
    Eval,
}

impl Stage {
    /// The stage's name: its recipe table, its folder in the run directory, its `--stages` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Data => "data",
            Self::Distill => "distill",
            Self::Critique => "critique",
            Self::Sft => "sft",
            Self::Label => "label",
            Self::TrainPm => "train-pm",
            Self::Rl => "rl",
            Self::Eval => "eval",
        }
    }

    /// The stage called `name`.
    pub fn from_name(name: &str) -> Result<Self, RecipeError> {
        STAGES
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| RecipeError::UnknownStage(name.to_owned()))
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of reading and checking a recipe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecipeError {
    /// The recipe file could not be read.
    #[error("reading the recipe {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or a key is unknown or of the wrong type (toml's message names
    /// the line, column and key).
    #[error("{origin}: {message}")]
    Parse {
        /// The file, or the embedded recipe's name.
        origin: String,
        /// What is wrong and where.
        message: String,
    },
    /// A stage name that does not exist.
    #[error("unknown stage `{0}`; the stages are data, distill, critique, sft, label, train-pm, rl, eval")]
    UnknownStage(String),
    /// A value is out of range or refers to something that does not exist.
    #[error("{origin}: {field}: {message}")]
    Invalid {
        /// The file, or the embedded recipe's name.
        origin: String,
        /// The key, as `[table] key`.
        field: String,
        /// What was expected.
        message: String,
    },
}

/// A whole recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The recipe's name: the default run directory is `cai-runs/<name>`.
    pub name: String,
    /// One line on what the recipe does, shown in the report.
    #[serde(default)]
    pub description: String,
    /// The models the method starts from.
    pub models: Models,
    /// The prompt sets and assets.
    pub data: Data,
    /// Context distillation (left out without the table).
    pub distill: Option<DistillStage>,
    /// SL-CAI critiques and revisions.
    pub critique: Option<CritiqueStage>,
    /// SL-CAI fine-tuning.
    pub sft: Option<SftStage>,
    /// RL-CAI labels.
    pub label: Option<LabelStage>,
    /// The preference model.
    #[serde(rename = "train-pm")]
    pub train_pm: Option<TrainPmStage>,
    /// RL against the preference model.
    pub rl: Option<RlStage>,
    /// Measures of every snapshot.
    pub eval: Option<EvalStage>,
    /// Overrides of any key above for `--quick`, in the same shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quick: Option<toml::Table>,
}

/// The models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Models {
    /// The helpful-only model the method starts from (a directory, a Hugging Face cache id,
    /// an endpoint, or a shipped lab model such as `lab`).
    pub base: String,
    /// The AI-feedback model that labels comparisons [default: the base model].
    pub feedback: Option<String>,
    /// A model that writes the critique stage's critiques and revisions of the answers
    /// [default: the answering model critiques itself, as in the paper]. For a base model
    /// too small to critique itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critic: Option<String>,
    /// Device of every stage: cpu, cuda or cuda:N.
    #[serde(default = "default_device")]
    pub device: String,
    /// Compute dtype of every stage (f32, bf16, f16) [default: each command's].
    pub dtype: Option<String>,
    /// Compute dtype of the stages that only run models — critique, label, eval — when it
    /// should differ from `dtype` [default: `dtype`]. `bf16` on the CPU runs bf16 weights
    /// under f32 activations (AMX / AVX-512 BF16 kernels) while training stays f32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_dtype: Option<String>,
}

fn default_device() -> String {
    "cpu".into()
}

/// The inputs. Each prompt set is a list of sources joined into one by the data stage: JSONL,
/// `.jsonl.gz`, JSON or Parquet files (with `?` options such as `prompt=question`), or Hub
/// datasets (`org/name?subset=…`, `hf://datasets/org/name@rev/path`), as `--prompts` takes
/// them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Data {
    /// Write the lab's world of this seed to `@data/lab` first (`cai lab generate`).
    pub lab_world: Option<u64>,
    /// Red-team prompts (training).
    pub red_team: Vec<String>,
    /// Helpfulness prompts (training), mixed into SFT and RL so the model stays helpful.
    #[serde(default)]
    pub helpful: Vec<String>,
    /// Held-out red-team prompts (evaluation).
    #[serde(default)]
    pub eval_red_team: Vec<String>,
    /// Held-out helpfulness prompts (evaluation).
    #[serde(default)]
    pub eval_helpful: Vec<String>,
    /// The constitution: a built-in name, a file, or a folder.
    pub constitution: String,
    /// Few-shot critique/revision examples [default: the constitution's].
    pub few_shot: Option<String>,
    /// The dialogue-prompting context (an HHH prompt): what `distill` distils, the
    /// "prompted" snapshot, and `label`'s second sample context.
    pub context: Option<String>,
    /// Keep at most this many prompts of each set (quick runs).
    pub limit: Option<usize>,
}

/// The prompt sets of [`Data`], by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptSet {
    /// `data.red_team`.
    RedTeam,
    /// `data.helpful`.
    Helpful,
    /// `data.eval_red_team`.
    EvalRedTeam,
    /// `data.eval_helpful`.
    EvalHelpful,
}

impl PromptSet {
    /// Every set.
    pub const ALL: [Self; 4] = [
        Self::RedTeam,
        Self::Helpful,
        Self::EvalRedTeam,
        Self::EvalHelpful,
    ];

    /// The set's key in `[data]`, and its file name (without `.jsonl`) in `@data/`.
    pub fn name(self) -> &'static str {
        match self {
            Self::RedTeam => "red_team",
            Self::Helpful => "helpful",
            Self::EvalRedTeam => "eval_red_team",
            Self::EvalHelpful => "eval_helpful",
        }
    }
}

/// A model a stage reads: the recipe's models or an earlier stage's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelRef {
    /// `models.base`.
    Base,
    /// `models.feedback` (else the base).
    Feedback,
    /// The distilled model.
    Distill,
    /// The SL-CAI model.
    Sft,
    /// The RL-CAI model.
    Rl,
}

impl ModelRef {
    /// The stage that makes the model, if any.
    pub fn stage(self) -> Option<Stage> {
        match self {
            Self::Base | Self::Feedback => None,
            Self::Distill => Some(Stage::Distill),
            Self::Sft => Some(Stage::Sft),
            Self::Rl => Some(Stage::Rl),
        }
    }
}

fn yes() -> bool {
    true
}
fn base() -> ModelRef {
    ModelRef::Base
}
fn sft() -> ModelRef {
    ModelRef::Sft
}
fn feedback() -> ModelRef {
    ModelRef::Feedback
}
fn ppo() -> String {
    "ppo".into()
}
fn red_team() -> Vec<PromptSet> {
    vec![PromptSet::RedTeam]
}
fn eval_red_team() -> PromptSet {
    PromptSet::EvalRedTeam
}
fn all_snapshots() -> Vec<Snapshot> {
    vec![
        Snapshot::Base,
        Snapshot::Prompted,
        Snapshot::Distilled,
        Snapshot::SlCai,
        Snapshot::RlCai,
    ]
}

/// The lab's default recipe, embedded (`recipes/lab.toml`).
pub const LAB_RECIPE: &str = include_str!("../../../recipes/lab.toml");

/// A recipe and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedRecipe {
    /// The recipe (with `[quick]` applied when asked for).
    pub recipe: Recipe,
    /// Its TOML text as read.
    pub text: String,
    /// The file, or `None` for the embedded lab recipe.
    pub path: Option<PathBuf>,
    /// Whether `[quick]` was applied.
    pub quick: bool,
}

impl LoadedRecipe {
    /// Read a recipe file (`None`: the embedded lab recipe), applying `[quick]` if asked.
    pub fn load(path: Option<&Path>, quick: bool) -> Result<Self, RecipeError> {
        let (text, origin) = match path {
            Some(path) => (
                std::fs::read_to_string(path).map_err(|source| RecipeError::Read {
                    path: path.to_owned(),
                    source,
                })?,
                path.display().to_string(),
            ),
            None => (LAB_RECIPE.to_owned(), "the lab recipe".to_owned()),
        };
        let recipe = parse(&text, &origin, quick)?;
        Ok(Self {
            recipe,
            text,
            path: path.map(Path::to_owned),
            quick,
        })
    }

    /// Where relative paths of the recipe start: its folder (the current one for the
    /// embedded recipe).
    pub fn base_dir(&self) -> PathBuf {
        match self.path.as_deref().and_then(Path::parent) {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        }
    }
}

/// Parse a recipe's text; with `quick`, merge its `[quick]` table over it first.
pub fn parse(text: &str, origin: &str, quick: bool) -> Result<Recipe, RecipeError> {
    let parse_error = |e: toml::de::Error| RecipeError::Parse {
        origin: origin.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    };
    let mut recipe: Recipe = toml::from_str(text).map_err(parse_error)?;
    if quick {
        if let Some(overrides) = recipe.quick.take() {
            let mut table: toml::Table = toml::from_str(text).map_err(parse_error)?;
            table.remove("quick");
            merge(&mut table, overrides);
            recipe = toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| RecipeError::Parse {
                    origin: format!("{origin} with [quick]"),
                    message: e.to_string().trim_end().to_owned(),
                })?;
        }
    }
    validate(&recipe, origin)?;
    Ok(recipe)
}

/// Overwrite `base`'s keys with `overrides`', recursing into tables present in both.
fn merge(base: &mut toml::Table, overrides: toml::Table) {
    for (key, value) in overrides {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(over)) => merge(inner, over),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

impl Recipe {
    /// Whether the recipe runs `stage` (data always runs).
    pub fn has_stage(&self, stage: Stage) -> bool {
        match stage {
            Stage::Data => true,
            Stage::Distill => self.distill.is_some(),
            Stage::Critique => self.critique.is_some(),
            Stage::Sft => self.sft.is_some(),
            Stage::Label => self.label.is_some(),
            Stage::TrainPm => self.train_pm.is_some(),
            Stage::Rl => self.rl.is_some(),
            Stage::Eval => self.eval.is_some(),
        }
    }

    /// The stages the recipe runs, in order.
    pub fn stages(&self) -> Vec<Stage> {
        STAGES.into_iter().filter(|s| self.has_stage(*s)).collect()
    }
}

impl Data {
    /// `sets`, or by default red_team and helpful (when helpful is given).
    pub fn sets_or_default(&self, sets: Option<&[PromptSet]>) -> Vec<PromptSet> {
        match sets {
            Some(sets) => sets.to_vec(),
            None if self.helpful.is_empty() => vec![PromptSet::RedTeam],
            None => vec![PromptSet::RedTeam, PromptSet::Helpful],
        }
    }

    /// The files of a prompt set.
    pub fn files(&self, set: PromptSet) -> &[String] {
        match set {
            PromptSet::RedTeam => &self.red_team,
            PromptSet::Helpful => &self.helpful,
            PromptSet::EvalRedTeam => &self.eval_red_team,
            PromptSet::EvalHelpful => &self.eval_helpful,
        }
    }
}

/// A path of the recipe: `@stage/rest` is inside that stage's folder of the run directory,
/// anything else is relative to the recipe's folder.
pub fn resolve_path(spec: &str, recipe_dir: &Path, run_dir: &Path) -> Result<PathBuf, RecipeError> {
    match spec.strip_prefix('@') {
        Some(rest) => {
            let (stage, inner) = rest.split_once('/').unwrap_or((rest, ""));
            let stage = Stage::from_name(stage)?;
            Ok(run_dir.join(stage.name()).join(inner))
        }
        None if Path::new(spec).is_absolute() => Ok(PathBuf::from(spec)),
        None => Ok(recipe_dir.join(spec)),
    }
}
