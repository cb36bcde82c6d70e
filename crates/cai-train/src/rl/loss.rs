//! The losses of RL fine-tuning as differentiable candle ops: PPO's clipped policy surrogate
//! and clipped value loss (Schulman et al. 2017, as TRL computes them), and the DPO loss on
//! soft labels (Rafailov et al. 2023; with p_a weighting both directions, "conservative" DPO).

use candle_core::{DType, Tensor};

use crate::pm::loss::soft_preference_loss;
use crate::{Result, TrainError};

/// What the policy loss saw besides its value (for the logs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyStats {
    /// Share of tokens whose probability ratio left `[1 − ε, 1 + ε]`.
    pub clip_fraction: f64,
    /// `mean ½ (logp_new − logp_old)²`, how far the update moved the policy.
    pub approx_kl: f64,
}

fn same_len(what: &str, tensors: &[&Tensor]) -> Result<usize> {
    let n = tensors[0].dims1()?;
    for t in tensors {
        if t.dims() != [n] {
            return Err(TrainError::Config(format!(
                "{what}: inputs of shapes {:?}; expected [n] vectors of one length",
                tensors
                    .iter()
                    .map(|t| t.dims().to_vec())
                    .collect::<Vec<_>>()
            )));
        }
    }
    Ok(n)
}

/// PPO's clipped surrogate, summed over tokens (divide by the batch's token count):
/// `Σ max(−A·ρ, −A·clip(ρ, 1 − ε, 1 + ε))` with `ρ = exp(logp_new − logp_old)`.
///
/// Shapes: logp_new `[n]` (with gradient), logp_old `[n]`, advantages `[n]` -> loss `[]`.
pub fn ppo_policy_loss(
    logp_new: &Tensor,
    logp_old: &Tensor,
    advantages: &Tensor,
    clip: f64,
) -> Result<(Tensor, PolicyStats)> {
    let n = same_len("ppo_policy_loss", &[logp_new, logp_old, advantages])?;
    let log_ratio = (logp_new.to_dtype(DType::F32)? - logp_old.to_dtype(DType::F32)?.detach())?;
    let ratio = log_ratio.exp()?;
    let adv = advantages.to_dtype(DType::F32)?.detach();
    let unclipped = (ratio.neg()? * &adv)?;
    let clipped = (ratio.clamp(1.0 - clip, 1.0 + clip)?.neg()? * &adv)?;
    let loss = unclipped.maximum(&clipped)?.sum_all()?;
    let ratios: Vec<f32> = ratio.to_vec1()?;
    let logs: Vec<f32> = log_ratio.to_vec1()?;
    let denominator = n.max(1) as f64;
    let stats = PolicyStats {
        clip_fraction: ratios
            .iter()
            .filter(|&&r| f64::from((r - 1.0).abs()) > clip)
            .count() as f64
            / denominator,
        approx_kl: logs.iter().map(|&d| 0.5 * f64::from(d * d)).sum::<f64>() / denominator,
    };
    Ok((loss, stats))
}

/// PPO's clipped value loss, summed over tokens (divide by the token count):
/// `Σ ½ max((V − R)², (V_old + clip(V − V_old, −c, c) − R)²)`.
///
/// Shapes: values `[n]` (with gradient), old_values `[n]`, returns `[n]` -> loss `[]`.
pub fn clipped_value_loss(
    values: &Tensor,
    old_values: &Tensor,
    returns: &Tensor,
    clip: f64,
) -> Result<Tensor> {
    same_len("clipped_value_loss", &[values, old_values, returns])?;
    let v = values.to_dtype(DType::F32)?;
    let old = old_values.to_dtype(DType::F32)?.detach();
    let ret = returns.to_dtype(DType::F32)?.detach();
    let clipped = ((&v - &old)?.clamp(-clip, clip)? + &old)?;
    let a = (&v - &ret)?.sqr()?;
    let b = (clipped - &ret)?.sqr()?;
    Ok((a.maximum(&b)?.sum_all()? * 0.5)?)
}

/// The DPO loss on soft labels, averaged over pairs: with the implicit reward margin
/// `d = β·[(logπ(a) − logπ_ref(a)) − (logπ(b) − logπ_ref(b))]`, the cross entropy between
/// σ(d) and p_a: `p_a·softplus(−d) + (1 − p_a)·softplus(d)`. p_a = 1 is the original DPO loss;
/// p_a = 1 − ε is conservative DPO with label smoothing ε.
///
/// Shapes: policy_a, policy_b `[n]` (summed response log-probs, with gradient), ref_a,
/// ref_b `[n]`, p_a `[n]` -> (loss `[]`, margins d `[n]`).
pub fn dpo_loss(
    policy_a: &Tensor,
    policy_b: &Tensor,
    ref_a: &Tensor,
    ref_b: &Tensor,
    p_a: &Tensor,
    beta: f64,
) -> Result<(Tensor, Tensor)> {
    same_len("dpo_loss", &[policy_a, policy_b, ref_a, ref_b, p_a])?;
    let f = |t: &Tensor| t.to_dtype(DType::F32);
    let chosen = (f(policy_a)? - f(ref_a)?.detach())?;
    let rejected = (f(policy_b)? - f(ref_b)?.detach())?;
    let margins = ((chosen - rejected)? * beta)?;
    let loss = soft_preference_loss(&margins, &f(p_a)?)?;
    Ok((loss, margins))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn scalar(t: &Tensor) -> f32 {
        t.to_scalar::<f32>().unwrap()
    }

    fn close(found: f32, expected: f32) {
        assert!((found - expected).abs() < 1e-5, "{found} != {expected}");
    }

    #[test]
    fn ppo_policy_loss_matches_hand_values_and_gradients() {
        let dev = Device::Cpu;
        // Token 0: ratio e^0.1 = 1.105171 inside [0.8, 1.2], A = 2: loss −2.210342,
        //          gradient −A·ρ = −2.210342.
        // Token 1: ratio e^0.5 = 1.648721 > 1.2 with A = 1: clipped at 1.2 → loss −1.2,
        //          gradient 0 (the clip holds it).
        // Token 2: ratio e^0.5 with A = −1: max(1.648721, 1.2) = 1.648721, unclipped,
        //          gradient −A·ρ = 1.648721 (pessimistic bound: a bad token's rise is not
        //          clipped).
        let new = Var::new(&[0.1f32, 0.5, 0.5], &dev).unwrap();
        let old = Tensor::new(&[0f32, 0.0, 0.0], &dev).unwrap();
        let adv = Tensor::new(&[2f32, 1.0, -1.0], &dev).unwrap();
        let (loss, stats) = ppo_policy_loss(new.as_tensor(), &old, &adv, 0.2).unwrap();
        let (r0, r1) = (0.1f32.exp(), 0.5f32.exp());
        close(scalar(&loss), -2.0 * r0 - 1.2 + r1);
        let g: Vec<f32> = loss
            .backward()
            .unwrap()
            .get(new.as_tensor())
            .unwrap()
            .to_vec1()
            .unwrap();
        close(g[0], -2.0 * r0);
        close(g[1], 0.0);
        close(g[2], r1);
        assert!((stats.clip_fraction - 2.0 / 3.0).abs() < 1e-9);
        // ½(0.01 + 0.25 + 0.25) / 3 = 0.085.
        assert!((stats.approx_kl - 0.085).abs() < 1e-6);
    }

    #[test]
    fn clipped_value_loss_matches_hand_values() {
        let dev = Device::Cpu;
        // Token 0: V 1.0, old 0.9, R 2.0: unclipped (1−2)² = 1, clipped same → ½·1.
        // Token 1: V 3.0, old 1.0, R 1.5 (c = 0.2): (3 − 1.5)² = 2.25; clipped V 1.2:
        //          (1.2 − 1.5)² = 0.09 → max 2.25 → ½·2.25.
        // Token 2: V 0.0, old 1.0, R 2.0: (0 − 2)² = 4; clipped V 0.8: (0.8 − 2)² = 1.44
        //          → ½·4.
        let v = Var::new(&[1.0f32, 3.0, 0.0], &dev).unwrap();
        let old = Tensor::new(&[0.9f32, 1.0, 1.0], &dev).unwrap();
        let ret = Tensor::new(&[2.0f32, 1.5, 2.0], &dev).unwrap();
        let loss = clipped_value_loss(v.as_tensor(), &old, &ret, 0.2).unwrap();
        close(scalar(&loss), 0.5 * (1.0 + 2.25 + 4.0));
        // When the clipped branch is larger, the gradient is 0 there.
        let v = Var::new(&[1.5f32], &dev).unwrap();
        let loss = clipped_value_loss(
            v.as_tensor(),
            &Tensor::new(&[1.0f32], &dev).unwrap(),
            &Tensor::new(&[1.45f32], &dev).unwrap(),
            0.2,
        )
        .unwrap();
        // (1.5 − 1.45)² = 0.0025 < (1.2 − 1.45)² = 0.0625.
        close(scalar(&loss), 0.5 * 0.0625);
        let g: Vec<f32> = loss
            .backward()
            .unwrap()
            .get(v.as_tensor())
            .unwrap()
            .to_vec1()
            .unwrap();
        close(g[0], 0.0);
    }

    #[test]
    fn dpo_loss_matches_hand_values() {
        let dev = Device::Cpu;
        // Pair 0: policy (−1, −3), reference (−2, −2): d = β·((−1+2) − (−3+2)) = 0.5·2 = 1.
        //   p = 1: softplus(−1) = ln(1 + e^−1) = 0.313262.
        // Pair 1: the same margin with p = 0.5: ½ softplus(−1) + ½ softplus(1)
        //   = ½ (0.313262 + 1.313262) = 0.813262.
        let pa = Var::new(&[-1.0f32, -1.0], &dev).unwrap();
        let pb = Tensor::new(&[-3.0f32, -3.0], &dev).unwrap();
        let ra = Tensor::new(&[-2.0f32, -2.0], &dev).unwrap();
        let rb = Tensor::new(&[-2.0f32, -2.0], &dev).unwrap();
        let p = Tensor::new(&[1.0f32, 0.5], &dev).unwrap();
        let (loss, margins) = dpo_loss(pa.as_tensor(), &pb, &ra, &rb, &p, 0.5).unwrap();
        let margins: Vec<f32> = margins.to_vec1().unwrap();
        close(margins[0], 1.0);
        close(scalar(&loss), (0.313_262 + 0.813_262) / 2.0);
        // ∂loss/∂logπ(a) = β(σ(d) − p)/n: σ(1) = 0.731059 → 0.5·(−0.268941)/2 and
        // 0.5·(0.231059)/2.
        let g: Vec<f32> = loss
            .backward()
            .unwrap()
            .get(pa.as_tensor())
            .unwrap()
            .to_vec1()
            .unwrap();
        close(g[0], 0.5 * (0.731_059 - 1.0) / 2.0);
        close(g[1], 0.5 * (0.731_059 - 0.5) / 2.0);
        // At the reference (d = 0) with p = 1 the loss is ln 2.
        let (loss, _) = dpo_loss(&ra, &rb, &ra, &rb, &p, 0.1).unwrap();
        close(scalar(&loss), (2f32.ln() + 2f32.ln()) / 2.0);
    }

    #[test]
    fn mismatched_shapes_are_named() {
        let dev = Device::Cpu;
        let a = Tensor::new(&[1f32, 2.0], &dev).unwrap();
        let b = Tensor::new(&[1f32], &dev).unwrap();
        let err = ppo_policy_loss(&a, &b, &a, 0.2).unwrap_err().to_string();
        assert!(err.contains("ppo_policy_loss"), "{err}");
    }
}
