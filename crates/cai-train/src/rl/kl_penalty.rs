//! RL's KL penalty against the reference model: the per-token KL estimators and a sample's
//! KL(policy ‖ reference), which the reward is penalised by (`kl_coef`).

use serde::{Deserialize, Serialize};

use crate::rl::rollout::Sample;

/// How KL(policy ‖ reference) is estimated from one sampled token with log-probabilities
/// `logp` (policy) and `logp_ref` (reference); `r = p_ref / p = exp(logp_ref − logp)`.
/// (Schulman, "Approximating KL divergence", 2020.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum KlEstimator {
    /// `logp − logp_ref`: unbiased, can be negative on one sample (TRL's default, InstructGPT).
    #[cfg_attr(feature = "clap", value(help = "logp − logp_ref"))]
    K1,
    /// `½ (logp − logp_ref)²`: biased, low variance, never negative.
    #[cfg_attr(feature = "clap", value(help = "½ (logp − logp_ref)²"))]
    K2,
    /// `(r − 1) − log r`: unbiased and never negative.
    #[cfg_attr(feature = "clap", value(help = "(r − 1) − log r with r = p_ref / p"))]
    K3,
}

impl KlEstimator {
    /// The estimate for one token.
    pub fn estimate(self, logp: f32, logp_ref: f32) -> f32 {
        let d = logp - logp_ref;
        match self {
            Self::K1 => d,
            Self::K2 => 0.5 * d * d,
            Self::K3 => (-d).exp_m1() + d,
        }
    }
}

impl Sample {
    /// KL(policy ‖ reference) at each response token, by `estimator`.
    pub fn kl_tokens(&self, estimator: KlEstimator) -> Vec<f32> {
        self.logp
            .iter()
            .zip(&self.logp_ref)
            .map(|(&p, &r)| estimator.estimate(p, r))
            .collect()
    }

    /// KL(policy ‖ reference) of the whole response: the sum over its tokens.
    pub fn kl(&self, estimator: KlEstimator) -> f32 {
        self.kl_tokens(estimator).iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_estimators_match_hand_values() {
        // logp = ln 0.5, logp_ref = ln 0.25: d = ln 2 = 0.693147; r = 0.5.
        let (lp, lr) = (0.5f32.ln(), 0.25f32.ln());
        let d = 2f32.ln();
        assert!((KlEstimator::K1.estimate(lp, lr) - d).abs() < 1e-6);
        assert!((KlEstimator::K2.estimate(lp, lr) - 0.5 * d * d).abs() < 1e-6);
        // (0.5 − 1) − ln 0.5 = −0.5 + 0.693147 = 0.193147.
        assert!((KlEstimator::K3.estimate(lp, lr) - 0.193_147).abs() < 1e-6);
        // The same distribution: every estimator is 0.
        for k in [KlEstimator::K1, KlEstimator::K2, KlEstimator::K3] {
            assert_eq!(k.estimate(-1.3, -1.3), 0.0);
        }
        // k1 can be negative, k3 not.
        assert!(KlEstimator::K1.estimate(lr, lp) < 0.0);
        assert!(KlEstimator::K3.estimate(lr, lp) > 0.0);
    }
}
