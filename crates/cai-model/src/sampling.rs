//! Choosing the next token from logits: greedy, temperature, top-k and top-p (nucleus), with a
//! per-request seeded generator so a row's samples do not depend on its batch.

use cai_core::Sampling;
use rand::Rng;

/// Index of the largest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// log p(token) under the unmodified distribution (temperature 1, no filtering).
pub fn token_logprob(logits: &[f32], token: u32) -> f32 {
    logits[token as usize] - log_sum_exp(logits)
}

/// log Σ exp(x), stable.
pub fn log_sum_exp(xs: &[f32]) -> f32 {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    max + crate::kernels::vector::sum_exp_shifted(xs, max).ln() as f32
}

/// Pick the next token from one row of logits.
pub fn sample(logits: &[f32], sampling: &Sampling, rng: &mut impl Rng) -> u32 {
    if sampling.is_greedy() {
        return argmax(logits);
    }
    let unfiltered =
        sampling.top_k.is_none_or(|k| k >= logits.len()) && sampling.top_p.is_none_or(|p| p >= 1.0);
    if unfiltered {
        return sample_softmax(logits, sampling.temperature, rng);
    }
    let t = sampling.temperature as f64;
    // Candidates sorted by logit, best first; top-k and top-p only ever cut the tail.
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    let k = sampling
        .top_k
        .unwrap_or(logits.len())
        .clamp(1, logits.len());
    if k < logits.len() {
        order.select_nth_unstable_by(k - 1, |&a, &b| {
            logits[b as usize].total_cmp(&logits[a as usize])
        });
        order.truncate(k);
    }
    order.sort_unstable_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    let max = logits[order[0] as usize] as f64;
    let mut weights: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i as usize] as f64 - max) / t).exp())
        .collect();
    if let Some(p) = sampling.top_p.filter(|&p| p < 1.0) {
        let total: f64 = weights.iter().sum();
        let mut mass = 0.0;
        let mut keep = weights.len();
        for (i, w) in weights.iter().enumerate() {
            mass += w / total;
            if mass >= p as f64 {
                keep = i + 1;
                break;
            }
        }
        weights.truncate(keep);
        order.truncate(keep);
    }
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return order[i];
        }
        u -= w;
    }
    order[weights.len() - 1]
}

/// Draw from softmax(logits / temperature) by inverting its cumulative sum over the
/// vocabulary in order: no sort, so plain temperature sampling costs two passes over the row
/// (measured on bench-6m, batch 32: sorting the 4,096 logits of every row at every step cost
/// ~40 % of generation throughput).
fn sample_softmax(logits: &[f32], temperature: f32, rng: &mut impl Rng) -> u32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let inv_t = 1.0 / temperature;
    let weights: Vec<f32> = logits.iter().map(|&l| ((l - max) * inv_t).exp()).collect();
    let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    let mut u = rng.random::<f64>() * total;
    let mut last = argmax(logits);
    for (i, &w) in weights.iter().enumerate() {
        if w > 0.0 {
            if u < f64::from(w) {
                return i as u32;
            }
            u -= f64::from(w);
            last = i as u32;
        }
    }
    // Rounding left `u` just past the end: the last token with any weight.
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn freq(logits: &[f32], s: Sampling, n: usize) -> Vec<f64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..n {
            counts[sample(logits, &s, &mut rng) as usize] += 1;
        }
        counts.into_iter().map(|c| c as f64 / n as f64).collect()
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 2.0, 2.0, -1.0]), 1);
        assert_eq!(
            sample(
                &[0.0, 2.0, 1.0],
                &Sampling::greedy(),
                &mut rand_chacha::ChaCha8Rng::seed_from_u64(0)
            ),
            1
        );
    }

    #[test]
    fn log_sum_exp_and_logprob_match_hand_values() {
        // log(e^0 + e^ln3) = log 4.
        let l = [0.0, 3f32.ln()];
        assert!((log_sum_exp(&l) - 4f32.ln()).abs() < 1e-6);
        assert!((token_logprob(&l, 1) - (0.75f32).ln()).abs() < 1e-6);
    }

    #[test]
    fn temperature_one_matches_softmax() {
        // p = [0.25, 0.75]
        let f = freq(&[0.0, 3f32.ln()], Sampling::default(), 40_000);
        assert!((f[1] - 0.75).abs() < 0.01, "{f:?}");
    }

    #[test]
    fn temperature_scales_the_logits() {
        // At T = 0.5 the logits [0, ln 3] become [0, 2 ln 3]: p = [0.1, 0.9]; with a top-k
        // that keeps everything the result is the same.
        let logits = [0.0, 3f32.ln()];
        for top_k in [None, Some(2)] {
            let s = Sampling {
                temperature: 0.5,
                top_k,
                top_p: None,
            };
            let f = freq(&logits, s, 40_000);
            assert!((f[1] - 0.9).abs() < 0.01, "{top_k:?}: {f:?}");
        }
        // A -inf logit is never drawn.
        let f = freq(&[f32::NEG_INFINITY, 0.0, 0.0], Sampling::default(), 4_000);
        assert_eq!(f[0], 0.0);
    }

    #[test]
    fn top_k_and_top_p_cut_the_tail() {
        // p = [0.5, 0.3, 0.2] (ln of the probabilities as logits)
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let k2 = freq(
            &logits,
            Sampling {
                top_k: Some(2),
                ..Sampling::default()
            },
            40_000,
        );
        assert_eq!(k2[2], 0.0);
        assert!((k2[0] - 0.625).abs() < 0.01, "{k2:?}");
        let p = freq(
            &logits,
            Sampling {
                top_p: Some(0.75),
                ..Sampling::default()
            },
            40_000,
        );
        assert_eq!(p[2], 0.0); // 0.5 + 0.3 reaches 0.75
        assert!((p[1] - 0.375).abs() < 0.01, "{p:?}");
    }

    #[test]
    fn same_seed_same_samples() {
        let logits = [0.1f32, 0.2, 0.3, 0.4];
        let a = freq(
            &logits,
            Sampling {
                temperature: 0.7,
                ..Sampling::default()
            },
            100,
        );
        let b = freq(
            &logits,
            Sampling {
                temperature: 0.7,
                ..Sampling::default()
            },
            100,
        );
        assert_eq!(a, b);
    }
}
