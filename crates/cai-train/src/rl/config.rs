//! Settings of an RL run (`cai rl`): the algorithm and every knob of PPO, RLOO/GRPO and DPO,
//! with the CAI paper's values where it gives one and TRL's elsewhere.

use cai_model::lora::LoraConfig;
use cai_model::tokenizer::DialogueFormat;
use serde::{Deserialize, Serialize};

use crate::core::schedule::ScheduleKind;
use crate::rl::kl_penalty::KlEstimator;
use crate::{Result, TrainError};

/// Which RL algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Algo {
    /// Proximal policy optimisation with a value head and GAE (the CAI paper's).
    #[cfg_attr(
        feature = "clap",
        value(help = "PPO with a value head and GAE (the CAI paper's)")
    )]
    Ppo,
    /// REINFORCE leave-one-out: k samples per prompt, no critic.
    #[cfg_attr(
        feature = "clap",
        value(help = "REINFORCE leave-one-out over k samples per prompt (--group-norm: GRPO)")
    )]
    Rloo,
    /// Direct preference optimisation, offline on labelled pairs.
    #[cfg_attr(
        feature = "clap",
        value(help = "Direct preference optimisation on labelled pairs (--data), offline")
    )]
    Dpo,
}

impl Algo {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ppo => "ppo",
            Self::Rloo => "rloo",
            Self::Dpo => "dpo",
        }
    }
}

/// Every setting of an RL run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RlConfig {
    /// The algorithm.
    pub algo: Algo,
    /// Optimisation steps (PPO/RLOO: one rollout batch each). DPO: `None` runs `epochs`.
    pub steps: Option<u64>,
    /// DPO: passes over the pairs (ignored by PPO/RLOO).
    pub epochs: u64,
    /// Prompts per rollout batch (PPO, RLOO) or pairs per step (DPO).
    pub batch_size: usize,
    /// Minibatches each rollout batch is split into for the updates.
    pub minibatches: usize,
    /// Passes over each rollout batch (the CAI paper: 1).
    pub ppo_epochs: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Learning-rate shape.
    pub schedule: ScheduleKind,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
    /// Global gradient-norm clipping (0 disables).
    pub max_grad_norm: f64,
    /// Decoupled weight decay of matrices and embeddings.
    pub weight_decay: f64,
    /// β of the per-token penalty −β·KL(policy ‖ reference) (the CAI paper: λ = 0.001).
    pub kl_coef: f64,
    /// How the KL penalty is estimated per token.
    pub kl_estimator: KlEstimator,
    /// PPO: ε of the clipped ratio (the CAI paper: 0.2).
    pub clip: f64,
    /// PPO: clip range of the value loss (TRL: 0.2).
    pub value_clip: f64,
    /// PPO: weight of the value loss (TRL: 0.1).
    pub vf_coef: f64,
    /// PPO: the value head's learning rate as a multiple of the policy's (TRL: 1). A head
    /// that starts at zero on a small model learns its scale faster with more.
    pub value_lr_scale: f64,
    /// PPO: discount (the CAI paper: γ = 1).
    pub gamma: f64,
    /// PPO: GAE's λ (TRL: 0.95).
    pub lam: f64,
    /// Whiten advantages over each rollout batch (PPO; RLOO per batch unless `group_norm`).
    pub whiten_advantages: bool,
    /// Entropy bonus (the CAI paper: none).
    pub entropy_coef: f64,
    /// RLOO: samples per prompt.
    pub rloo_k: usize,
    /// RLOO: group-normalised advantages (GRPO) instead of the leave-one-out baseline.
    pub group_norm: bool,
    /// Longest response in tokens (the CAI paper: 128).
    pub max_new_tokens: usize,
    /// Sampling temperature of the rollouts.
    pub temperature: f32,
    /// Strings that end a response (besides end-of-sequence tokens); empty: the dialogue
    /// format's turn markers.
    pub stop: Vec<String>,
    /// Added to the reward of a response cut at `max_new_tokens` (TRL's
    /// `missing_eos_penalty`, as a negative number; 0: none).
    pub truncation_penalty: f64,
    /// Helpful prompts per red-team prompt in the mixture (when helpful prompts are given).
    pub helpful_ratio: f64,
    /// DPO: β of the implicit reward (TRL: 0.1).
    pub dpo_beta: f64,
    /// DPO: label smoothing ε (conservative DPO); with soft labels p_a becomes
    /// `p_a (1 − ε) + (1 − p_a) ε`.
    pub label_smoothing: f64,
    /// Longest dialogue (prompt + response) in tokens; DPO leaves longer pairs out.
    pub max_length: usize,
    /// Log a table of sample responses every N steps (0: never).
    pub sample_every: u64,
    /// Save a checkpoint every N steps (0: only when interrupted); checkpoints load as models.
    pub save_every: u64,
    /// Checkpoints kept (`None`: all — the reward-versus-KL and Elo curves use them).
    pub keep_last: Option<usize>,
    /// Run seed.
    pub seed: u64,
    /// How dialogues become text.
    pub format: DialogueFormat,
    /// Train LoRA adapters; the reference is then the same weights with adapters off.
    pub lora: Option<LoraConfig>,
    /// Compute dtype of the policy (`f32`, `bf16`, `f16`).
    pub dtype: String,
    /// Rows per generation or scoring pass.
    pub rollout_batch: usize,
    /// Activation checkpointing (transformers' `gradient_checkpointing`) in the policy's
    /// training passes: keep only each layer's input and recompute the layer in the backward
    /// pass (see [`crate::core::recompute`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub gradient_checkpointing: bool,
}

impl Default for RlConfig {
    fn default() -> Self {
        Self {
            algo: Algo::Ppo,
            steps: Some(100),
            epochs: 1,
            batch_size: 32,
            minibatches: 2,
            ppo_epochs: 1,
            learning_rate: 1e-5,
            schedule: ScheduleKind::Constant,
            warmup_steps: 0,
            max_grad_norm: 1.0,
            weight_decay: 0.0,
            kl_coef: 0.001,
            kl_estimator: KlEstimator::K1,
            clip: 0.2,
            value_clip: 0.2,
            vf_coef: 0.1,
            value_lr_scale: 1.0,
            gamma: 1.0,
            lam: 0.95,
            whiten_advantages: true,
            entropy_coef: 0.0,
            rloo_k: 4,
            group_norm: false,
            max_new_tokens: 128,
            temperature: 1.0,
            stop: Vec::new(),
            truncation_penalty: 0.0,
            helpful_ratio: 1.0,
            dpo_beta: 0.1,
            label_smoothing: 0.0,
            max_length: 1024,
            sample_every: 10,
            save_every: 10,
            keep_last: None,
            seed: 0,
            format: DialogueFormat::Auto,
            lora: None,
            dtype: "f32".into(),
            rollout_batch: 32,
            gradient_checkpointing: false,
        }
    }
}

impl RlConfig {
    /// Check every setting; the error names the setting and what was expected.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        let positive = [
            ("batch_size", self.batch_size),
            ("minibatches", self.minibatches),
            ("ppo_epochs", self.ppo_epochs),
            ("max_new_tokens", self.max_new_tokens),
            ("rollout_batch", self.rollout_batch),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return bad(format!("{name} is 0; expected at least 1"));
        }
        if self.steps == Some(0) || self.epochs == 0 {
            return bad("steps and epochs must be at least 1".into());
        }
        if self.algo != Algo::Dpo && self.steps.is_none() {
            return bad(format!("{} needs a number of steps", self.algo.name()));
        }
        if self.minibatches > self.batch_size * self.group() {
            return bad(format!(
                "minibatches {} is more than the {} responses of a rollout batch",
                self.minibatches,
                self.batch_size * self.group()
            ));
        }
        let finite = [
            ("learning_rate", self.learning_rate),
            ("kl_coef", self.kl_coef),
            ("clip", self.clip),
            ("value_clip", self.value_clip),
            ("vf_coef", self.vf_coef),
            ("value_lr_scale", self.value_lr_scale),
            ("entropy_coef", self.entropy_coef),
            ("helpful_ratio", self.helpful_ratio),
            ("dpo_beta", self.dpo_beta),
            ("max_grad_norm", self.max_grad_norm),
            ("weight_decay", self.weight_decay),
        ];
        if let Some((name, v)) = finite.iter().find(|(_, v)| !(v.is_finite() && *v >= 0.0)) {
            return bad(format!("{name} is {v}; expected a number ≥ 0"));
        }
        if !(0.0..=1.0).contains(&self.gamma) || !(0.0..=1.0).contains(&self.lam) {
            return bad(format!(
                "gamma {} and lam {} must lie in [0, 1]",
                self.gamma, self.lam
            ));
        }
        if !(0.0..0.5).contains(&self.label_smoothing) {
            return bad(format!(
                "label_smoothing {} must lie in [0, 0.5)",
                self.label_smoothing
            ));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(format!(
                "temperature {} must be above 0 (RL samples from the policy)",
                self.temperature
            ));
        }
        if self.truncation_penalty > 0.0 || !self.truncation_penalty.is_finite() {
            return bad(format!(
                "truncation_penalty {} must be ≤ 0 (it is added to the reward)",
                self.truncation_penalty
            ));
        }
        if self.algo == Algo::Rloo && self.rloo_k < 2 {
            return bad(format!(
                "rloo_k {} must be at least 2 (the baseline is the other samples)",
                self.rloo_k
            ));
        }
        if self.max_length < 2 {
            return bad("max_length must be at least 2 tokens".into());
        }
        if let Some(lora) = &self.lora {
            lora.validate()?;
        }
        Ok(())
    }

    /// Responses per prompt in a rollout batch: `rloo_k` for RLOO, 1 for PPO.
    pub fn group(&self) -> usize {
        match self.algo {
            Algo::Rloo => self.rloo_k.max(1),
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_paper_and_validate() {
        let cfg = RlConfig::default();
        assert_eq!(cfg.kl_coef, 0.001);
        assert_eq!(cfg.clip, 0.2);
        assert_eq!(cfg.gamma, 1.0);
        assert_eq!(cfg.ppo_epochs, 1);
        assert_eq!(cfg.max_new_tokens, 128);
        assert_eq!(cfg.entropy_coef, 0.0);
        cfg.validate().unwrap();
    }

    #[test]
    fn bad_settings_are_named() {
        type Change = fn(&mut RlConfig);
        let cases: [(Change, &str); 5] = [
            (|c| c.batch_size = 0, "batch_size"),
            (|c| c.kl_coef = -1.0, "kl_coef"),
            (|c| c.lam = 1.5, "lam"),
            (
                |c| {
                    c.algo = Algo::Rloo;
                    c.rloo_k = 1
                },
                "rloo_k",
            ),
            (|c| c.minibatches = 1000, "minibatches"),
        ];
        for (change, name) in cases {
            let mut cfg = RlConfig::default();
            change(&mut cfg);
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
        let err = toml_error("klcoef = 0.1");
        assert!(err.contains("klcoef"), "{err}");
    }

    fn toml_error(text: &str) -> String {
        serde_json::from_value::<RlConfig>(serde_json::json!({
            text.split(' ').next().unwrap(): 0.1
        }))
        .unwrap_err()
        .to_string()
    }
}
