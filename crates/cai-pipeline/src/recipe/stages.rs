//! The training and data stages' tables of a recipe (`[distill]`, `[critique]`, `[sft]`,
//! `[label]`, `[train-pm]`, `[rl]`): the wiring the pipeline passes on, each with a
//! `[<stage>.config]` table of the trainer's own settings where the stage trains.

use serde::{Deserialize, Serialize};

use super::*;

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

macro_rules! lora_of {
    ($($stage:ty),*) => {$(
        impl $stage {
            /// Whether the stage trains LoRA adapters: `lora = true`, or a `[lora]` table in
            /// its `config` (the command trains adapters from either), so that the pipeline
            /// merges them into a plain model for the stages after it.
            pub fn uses_lora(&self) -> bool {
                self.lora || self.config.as_ref().is_some_and(|c| c.contains_key("lora"))
            }
        }
    )*};
}
lora_of!(DistillStage, SftStage, RlStage);

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
