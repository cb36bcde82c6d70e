//! LoRA (Hu et al. 2021, arXiv 2106.09685): low-rank adapters on a frozen decoder, in the
//! layout of Hugging Face PEFT — installing them, switching them off (the reference model of
//! RL and DPO without a second copy), reproducible dropout, PEFT adapter files, and merging.
//!
//! An adapted linear computes `y = x Wᵀ + b + (α / r) · dropout(x) Aᵀ Bᵀ` with `A [r, in]`
//! (Kaiming-uniform, as PEFT) and `B [out, r]` (zeros, so a new adapter changes nothing). The
//! base weights stay plain tensors; only `A` and `B` become [`Var`]s. Reading and writing
//! PEFT's files is in `lora/peft.rs`, re-exported here.

mod peft;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use cai_core::rng::{derive_seed, derive_seed_u64};
use candle_core::{DType, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::Architecture;
use crate::decoder::{Decoder, LinearSpec};
use crate::layers::Mode;
use crate::{ModelError, Result};

pub use peft::{
    adapter_config, adapter_tensors, load_adapter, save_adapter, AdapterUse, LoadedAdapter,
    ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE,
};

/// The prefix PEFT puts before a module path (`PeftModel.base_model.model`).
const PEFT_PREFIX: &str = "base_model.model.";

/// How to adapt a model. Defaults are PEFT's for Llama-family models (r 8, α 16, dropout 0.05,
/// `q_proj` and `v_proj`); for GPT-2 the natural targets are `["c_attn"]` — see
/// [`default_target_modules`] and [`LoraConfig::for_architecture`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoraConfig {
    /// Rank of the update `B A`.
    pub r: usize,
    /// The update is scaled by `alpha / r`, so changing `r` keeps the effective step size.
    pub alpha: f64,
    /// Dropout on the adapter's input, in training only.
    pub dropout: f64,
    /// Modules to adapt, PEFT-style: a target matches a linear whose module path is the target
    /// or ends in `.target` (`q_proj`, `v_proj`, `c_attn`, `lm_head`, `self_attn.o_proj`, …).
    pub target_modules: Vec<String>,
    /// Seed of `A`'s initialisation (keyed by module path) and the first dropout masks.
    pub seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 8,
            alpha: 16.0,
            dropout: 0.05,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
            seed: 0,
        }
    }
}

/// The modules PEFT adapts when none are named: the attention's query and value projections
/// (`q_proj`, `v_proj`), or GPT-2's fused `c_attn`.
pub fn default_target_modules(architecture: Architecture) -> Vec<String> {
    match architecture {
        Architecture::Gpt2 => vec!["c_attn".into()],
        _ => vec!["q_proj".into(), "v_proj".into()],
    }
}

impl LoraConfig {
    /// The defaults with [`default_target_modules`] for `architecture`.
    pub fn for_architecture(architecture: Architecture) -> Self {
        Self {
            target_modules: default_target_modules(architecture),
            ..Self::default()
        }
    }

    /// The factor `alpha / r` on the adapter's output.
    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }

    /// Check the values are usable; the error says which field is wrong.
    pub fn validate(&self) -> Result<()> {
        let mut problem = check_numbers(self.r, self.alpha, self.dropout);
        if problem.is_ok() && self.target_modules.is_empty() {
            problem = Err("target_modules is empty; name at least one module (e.g. q_proj)".into());
        }
        problem.map_err(|m| ModelError::Request(format!("LoRA config: {m}")))
    }
}

/// What is wrong with a rank, α or dropout, if anything.
fn check_numbers(r: usize, alpha: f64, dropout: f64) -> std::result::Result<(), String> {
    if r == 0 {
        Err("r must be at least 1".into())
    } else if !alpha.is_finite() || alpha <= 0.0 {
        Err(format!("alpha must be positive, got {alpha}"))
    } else if !(0.0..1.0).contains(&dropout) {
        Err(format!("dropout must be in [0, 1), got {dropout}"))
    } else {
        Ok(())
    }
}

/// The state every adapter of one model shares: whether adapters are on, and the seed of the
/// current dropout masks. Clones of a [`Decoder`] share it.
#[derive(Debug)]
pub struct LoraSwitch {
    enabled: AtomicBool,
    dropout_seed: AtomicU64,
}

impl LoraSwitch {
    fn new(dropout_seed: u64) -> Self {
        Self {
            enabled: AtomicBool::new(true),
            dropout_seed: AtomicU64::new(dropout_seed),
        }
    }

    /// True when adapters add their update.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// The seed the next dropout masks derive from.
    pub fn dropout_seed(&self) -> u64 {
        self.dropout_seed.load(Ordering::Relaxed)
    }
}

/// One linear layer's adapter.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    /// `[r, in]`.
    pub a: Tensor,
    /// `[out, r]`.
    pub b: Tensor,
    /// `alpha / r`.
    pub scale: f64,
    /// Input dropout probability in [`Mode::Train`].
    pub dropout: f64,
    /// The module path, which keys this layer's dropout stream.
    pub module: String,
    /// The model-wide on/off switch and dropout seed.
    pub switch: Arc<LoraSwitch>,
}

impl LoraAdapter {
    /// `y + scale · dropout(x) Aᵀ Bᵀ`, or `y` unchanged while adapters are switched off.
    /// In [`Mode::Infer`] the matrices are detached, so trainable adapters do not make the
    /// next layers track gradients (which would keep them off the fast inference kernels).
    /// Shapes: x `[rows, in]`, y `[rows, out]` -> `[rows, out]`.
    pub fn add_delta(&self, x: &Tensor, y: Tensor, mode: Mode) -> Result<Tensor> {
        if !self.switch.enabled() {
            return Ok(y);
        }
        let (x, a, b) = match mode {
            Mode::Infer => (x.clone(), self.a.detach(), self.b.detach()),
            Mode::Train if self.dropout > 0.0 => {
                let (rows, cols) = x.dims2()?;
                let seed = derive_seed(self.switch.dropout_seed(), &[&self.module]);
                let mask = dropout_mask(rows * cols, self.dropout, seed);
                let mask = Tensor::from_vec(mask, (rows, cols), x.device())?.to_dtype(x.dtype())?;
                ((x * mask)?, self.a.clone(), self.b.clone())
            }
            Mode::Train => (x.clone(), self.a.clone(), self.b.clone()),
        };
        let delta = x.matmul(&a.t()?)?.matmul(&b.t()?)?;
        Ok((y + (delta * self.scale)?)?)
    }
}

/// Elements per independent stream of a dropout mask, so masks are drawn in parallel yet do
/// not depend on the thread count.
const DROPOUT_CHUNK: usize = 1 << 16;

/// An inverted-dropout mask of `n` values: 0 with probability `p`, else `1 / (1 - p)`; the
/// same `seed` gives the same mask on every platform.
pub fn dropout_mask(n: usize, p: f64, seed: u64) -> Vec<f32> {
    let keep = (1.0 / (1.0 - p)) as f32;
    let mut mask = vec![0f32; n];
    mask.par_chunks_mut(DROPOUT_CHUNK)
        .enumerate()
        .for_each(|(i, chunk)| {
            let mut rng = ChaCha8Rng::seed_from_u64(derive_seed_u64(seed, &[i as u64]));
            for m in chunk {
                if rng.random::<f64>() >= p {
                    *m = keep;
                }
            }
        });
    mask
}

/// PEFT's `A` initialisation, `kaiming_uniform_(a = √5)` on `[rows, fan_in]`: uniform in
/// ±1/√fan_in.
fn kaiming_uniform(rows: usize, fan_in: usize, seed: u64) -> Vec<f32> {
    let bound = 1.0 / (fan_in as f64).sqrt();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..rows * fan_in)
        .map(|_| ((2.0 * rng.random::<f64>() - 1.0) * bound) as f32)
        .collect()
}

/// PEFT's name of an adapter matrix: `base_model.model.<module path>.lora_A.weight`.
pub fn peft_name(module_path: &str, matrix: char) -> String {
    format!("{PEFT_PREFIX}{module_path}.lora_{matrix}.weight")
}

/// True when a PEFT target names this module path.
fn targets(path: &str, target: &str) -> bool {
    path.strip_suffix(target)
        .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
}

fn linear_specs(decoder: &mut Decoder) -> Result<Vec<LinearSpec>> {
    let mut specs = Vec::new();
    decoder.visit_linears(&mut |spec, _| {
        specs.push(spec.clone());
        Ok(())
    })?;
    Ok(specs)
}

/// The last components of the module paths, in order of first appearance.
fn module_names(specs: &[LinearSpec]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for spec in specs {
        let name = spec.path.rsplit('.').next().unwrap_or(&spec.path);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Give each linear the `(A, B)` that `adapter_for` returns for it, all or none: on an error
/// the decoder is left without adapters.
fn install(
    decoder: &mut Decoder,
    adapter_for: impl FnMut(&LinearSpec) -> Result<Option<(Tensor, Tensor)>>,
    cfg: &LoraConfig,
) -> Result<()> {
    if decoder.lora.is_some() {
        return Err(ModelError::Request(
            "the model already has LoRA adapters; merge them (merge_lora) before adding others"
                .into(),
        ));
    }
    let adapters = linear_specs(decoder)?
        .iter()
        .map(adapter_for)
        .collect::<Result<Vec<_>>>()?;
    let mut adapters = adapters.into_iter();
    let switch = Arc::new(LoraSwitch::new(cfg.seed));
    decoder.visit_linears(&mut |spec, linear| {
        if let Some((a, b)) = adapters.next().flatten() {
            linear.lora = Some(LoraAdapter {
                a,
                b,
                scale: cfg.scale(),
                dropout: cfg.dropout,
                module: spec.path.clone(),
                switch: switch.clone(),
            });
        }
        Ok(())
    })?;
    decoder.lora = Some(switch);
    Ok(())
}

impl Decoder {
    /// Add fresh adapters to every linear `cfg.target_modules` names and return them as
    /// trainable variables under their PEFT names (`…lora_A.weight`, `…lora_B.weight`, per
    /// module in checkpoint order). The base weights stay plain tensors.
    ///
    /// Errors: a target that matches no module (the message lists this architecture's module
    /// names), `lm_head` on a model whose output layer is tied to the embedding, or a model
    /// that already has adapters.
    pub fn add_lora(&mut self, cfg: &LoraConfig) -> Result<Vec<(String, Var)>> {
        cfg.validate()?;
        let specs = linear_specs(self)?;
        for target in &cfg.target_modules {
            if target == "lm_head" && self.config().tie_word_embeddings {
                return Err(ModelError::Request(
                    "LoRA target 'lm_head': this model ties lm_head to the token embedding \
                     (tie_word_embeddings = true), so it has no separate output layer to adapt; \
                     remove lm_head from target_modules"
                        .into(),
                ));
            }
            if !specs.iter().any(|s| targets(&s.path, target)) {
                return Err(ModelError::Request(format!(
                    "LoRA target module '{target}' matches no linear layer of this {} model; \
                     its modules are: {}",
                    self.config().architecture.model_type(),
                    module_names(&specs).join(", ")
                )));
            }
        }
        let (dtype, device) = (self.dtype(), self.device().clone());
        let mut vars = Vec::new();
        install(
            self,
            |spec| {
                if !cfg.target_modules.iter().any(|t| targets(&spec.path, t)) {
                    return Ok(None);
                }
                let seed = derive_seed(cfg.seed, &[&spec.path]);
                let a = kaiming_uniform(cfg.r, spec.in_features, seed);
                let a = Tensor::from_vec(a, (cfg.r, spec.in_features), &device)?.to_dtype(dtype)?;
                let b = Tensor::zeros((spec.out_features, cfg.r), dtype, &device)?;
                let (a, b) = (Var::from_tensor(&a)?, Var::from_tensor(&b)?);
                let tensors = (a.as_tensor().clone(), b.as_tensor().clone());
                vars.push((peft_name(&spec.path, 'A'), a));
                vars.push((peft_name(&spec.path, 'B'), b));
                Ok(Some(tensors))
            },
            cfg,
        )?;
        Ok(vars)
    }

    /// True when LoRA adapters are installed.
    pub fn has_lora(&self) -> bool {
        self.lora.is_some()
    }

    /// Switch every adapter on or off. Off, the model computes exactly the base model's
    /// outputs: the reference model of RL and DPO. Clones of this decoder share the switch;
    /// a model without adapters ignores it.
    pub fn set_adapters_enabled(&self, enabled: bool) {
        if let Some(switch) = &self.lora {
            switch.enabled.store(enabled, Ordering::Relaxed);
        }
    }

    /// True when adapters are installed and switched on.
    pub fn adapters_enabled(&self) -> bool {
        self.lora.as_ref().is_some_and(|s| s.enabled())
    }

    /// Seed the dropout masks of the following [`Mode::Train`] forward passes: each adapted
    /// layer draws its mask from (this seed, its module path). Trainers set a seed derived from
    /// the run seed and the step (and micro-batch) before each forward, so a resumed run draws
    /// the same masks. Until set, the seed is [`LoraConfig::seed`].
    pub fn set_dropout_seed(&self, seed: u64) {
        if let Some(switch) = &self.lora {
            switch.dropout_seed.store(seed, Ordering::Relaxed);
        }
    }
}

/// A copy of `decoder` with every adapter folded into its base weight, `W ← W + (α/r) · B A`
/// (computed in f32 for half-precision weights), and no adapters left: `save_decoder` then
/// writes a plain Hugging Face model. Weights are `[out, in]` in memory for every layer,
/// GPT-2's Conv1D included, so the update adds as is and saving transposes it back.
pub fn merge_lora(decoder: &Decoder) -> Result<Decoder> {
    if !decoder.has_lora() {
        return Err(ModelError::Request(
            "the model has no LoRA adapters to merge".into(),
        ));
    }
    let mut merged = decoder.clone();
    merged.visit_linears(&mut |_, linear| {
        if let Some(lora) = linear.lora.take() {
            let dtype = linear.weight.dtype();
            let work = match dtype {
                DType::F16 | DType::BF16 => DType::F32,
                other => other,
            };
            let delta = (lora.b.to_dtype(work)?.matmul(&lora.a.to_dtype(work)?)? * lora.scale)?;
            let w = (linear.weight.to_dtype(work)? + delta)?;
            linear.weight = w.to_dtype(dtype)?.detach();
        }
        Ok(())
    })?;
    merged.lora = None;
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_masks_drop_the_requested_share_and_rescale_the_rest() {
        let n = 3 * DROPOUT_CHUNK + 17;
        let mask = dropout_mask(n, 0.25, 11);
        assert!(mask.iter().all(|&m| m == 0.0 || m == 1.0 / 0.75));
        let dropped = mask.iter().filter(|&&m| m == 0.0).count() as f64 / n as f64;
        assert!((dropped - 0.25).abs() < 0.01, "dropped {dropped}");
        assert_eq!(mask, dropout_mask(n, 0.25, 11));
        assert_ne!(mask, dropout_mask(n, 0.25, 12));
        // A prefix is drawn the same whatever the length, chunk by chunk.
        assert_eq!(&mask[..100], &dropout_mask(100, 0.25, 11)[..]);
    }

    #[test]
    fn kaiming_uniform_stays_within_one_over_root_fan_in() {
        let a = kaiming_uniform(8, 64, 3);
        let bound = 1.0 / 8.0;
        assert!(a.iter().all(|&x| x.abs() <= bound));
        let max = a.iter().fold(0f32, |m, &x| m.max(x.abs()));
        assert!(max > 0.9 * bound, "max {max}");
    }

    #[test]
    fn targets_match_whole_trailing_path_components() {
        assert!(targets("model.layers.0.self_attn.q_proj", "q_proj"));
        assert!(targets(
            "model.layers.0.self_attn.q_proj",
            "self_attn.q_proj"
        ));
        assert!(targets("lm_head", "lm_head"));
        assert!(!targets("model.layers.0.self_attn.q_proj", "proj"));
        assert!(!targets("transformer.h.0.attn.c_proj", "attn"));
    }

    #[test]
    fn config_defaults_are_peft_s_and_scale_is_alpha_over_r() {
        let cfg = LoraConfig::default();
        assert_eq!((cfg.r, cfg.alpha, cfg.dropout), (8, 16.0, 0.05));
        assert_eq!(cfg.scale(), 2.0);
        assert_eq!(
            LoraConfig::for_architecture(Architecture::Gpt2).target_modules,
            ["c_attn"]
        );
        let parsed: LoraConfig = serde_json::from_str(r#"{"r": 4}"#).unwrap();
        assert_eq!(parsed.target_modules, ["q_proj", "v_proj"]);
        assert!(LoraConfig {
            dropout: 1.0,
            ..cfg
        }
        .validate()
        .is_err());
    }
}
