//! The output layer and the token log-likelihood in one op, in chunks of rows: the
//! `[rows, vocab]` logits of a whole batch (400 MB for 2,048 tokens of a 49,152-token
//! vocabulary) never exist at once, in the forward or the backward pass.
//!
//! Forward: per chunk of rows, `logits = h Wᵀ`, then each row's max and log-sum-exp and
//! `−w_r · (logits[t_r] − max − lse)`. Backward: per chunk, the logits are recomputed,
//! `d = g_r · w_r · (softmax − onehot(t_r))` is formed in place, and `∂h = d W`,
//! `∂W += dᵀ h` — one more `h Wᵀ` than an unfused head, and none of its `[rows, vocab]`
//! copies (selection, gradient, scatter).

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use crate::kernels::cpu_storage::contiguous_f32;
use crate::kernels::dense::{self, Mat};
use crate::kernels::vector;
use crate::{ModelError, Result};

/// Bytes of logits one chunk may hold; rows per chunk follow from the vocabulary.
pub const CHUNK_BYTES: usize = 32 << 20;

/// `out[r] = −weights[r] · log softmax(hidden[r] · Wᵀ)[targets[r]]`, differentiable with respect
/// to `hidden` and `weight`.
///
/// Shapes: hidden `[n, h]`, weight `[V, h]` (the output layer, `[out, in]`) -> `[n]` f32.
/// On the CPU in f32 it runs chunked (see the module docs); elsewhere, and for other dtypes,
/// through the composed ops (the full logits, in f32).
pub fn head_nll(
    hidden: &Tensor,
    weight: &Tensor,
    targets: &[u32],
    weights: &[f32],
) -> Result<Tensor> {
    let chunk = chunk_rows(weight.dim(0)?);
    head_nll_chunked(hidden, weight, targets, weights, chunk)
}

/// [`head_nll`] with `chunk` rows of logits at a time on the CPU.
fn head_nll_chunked(
    hidden: &Tensor,
    weight: &Tensor,
    targets: &[u32],
    weights: &[f32],
    chunk: usize,
) -> Result<Tensor> {
    let (n, h) = hidden.dims2()?;
    let (vocab, h2) = weight.dims2()?;
    if h != h2 || targets.len() != n || weights.len() != n {
        return Err(ModelError::Request(format!(
            "head_nll: hidden is [{n}, {h}] and the output layer [{vocab}, {h2}] with {} \
             targets and {} weights; expected equal widths and {n} of each",
            targets.len(),
            weights.len()
        )));
    }
    if let Some(&bad) = targets.iter().find(|&&t| t as usize >= vocab) {
        return Err(ModelError::Request(format!(
            "head_nll: target id {bad} is outside the vocabulary of {vocab}"
        )));
    }
    let device = hidden.device();
    if n == 0 {
        return Ok(Tensor::zeros(0, DType::F32, device)?);
    }
    if device.is_cpu() && hidden.dtype() == DType::F32 && weight.dtype() == DType::F32 {
        let op = HeadNll {
            targets: targets.to_vec(),
            weights: weights.to_vec(),
            chunk: chunk.max(1),
            stats: Mutex::new(Vec::new()),
        };
        return Ok(hidden.contiguous()?.apply_op2(&weight.contiguous()?, op)?);
    }
    let logits = hidden.matmul(&weight.t()?)?.to_dtype(DType::F32)?;
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let picked = Tensor::from_vec(targets.to_vec(), (n, 1), device)?;
    let logp = (shifted.gather(&picked, 1)? - lse)?.squeeze(1)?;
    let w = Tensor::from_vec(weights.to_vec(), n, device)?;
    Ok((logp * w)?.neg()?)
}

/// The chunked CPU op behind [`head_nll`].
struct HeadNll {
    targets: Vec<u32>,
    weights: Vec<f32>,
    /// Rows of logits computed at once.
    chunk: usize,
    /// Each row's (max, log-sum-exp), saved by the forward pass for the backward pass.
    stats: Mutex<Vec<(f32, f32)>>,
}

/// Rows per chunk for a vocabulary of `vocab`.
fn chunk_rows(vocab: usize) -> usize {
    (CHUNK_BYTES / (4 * vocab.max(1))).max(8)
}

/// `dst[m, n] (+)= a[m, k] · b` where `b` is `[k, n]` row-major (`b_t == false`) or the
/// transpose of a row-major `[n, k]` (`b_t == true`); `a_t` likewise for `a` (`[k, m]`
/// row-major when true). All slices are dense.
#[allow(clippy::too_many_arguments)]
fn matmul(
    dst: &mut [f32],
    a: &[f32],
    a_t: bool,
    b: &[f32],
    b_t: bool,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) {
    let a = if a_t {
        Mat::transposed(a, m)
    } else {
        Mat::rows(a, k)
    };
    let b = if b_t {
        Mat::transposed(b, k)
    } else {
        Mat::rows(b, n)
    };
    let threads = rayon::current_num_threads();
    dense::gemm(dst, n, a, b, m, n, k, 1.0, accumulate, threads);
}

/// A row's max and log-sum-exp.
fn row_stats(row: &[f32]) -> (f32, f32) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (max, vector::sum_exp_shifted(row, max).ln() as f32)
}

impl CustomOp2 for HeadNll {
    fn name(&self) -> &'static str {
        "head-nll"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let hs = contiguous_f32(s1, l1, self.name(), "hidden")?;
        let w = contiguous_f32(s2, l2, self.name(), "weight")?;
        let (n, h) = l1.shape().dims2()?;
        let vocab = l2.shape().dims2()?.0;
        let step = self.chunk;
        let mut logits = vec![0f32; step.min(n) * vocab];
        let mut stats = Vec::with_capacity(n);
        let mut out = Vec::with_capacity(n);
        for r0 in (0..n).step_by(step) {
            let rows = step.min(n - r0);
            let buf = &mut logits[..rows * vocab];
            matmul(buf, &hs[r0 * h..], false, w, true, rows, vocab, h, false);
            let chunk: Vec<(f32, f32)> = buf.par_chunks_exact(vocab).map(row_stats).collect();
            for (i, (&(max, lse), row)) in chunk.iter().zip(buf.chunks_exact(vocab)).enumerate() {
                let r = r0 + i;
                let t = self.targets[r] as usize;
                out.push(-self.weights[r] * (row[t] - max - lse));
            }
            stats.extend(chunk);
        }
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = stats;
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    fn bwd(
        &self,
        hidden: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, h) = hidden.dims2()?;
        let (vocab, _) = weight.dims2()?;
        let hs: Vec<f32> = hidden.flatten_all()?.to_vec1()?;
        let gs: Vec<f32> = grad.to_dtype(DType::F32)?.to_vec1()?;
        let (w_storage, w_layout) = weight.storage_and_layout();
        let candle_core::Storage::Cpu(w_cpu) = &*w_storage else {
            candle_core::bail!("head-nll: the output layer is not on the CPU");
        };
        let w = contiguous_f32(w_cpu, w_layout, self.name(), "weight")?;
        let saved = self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let step = self.chunk;
        let mut d = vec![0f32; step.min(n) * vocab];
        let mut dh = vec![0f32; n * h];
        // A frozen output layer (LoRA training, a reference) gets no gradient: skip its GEMMs.
        let want_dw = weight.track_op();
        let mut dw = vec![0f32; if want_dw { vocab * h } else { 0 }];
        for r0 in (0..n).step_by(step) {
            let rows = step.min(n - r0);
            let buf = &mut d[..rows * vocab];
            let h_chunk = &hs[r0 * h..(r0 + rows) * h];
            matmul(buf, h_chunk, false, w, true, rows, vocab, h, false);
            buf.par_chunks_exact_mut(vocab)
                .enumerate()
                .for_each(|(i, row)| {
                    let r = r0 + i;
                    let (max, lse) = match saved.get(r) {
                        Some(&s) if saved.len() == n => s,
                        _ => row_stats(row),
                    };
                    let scale = gs[r] * self.weights[r];
                    vector::exp_shifted_sum(row, max + lse);
                    row.iter_mut().for_each(|v| *v *= scale);
                    row[self.targets[r] as usize] -= scale;
                });
            // ∂h[chunk] = d · W   ([rows, V] · [V, h])
            matmul(
                &mut dh[r0 * h..(r0 + rows) * h],
                buf,
                false,
                w,
                false,
                rows,
                h,
                vocab,
                false,
            );
            // ∂W += dᵀ · h[chunk]   ([V, rows] · [rows, h])
            if want_dw {
                matmul(&mut dw, buf, true, h_chunk, false, vocab, h, rows, r0 > 0);
            }
        }
        drop(w_storage);
        let device = hidden.device();
        Ok((
            Some(Tensor::from_vec(dh, (n, h), device)?),
            want_dw
                .then(|| Tensor::from_vec(dw, (vocab, h), device))
                .transpose()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The same loss through the full logits and candle's ops.
    fn reference(h: &Tensor, w: &Tensor, targets: &[u32], weights: &[f32]) -> Tensor {
        let n = targets.len();
        let logits = h.matmul(&w.t().unwrap()).unwrap();
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
        let idx = Tensor::from_vec(targets.to_vec(), (n, 1), h.device()).unwrap();
        let picked = logp.gather(&idx, 1).unwrap().squeeze(1).unwrap();
        let wt = Tensor::from_vec(weights.to_vec(), n, h.device()).unwrap();
        (picked * wt).unwrap().neg().unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        crate::test_util::max_abs_diff(a, b)
    }

    /// Loss and both gradients of `sum(out · g)` agree with the composed ops, over more rows
    /// than one chunk holds (so chunk boundaries and the `∂W` accumulation are exercised).
    #[test]
    fn matches_the_composed_ops_in_value_and_gradients() {
        let dev = Device::Cpu;
        // Chunks of 8 rows: four full chunks and a ragged one.
        let (n, h, vocab, chunk) = (37, 24, 300, 8);
        let hv = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, h), &dev).unwrap()).unwrap();
        let wv = Var::from_tensor(&Tensor::randn(0f32, 0.5, (vocab, h), &dev).unwrap()).unwrap();
        let targets: Vec<u32> = (0..n as u32).map(|i| (i * 7919) % vocab as u32).collect();
        let weights: Vec<f32> = (0..n).map(|i| [1.0, 0.5, 2.0][i % 3]).collect();
        let g = Tensor::randn(0f32, 1.0, n, &dev).unwrap();

        let fused =
            head_nll_chunked(hv.as_tensor(), wv.as_tensor(), &targets, &weights, chunk).unwrap();
        let composed = reference(hv.as_tensor(), wv.as_tensor(), &targets, &weights);
        assert!(
            max_diff(&fused, &composed) < 1e-4,
            "{}",
            max_diff(&fused, &composed)
        );

        let grads_f = (fused * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let grads_c = (composed * &g)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for var in [&hv, &wv] {
            let (f, c) = (
                grads_f.get(var.as_tensor()).expect("fused gradient"),
                grads_c.get(var.as_tensor()).expect("composed gradient"),
            );
            let scale = c
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(scale > 0.0);
            assert!(max_diff(f, c) < 1e-5 + 1e-4 * scale, "{}", max_diff(f, c));
        }

        // A frozen output layer: the same ∂h, and no gradient for it.
        let frozen = wv.as_tensor().detach();
        let out = head_nll_chunked(hv.as_tensor(), &frozen, &targets, &weights, chunk).unwrap();
        let grads = (out * &g).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&frozen).is_none());
        let dh = grads.get(hv.as_tensor()).expect("∂h");
        assert!(max_diff(dh, grads_c.get(hv.as_tensor()).unwrap()) < 1e-4);
    }

    #[test]
    fn bad_targets_and_shapes_are_errors_naming_them() {
        let dev = Device::Cpu;
        let h = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((5, 4), DType::F32, &dev).unwrap();
        let err = head_nll(&h, &w, &[0, 5], &[1.0, 1.0])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("target id 5") && err.contains("vocabulary of 5"),
            "{err}"
        );
        let err = head_nll(&h, &w, &[0], &[1.0]).unwrap_err().to_string();
        assert!(err.contains("1 targets"), "{err}");
        let empty = Tensor::zeros((0, 4), DType::F32, &dev).unwrap();
        assert_eq!(head_nll(&empty, &w, &[], &[]).unwrap().dims(), [0]);
    }
}
