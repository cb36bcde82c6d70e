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
    /// Device of every stage: cpu, cuda or cuda:N.
    #[serde(default = "default_device")]
    pub device: String,
    /// Compute dtype of every stage (f32, bf16, f16) [default: each command's].
    pub dtype: Option<String>,
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

/// Settings shared by the training stages (`[distill]`, `[sft]`, `[train-pm]`); unset ones
/// take the command's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Training {
    /// Peak learning rate.
    pub learning_rate: Option<f64>,
    /// Passes over the data.
    pub epochs: Option<u64>,
    /// Stop after this many optimiser steps.
    pub max_steps: Option<u64>,
    /// Sequences (pairs for the PM) per micro-batch.
    pub batch_size: Option<u64>,
    /// Checkpoint every N steps.
    pub save_every: Option<u64>,
}

macro_rules! training_of {
    ($($stage:ty),*) => {$(
        impl $stage {
            /// The stage's training settings.
            pub fn training(&self) -> Training {
                Training {
                    learning_rate: self.learning_rate,
                    epochs: self.epochs,
                    max_steps: self.max_steps,
                    batch_size: self.batch_size,
                    save_every: self.save_every,
                }
            }
        }
    )*};
}
training_of!(DistillStage, SftStage, TrainPmStage);

/// `[distill]`: context distillation of `data.context`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillStage {
    /// The model distilled (teacher and student's start).
    #[serde(default = "base")]
    pub model: ModelRef,
    /// The prompt sets distilled on [default: red_team and helpful, when given].
    pub data: Option<Vec<PromptSet>>,
    /// Let the prompted teacher answer the prompts first (`--sample`).
    #[serde(default = "yes")]
    pub sample: bool,
    /// Train LoRA adapters instead of every weight.
    #[serde(default)]
    pub lora: bool,
    /// Peak learning rate [default: the command's].
    pub learning_rate: Option<f64>,
    /// Passes over the data.
    pub epochs: Option<u64>,
    /// Stop after this many optimiser steps.
    pub max_steps: Option<u64>,
    /// Sequences (pairs for the PM) per micro-batch.
    pub batch_size: Option<u64>,
    /// Save a resumable checkpoint every N steps [default: 20, so a killed stage loses little].
    pub save_every: Option<u64>,
    /// The trainer's own settings, every key of a `cai distill --config` file (cai-train's
    /// `DistillConfig`), as a `[distill.config]` table; the keys above override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<toml::Table>,
    /// Further `cai distill` flags, as words (`["--top-k", "32"]`).
    #[serde(default)]
    pub args: Vec<String>,
}

/// `[critique]`: SL-CAI data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CritiqueStage {
    /// The model that answers, critiques and revises (the helpful model).
    #[serde(default = "base")]
    pub model: ModelRef,
    /// Rounds of critique and revision (the paper's 4; the command's default).
    pub rounds: Option<usize>,
    /// Most new tokens per sample.
    pub max_new_tokens: Option<usize>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Prompts per wave.
    pub batch_size: Option<usize>,
    /// Answer the helpful prompts too (SFT records mixed into fine-tuning).
    #[serde(default = "yes")]
    pub helpful: bool,
    /// Further `cai critique` flags.
    #[serde(default)]
    pub args: Vec<String>,
}

/// `[sft]`: SL-CAI fine-tuning on every round's revisions and the helpful answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftStage {
    /// The model fine-tuned.
    #[serde(default = "base")]
    pub model: ModelRef,
    /// Helpful examples per revision example.
    pub helpful_ratio: Option<f64>,
    /// Train on the revisions of rounds 1..=N only.
    pub revision_rounds: Option<u64>,
    /// Train LoRA adapters instead of every weight.
    #[serde(default)]
    pub lora: bool,
    /// Peak learning rate [default: the command's].
    pub learning_rate: Option<f64>,
    /// Passes over the data.
    pub epochs: Option<u64>,
    /// Stop after this many optimiser steps.
    pub max_steps: Option<u64>,
    /// Sequences (pairs for the PM) per micro-batch.
    pub batch_size: Option<u64>,
    /// Save a resumable checkpoint every N steps [default: 20, so a killed stage loses little].
    pub save_every: Option<u64>,
    /// The trainer's own settings, every key of a `cai sft --config` file (cai-train's
    /// `SftConfig`), as a `[sft.config]` table; the keys above override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<toml::Table>,
    /// Further `cai sft` flags.
    #[serde(default)]
    pub args: Vec<String>,
}

/// `[label]`: RL-CAI preference labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelStage {
    /// The model sampled (the paper: SL-CAI).
    #[serde(default = "sft")]
    pub policy: ModelRef,
    /// The model that answers the multiple-choice questions.
    #[serde(default = "feedback")]
    pub feedback: ModelRef,
    /// The prompt sets labelled [default: red_team and helpful, when given].
    pub prompts: Option<Vec<PromptSet>>,
    /// Principles per label: a number, or "all" [default: one sampled, the paper's].
    pub ensemble: Option<String>,
    /// Ask both orders and average.
    #[serde(default)]
    pub swap: bool,
    /// Sample the second response after `data.context` (`--context-b`).
    #[serde(default)]
    pub context_b: bool,
    /// Most new tokens per response.
    pub max_new_tokens: Option<usize>,
    /// Further `cai label` flags.
    #[serde(default)]
    pub args: Vec<String>,
}

/// `[train-pm]`: the preference model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainPmStage {
    /// The model the PM starts from.
    #[serde(default = "base")]
    pub model: ModelRef,
    /// Peak learning rate [default: the command's].
    pub learning_rate: Option<f64>,
    /// Passes over the data.
    pub epochs: Option<u64>,
    /// Stop after this many optimiser steps.
    pub max_steps: Option<u64>,
    /// Sequences (pairs for the PM) per micro-batch.
    pub batch_size: Option<u64>,
    /// Save a resumable checkpoint every N steps [default: 20, so a killed stage loses little].
    pub save_every: Option<u64>,
    /// The trainer's own settings, every key of a `cai train-pm --config` file (cai-train's
    /// `PmConfig`), as a `[train-pm.config]` table; the keys above override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<toml::Table>,
    /// Further `cai train-pm` flags.
    #[serde(default)]
    pub args: Vec<String>,
}

/// `[rl]`: RL-CAI against the preference model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlStage {
    /// ppo, rloo or dpo.
    #[serde(default = "ppo")]
    pub algo: String,
    /// The model optimised (and the KL reference).
    #[serde(default = "sft")]
    pub policy: ModelRef,
    /// Red-team prompts sampled.
    #[serde(default = "red_team")]
    pub prompts: Vec<PromptSet>,
    /// Helpfulness prompts mixed in [default: helpful, when given].
    pub helpful_prompts: Option<Vec<PromptSet>>,
    /// Helpful prompts per red-team prompt.
    pub helpful_ratio: Option<f64>,
    /// Optimisation steps.
    pub steps: Option<u64>,
    /// KL coefficient β.
    pub kl_coef: Option<f64>,
    /// Learning rate.
    pub learning_rate: Option<f64>,
    /// Checkpoint every N steps (each checkpoint is a snapshot the eval stage measures).
    pub save_every: Option<u64>,
    /// Train LoRA adapters.
    #[serde(default)]
    pub lora: bool,
    /// The trainer's own settings, every key of a `cai rl --config` file (cai-train's
    /// `RlConfig`), as a `[rl.config]` table; the keys above override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<toml::Table>,
    /// Further `cai rl` flags.
    #[serde(default)]
    pub args: Vec<String>,
}

/// `[eval]`: the snapshots measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalStage {
    /// Snapshots: base, prompted (the base with `data.context`), distilled, sl-cai, rl-cai;
    /// those whose stage is left out are skipped.
    #[serde(default = "all_snapshots")]
    pub snapshots: Vec<Snapshot>,
    /// Also measure the RL run's intermediate checkpoints (the Elo line).
    #[serde(default = "yes")]
    pub rl_checkpoints: bool,
    /// The lab's oracle measures (`cai lab eval`) on the held-out prompts of a lab world.
    pub lab: Option<LabEval>,
    /// Elo of the snapshots under a judge (`cai eval elo`) on the `eval_red_team`
    /// (harmlessness) and `eval_helpful` (helpfulness) prompt sets.
    pub elo: Option<EloEval>,
    /// Attack success and over-refusal of the snapshots under fixed judges (`cai eval
    /// safety`). Left out of the stage's config when absent, so that recipes without it keep
    /// their fingerprints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety: Option<SafetyEval>,
}

/// `[eval.safety]`: `cai eval safety` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyEval {
    /// The judges, each a `--judge` value of `cai eval safety` (κ compares the first two):
    /// `refusal`, `classifier:TEMPLATE@MODEL`, `llm:URL[#MODEL]`, `pm:DIR`, `oracle`, or `pm`
    /// (the train-pm stage's model).
    pub judges: Vec<String>,
    /// The red-team prompts, whose harmful answers are attack successes.
    #[serde(default = "eval_red_team")]
    pub red_team: PromptSet,
    /// The prompts that should be answered, whose refusals are over-refusals: the shipped
    /// `over-refusal` set, or a prompt set of `[data]`.
    #[serde(default)]
    pub benign: BenignSet,
    /// At most this many prompts of each set, spread over it.
    pub samples: Option<usize>,
    /// Most new tokens per answer.
    pub max_new_tokens: Option<usize>,
    /// Bootstrap resamples for the 95 % intervals.
    pub bootstrap: Option<u64>,
    /// Further `cai eval safety` flags.
    #[serde(default)]
    pub args: Vec<String>,
}

/// `[eval.safety] benign`: the shipped over-refusal set or a prompt set of `[data]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum BenignSet {
    /// cai's over-refusal set (`datasets/over-refusal/`): safe prompts that look unsafe, with
    /// unsafe contrast prompts.
    #[default]
    OverRefusal,
    /// A prompt set of `[data]`.
    Data(PromptSet),
}

impl BenignSet {
    /// The name as a recipe writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::OverRefusal => crate::eval::safety::sets::OVER_REFUSAL_NAME,
            Self::Data(set) => set.name(),
        }
    }
}

impl TryFrom<String> for BenignSet {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        if name == Self::OverRefusal.name() {
            return Ok(Self::OverRefusal);
        }
        PromptSet::ALL
            .into_iter()
            .find(|set| set.name() == name)
            .map(Self::Data)
            .ok_or_else(|| {
                format!(
                    "`{name}` is not a benign set; expected over-refusal (the set cai ships) \
                     or a prompt set of [data]: red_team, helpful, eval_red_team, eval_helpful"
                )
            })
    }
}

impl From<BenignSet> for String {
    fn from(set: BenignSet) -> Self {
        set.name().to_owned()
    }
}

/// `[eval.elo]`: `cai eval elo` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EloEval {
    /// The judge: `oracle` (the lab's), `pm` (the train-pm stage's model), `feedback` (the
    /// feedback model's multiple-choice answers), or any `--judge` value of `cai eval elo`.
    pub judge: String,
    /// At most this many prompts of each set.
    pub samples: Option<usize>,
    /// Bootstrap resamples for the 95 % intervals.
    pub bootstrap: Option<u64>,
    /// Most new tokens per answer.
    pub max_new_tokens: Option<usize>,
    /// Further `cai eval elo` flags.
    #[serde(default)]
    pub args: Vec<String>,
}

/// A model snapshot the eval stage measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Snapshot {
    /// The base model.
    Base,
    /// The base model with the context in front.
    Prompted,
    /// The context-distilled model.
    Distilled,
    /// The SL-CAI model.
    SlCai,
    /// The RL-CAI model.
    RlCai,
}

impl Snapshot {
    /// The snapshot's name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Base => "base",
            Self::Prompted => "prompted",
            Self::Distilled => "distilled",
            Self::SlCai => "sl-cai",
            Self::RlCai => "rl-cai",
        }
    }

    /// The stage that makes the snapshot's model, if any.
    pub fn stage(self) -> Option<Stage> {
        match self {
            Self::Base | Self::Prompted => None,
            Self::Distilled => Some(Stage::Distill),
            Self::SlCai => Some(Stage::Sft),
            Self::RlCai => Some(Stage::Rl),
        }
    }
}

/// `[eval.lab]`: `cai lab eval` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabEval {
    /// The world whose held-out prompts are used.
    #[serde(default)]
    pub world_seed: u64,
    /// At most this many items per measure.
    pub max_items: Option<usize>,
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

/// Check what the types cannot: references to stages that are left out, empty prompt sets.
fn validate(recipe: &Recipe, origin: &str) -> Result<(), RecipeError> {
    let invalid = |field: &str, message: String| RecipeError::Invalid {
        origin: origin.to_owned(),
        field: field.to_owned(),
        message,
    };
    if recipe.data.red_team.is_empty() {
        return Err(invalid(
            "[data] red_team",
            "expected at least one JSONL file of red-team prompts".into(),
        ));
    }
    if recipe.data.limit == Some(0) {
        return Err(invalid("[data] limit", "expected at least 1".into()));
    }
    let present = |stage: Stage| recipe.has_stage(stage);
    let check_model = |field: &str, model: ModelRef| match model.stage() {
        Some(stage) if !present(stage) => Err(invalid(
            field,
            format!("the model of the {stage} stage, but the recipe has no [{stage}] table"),
        )),
        _ => Ok(()),
    };
    let check_sets = |field: &str, sets: &[PromptSet]| {
        for set in sets {
            if recipe.data.files(*set).is_empty() {
                return Err(invalid(
                    field,
                    format!(
                        "prompt set `{}` but [data] {} is empty",
                        set.name(),
                        set.name()
                    ),
                ));
            }
        }
        Ok(())
    };
    if let Some(s) = &recipe.distill {
        check_model("[distill] model", s.model)?;
        check_sets("[distill] data", s.data.as_deref().unwrap_or_default())?;
        if recipe.data.context.is_none() {
            return Err(invalid(
                "[distill]",
                "context distillation needs [data] context (the text to distil)".into(),
            ));
        }
    }
    if let Some(s) = &recipe.critique {
        check_model("[critique] model", s.model)?;
    }
    if let Some(s) = &recipe.sft {
        check_model("[sft] model", s.model)?;
        if !present(Stage::Critique) {
            return Err(invalid(
                "[sft]",
                "SL-CAI fine-tunes on the critique stage's revisions; add [critique]".into(),
            ));
        }
    }
    if let Some(s) = &recipe.label {
        check_model("[label] policy", s.policy)?;
        check_model("[label] feedback", s.feedback)?;
        check_sets("[label] prompts", s.prompts.as_deref().unwrap_or_default())?;
        if s.context_b && recipe.data.context.is_none() {
            return Err(invalid(
                "[label] context_b",
                "needs [data] context (the second sample's context)".into(),
            ));
        }
    }
    if let Some(s) = &recipe.train_pm {
        check_model("[train-pm] model", s.model)?;
        if !present(Stage::Label) {
            return Err(invalid(
                "[train-pm]",
                "the preference model trains on the label stage's labels; add [label]".into(),
            ));
        }
    }
    if let Some(s) = &recipe.rl {
        check_model("[rl] policy", s.policy)?;
        check_sets("[rl] prompts", &s.prompts)?;
        check_sets(
            "[rl] helpful_prompts",
            s.helpful_prompts.as_deref().unwrap_or_default(),
        )?;
        if !["ppo", "rloo", "dpo"].contains(&s.algo.as_str()) {
            return Err(invalid(
                "[rl] algo",
                format!("`{}`: expected ppo, rloo or dpo", s.algo),
            ));
        }
        let needs = if s.algo == "dpo" {
            Stage::Label
        } else {
            Stage::TrainPm
        };
        if !present(needs) {
            return Err(invalid(
                "[rl]",
                format!("{} needs the [{needs}] stage", s.algo),
            ));
        }
    }
    if let Some(e) = &recipe.eval {
        if let Some(elo) = &e.elo {
            if recipe.data.eval_red_team.is_empty() || recipe.data.eval_helpful.is_empty() {
                return Err(invalid(
                    "[eval] elo",
                    "needs [data] eval_red_team and eval_helpful (the prompt sets rated)".into(),
                ));
            }
            if elo.judge == "pm" && !present(Stage::TrainPm) {
                return Err(invalid(
                    "[eval] elo.judge",
                    "`pm` is the train-pm stage's model, but the recipe has no [train-pm]".into(),
                ));
            }
        }
        if let Some(safety) = &e.safety {
            let measured = e
                .snapshots
                .iter()
                .any(|s| *s != Snapshot::Prompted && s.stage().is_none_or(present));
            if !measured {
                return Err(invalid(
                    "[eval.safety]",
                    "no snapshot with a model of its own to judge: [eval] snapshots lists none \
                     whose stage the recipe has (`prompted` is the base model with a context, \
                     which cai eval safety does not put in front of prompts)"
                        .into(),
                ));
            }
            check_sets("[eval.safety] red_team", &[safety.red_team])?;
            if let BenignSet::Data(set) = safety.benign {
                check_sets("[eval.safety] benign", &[set])?;
            }
            if safety.judges.is_empty() {
                return Err(invalid(
                    "[eval.safety] judges",
                    "expected at least one judge, e.g. [\"refusal\"]".into(),
                ));
            }
            for (i, judge) in safety.judges.iter().enumerate() {
                let field = format!("[eval.safety] judges[{i}]");
                check_safety_judge(judge).map_err(|m| invalid(&field, m))?;
                if judge == "pm" && !present(Stage::TrainPm) {
                    return Err(invalid(
                        &field,
                        "`pm` is the train-pm stage's model, but the recipe has no [train-pm]"
                            .into(),
                    ));
                }
                if safety.judges[..i].contains(judge) {
                    return Err(invalid(&field, format!("`{judge}` is given twice")));
                }
            }
            for (value, key) in [
                (safety.samples, "samples"),
                (safety.max_new_tokens, "max_new_tokens"),
            ] {
                if value == Some(0) {
                    return Err(invalid(
                        &format!("[eval.safety] {key}"),
                        "expected at least 1".into(),
                    ));
                }
            }
        }
        if e.snapshots.contains(&Snapshot::Prompted) && recipe.data.context.is_none() {
            return Err(invalid(
                "[eval] snapshots",
                "`prompted` needs [data] context".into(),
            ));
        }
    }
    Ok(())
}

/// The form of one `[eval.safety]` judge (what each names is checked when it runs): the
/// message says what was expected.
fn check_safety_judge(judge: &str) -> Result<(), String> {
    let nonempty = |rest: &str| !rest.trim().is_empty();
    let ok = match judge.split_once(':') {
        _ if ["refusal", "oracle", "pm"].contains(&judge) => true,
        _ if judge == "feedback" => {
            return Err(
                "`feedback`: the feedback model only compares two answers and gives no \
                 verdict on one, so it cannot judge attack success or over-refusal; use \
                 refusal, classifier:TEMPLATE@MODEL (which may name the feedback model) or \
                 llm:URL[#MODEL]"
                    .into(),
            )
        }
        Some(("classifier", rest)) => rest
            .split_once('@')
            .is_some_and(|(template, model)| nonempty(template) && nonempty(model)),
        Some(("llm", rest)) => rest.starts_with("http://") || rest.starts_with("https://"),
        Some(("pm", rest)) => nonempty(rest),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{judge}` is not a judge; expected refusal (the refusal-pattern baseline), \
             classifier:TEMPLATE@MODEL (TEMPLATE llama-guard-3, shieldgemma, wildguard, \
             harmbench or a template file), llm:http(s)://HOST:PORT/v1[#MODEL], pm (the \
             train-pm stage's model), pm:DIR or oracle (the lab's)"
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> String {
        r#"
name = "t"
[models]
base = "m"
[data]
red_team = ["r.jsonl"]
constitution = "default"
"#
        .into()
    }

    #[test]
    fn the_lab_recipe_parses_with_and_without_quick() {
        let full = parse(LAB_RECIPE, "lab", false).unwrap();
        let quick = parse(LAB_RECIPE, "lab", true).unwrap();
        assert_eq!(full.stages(), STAGES.to_vec());
        assert_eq!(quick.stages(), STAGES.to_vec());
        assert!(quick.data.limit.is_some() && full.data.limit.is_none());
    }

    #[test]
    fn the_example_recipes_parse() {
        for (name, text) in [(
            "qwen2.5-0.5b",
            include_str!("../../../recipes/qwen2.5-0.5b.toml"),
        )] {
            for quick in [false, true] {
                let r = parse(text, name, quick).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(r.name, name);
            }
        }
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let text = minimal() + "[sft]\nlearning_rat = 1e-4\n[critique]\n";
        let err = parse(&text, "r.toml", false).unwrap_err().to_string();
        assert!(err.contains("learning_rat"), "{err}");
        assert!(err.contains("line 9"), "{err}");
        assert!(err.starts_with("r.toml"), "{err}");
    }

    #[test]
    fn a_typo_in_quick_is_named_when_quick_applies() {
        let text = minimal() + "[critique]\n[quick]\ncritique = { rond = 1 }\n";
        assert!(parse(&text, "r.toml", false).is_ok());
        let err = parse(&text, "r.toml", true).unwrap_err().to_string();
        assert!(err.contains("rond") && err.contains("[quick]"), "{err}");
    }

    #[test]
    fn quick_overrides_merge_into_tables() {
        let text = minimal()
            + "[critique]\nrounds = 4\nmax_new_tokens = 99\n[quick]\ncritique = { rounds = 1 }\n";
        let r = parse(&text, "r.toml", true).unwrap();
        let c = r.critique.unwrap();
        assert_eq!((c.rounds, c.max_new_tokens), (Some(1), Some(99)));
    }

    #[test]
    fn references_to_missing_stages_are_refused() {
        let text = minimal() + "[critique]\nmodel = \"distill\"\n";
        let err = parse(&text, "r.toml", false).unwrap_err().to_string();
        assert!(
            err.contains("[critique] model") && err.contains("[distill]"),
            "{err}"
        );
        let text = minimal() + "[sft]\n";
        assert!(parse(&text, "r.toml", false).is_err());
        let text = minimal() + "[rl]\nalgo = \"a2c\"\n[critique]\n[sft]\n[label]\n[train-pm]\n";
        let err = parse(&text, "r.toml", false).unwrap_err().to_string();
        assert!(err.contains("a2c"), "{err}");
    }

    #[test]
    fn paths_resolve_against_the_recipe_or_a_stage() {
        let run = Path::new("/run");
        let dir = Path::new("/recipes");
        assert_eq!(
            resolve_path("@data/lab/x.txt", dir, run).unwrap(),
            Path::new("/run/data/lab/x.txt")
        );
        assert_eq!(
            resolve_path("p.jsonl", dir, run).unwrap(),
            Path::new("/recipes/p.jsonl")
        );
        assert!(resolve_path("@nope/x", dir, run).is_err());
    }

    fn safety_recipe(table: &str) -> String {
        minimal() + "eval_red_team = [\"e.jsonl\"]\n[eval]\nsnapshots = [\"base\"]\n" + table
    }

    #[test]
    fn an_eval_safety_table_parses_with_its_defaults() {
        let text = safety_recipe(
            "[eval.safety]\njudges = [\"refusal\", \"llm:http://h:8000/v1#judge\"]\n",
        );
        let r = parse(&text, "r.toml", false).unwrap();
        let s = r.eval.unwrap().safety.unwrap();
        assert_eq!(s.judges, ["refusal", "llm:http://h:8000/v1#judge"]);
        assert_eq!(s.red_team, PromptSet::EvalRedTeam);
        assert_eq!(s.benign, BenignSet::OverRefusal);
        assert_eq!(
            (s.samples, s.max_new_tokens, s.bootstrap),
            (None, None, None)
        );
        let text = safety_recipe(
            "[eval.safety]\njudges = [\"classifier:wildguard@org/guard\"]\nred_team = \"red_team\"\n\
             benign = \"eval_red_team\"\nsamples = 8\nmax_new_tokens = 32\nbootstrap = 100\n",
        );
        let s = parse(&text, "r.toml", false)
            .unwrap()
            .eval
            .unwrap()
            .safety
            .unwrap();
        assert_eq!(s.red_team, PromptSet::RedTeam);
        assert_eq!(s.benign, BenignSet::Data(PromptSet::EvalRedTeam));
        assert_eq!(
            (s.samples, s.max_new_tokens, s.bootstrap),
            (Some(8), Some(32), Some(100))
        );
        // A recipe without the table serialises as before (its eval stage's fingerprint).
        let text = safety_recipe("");
        let eval = parse(&text, "r.toml", false).unwrap().eval.unwrap();
        let json = serde_json::to_string(&eval).unwrap();
        assert!(!json.contains("safety"), "{json}");
    }

    #[test]
    fn a_typo_in_eval_safety_is_named_with_its_line() {
        let text = safety_recipe("[eval.safety]\njudges = [\"refusal\"]\nsampels = 8\n");
        let err = parse(&text, "r.toml", false).unwrap_err().to_string();
        assert!(err.contains("sampels") && err.contains("line 13"), "{err}");
        let text = safety_recipe("[eval.safety]\njudges = [\"refusal\"]\nbenign = \"xstest\"\n");
        let err = parse(&text, "r.toml", false).unwrap_err().to_string();
        assert!(
            err.contains("xstest") && err.contains("over-refusal"),
            "{err}"
        );
        assert!(err.contains("line 13"), "{err}");
    }

    #[test]
    fn a_bad_safety_judge_or_set_is_named_by_its_field() {
        let err = |table: &str| {
            parse(&safety_recipe(table), "r.toml", false)
                .unwrap_err()
                .to_string()
        };
        let e = err("[eval.safety]\njudges = [\"refusal\", \"gpt4\"]\n");
        assert!(
            e.contains("[eval.safety] judges[1]") && e.contains("`gpt4`"),
            "{e}"
        );
        let e = err("[eval.safety]\njudges = [\"classifier:wildguard\"]\n");
        assert!(
            e.contains("judges[0]") && e.contains("classifier:TEMPLATE@MODEL"),
            "{e}"
        );
        let e = err("[eval.safety]\njudges = [\"llm:localhost:8000\"]\n");
        assert!(e.contains("llm:http(s)://"), "{e}");
        let e = err("[eval.safety]\njudges = [\"feedback\"]\n");
        assert!(e.contains("only compares"), "{e}");
        let e = err("[eval.safety]\njudges = [\"pm\"]\n");
        assert!(e.contains("[train-pm]"), "{e}");
        let e = err("[eval.safety]\njudges = [\"refusal\", \"refusal\"]\n");
        assert!(e.contains("twice"), "{e}");
        let e = err("[eval.safety]\njudges = []\n");
        assert!(e.contains("at least one judge"), "{e}");
        let e = err("[eval.safety]\njudges = [\"refusal\"]\nbenign = \"helpful\"\n");
        assert!(
            e.contains("[eval.safety] benign") && e.contains("[data] helpful"),
            "{e}"
        );
        let e = err("[eval.safety]\njudges = [\"refusal\"]\nsamples = 0\n");
        assert!(e.contains("[eval.safety] samples"), "{e}");
        let text = minimal()
            + "eval_red_team = [\"e.jsonl\"]\ncontext = \"c.txt\"\n[eval]\n\
               snapshots = [\"prompted\", \"sl-cai\"]\nsafety = { judges = [\"refusal\"] }\n";
        let e = parse(&text, "r.toml", false).unwrap_err().to_string();
        assert!(
            e.contains("[eval.safety]") && e.contains("no snapshot"),
            "{e}"
        );
        let text =
            minimal() + "[eval]\nsnapshots = [\"base\"]\nsafety = { judges = [\"refusal\"] }\n";
        let e = parse(&text, "r.toml", false).unwrap_err().to_string();
        assert!(
            e.contains("[eval.safety] red_team") && e.contains("eval_red_team"),
            "{e}"
        );
    }

    #[test]
    fn stage_names_round_trip() {
        for stage in STAGES {
            assert_eq!(Stage::from_name(stage.name()).unwrap(), stage);
        }
        assert!(Stage::from_name("sftt").is_err());
    }
}
