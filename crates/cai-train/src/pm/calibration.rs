//! Calibration of predicted probabilities against outcomes: a reliability table (equal-width
//! bins of the prediction, each with its mean prediction and observed frequency) and the
//! expected calibration error, `ECE = Σ_bins (n_b / n) · |mean prediction_b − frequency_b|`
//! (Guo et al. 2017).

use serde::{Deserialize, Serialize};

/// One bin of a reliability table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// Lower edge of the bin (inclusive).
    pub lo: f64,
    /// Upper edge (exclusive, except 1.0 for the last bin).
    pub hi: f64,
    /// Predictions that fell in the bin.
    pub count: usize,
    /// Their mean (`None` for an empty bin).
    pub mean_predicted: Option<f64>,
    /// The mean outcome of those predictions (`None` for an empty bin).
    pub observed: Option<f64>,
}

/// A reliability table and its expected calibration error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Predictions measured.
    pub n: usize,
    /// Expected calibration error (0 when there are no predictions).
    pub ece: f64,
    /// The bins, lowest first.
    pub bins: Vec<ReliabilityBin>,
}

/// The calibration of `pairs` of (predicted probability, outcome in [0, 1]) in `bins`
/// equal-width bins of [0, 1]. Predictions outside [0, 1] are clamped into it.
pub fn calibration(pairs: &[(f64, f64)], bins: usize) -> Calibration {
    let bins = bins.max(1);
    let mut sums = vec![(0usize, 0.0f64, 0.0f64); bins];
    for &(predicted, outcome) in pairs {
        let p = predicted.clamp(0.0, 1.0);
        let b = ((p * bins as f64) as usize).min(bins - 1);
        sums[b].0 += 1;
        sums[b].1 += p;
        sums[b].2 += outcome;
    }
    let n = pairs.len();
    let mut ece = 0.0;
    let table = sums
        .iter()
        .enumerate()
        .map(|(b, &(count, predicted, observed))| {
            let mean = |total: f64| (count > 0).then(|| total / count as f64);
            let (mean_predicted, observed) = (mean(predicted), mean(observed));
            if let (Some(p), Some(o)) = (mean_predicted, observed) {
                ece += count as f64 / n as f64 * (p - o).abs();
            }
            ReliabilityBin {
                lo: b as f64 / bins as f64,
                hi: (b + 1) as f64 / bins as f64,
                count,
                mean_predicted,
                observed,
            }
        })
        .collect();
    Calibration {
        n,
        ece,
        bins: table,
    }
}

impl Calibration {
    /// The table as aligned text, one line per non-empty bin.
    pub fn table_text(&self) -> String {
        let mut text = String::from("bin          n  predicted  observed\n");
        for bin in self.bins.iter().filter(|b| b.count > 0) {
            text += &format!(
                "[{:.1}, {:.1})  {:>5}  {:>9.3}  {:>8.3}\n",
                bin.lo,
                bin.hi,
                bin.count,
                bin.mean_predicted.unwrap_or(f64::NAN),
                bin.observed.unwrap_or(f64::NAN)
            );
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(found: f64, expected: f64) {
        assert!((found - expected).abs() < 1e-12, "{found} != {expected}");
    }

    #[test]
    fn ece_weights_each_bins_gap_by_its_share() {
        // Two bins. [0, 0.5): 0.2 and 0.4 (mean 0.3), outcomes 0 and 0 (observed 0): gap 0.3.
        // [0.5, 1]: 0.9, 0.9, 1.0 (mean 0.9333…), outcomes 1, 1, 0 (observed 0.6667): gap
        // 0.2667. ECE = 2/5 · 0.3 + 3/5 · 0.2667 = 0.12 + 0.16 = 0.28.
        let pairs = [(0.2, 0.0), (0.4, 0.0), (0.9, 1.0), (0.9, 1.0), (1.0, 0.0)];
        let c = calibration(&pairs, 2);
        assert_eq!(c.n, 5);
        close(c.ece, 0.28);
        assert_eq!(c.bins[0].count, 2);
        close(c.bins[0].mean_predicted.unwrap(), 0.3);
        close(c.bins[1].observed.unwrap(), 2.0 / 3.0);
        assert_eq!((c.bins[1].lo, c.bins[1].hi), (0.5, 1.0));
    }

    #[test]
    fn perfect_predictions_have_no_error_and_empty_bins_stay_empty() {
        let pairs = [(0.0, 0.0), (1.0, 1.0), (1.0, 1.0)];
        let c = calibration(&pairs, 10);
        close(c.ece, 0.0);
        assert_eq!(c.bins.len(), 10);
        assert_eq!(c.bins[0].count, 1);
        assert_eq!(c.bins[9].count, 2, "1.0 belongs to the last bin");
        assert_eq!(c.bins[5].mean_predicted, None);
        assert_eq!(c.table_text().lines().count(), 3);
        let empty = calibration(&[], 10);
        assert_eq!((empty.n, empty.ece), (0, 0.0));
    }
}
