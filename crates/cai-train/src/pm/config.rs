//! The settings of a preference-model run (`cai train-pm`), saved beside its outputs.

use cai_model::tokenizer::DialogueFormat;
use serde::{Deserialize, Serialize};

use crate::pm::data::DataSource;
use crate::{Result, ScheduleKind, TrainError};

/// Settings of a preference-model run. Defaults follow TRL's `RewardConfig` unless a paper
/// gives one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PmConfig {
    /// Passes over the data (1: reward models over-fit after one epoch, Ouyang et al. 2022).
    pub epochs: u64,
    /// Stop after this many optimiser steps even if epochs remain.
    pub max_steps: Option<u64>,
    /// Peak learning rate (TRL's `RewardConfig`: 1e-4).
    pub learning_rate: f64,
    /// Learning-rate shape after warm-up (transformers' default: linear decay to 0).
    pub schedule: ScheduleKind,
    /// Linear warm-up steps (0: none).
    pub warmup_steps: u64,
    /// Pairs per micro-batch (TRL: 8); each pair is two sequences.
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub grad_accum: usize,
    /// Longest dialogue in tokens; pairs with a longer one are left out (TRL: 1024).
    pub max_length: usize,
    /// Decoupled weight decay of matrices and embeddings (norms and biases never decay).
    pub weight_decay: f64,
    /// Global gradient-norm clipping (0 disables).
    pub max_grad_norm: f64,
    /// Evaluate every N steps when eval data is given (0: only at the end).
    pub eval_every: u64,
    /// Save a resumable checkpoint every N steps (0: only when interrupted).
    pub save_every: u64,
    /// Checkpoints kept (older ones are deleted; the newest is always kept).
    pub keep_last: Option<usize>,
    /// Seed of the head's initialisation, the mixture and the shuffling.
    pub seed: u64,
    /// How dialogues become text.
    pub format: DialogueFormat,
    /// Compute dtype (`f32`, `bf16`, `f16`); master weights and moments stay f32.
    pub dtype: String,
    /// Bins of the reliability table.
    pub calibration_bins: usize,
    /// Activation checkpointing (transformers' `gradient_checkpointing`): keep only each
    /// layer's input in the forward pass and recompute the layer in the backward pass (see
    /// [`crate::core::recompute`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub gradient_checkpointing: bool,
}

impl Default for PmConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            max_steps: None,
            learning_rate: 1e-4,
            schedule: ScheduleKind::Linear,
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
            dtype: "f32".into(),
            calibration_bins: 10,
            gradient_checkpointing: false,
        }
    }
}

impl PmConfig {
    /// Check the settings and the data sources' weights.
    pub fn validate(&self, data: &[DataSource]) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.batch_size == 0 || self.grad_accum == 0 {
            return bad("batch_size and grad_accum must be at least 1".into());
        }
        if self.max_length < 2 {
            return bad("max_length must be at least 2 tokens".into());
        }
        if self.epochs == 0 || self.max_steps == Some(0) {
            return bad("epochs and max_steps must be at least 1".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate >= 0.0) {
            return bad("learning_rate must be a non-negative number".into());
        }
        if self.calibration_bins == 0 {
            return bad("calibration_bins must be at least 1".into());
        }
        if data.is_empty() {
            return bad("no training data: give at least one preference file".into());
        }
        for source in data {
            if !(source.weight.is_finite() && source.weight >= 0.0) {
                return bad(format!(
                    "{}: weight {} must be a number ≥ 0",
                    source.path.display(),
                    source.weight
                ));
            }
        }
        Ok(())
    }
}
