//! AdamW with decoupled weight decay, f32 first and second moments, and f32 master weights
//! for parameters computed in bf16/f16; its state saves and restores exactly (see `persist`).

mod fused;
mod persist;

use cai_model::decoder::{ParamKind, ParamSpec};
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::core::grads::{sum_of_squares, GradAccumulator};
use crate::{Result, TrainError};

/// AdamW hyper-parameters. Defaults are transformers' `TrainingArguments` (which follow the
/// Adam paper, Kingma & Ba 2015, for β₁, β₂ and ε).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// Base learning rate (the schedule scales it). Default 5e-5: transformers'
    /// `learning_rate`, a common full fine-tuning rate.
    pub lr: f64,
    /// First-moment decay β₁. Default 0.9: Adam paper.
    pub beta1: f64,
    /// Second-moment decay β₂. Default 0.999: Adam paper.
    pub beta2: f64,
    /// Added to √v̂ for stability. Default 1e-8: Adam paper.
    pub eps: f64,
    /// Decoupled weight decay (Loshchilov & Hutter 2019), applied only to parameters marked
    /// `decay`. Default 0.0: transformers' `weight_decay` (opt in, e.g. 0.01 or 0.1).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 5e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamWConfig {
    /// Check the settings; the error names the field and the accepted range.
    pub fn validate(&self) -> Result<()> {
        let checks = [
            ("lr", self.lr, self.lr >= 0.0, "≥ 0"),
            (
                "beta1",
                self.beta1,
                (0.0..1.0).contains(&self.beta1),
                "in [0, 1)",
            ),
            (
                "beta2",
                self.beta2,
                (0.0..1.0).contains(&self.beta2),
                "in [0, 1)",
            ),
            ("eps", self.eps, self.eps > 0.0, "> 0"),
            (
                "weight_decay",
                self.weight_decay,
                self.weight_decay >= 0.0,
                "≥ 0",
            ),
        ];
        for (name, value, ok, range) in checks {
            if !ok || !value.is_finite() {
                return Err(TrainError::Config(format!(
                    "optimizer: {name} is {value}, expected a finite value {range}"
                )));
            }
        }
        Ok(())
    }
}

/// One trainable tensor: a full-model parameter or a LoRA adapter matrix.
#[derive(Debug, Clone)]
pub struct TrainParam {
    /// Its name in checkpoints (the Hugging Face or PEFT tensor name).
    pub name: String,
    /// The variable the model computes with.
    pub var: Var,
    /// Whether weight decay applies (matrices and embeddings yes, norms and biases no).
    pub decay: bool,
    /// This parameter's learning rate as a multiple of the step's (1 for every parameter
    /// of a model; RL's value head may learn faster than the policy it sits on).
    pub lr_scale: f64,
}

impl TrainParam {
    /// A decoder parameter; weight decay applies to matrices and embeddings only.
    pub fn from_spec(spec: &ParamSpec, var: Var) -> Self {
        Self {
            name: spec.name.clone(),
            var,
            decay: matches!(spec.kind, ParamKind::Matrix | ParamKind::Embedding),
            lr_scale: 1.0,
        }
    }
}

/// Per-parameter optimiser state, all in f32.
#[derive(Debug)]
struct Slot {
    param: TrainParam,
    /// The f32 weights that are updated when the variable is bf16/f16 (`None`: the f32
    /// variable is its own master).
    master: Option<Tensor>,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// Updates this parameter has received (its bias correction uses this, as PyTorch's
    /// per-parameter `step` does).
    steps: u64,
}

/// AdamW (Loshchilov & Hutter 2019) as PyTorch's `torch.optim.AdamW` computes it, with f32
/// moments and master weights. Gradients come from a [`GradAccumulator`].
#[derive(Debug)]
pub struct AdamW {
    config: AdamWConfig,
    slots: Vec<Slot>,
}

impl AdamW {
    /// Zero moments for each parameter; bf16/f16 parameters get an f32 master copy.
    /// Parameter names must be unique (they key the saved state).
    pub fn new(params: Vec<TrainParam>, config: AdamWConfig) -> Result<Self> {
        config.validate()?;
        let mut seen = std::collections::HashSet::new();
        let mut slots = Vec::with_capacity(params.len());
        for param in params {
            if !seen.insert(param.name.clone()) {
                return Err(TrainError::Config(format!(
                    "optimizer: parameter '{}' is listed twice",
                    param.name
                )));
            }
            let value = param.var.as_tensor();
            if !value.dtype().is_float() {
                return Err(TrainError::Config(format!(
                    "optimizer: parameter '{}' has dtype {:?}, expected a float dtype",
                    param.name,
                    value.dtype()
                )));
            }
            let master = match value.dtype() {
                DType::F32 => None,
                _ => Some(value.to_dtype(DType::F32)?.detach()),
            };
            // Two tensors, not one shared: the fused update writes each in place.
            let exp_avg = Tensor::zeros(value.shape(), DType::F32, value.device())?;
            let exp_avg_sq = Tensor::zeros(value.shape(), DType::F32, value.device())?;
            slots.push(Slot {
                exp_avg_sq,
                exp_avg,
                master,
                steps: 0,
                param,
            });
        }
        Ok(Self { config, slots })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// The parameters, in the order given to [`AdamW::new`].
    pub fn params(&self) -> impl Iterator<Item = &TrainParam> {
        self.slots.iter().map(|s| &s.param)
    }

    /// The L2 norm of all the trained weights taken together (the f32 masters of bf16/f16
    /// parameters), summed in f64 (see `grads::sum_of_squares`), so huge but finite weights
    /// give a huge norm rather than infinity. Non-finite if any weight is.
    pub fn weight_norm(&self) -> Result<f64> {
        let mut sum_sq = 0f64;
        for slot in &self.slots {
            sum_sq += match &slot.master {
                Some(master) => sum_of_squares(master)?,
                None => sum_of_squares(slot.param.var.as_tensor())?,
            };
        }
        Ok(sum_sq.sqrt())
    }

    /// The end of a training step: stop on non-finite gradients (naming `step`, 1-based),
    /// clip them to `max_grad_norm` (0: no clipping), take the AdamW step at `lr`, and clear
    /// them. Returns the global gradient norm before clipping.
    pub fn clip_and_step(
        &mut self,
        grads: &mut GradAccumulator,
        max_grad_norm: f64,
        lr: f64,
        step: u64,
    ) -> Result<f64> {
        // One pass over the gradients: the norm is finite exactly when every entry is.
        let norm = grads.global_norm()?;
        if !norm.is_finite() {
            return Err(TrainError::Diverged {
                step,
                what: format!("the gradient is not finite (norm {norm})"),
                last_good: None,
            });
        }
        // Clipping as `GradAccumulator::clip_to` does, folded into the update's passes.
        let scale =
            (max_grad_norm > 0.0 && norm > max_grad_norm).then(|| max_grad_norm / (norm + 1e-6));
        self.step_scaled(grads, lr, scale)?;
        grads.clear();
        Ok(norm)
    }

    /// One update at learning rate `lr` (the schedule's value for this step), for each
    /// parameter `p` with f32 gradient `g`:
    ///
    /// ```text
    /// p ← p (1 - lr·wd)                     (decay parameters only)
    /// m ← β₁ m + (1 - β₁) g;   v ← β₂ v + (1 - β₂) g²
    /// p ← p - lr/(1 - β₁ᵗ) · m / (√v / √(1 - β₂ᵗ) + ε)
    /// ```
    ///
    /// with `t` the parameter's own update count. A parameter without a gradient in `grads`
    /// is skipped entirely (no decay, moments and `t` unchanged), as PyTorch skips
    /// parameters whose `.grad` is `None`. bf16/f16 parameters update their f32 master and
    /// receive it rounded to their dtype. On the CPU the update runs in place, bit for bit the
    /// same (see `fused`), without a temporary the size of a parameter.
    pub fn step(&mut self, grads: &GradAccumulator, lr: f64) -> Result<()> {
        self.step_scaled(grads, lr, None)
    }

    /// [`AdamW::step`] with every gradient first multiplied by `scale` (rounded to f32, as
    /// `Tensor::affine` does): the clipped update without a pass that scales the gradients.
    fn step_scaled(&mut self, grads: &GradAccumulator, lr: f64, scale: Option<f64>) -> Result<()> {
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
            ..
        } = self.config;
        for slot in &mut self.slots {
            let Some(grad) = grads.get(&slot.param.var) else {
                continue;
            };
            slot.steps += 1;
            let t = i32::try_from(slot.steps).unwrap_or(i32::MAX);
            let lr = lr * slot.param.lr_scale;
            let bias_correction1 = 1.0 - beta1.powi(t);
            let bias_correction2 = 1.0 - beta2.powi(t);
            let target = match &slot.master {
                Some(master) => master.clone(),
                None => slot.param.var.as_tensor().clone(),
            };
            if fused::applies(&[&target, &slot.exp_avg, &slot.exp_avg_sq, grad]) {
                fused::adamw_in_place(
                    &target,
                    &slot.exp_avg,
                    &slot.exp_avg_sq,
                    grad,
                    (beta1, beta2, eps),
                    (slot.param.decay && weight_decay != 0.0).then_some(1.0 - lr * weight_decay),
                    (bias_correction1, bias_correction2),
                    lr,
                    scale,
                )?;
                if let Some(master) = &slot.master {
                    slot.param
                        .var
                        .set(&master.to_dtype(slot.param.var.dtype())?)?;
                }
                continue;
            }
            let grad = &match scale {
                Some(scale) => grad.affine(scale, 0.0)?,
                None => grad.clone(),
            };
            let weights = match &slot.master {
                Some(master) => master.clone(),
                None => slot.param.var.as_tensor().detach(),
            };
            let weights = if slot.param.decay && weight_decay != 0.0 {
                weights.affine(1.0 - lr * weight_decay, 0.0)?
            } else {
                weights
            };
            slot.exp_avg = (slot.exp_avg.affine(beta1, 0.0)? + grad.affine(1.0 - beta1, 0.0)?)?;
            slot.exp_avg_sq =
                (slot.exp_avg_sq.affine(beta2, 0.0)? + grad.sqr()?.affine(1.0 - beta2, 0.0)?)?;
            let denom = slot
                .exp_avg_sq
                .sqrt()?
                .affine(1.0 / bias_correction2.sqrt(), eps)?;
            let update = (&slot.exp_avg / denom)?.affine(-lr / bias_correction1, 0.0)?;
            let updated = (weights + update)?;
            match &mut slot.master {
                Some(master) => {
                    slot.param
                        .var
                        .set(&updated.to_dtype(slot.param.var.dtype())?)?;
                    *master = updated;
                }
                None => slot.param.var.set(&updated)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use candle_core::Device;

    pub(super) fn param(name: &str, value: f32, dtype: DType, decay: bool) -> TrainParam {
        let t = Tensor::new(&[value], &Device::Cpu).unwrap();
        TrainParam {
            name: name.into(),
            var: Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap(),
            decay,
            lr_scale: 1.0,
        }
    }

    /// Accumulated gradients `loss = Σ_i g_i p_i` for the given per-parameter gradients.
    pub(super) fn grads_of(params: &[TrainParam], g: &[f32]) -> GradAccumulator {
        let mut loss = Tensor::new(0f32, &Device::Cpu).unwrap();
        for (p, &gi) in params.iter().zip(g) {
            let term = p.var.as_tensor().to_dtype(DType::F32).unwrap() * f64::from(gi);
            loss = (loss + term.unwrap().sum_all().unwrap()).unwrap();
        }
        let mut acc = GradAccumulator::new();
        acc.add(&loss.backward().unwrap(), params).unwrap();
        acc
    }

    pub(super) fn value(p: &TrainParam) -> f32 {
        p.var
            .as_tensor()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0]
    }

    pub(super) fn config(lr: f64, weight_decay: f64) -> AdamWConfig {
        AdamWConfig {
            lr,
            weight_decay,
            ..AdamWConfig::default()
        }
    }

    /// Clipping folded into the update gives the weights of clipping the gradients first,
    /// bit for bit, for f32 parameters (the in-place update) and bf16 ones (their masters).
    #[test]
    fn clip_and_step_is_clip_to_then_step() {
        for dtype in [DType::F32, DType::BF16] {
            let make = || {
                vec![
                    param("a", 0.5, dtype, true),
                    param("b", -1.25, dtype, false),
                ]
            };
            let (pa, pb) = (make(), make());
            let mut oa = AdamW::new(pa.clone(), config(0.01, 0.1)).unwrap();
            let mut ob = AdamW::new(pb.clone(), config(0.01, 0.1)).unwrap();
            for (step, g) in [[3.0f32, -4.0], [0.3, 0.2], [-7.0, 1.0]].iter().enumerate() {
                let mut ga = grads_of(&pa, g);
                let (norm, _) = ga.clip_to(1.0).unwrap();
                oa.step(&ga, 0.01).unwrap();
                let mut gb = grads_of(&pb, g);
                let got = ob
                    .clip_and_step(&mut gb, 1.0, 0.01, step as u64 + 1)
                    .unwrap();
                assert_eq!(got, norm);
                for (a, b) in pa.iter().zip(&pb) {
                    assert_eq!(
                        value(a).to_bits(),
                        value(b).to_bits(),
                        "{dtype:?} step {step}"
                    );
                }
            }
            assert!(oa.weight_norm().unwrap() > 0.0);
        }
    }

    #[test]
    fn two_steps_match_hand_computation() {
        // Step 1, g = 1: m = 0.1, v = 0.001, m̂ = 1, v̂ = 1: p = 1 - 0.1 = 0.9.
        // Step 2, g = -1: m = 0.09 - 0.1 = -0.01, v = 0.000999 + 0.001 = 0.001999,
        // m̂ = -0.01 / 0.19, v̂ = 1: p = 0.9 + 0.1 × 0.01 / 0.19 = 0.905263158.
        let params = vec![param("w", 1.0, DType::F32, false)];
        let mut opt = AdamW::new(params.clone(), config(0.1, 0.0)).unwrap();
        opt.step(&grads_of(&params, &[1.0]), 0.1).unwrap();
        assert!((value(&params[0]) - 0.9).abs() < 1e-6);
        opt.step(&grads_of(&params, &[-1.0]), 0.1).unwrap();
        assert!(
            (value(&params[0]) - 0.905_263_2).abs() < 1e-6,
            "{}",
            value(&params[0])
        );
    }

    #[test]
    fn a_parameter_steps_at_its_own_learning_rate_scale() {
        // Adam's first step moves by lr · g / |g|: 0.1 for the plain parameter, 0.3 for the
        // one at three times the rate.
        let mut fast = param("fast", 1.0, DType::F32, false);
        fast.lr_scale = 3.0;
        let params = vec![param("plain", 1.0, DType::F32, false), fast];
        let mut opt = AdamW::new(params.clone(), config(0.1, 0.0)).unwrap();
        opt.step(&grads_of(&params, &[1.0, 1.0]), 0.1).unwrap();
        assert!((value(&params[0]) - 0.9).abs() < 1e-6);
        assert!(
            (value(&params[1]) - 0.7).abs() < 1e-6,
            "{}",
            value(&params[1])
        );
    }

    #[test]
    fn weight_decay_is_decoupled_and_only_for_decay_params() {
        // Adam's first step moves by lr; decay first scales p by 1 - lr·wd = 1 - 0.1 × 0.1.
        let params = vec![
            param("matrix", 1.0, DType::F32, true),
            param("norm", 1.0, DType::F32, false),
        ];
        let mut opt = AdamW::new(params.clone(), config(0.1, 0.1)).unwrap();
        opt.step(&grads_of(&params, &[0.5, 0.5]), 0.1).unwrap();
        assert!(
            (value(&params[0]) - 0.89).abs() < 1e-6,
            "{}",
            value(&params[0])
        );
        assert!(
            (value(&params[1]) - 0.9).abs() < 1e-6,
            "{}",
            value(&params[1])
        );
    }

    #[test]
    fn params_without_gradient_are_skipped() {
        let params = vec![
            param("used", 1.0, DType::F32, true),
            param("unused", 1.0, DType::F32, true),
        ];
        let mut opt = AdamW::new(params.clone(), config(0.1, 0.1)).unwrap();
        opt.step(&grads_of(&params[..1], &[1.0]), 0.1).unwrap();
        assert_eq!(value(&params[1]), 1.0, "no decay either");
        let state = opt.state_tensors().unwrap();
        assert_eq!(state["used.step"].to_scalar::<i64>().unwrap(), 1);
        assert_eq!(state["unused.step"].to_scalar::<i64>().unwrap(), 0);
    }

    #[test]
    fn bf16_parameters_update_an_f32_master() {
        // lr 1e-3 with a constant gradient moves the master by 1e-3 per step. Alone, bf16
        // would round 0.999 back to 1.0 for ever (its spacing below 1 is 2⁻⁸); the master
        // reaches 0.997 and the variable its nearest bf16, 1 - 2⁻⁸ = 0.99609375.
        let params = vec![param("w", 1.0, DType::BF16, false)];
        let mut opt = AdamW::new(params.clone(), config(1e-3, 0.0)).unwrap();
        opt.step(&grads_of(&params, &[1.0]), 1e-3).unwrap();
        assert_eq!(value(&params[0]), 1.0);
        opt.step(&grads_of(&params, &[1.0]), 1e-3).unwrap();
        opt.step(&grads_of(&params, &[1.0]), 1e-3).unwrap();
        assert_eq!(params[0].var.dtype(), DType::BF16);
        assert_eq!(value(&params[0]), 0.996_093_75);
        let master = opt.state_tensors().unwrap()["w.master"]
            .to_vec1::<f32>()
            .unwrap()[0];
        assert!((master - 0.997).abs() < 1e-6, "{master}");
    }

    #[test]
    fn config_validation_and_duplicates() {
        let err = AdamWConfig {
            beta2: 1.0,
            ..AdamWConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("beta2 is 1"), "{err}");
        let twice = vec![
            param("a", 1.0, DType::F32, true),
            param("a", 1.0, DType::F32, true),
        ];
        let err = AdamW::new(twice, AdamWConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("'a' is listed twice"), "{err}");
    }
}
