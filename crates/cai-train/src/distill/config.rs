//! The settings of a context-distillation run (`cai distill`), saved beside its outputs as
//! `distill_config.json`, and their checks.

use cai_model::lora::LoraConfig;
use cai_model::tokenizer::DialogueFormat;
use serde::{Deserialize, Serialize};

use crate::distill::data::TeacherSampling;
use crate::{Result, ScheduleKind, TrainError};

/// Settings of a distillation run. The HHH paper gives no optimiser settings for context
/// distillation; defaults follow `cai sft` (TRL's) and are opt-in elsewhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistillConfig {
    /// Passes over the data.
    pub epochs: u64,
    /// Stop after this many optimiser steps even if epochs remain.
    pub max_steps: Option<u64>,
    /// Peak learning rate (TRL's default 2e-5).
    pub learning_rate: f64,
    /// Learning-rate shape.
    pub schedule: ScheduleKind,
    /// Linear warm-up steps (0: none).
    pub warmup_steps: u64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub grad_accum: usize,
    /// Longest student sequence in tokens (also cut so that context + sequence fit the model).
    pub max_length: usize,
    /// Decoupled weight decay of matrices and embeddings.
    pub weight_decay: f64,
    /// Global gradient-norm clipping (0 disables).
    pub max_grad_norm: f64,
    /// Evaluate every N steps when eval data is given (0: before training and at the end).
    pub eval_every: u64,
    /// Save a resumable checkpoint every N steps (0: only when interrupted).
    pub save_every: u64,
    /// Checkpoints kept (the newest always is).
    pub keep_last: Option<usize>,
    /// Seed of shuffling, dropout and the teacher's samples.
    pub seed: u64,
    /// How dialogues become text.
    pub format: DialogueFormat,
    /// Train LoRA adapters instead of every weight.
    pub lora: Option<LoraConfig>,
    /// Compute dtype (`f32`, `bf16`, `f16`); master weights and moments stay f32.
    pub dtype: String,
    /// Compare the teacher's top-k log-probs plus the remaining mass instead of the full
    /// vocabulary; the teacher's top-k is computed once and kept on disk (`None`: full).
    pub top_k: Option<usize>,
    /// Let the teacher (with the context) answer the prompt records first, and distil on its
    /// answers (`None`: prompts are read as they are).
    pub sample: Option<TeacherSampling>,
    /// Activation checkpointing (transformers' `gradient_checkpointing`): keep only each
    /// layer's input in the forward pass and recompute the layer in the backward pass (see
    /// [`crate::core::recompute`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub gradient_checkpointing: bool,
}

impl Default for DistillConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            max_steps: None,
            learning_rate: 2e-5,
            schedule: ScheduleKind::Constant,
            warmup_steps: 0,
            batch_size: 8,
            grad_accum: 1,
            max_length: 1024,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            eval_every: 0,
            save_every: 500,
            keep_last: Some(2),
            seed: 0,
            format: DialogueFormat::Auto,
            lora: None,
            dtype: "f32".into(),
            top_k: None,
            sample: None,
            gradient_checkpointing: false,
        }
    }
}

/// Check the settings and the context; the error names the setting and its range.
pub(crate) fn validate(cfg: &DistillConfig, context: &str) -> Result<()> {
    let bad = |m: &str| Err(TrainError::Config(m.to_string()));
    if context.is_empty() {
        return bad("the context is empty; expected the text the teacher reads first");
    }
    if cfg.batch_size == 0 || cfg.grad_accum == 0 {
        return bad("batch_size and grad_accum must be at least 1");
    }
    if cfg.max_length < 2 {
        return bad("max_length must be at least 2 tokens");
    }
    if cfg.epochs == 0 || cfg.max_steps == Some(0) {
        return bad("epochs and max_steps must be at least 1");
    }
    if !(cfg.learning_rate.is_finite() && cfg.learning_rate >= 0.0) {
        return bad("learning_rate must be a non-negative number");
    }
    if cfg.top_k == Some(0) {
        return bad("top_k must be at least 1 (or unset: the full vocabulary)");
    }
    if let Some(sample) = &cfg.sample {
        if sample.max_new_tokens == 0 {
            return bad("sample.max_new_tokens must be at least 1");
        }
        if !(sample.temperature.is_finite() && sample.temperature >= 0.0) {
            return bad("sample.temperature must be a number ≥ 0 (0 is greedy)");
        }
        if sample.top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
            return bad("sample.top_p must be in (0, 1]");
        }
    }
    if let Some(lora) = &cfg.lora {
        lora.validate()?;
    }
    Ok(())
}
