//! Evaluating a preference model on labelled pairs: the loss, the accuracy against the hard
//! label (pairs labelled exactly 0.5 have none), and the calibration of σ(r_a − r_b) against
//! it — a reliability table, the expected calibration error and an SVG reliability diagram
//! written beside the model.

use std::path::Path;

use cai_model::decoder::Batch;
use cai_model::layers::Mode;
use cai_model::reward_model::RewardModel;
use cai_report::reliability::{reliability_svg, Bin, Reliability};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::pm::calibration::{calibration, Calibration};
use crate::pm::data::PreferencePair;
use crate::pm::loss::soft_preference_loss;
use crate::{Result, TrainError};

/// The evaluation report's file name in the output directory.
pub const PM_EVAL_FILE: &str = "pm_eval.json";
/// The reliability diagram's file name in the output directory.
pub const RELIABILITY_PLOT_FILE: &str = "reliability.svg";

/// How a preference model does on a set of pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PmEval {
    /// Which pairs: `eval` (the evaluation data) or `train` (without evaluation data).
    pub split: String,
    /// Pairs evaluated.
    pub pairs: usize,
    /// Mean loss (cross entropy against the soft labels).
    pub loss: f64,
    /// Pairs whose label is not exactly 0.5.
    pub decided: usize,
    /// Share of the decided pairs whose margin has the label's sign (a zero margin counts
    /// half); `None` without decided pairs.
    pub accuracy: Option<f64>,
    /// Mean |r_a − r_b|.
    pub mean_abs_margin: f64,
    /// σ(r_a − r_b) against the hard label, over the decided pairs.
    pub calibration: Calibration,
}

/// Right-pad the two dialogues of each pair into one batch, the first dialogues' rows first.
/// Shapes: ids `[2b, L]`, labels `[b]` (f32).
pub fn collate_pairs(
    pairs: &[&PreferencePair],
    device: &Device,
) -> Result<(Tensor, Batch, Tensor)> {
    let rows: Vec<&Vec<u32>> = pairs
        .iter()
        .map(|p| &p.ids_a)
        .chain(pairs.iter().map(|p| &p.ids_b))
        .collect();
    let l = rows.iter().map(|r| r.len()).max().unwrap_or(1).max(1);
    let mut ids = Vec::with_capacity(rows.len() * l);
    let mut valid = Vec::with_capacity(rows.len());
    for row in &rows {
        ids.extend(
            row.iter()
                .copied()
                .chain(std::iter::repeat_n(0, l - row.len())),
        );
        valid.push((0..l).map(|t| t < row.len()).collect());
    }
    let labels: Vec<f32> = pairs.iter().map(|p| p.p_a as f32).collect();
    Ok((
        Tensor::from_vec(ids, (rows.len(), l), device)?,
        Batch::from_valid(valid),
        Tensor::from_vec(labels, pairs.len(), device)?,
    ))
}

/// Margins `r_a − r_b` of a collated batch. Shapes: rewards `[2b]` -> `[b]`.
pub fn margins(rewards: &Tensor) -> Result<Tensor> {
    let b = rewards.dim(0)? / 2;
    Ok((rewards.narrow(0, 0, b)? - rewards.narrow(0, b, b)?)?)
}

/// Evaluate `model` on `pairs`, `batch_size` pairs per forward pass, without gradients.
pub fn evaluate(
    model: &RewardModel,
    pairs: &[PreferencePair],
    batch_size: usize,
    bins: usize,
    split: &str,
    device: &Device,
) -> Result<PmEval> {
    let mut loss = 0.0;
    let mut all_margins = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(batch_size.max(1)) {
        let refs: Vec<&PreferencePair> = chunk.iter().collect();
        let (ids, batch, labels) = collate_pairs(&refs, device)?;
        let m = margins(&model.rewards(&ids, &batch, Mode::Infer)?)?;
        loss +=
            f64::from(soft_preference_loss(&m, &labels)?.to_scalar::<f32>()?) * chunk.len() as f64;
        all_margins.extend(m.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?);
    }
    let mut hits = 0.0;
    let mut outcomes = Vec::new();
    for (pair, &m) in pairs.iter().zip(&all_margins) {
        if pair.p_a == 0.5 {
            continue;
        }
        let first_better = pair.p_a > 0.5;
        hits += if m == 0.0 {
            0.5
        } else {
            f64::from(u8::from((m > 0.0) == first_better))
        };
        outcomes.push((1.0 / (1.0 + (-m).exp()), f64::from(u8::from(first_better))));
    }
    let n = pairs.len().max(1) as f64;
    Ok(PmEval {
        split: split.to_owned(),
        pairs: pairs.len(),
        loss: loss / n,
        decided: outcomes.len(),
        accuracy: (!outcomes.is_empty()).then(|| hits / outcomes.len() as f64),
        mean_abs_margin: all_margins.iter().map(|m| m.abs()).sum::<f64>() / n,
        calibration: calibration(&outcomes, bins),
    })
}

/// Write [`PM_EVAL_FILE`] and [`RELIABILITY_PLOT_FILE`] into `dir`.
pub fn write_report(dir: &Path, eval: &PmEval) -> Result<()> {
    let path = dir.join(PM_EVAL_FILE);
    let text = serde_json::to_string_pretty(eval).expect("serialisable") + "\n";
    cai_model::write_atomic(&path, text.as_bytes())?;
    let title = format!("preference model on {} pairs", eval.split);
    let c = &eval.calibration;
    let bins = c
        .bins
        .iter()
        .map(|b| Bin {
            lo: b.lo,
            hi: b.hi,
            count: b.count,
            point: b.mean_predicted.zip(b.observed),
        })
        .collect();
    let diagram = Reliability {
        n: c.n,
        ece: c.ece,
        bins,
    };
    let svg = reliability_svg(&diagram, &title).map_err(TrainError::Config)?;
    let path = dir.join(RELIABILITY_PLOT_FILE);
    Ok(cai_model::write_atomic(&path, svg.as_bytes())?)
}
