//! RL's advantages on plain numbers: generalised advantage estimation, whitening,
//! leave-one-out and group-normalised baselines, explained variance. Everything here is
//! checked against hand-computed values.

/// Generalised advantage estimation (Schulman et al. 2016) over one response of `T` tokens.
///
/// `rewards[t]` and `values[t]` belong to the state before token `t`; the value after the last
/// token is 0 (the episode ends). `δ_t = r_t + γ V_{t+1} − V_t`,
/// `A_t = δ_t + γλ A_{t+1}`, returns `A_t + V_t`. Returns (advantages, returns).
pub fn gae(rewards: &[f32], values: &[f32], gamma: f32, lambda: f32) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(rewards.len(), values.len(), "one value per reward");
    let n = rewards.len();
    let mut advantages = vec![0f32; n];
    let mut next_advantage = 0f32;
    for t in (0..n).rev() {
        let next_value = if t + 1 < n { values[t + 1] } else { 0.0 };
        let delta = rewards[t] + gamma * next_value - values[t];
        next_advantage = delta + gamma * lambda * next_advantage;
        advantages[t] = next_advantage;
    }
    let returns = advantages.iter().zip(values).map(|(a, v)| a + v).collect();
    (advantages, returns)
}

/// Mean and (population) variance.
pub fn mean_var(xs: &[f32]) -> (f32, f32) {
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = xs
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean as f32, var as f32)
}

/// Whiten in place: `(x − mean) / sqrt(var + 1e-8)`; with `shift_mean` false the mean is
/// added back (only the scale changes), as TRL does for rewards.
pub fn whiten(xs: &mut [f32], shift_mean: bool) {
    let (mean, var) = mean_var(xs);
    let scale = 1.0 / (var + 1e-8).sqrt();
    for x in xs.iter_mut() {
        *x = (*x - mean) * scale + if shift_mean { 0.0 } else { mean };
    }
}

/// RLOO advantages: each of the `k` samples of a prompt against the mean reward of the
/// other `k − 1` (Ahmadian et al. 2024). `rewards` holds consecutive groups of `k`.
pub fn leave_one_out(rewards: &[f32], k: usize) -> Vec<f32> {
    assert!(k >= 2 && rewards.len().is_multiple_of(k), "groups of k ≥ 2");
    rewards
        .chunks_exact(k)
        .flat_map(|group| {
            let sum: f32 = group.iter().sum();
            group.iter().map(move |&r| r - (sum - r) / (k - 1) as f32)
        })
        .collect()
}

/// Group-normalised advantages (GRPO, Shao et al. 2024): `(r − mean) / (std + 1e-4)` within
/// each consecutive group of `k`.
pub fn group_normalised(rewards: &[f32], k: usize) -> Vec<f32> {
    assert!(k >= 1 && rewards.len().is_multiple_of(k), "groups of k");
    rewards
        .chunks_exact(k)
        .flat_map(|group| {
            let (mean, var) = mean_var(group);
            let std = var.sqrt();
            group.iter().map(move |&r| (r - mean) / (std + 1e-4))
        })
        .collect()
}

/// `1 − Var(returns − values) / Var(returns)`: 1 when the critic predicts the returns, 0 when
/// it does no better than their mean, negative when worse (`NaN` when returns are constant).
pub fn explained_variance(values: &[f32], returns: &[f32]) -> f32 {
    let residual: Vec<f32> = returns.iter().zip(values).map(|(r, v)| r - v).collect();
    let (_, var_returns) = mean_var(returns);
    let (_, var_residual) = mean_var(&residual);
    if var_returns == 0.0 {
        return f32::NAN;
    }
    1.0 - var_residual / var_returns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(found: &[f32], expected: &[f32]) {
        assert_eq!(found.len(), expected.len());
        for (f, e) in found.iter().zip(expected) {
            assert!((f - e).abs() < 1e-5, "{found:?} != {expected:?}");
        }
    }

    #[test]
    fn gae_matches_hand_values() {
        // T = 3, γ = 1, λ = 0.95, rewards [0, 0, 1], values [0.5, 0.6, 0.7].
        // δ2 = 1 − 0.7 = 0.3;          A2 = 0.3
        // δ1 = 0 + 0.7 − 0.6 = 0.1;     A1 = 0.1 + 0.95·0.3 = 0.385
        // δ0 = 0 + 0.6 − 0.5 = 0.1;     A0 = 0.1 + 0.95·0.385 = 0.46575
        let (a, r) = gae(&[0.0, 0.0, 1.0], &[0.5, 0.6, 0.7], 1.0, 0.95);
        close(&a, &[0.46575, 0.385, 0.3]);
        close(&r, &[0.96575, 0.985, 1.0]);
        // λ = 1, γ = 1: advantages are reward-to-go minus the value (Monte Carlo).
        let (a, _) = gae(&[0.1, 0.2, 0.3], &[0.0, 0.0, 0.0], 1.0, 1.0);
        close(&a, &[0.6, 0.5, 0.3]);
        // λ = 0: one-step TD errors; γ = 0.5 discounts the next value.
        let (a, _) = gae(&[1.0, 2.0], &[1.0, 2.0], 0.5, 0.0);
        close(&a, &[1.0 + 0.5 * 2.0 - 1.0, 0.0]);
    }

    #[test]
    fn whitening_gives_zero_mean_unit_variance() {
        let mut xs = [1.0f32, 2.0, 3.0, 4.0];
        whiten(&mut xs, true);
        // mean 2.5, variance 1.25: (x − 2.5) / 1.118034.
        close(&xs, &[-1.341_641, -0.447_214, 0.447_214, 1.341_641]);
        let mut ys = [1.0f32, 2.0, 3.0, 4.0];
        whiten(&mut ys, false);
        close(&ys, &[1.158_359, 2.052_786, 2.947_214, 3.841_641]);
    }

    #[test]
    fn leave_one_out_and_group_baselines_match_hand_values() {
        // Group [1, 2, 3]: 1 − 2.5, 2 − 2, 3 − 1.5; group [0, 0, 3]: 0 − 1.5, 0 − 1.5, 3 − 0.
        close(
            &leave_one_out(&[1.0, 2.0, 3.0, 0.0, 0.0, 3.0], 3),
            &[-1.5, 0.0, 1.5, -1.5, -1.5, 3.0],
        );
        // Group [1, 3]: mean 2, std 1 → [−1, 1] / 1.0001.
        close(
            &group_normalised(&[1.0, 3.0], 2),
            &[-1.0 / 1.0001, 1.0 / 1.0001],
        );
        // A constant group has zero advantages, not NaN.
        close(&group_normalised(&[2.0, 2.0], 2), &[0.0, 0.0]);
    }

    #[test]
    fn explained_variance_matches_hand_values() {
        // A perfect critic explains everything; predicting the mean explains nothing.
        assert!((explained_variance(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]) - 1.0).abs() < 1e-6);
        assert!(explained_variance(&[2.0, 2.0, 2.0], &[1.0, 2.0, 3.0]).abs() < 1e-6);
        // Residuals [0.5, 0, −0.5]: variance 1/6 against 2/3 → 0.75.
        assert!((explained_variance(&[0.5, 2.0, 3.5], &[1.0, 2.0, 3.0]) - 0.75).abs() < 1e-6);
    }
}
