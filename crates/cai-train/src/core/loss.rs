//! Token-level cross-entropy over the positions a mask selects (assistant tokens in SFT):
//! on logits, or from a decoder's hidden states through a fused, chunked output layer.

use cai_model::decoder::{Batch, Decoder};
use cai_model::kernels::head_nll::head_nll;
use cai_model::layers::Mode;
use candle_core::{DType, Tensor, D};
use rayon::prelude::*;

use crate::{Result, TrainError};

/// Log-softmax over the last dimension, numerically stable and differentiable.
///
/// Shapes: xs `[n, V]` -> `[n, V]`.
///
/// `x - max - log Σ exp(x - max)` with the max detached: the result does not depend on the
/// shift mathematically, so no gradient is lost, and backward skips the max's tie mask (a
/// `[n, V]` comparison). Every op used (`broadcast_sub`, `exp`, `sum_keepdim`, `log`) has a
/// backward in candle; candle-nn's fused `softmax_last_dim` does not.
pub fn log_softmax_last(xs: &Tensor) -> Result<Tensor> {
    let max = xs.max_keepdim(D::Minus1)?.detach();
    let shifted = xs.broadcast_sub(&max)?;
    let log_sum = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&log_sum)?)
}

/// Mean negative log-likelihood of `targets` over the positions where `mask` is non-zero.
///
/// Shapes: logits `[b, s, V]`, targets `[b, s]` (u32), mask `[b, s]` (f32) -> (loss `[]`
/// f32, number of positions with a non-zero mask).
///
/// Targets are already shifted by the caller: position `t`'s logits predict `targets[t]`.
/// Mask values are weights (normally 0 or 1): the loss is `Σ m·nll / Σ m`. Only the selected
/// rows enter the log-softmax (computed in f32), so masked positions cost nothing and get an
/// exact zero gradient even if their logits are not finite. With no selected position the
/// loss is a constant 0 and the count 0: there is nothing to learn from the batch.
///
/// To average over all tokens of several micro-batches, weight each loss by
/// `count / total_count` before its backward pass.
pub fn masked_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
) -> Result<(Tensor, usize)> {
    let (b, s, vocab) = logits.dims3()?;
    if targets.dims() != [b, s] || mask.dims() != [b, s] {
        return Err(TrainError::Config(format!(
            "masked_cross_entropy: logits are [{b}, {s}, {vocab}] but targets are {:?} and \
             mask {:?}; expected both [{b}, {s}]",
            targets.dims(),
            mask.dims()
        )));
    }
    let weights: Vec<f32> = mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let target_ids: Vec<u32> = targets.flatten_all()?.to_vec1()?;
    let mut rows = Vec::new();
    let mut picked = Vec::new();
    let mut row_weights = Vec::new();
    for (i, (&w, &id)) in weights.iter().zip(&target_ids).enumerate() {
        if w == 0.0 {
            continue;
        }
        if id as usize >= vocab {
            return Err(TrainError::Config(format!(
                "masked_cross_entropy: target id {id} at [{}, {}] is outside the vocabulary \
                 of {vocab}",
                i / s,
                i % s
            )));
        }
        rows.push(i as u32);
        picked.push(id);
        row_weights.push(w);
    }
    let device = logits.device();
    let count = rows.len();
    if count == 0 {
        return Ok((Tensor::zeros((), DType::F32, device)?, 0));
    }
    let total_weight: f32 = row_weights.iter().sum();
    if device.is_cpu() && count == b * s && logits.dtype() == DType::F32 {
        // Every position selected (no prompt or padding mask): the op reads the logits as they
        // are. A row selection and a reshape would each cost the backward pass a zero-filled
        // gradient the size of the logits plus an add (and the selection an index_add).
        let op = WeightedNll {
            targets: picked,
            weights: row_weights,
            stats: Default::default(),
        };
        let nll = logits.contiguous()?.apply_op1(op)?;
        let loss = nll.sum_all()?.affine(1.0 / f64::from(total_weight), 0.0)?;
        return Ok((loss, count));
    }
    let rows = Tensor::from_vec(rows, count, device)?;
    let selected = logits
        .reshape((b * s, vocab))?
        .index_select(&rows, 0)?
        .to_dtype(DType::F32)?;
    if device.is_cpu() {
        // One pass forward and one backward over the [count, V] logits instead of the
        // half-dozen a composed log-softmax and gather take.
        let op = WeightedNll {
            targets: picked,
            weights: row_weights,
            stats: Default::default(),
        };
        let nll = selected.apply_op1(op)?;
        let loss = nll.sum_all()?.affine(1.0 / f64::from(total_weight), 0.0)?;
        return Ok((loss, count));
    }
    let log_probs = log_softmax_last(&selected)?;
    let picked = Tensor::from_vec(picked, (count, 1), device)?;
    let target_log_probs = log_probs.gather(&picked, 1)?.squeeze(1)?;
    let weighted = if row_weights.iter().all(|&w| w == 1.0) {
        target_log_probs
    } else {
        (target_log_probs * Tensor::from_vec(row_weights, count, device)?)?
    };
    let loss = weighted
        .sum_all()?
        .affine(-1.0 / f64::from(total_weight), 0.0)?;
    Ok((loss, count))
}

/// Logits `[rows, vocab]` past this many bytes go through the fused, chunked output layer of
/// [`decoder_cross_entropy`]; below it the plain path runs (the small lab models keep their
/// numerics bit for bit).
pub const FUSED_HEAD_BYTES: usize = 64 << 20;

/// Mean negative log-likelihood of `targets` where `mask` is non-zero, from token ids: the
/// decoder's training forward pass, then its output layer and the loss.
///
/// Shapes: ids, targets `[b, s]` (u32), mask `[b, s]` (f32) -> (loss `[]` f32, count), as
/// [`masked_cross_entropy`] on [`Decoder::forward_train`]'s logits. When the selected rows'
/// logits would pass [`FUSED_HEAD_BYTES`] and the output layer is a plain matrix, only the
/// selected rows' hidden states enter the output layer, fused with the log-softmax in chunks
/// ([`head_nll`]), so the `[b, s, vocab]` logits are never materialised (400 MB for 8 × 256
/// tokens of SmolLM2's 49,152-token vocabulary, and several copies of it in the backward pass).
pub fn decoder_cross_entropy(
    decoder: &Decoder,
    ids: &Tensor,
    batch: &Batch,
    targets: &Tensor,
    mask: &Tensor,
) -> Result<(Tensor, usize)> {
    decoder_cross_entropy_past(decoder, ids, batch, targets, mask, FUSED_HEAD_BYTES)
}

/// [`decoder_cross_entropy`] with the fused path taken past `fused_bytes` of logits.
fn decoder_cross_entropy_past(
    decoder: &Decoder,
    ids: &Tensor,
    batch: &Batch,
    targets: &Tensor,
    mask: &Tensor,
    fused_bytes: usize,
) -> Result<(Tensor, usize)> {
    let hidden = decoder.forward_hidden(ids, batch, None, Mode::Train)?;
    hidden_cross_entropy_past(decoder, &hidden, targets, mask, fused_bytes)
}

/// [`decoder_cross_entropy`] from the hidden states of a training pass already run (the
/// final norm's output, e.g. [`crate::core::recompute::TrainPass::hidden`]).
///
/// Shapes: hidden `[b, s, hidden]`, targets `[b, s]` (u32), mask `[b, s]` (f32) -> (loss `[]`
/// f32, count).
pub fn hidden_cross_entropy(
    decoder: &Decoder,
    hidden: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
) -> Result<(Tensor, usize)> {
    hidden_cross_entropy_past(decoder, hidden, targets, mask, FUSED_HEAD_BYTES)
}

/// [`hidden_cross_entropy`] with the fused path taken past `fused_bytes` of logits.
pub(crate) fn hidden_cross_entropy_past(
    decoder: &Decoder,
    hidden: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    fused_bytes: usize,
) -> Result<(Tensor, usize)> {
    let (b, s, _) = hidden.dims3()?;
    let vocab = decoder.config().vocab_size;
    let selected: usize = mask
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .filter(|&&w| w != 0.0)
        .count();
    let head = decoder
        .head_weight()
        .filter(|_| selected * vocab * 4 > fused_bytes);
    let Some(head) = head else {
        let logits = decoder.logits_mode(hidden, Mode::Train)?;
        return masked_cross_entropy(&logits, targets, mask);
    };
    if targets.dims() != [b, s] || mask.dims() != [b, s] {
        return Err(TrainError::Config(format!(
            "decoder_cross_entropy: the hidden states are for [{b}, {s}] tokens but targets \
             are {:?} and mask {:?}; expected both [{b}, {s}]",
            targets.dims(),
            mask.dims()
        )));
    }
    let weights: Vec<f32> = mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let target_ids: Vec<u32> = targets.flatten_all()?.to_vec1()?;
    let (mut rows, mut picked, mut row_weights) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (&w, &id)) in weights.iter().zip(&target_ids).enumerate() {
        if w != 0.0 {
            rows.push(i as u32);
            picked.push(id);
            row_weights.push(w);
        }
    }
    let count = rows.len();
    if count == 0 {
        return Ok((Tensor::zeros((), DType::F32, hidden.device())?, 0));
    }
    let total_weight: f32 = row_weights.iter().sum();
    let h = hidden.dim(2)?;
    let rows = Tensor::from_vec(rows, count, hidden.device())?;
    let states = hidden.reshape((b * s, h))?.index_select(&rows, 0)?;
    let nll = head_nll(&states, head, &picked, &row_weights).map_err(|e| match e {
        cai_model::ModelError::Request(msg) => {
            TrainError::Config(format!("decoder_cross_entropy: {msg}"))
        }
        other => other.into(),
    })?;
    let loss = nll.sum_all()?.affine(1.0 / f64::from(total_weight), 0.0)?;
    Ok((loss, count))
}

/// Log-probability of each row's target token, differentiable.
///
/// Shapes: logits `[n, V]` -> `[n]` (f32). On the CPU one fused op computes it (the same as
/// [`masked_cross_entropy`]'s); elsewhere a log-softmax and a gather.
pub fn target_log_probs(logits: &Tensor, targets: &[u32]) -> Result<Tensor> {
    let (n, vocab) = logits.dims2()?;
    if targets.len() != n {
        return Err(TrainError::Config(format!(
            "target_log_probs: {n} rows of logits but {} targets",
            targets.len()
        )));
    }
    if let Some(&bad) = targets.iter().find(|&&t| t as usize >= vocab) {
        return Err(TrainError::Config(format!(
            "target_log_probs: target id {bad} is outside the vocabulary of {vocab}"
        )));
    }
    let logits = logits.to_dtype(DType::F32)?.contiguous()?;
    let device = logits.device();
    if n == 0 {
        return Ok(Tensor::zeros(0, DType::F32, device)?);
    }
    if device.is_cpu() {
        let op = WeightedNll {
            targets: targets.to_vec(),
            weights: vec![1.0; n],
            stats: Default::default(),
        };
        return Ok(logits.apply_op1(op)?.neg()?);
    }
    let picked = Tensor::from_vec(targets.to_vec(), (n, 1), device)?;
    Ok(log_softmax_last(&logits)?.gather(&picked, 1)?.squeeze(1)?)
}

/// `out[r] = −w_r · log softmax(x_r)[t_r]` as one CPU op, with backward
/// `∂out_r/∂x_rj = w_r · (softmax(x_r)_j − [j = t_r])`.
///
/// Shapes: x `[.., V]` f32 (`n` rows in all) -> `[..]`.
struct WeightedNll {
    targets: Vec<u32>,
    weights: Vec<f32>,
    /// Each row's (max, log-sum-exp), saved by the forward pass for the backward pass.
    stats: std::sync::Mutex<Vec<(f32, f32)>>,
}

impl WeightedNll {
    /// The max and log-sum-exp of one row.
    fn row_stats(row: &[f32]) -> (f32, f32) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        (
            max,
            cai_model::kernels::sum_exp_shifted(row, max).ln() as f32,
        )
    }
}

impl candle_core::CustomOp1 for WeightedNll {
    fn name(&self) -> &'static str {
        "weighted-nll"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let candle_core::CpuStorage::F32(data) = storage else {
            candle_core::bail!("weighted-nll: f32 logits expected");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("weighted-nll: contiguous logits expected");
        };
        let dims = layout.shape().dims();
        let Some((&vocab, rows)) = dims.split_last() else {
            candle_core::bail!("weighted-nll: logits [.., vocab] expected, got a scalar");
        };
        let n: usize = rows.iter().product();
        if n != self.targets.len() {
            candle_core::bail!(
                "weighted-nll: {n} rows of logits but {} targets",
                self.targets.len()
            );
        }
        let stats: Vec<(f32, f32)> = data[start..end]
            .par_chunks_exact(vocab)
            .map(Self::row_stats)
            .collect();
        let out: Vec<f32> = stats
            .iter()
            .zip(data[start..end].chunks_exact(vocab))
            .zip(self.targets.iter().zip(&self.weights))
            .map(|((&(max, lse), row), (&t, &w))| -w * (row[t as usize] - max - lse))
            .collect();
        *self.stats.lock().expect("stats lock") = stats;
        debug_assert_eq!(out.len(), n);
        Ok((
            candle_core::CpuStorage::F32(out),
            candle_core::Shape::from(rows.to_vec()),
        ))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let vocab = x.dim(candle_core::D::Minus1)?;
        let n = x.elem_count() / vocab.max(1);
        let gs: Vec<f32> = grad.flatten_all()?.to_vec1()?;
        // The logits are read in place (a copy of them was ~32 MB per bench-6m step).
        let (storage, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(data)) = &*storage else {
            candle_core::bail!("weighted-nll: f32 CPU logits expected");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("weighted-nll: contiguous logits expected");
        };
        let xs = &data[start..end];
        let saved = self.stats.lock().expect("stats lock");
        let stats: Vec<(f32, f32)> = if saved.len() == n {
            saved.clone()
        } else {
            xs.par_chunks_exact(vocab).map(Self::row_stats).collect()
        };
        drop(saved);
        let mut dx = Vec::with_capacity(n * vocab);
        // SAFETY: f32 has no invalid bit patterns, and the pass below writes every element of
        // every row before the one element per row it then reads back (the target's).
        #[allow(clippy::uninit_vec)]
        unsafe {
            dx.set_len(n * vocab)
        };
        dx.par_chunks_exact_mut(vocab)
            .zip(xs.par_chunks_exact(vocab))
            .enumerate()
            .for_each(|(r, (out, row))| {
                let scale = gs[r] * self.weights[r];
                let (max, lse) = stats[r];
                // softmax = exp(x − max − lse), on the vector exponential.
                out.copy_from_slice(row);
                cai_model::kernels::exp_shifted_in_place(out, max + lse);
                for o in out.iter_mut() {
                    *o *= scale;
                }
                out[self.targets[r] as usize] -= scale;
            });
        drop(storage);
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The fused output layer gives the plain path's loss and gradients (tied and untied heads,
    /// a weighted mask with a zero), and the plain path runs below the threshold.
    #[test]
    fn the_fused_head_matches_logits_then_cross_entropy() {
        let dev = Device::Cpu;
        for tied in [false, true] {
            let shape = cai_model::init::ModelShape {
                hidden_size: 32,
                num_layers: 2,
                num_heads: 4,
                intermediate_size: 64,
                vocab_size: 97,
                tie_word_embeddings: tied,
                ..Default::default()
            };
            let mut decoder =
                cai_model::weights::random_decoder(shape.config().unwrap(), 5, DType::F32, &dev)
                    .unwrap();
            let vars = decoder.make_trainable().unwrap();
            let ids = Tensor::new(&[[3u32, 9, 27, 81, 5], [7, 1, 2, 0, 0]], &dev).unwrap();
            let targets = Tensor::new(&[[9u32, 27, 81, 5, 6], [1, 2, 96, 0, 0]], &dev).unwrap();
            let mask = Tensor::new(
                &[[1f32, 1.0, 0.0, 1.0, 0.5], [1.0, 1.0, 1.0, 0.0, 0.0]],
                &dev,
            )
            .unwrap();
            let batch =
                Batch::from_valid(vec![vec![true; 5], vec![true, true, true, false, false]]);
            let run = |bytes| {
                let (loss, count) =
                    decoder_cross_entropy_past(&decoder, &ids, &batch, &targets, &mask, bytes)
                        .unwrap();
                let grads = loss.backward().unwrap();
                let grads: Vec<Tensor> = vars
                    .iter()
                    .map(|(spec, v)| {
                        grads
                            .get(v.as_tensor())
                            .unwrap_or_else(|| panic!("no gradient for {}", spec.name))
                            .clone()
                    })
                    .collect();
                (loss.to_scalar::<f32>().unwrap(), count, grads)
            };
            let (plain, n_plain, g_plain) = run(usize::MAX);
            let (fused, n_fused, g_fused) = run(0);
            assert_eq!((n_plain, n_fused), (7, 7));
            assert!(
                (plain - fused).abs() < 1e-5,
                "tied {tied}: {plain} vs {fused}"
            );
            for ((spec, _), (a, b)) in vars.iter().zip(g_plain.iter().zip(&g_fused)) {
                let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
                let d = d.to_scalar::<f32>().unwrap();
                assert!(d < 1e-5, "tied {tied}: {} differs by {d}", spec.name);
            }
            // Below the threshold it is the plain path, bit for bit.
            let logits = decoder.forward_train(&ids, &batch).unwrap();
            let (direct, _) = masked_cross_entropy(&logits, &targets, &mask).unwrap();
            assert_eq!(direct.to_scalar::<f32>().unwrap(), plain);
        }
    }

    fn approx(found: f32, expected: f32) {
        assert!((found - expected).abs() < 1e-5, "{found} != {expected}");
    }

    #[test]
    fn log_softmax_matches_hand_values_and_is_stable() {
        // log Σ exp([0, ln 2, ln 3]) = ln 6: [-ln 6, ln 2 - ln 6, ln 3 - ln 6]. Shifted by
        // 1000 (exp overflows f32 beyond 88) the answer is the same, up to the f32 spacing
        // of 1000 + ln 2 (6e-5).
        let dev = Device::Cpu;
        let (l2, l3, l6) = (2f32.ln(), 3f32.ln(), 6f32.ln());
        let x = Tensor::new(&[[0f32, l2, l3], [1000.0, 1000.0 + l2, 1000.0 + l3]], &dev).unwrap();
        let y: Vec<Vec<f32>> = log_softmax_last(&x).unwrap().to_vec2().unwrap();
        for (row, tolerance) in y.into_iter().zip([1e-6, 1e-4]) {
            for (found, expected) in row.into_iter().zip([-l6, l2 - l6, l3 - l6]) {
                assert!(
                    (found - expected).abs() < tolerance,
                    "{found} != {expected}"
                );
            }
        }
    }

    /// One row of 2 positions over a vocabulary of 3.
    /// Position 0: logits [0, ln 2, ln 3] (probabilities 1/6, 2/6, 3/6), target 2.
    /// Position 1: logits [0, 0, 0] (1/3 each), target 0.
    fn example(dev: &Device) -> Var {
        let (l2, l3) = (2f32.ln(), 3f32.ln());
        Var::new(&[[[0f32, l2, l3], [0.0, 0.0, 0.0]]], dev).unwrap()
    }

    #[test]
    fn mean_over_masked_tokens_matches_hand_values() {
        let dev = Device::Cpu;
        let logits = example(&dev);
        let targets = Tensor::new(&[[2u32, 0]], &dev).unwrap();

        // Both positions: (-ln(1/2) - ln(1/3)) / 2 = (ln 2 + ln 3) / 2 = 0.895879734.
        let mask = Tensor::new(&[[1f32, 1.0]], &dev).unwrap();
        let (loss, count) = masked_cross_entropy(&logits, &targets, &mask).unwrap();
        assert_eq!(count, 2);
        approx(loss.to_scalar().unwrap(), 0.895_879_7);

        // Only position 0: ln 2.
        let mask = Tensor::new(&[[1f32, 0.0]], &dev).unwrap();
        let (loss, count) = masked_cross_entropy(&logits, &targets, &mask).unwrap();
        assert_eq!(count, 1);
        approx(loss.to_scalar().unwrap(), 2f32.ln());

        // Weights 1 and 3: (ln 2 + 3 ln 3) / 4 = 0.997253.
        let mask = Tensor::new(&[[1f32, 3.0]], &dev).unwrap();
        let (loss, _) = masked_cross_entropy(&logits, &targets, &mask).unwrap();
        approx(
            loss.to_scalar().unwrap(),
            (2f32.ln() + 3.0 * 3f32.ln()) / 4.0,
        );
    }

    #[test]
    fn gradient_is_softmax_minus_one_hot_and_zero_where_masked() {
        // d(-log p_target)/d logits = p - onehot(target): at position 0,
        // [1/6, 2/6, 3/6 - 1] = [1/6, 1/3, -1/2]; position 1 is masked, so exactly 0,
        // even with a NaN logit there.
        let dev = Device::Cpu;
        let (l2, l3) = (2f32.ln(), 3f32.ln());
        let logits = Var::new(&[[[0f32, l2, l3], [f32::NAN, 0.0, 0.0]]], &dev).unwrap();
        let targets = Tensor::new(&[[2u32, 0]], &dev).unwrap();
        let mask = Tensor::new(&[[1f32, 0.0]], &dev).unwrap();
        let (loss, _) = masked_cross_entropy(&logits, &targets, &mask).unwrap();
        approx(loss.to_scalar().unwrap(), 2f32.ln());
        let grads = loss.backward().unwrap();
        let g: Vec<Vec<Vec<f32>>> = grads.get(logits.as_tensor()).unwrap().to_vec3().unwrap();
        for (found, expected) in g[0][0].iter().zip([1.0 / 6.0, 1.0 / 3.0, -0.5]) {
            approx(*found, expected);
        }
        assert_eq!(g[0][1], [0.0, 0.0, 0.0]);
    }

    /// With every position selected the op reads the logits in place; the loss and the
    /// gradients are bit for bit those of the row-selecting path (taken here by one more,
    /// masked position per row).
    #[test]
    fn a_full_mask_reads_the_logits_in_place_with_the_same_bits() {
        let dev = Device::Cpu;
        let wide = Tensor::randn(0f32, 3.0, (2, 4, 37), &dev).unwrap();
        let full = Var::from_tensor(&wide.narrow(1, 0, 3).unwrap().contiguous().unwrap()).unwrap();
        let part = Var::from_tensor(&wide).unwrap();
        let targets = Tensor::new(&[[4u32, 36, 0, 9], [11, 2, 30, 5]], &dev).unwrap();
        let mask = Tensor::new(&[[1f32, 0.5, 2.0, 0.0], [1.0, 1.0, 1.0, 0.0]], &dev).unwrap();
        let run = |logits: &Var, n: usize| {
            let t = targets.narrow(1, 0, n).unwrap();
            let m = mask.narrow(1, 0, n).unwrap();
            let (loss, count) = masked_cross_entropy(logits.as_tensor(), &t, &m).unwrap();
            let grad = loss
                .backward()
                .unwrap()
                .get(logits.as_tensor())
                .unwrap()
                .clone();
            (loss.to_scalar::<f32>().unwrap(), count, grad)
        };
        let (loss_full, count_full, grad_full) = run(&full, 3);
        let (loss_part, count_part, grad_part) = run(&part, 4);
        assert_eq!((count_full, count_part), (6, 6));
        assert_eq!(loss_full.to_bits(), loss_part.to_bits());
        let bits = |t: &Tensor| -> Vec<u32> {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        assert_eq!(bits(&grad_full), bits(&grad_part.narrow(1, 0, 3).unwrap()));
    }

    #[test]
    fn empty_mask_gives_zero_and_bad_inputs_are_named() {
        let dev = Device::Cpu;
        let logits = example(&dev);
        let targets = Tensor::new(&[[2u32, 0]], &dev).unwrap();
        let mask = Tensor::zeros((1, 2), DType::F32, &dev).unwrap();
        let (loss, count) = masked_cross_entropy(&logits, &targets, &mask).unwrap();
        assert_eq!((loss.to_scalar::<f32>().unwrap(), count), (0.0, 0));

        let bad = Tensor::new(&[[2u32, 3]], &dev).unwrap();
        let ones = Tensor::ones((1, 2), DType::F32, &dev).unwrap();
        let err = masked_cross_entropy(&logits, &bad, &ones)
            .unwrap_err()
            .to_string();
        assert!(err.contains("target id 3 at [0, 1]"), "{err}");
        let err = masked_cross_entropy(&logits, &bad.t().unwrap(), &ones)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected both [1, 2]"), "{err}");
    }
}
