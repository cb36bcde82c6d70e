//! The statistics of a safety evaluation: a rate with its percentile-bootstrap interval
//! (items resampled with replacement, seeded) and Cohen's κ between two judges' labels.

use cai_core::rng::{derive_seed, rng_from_seed};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::super::elo::quantile;

/// A share of items with its bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    /// Items counted.
    pub n: usize,
    /// Items with the property.
    pub count: usize,
    /// `count / n`.
    pub rate: f64,
    /// Lower end of the interval (the rate itself without resamples).
    pub low: f64,
    /// Upper end of the interval.
    pub high: f64,
}

/// The share of `true` in `labels` with a percentile-bootstrap `confidence` interval from
/// `resamples` resamples seeded by `seed` and `key`; `None` for no labels.
pub fn bootstrap_rate(
    labels: &[bool],
    resamples: usize,
    confidence: f64,
    seed: u64,
    key: &str,
) -> Option<Rate> {
    let n = labels.len();
    if n == 0 {
        return None;
    }
    let count = labels.iter().filter(|&&l| l).count();
    let rate = count as f64 / n as f64;
    if resamples == 0 {
        return Some(Rate {
            n,
            count,
            rate,
            low: rate,
            high: rate,
        });
    }
    let mut rng = rng_from_seed(derive_seed(seed, &["safety-bootstrap", key]));
    let mut rates: Vec<f64> = (0..resamples)
        .map(|_| {
            let hits = (0..n).filter(|_| labels[rng.random_range(0..n)]).count();
            hits as f64 / n as f64
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    Some(Rate {
        n,
        count,
        rate,
        low: quantile(&rates, tail).unwrap_or(rate),
        high: quantile(&rates, 1.0 - tail).unwrap_or(rate),
    })
}

/// Two judges' agreement on the same items.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// Items both judged.
    pub n: usize,
    /// Share of items on which they agree.
    pub observed: f64,
    /// Cohen's κ = (p_o − p_e) / (1 − p_e); `None` when p_e = 1 (both judges gave one label
    /// to everything, so chance agreement is total and κ is undefined).
    pub kappa: Option<f64>,
}

/// Cohen's κ between paired labels `(a, b)`; `None` for no pairs.
pub fn cohen_kappa(pairs: &[(bool, bool)]) -> Option<Agreement> {
    let n = pairs.len();
    if n == 0 {
        return None;
    }
    let nf = n as f64;
    let agree = pairs.iter().filter(|(a, b)| a == b).count() as f64 / nf;
    let pa = pairs.iter().filter(|(a, _)| *a).count() as f64 / nf;
    let pb = pairs.iter().filter(|(_, b)| *b).count() as f64 / nf;
    let expected = pa * pb + (1.0 - pa) * (1.0 - pb);
    Some(Agreement {
        n,
        observed: agree,
        kappa: (expected < 1.0 - 1e-12).then(|| (agree - expected) / (1.0 - expected)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(yy: usize, yn: usize, ny: usize, nn: usize) -> Vec<(bool, bool)> {
        let mut pairs = vec![(true, true); yy];
        pairs.extend(vec![(true, false); yn]);
        pairs.extend(vec![(false, true); ny]);
        pairs.extend(vec![(false, false); nn]);
        pairs
    }

    #[test]
    fn kappa_matches_hand_values() {
        // Wikipedia's example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no: p_o = 0.7,
        // p_e = 0.5 · 0.6 + 0.5 · 0.4 = 0.5, κ = 0.4.
        let a = cohen_kappa(&table(20, 5, 10, 15)).unwrap();
        assert_eq!(a.n, 50);
        assert!((a.observed - 0.7).abs() < 1e-12);
        assert!((a.kappa.unwrap() - 0.4).abs() < 1e-12);
        // Perfect agreement: 1; perfect disagreement on a balanced set: −1.
        assert!((cohen_kappa(&table(3, 0, 0, 5)).unwrap().kappa.unwrap() - 1.0).abs() < 1e-12);
        assert!((cohen_kappa(&table(0, 4, 4, 0)).unwrap().kappa.unwrap() + 1.0).abs() < 1e-12);
        // Everything one label from both judges: κ undefined.
        assert_eq!(cohen_kappa(&table(6, 0, 0, 0)).unwrap().kappa, None);
        assert_eq!(cohen_kappa(&[]), None);
    }

    #[test]
    fn bootstrap_intervals_match_hand_values() {
        // 2 of 4: a resample has 0 successes with probability 1/16 > 2.5 %, and 4 with
        // 1/16, so the 95 % interval is [0, 1].
        let r = bootstrap_rate(&[true, false, true, false], 4000, 0.95, 1, "k").unwrap();
        assert_eq!((r.n, r.count, r.rate), (4, 2, 0.5));
        assert_eq!((r.low, r.high), (0.0, 1.0));
        // 30 of 100: close to the normal interval 0.3 ± 1.96 · √(0.21/100) = [0.21, 0.39].
        let labels: Vec<bool> = (0..100).map(|i| i % 10 < 3).collect();
        let r = bootstrap_rate(&labels, 4000, 0.95, 2, "k").unwrap();
        assert!(
            (r.low - 0.21).abs() <= 0.02 && (r.high - 0.39).abs() <= 0.02,
            "{r:?}"
        );
        // Seeded: the same key gives the same interval.
        assert_eq!(
            bootstrap_rate(&labels, 500, 0.95, 2, "k"),
            bootstrap_rate(&labels, 500, 0.95, 2, "k")
        );
        // All alike: no width; no resamples: the rate.
        let r = bootstrap_rate(&[true; 7], 100, 0.95, 0, "k").unwrap();
        assert_eq!((r.low, r.high), (1.0, 1.0));
        let r = bootstrap_rate(&labels, 0, 0.95, 0, "k").unwrap();
        assert_eq!((r.low, r.high), (0.3, 0.3));
        assert_eq!(bootstrap_rate(&[], 10, 0.95, 0, "k"), None);
    }
}
