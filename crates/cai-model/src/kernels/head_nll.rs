//! The output layer and the token log-likelihood (or a distillation KL against a teacher's
//! distribution) in one op, in chunks of rows: the
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

use crate::kernels::bf16::{self, Weight};
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
            target: Target::Hard {
                targets: targets.to_vec(),
                weights: weights.to_vec(),
            },
            chunk: chunk.max(1),
            stats: Mutex::new(Vec::new()),
            argmax: None,
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

/// `out[r] = KL(p_r ‖ softmax(hidden[r] · Wᵀ))` over the whole vocabulary, with `p_r` the
/// distribution whose log-probabilities are row `r` of `log_p` (a teacher's): the distillation
/// loss, differentiable with respect to `hidden` and `weight`, chunked as [`head_nll`] is.
/// Also returns each row's most likely token under the student (for top-1 agreement).
///
/// Shapes: hidden `[n, h]`, weight `[V, h]`, log_p `[n, V]` -> (`[n]` f32, `n` ids). On the CPU
/// in f32 only (other devices compose the ops from the logits).
pub fn head_kl(hidden: &Tensor, weight: &Tensor, log_p: &Tensor) -> Result<(Tensor, Vec<u32>)> {
    head_kl_chunked(hidden, weight, log_p, chunk_rows(weight.dim(0)?))
}

/// [`head_kl`] with `chunk` rows of logits at a time.
fn head_kl_chunked(
    hidden: &Tensor,
    weight: &Tensor,
    log_p: &Tensor,
    chunk: usize,
) -> Result<(Tensor, Vec<u32>)> {
    let (n, h) = hidden.dims2()?;
    let (vocab, h2) = weight.dims2()?;
    if h != h2 || log_p.dims() != [n, vocab] {
        return Err(ModelError::Request(format!(
            "head_kl: hidden is [{n}, {h}], the output layer [{vocab}, {h2}] and the teacher's \
             log-probs {:?}; expected equal widths and [{n}, {vocab}]",
            log_p.dims()
        )));
    }
    let cpu_f32 = [hidden, weight, log_p]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32);
    if !cpu_f32 {
        return Err(ModelError::Request(
            "head_kl: runs on f32 CPU tensors; compose the loss from the logits elsewhere".into(),
        ));
    }
    if n == 0 {
        return Ok((Tensor::zeros(0, DType::F32, hidden.device())?, Vec::new()));
    }
    let argmax = std::sync::Arc::new(Mutex::new(Vec::new()));
    let op = HeadNll {
        target: Target::Soft {
            log_p: log_p.contiguous()?.detach(),
        },
        chunk: chunk.max(1),
        stats: Mutex::new(Vec::new()),
        argmax: Some(argmax.clone()),
    };
    let kl = hidden.contiguous()?.apply_op2(&weight.contiguous()?, op)?;
    let ids = std::mem::take(&mut *argmax.lock().unwrap_or_else(|e| e.into_inner()));
    Ok((kl, ids))
}

/// Inference only: each row's log-probability of its target token and, when asked, the entropy
/// of its whole distribution, through the output layer a chunk of rows at a time — the
/// `[n, V]` logits never exist (805 MB for the 4,096 response tokens of a SmolLM2 rollout).
///
/// Shapes: hidden `[n, h]`, weight `[V, h]` (f32, CPU), `n` targets -> (`n` log-probs,
/// `n` entropies in nats when `with_entropy`).
pub fn head_log_probs(
    hidden: &Tensor,
    weight: &Tensor,
    targets: &[u32],
    with_entropy: bool,
) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
    let (n, h) = hidden.dims2()?;
    let (vocab, h2) = weight.dims2()?;
    if h != h2 || targets.len() != n {
        return Err(ModelError::Request(format!(
            "head_log_probs: hidden is [{n}, {h}] and the output layer [{vocab}, {h2}] with {} \
             targets; expected equal widths and {n} targets",
            targets.len()
        )));
    }
    if let Some(&bad) = targets.iter().find(|&&t| t as usize >= vocab) {
        return Err(ModelError::Request(format!(
            "head_log_probs: target id {bad} is outside the vocabulary of {vocab}"
        )));
    }
    let cpu_f32 = [hidden, weight]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32);
    if !cpu_f32 {
        return Err(ModelError::Request(
            "head_log_probs: runs on f32 CPU tensors".into(),
        ));
    }
    let hs: Vec<f32> = hidden.flatten_all()?.to_vec1()?;
    let w = weight.contiguous()?;
    let step = chunk_rows(vocab);
    let mut logits = vec![0f32; step.min(n) * vocab];
    let mut log_probs = Vec::with_capacity(n);
    let mut entropies = Vec::with_capacity(if with_entropy { n } else { 0 });
    with_f32(&w, "weight", |w| {
        for r0 in (0..n).step_by(step) {
            let rows = step.min(n - r0);
            let buf = &mut logits[..rows * vocab];
            matmul(buf, &hs[r0 * h..], false, w, true, rows, vocab, h, false);
            let stats: Vec<(f32, f32)> = buf
                .par_chunks_exact_mut(vocab)
                .enumerate()
                .map(|(i, row)| {
                    let (max, lse) = row_stats(row);
                    let lp = row[targets[r0 + i] as usize] - max - lse;
                    // H = −Σ q (l − max − lse) = lse − Σ e^{l−max} (l − max) / Σ e^{l−max}
                    let entropy = if with_entropy {
                        row.iter_mut().for_each(|v| *v -= max);
                        let (mut num, mut den) = (0f64, 0f64);
                        for &v in row.iter() {
                            let e = (v as f64).exp();
                            num += e * v as f64;
                            den += e;
                        }
                        ((den.ln() - num / den) as f32).max(0.0)
                    } else {
                        0.0
                    };
                    (lp, entropy)
                })
                .collect();
            for (lp, entropy) in stats {
                log_probs.push(lp);
                if with_entropy {
                    entropies.push(entropy);
                }
            }
        }
        Ok(())
    })?;
    Ok((log_probs, with_entropy.then_some(entropies)))
}

/// What each row of logits is compared with.
enum Target {
    /// One token per row, its loss weighted: `−w_r log q_r(t_r)`.
    Hard {
        targets: Vec<u32>,
        weights: Vec<f32>,
    },
    /// A distribution per row, as log-probabilities `[n, V]`: `KL(p_r ‖ q_r)`.
    Soft { log_p: Tensor },
}

/// The chunked CPU op behind [`head_nll`] and [`head_kl`].
struct HeadNll {
    target: Target,
    /// Rows of logits computed at once.
    chunk: usize,
    /// Each row's (max, log-sum-exp), saved by the forward pass for the backward pass.
    stats: Mutex<Vec<(f32, f32)>>,
    /// Where the forward pass leaves each row's argmax, when asked.
    argmax: Option<std::sync::Arc<Mutex<Vec<u32>>>>,
}

/// The f32 elements of a contiguous CPU tensor, with the storage guard that keeps them alive.
fn with_f32<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("head-nll: {what} is not on the CPU");
    };
    f(contiguous_f32(cpu, layout, "head-nll", what)?)
}

/// `Σ_v p_v (log p_v − log q_v)` for one row, with `log q = logits − max − lse`.
fn row_kl(logits: &[f32], log_p: &[f32], max: f32, lse: f32) -> f32 {
    let shift = max + lse;
    let mut acc = 0f64;
    for (&l, &lp) in logits.iter().zip(log_p) {
        if lp > f32::NEG_INFINITY {
            acc += (lp.exp() * (lp - (l - shift))) as f64;
        }
    }
    acc as f32
}

/// The first index of a row's largest value.
fn row_argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
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

/// The output layer in bf16 for the training op's products inside an autocast scope
/// ([`crate::autocast`]; AMX, a vocabulary and width that are multiples of 32), else `None`.
/// Shapes: w `[V, h]` -> bf16 `[V, h]`.
fn bf16_head(w: &[f32], vocab: usize, h: usize) -> Option<Vec<u16>> {
    (crate::autocast::bf16_training_products() && bf16::train::handles(vocab, h))
        .then(|| bf16::train::rounded(w))
}

/// Rows per chunk for a product in bf16: a multiple of 32, the width its weight gradient sums
/// over without padding.
fn bf16_step(chunk: usize) -> usize {
    (chunk / 32).max(1) * 32
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
        let head = bf16_head(w, vocab, h);
        let step = match head {
            Some(_) => bf16_step(self.chunk),
            None => self.chunk,
        };
        let mut logits = vec![0f32; step.min(n) * vocab];
        let mut stats = Vec::with_capacity(n);
        let mut out = Vec::with_capacity(n);
        let mut argmax = Vec::new();
        let soft = match &self.target {
            Target::Soft { log_p } => Some(log_p),
            Target::Hard { .. } => None,
        };
        for r0 in (0..n).step_by(step) {
            let rows = step.min(n - r0);
            let buf = &mut logits[..rows * vocab];
            let h_chunk = &hs[r0 * h..(r0 + rows) * h];
            match &head {
                Some(wb) => {
                    let wb = Weight {
                        data: wb,
                        n: vocab,
                        k: h,
                    };
                    bf16::train::product_into(h_chunk, rows, wb, buf, false);
                }
                None => matmul(buf, h_chunk, false, w, true, rows, vocab, h, false),
            }
            let chunk: Vec<(f32, f32)> = buf.par_chunks_exact(vocab).map(row_stats).collect();
            match (&self.target, soft) {
                (Target::Hard { targets, weights }, _) => {
                    for (i, (&(max, lse), row)) in
                        chunk.iter().zip(buf.chunks_exact(vocab)).enumerate()
                    {
                        let r = r0 + i;
                        let t = targets[r] as usize;
                        out.push(-weights[r] * (row[t] - max - lse));
                    }
                }
                (Target::Soft { .. }, Some(log_p)) => with_f32(log_p, "log_p", |lp| {
                    let lp = &lp[r0 * vocab..(r0 + rows) * vocab];
                    let kl: Vec<f32> = buf
                        .par_chunks_exact(vocab)
                        .zip(lp.par_chunks_exact(vocab))
                        .zip(chunk.par_iter())
                        .map(|((row, p), &(max, lse))| row_kl(row, p, max, lse))
                        .collect();
                    out.extend(kl);
                    Ok(())
                })?,
                (Target::Soft { .. }, None) => unreachable!("soft targets carry log_p"),
            }
            if self.argmax.is_some() {
                argmax.extend(buf.chunks_exact(vocab).map(row_argmax));
            }
            stats.extend(chunk);
        }
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = stats;
        if let Some(slot) = &self.argmax {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = argmax;
        }
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
        // In bf16 the weight in both layouts: `[V, h]` for the logits, `[h, V]` for `∂h`.
        let head =
            bf16_head(w, vocab, h).map(|wb| (wb, bf16::train::transposed(w, vocab, h, vocab)));
        let step = match head {
            Some(_) => bf16_step(self.chunk),
            None => self.chunk,
        };
        let mut d = vec![0f32; step.min(n) * vocab];
        let mut dh = vec![0f32; n * h];
        // A frozen output layer (LoRA training, a reference) gets no gradient: skip its GEMMs.
        let want_dw = weight.track_op();
        let mut dw = vec![0f32; if want_dw { vocab * h } else { 0 }];
        for r0 in (0..n).step_by(step) {
            let rows = step.min(n - r0);
            let buf = &mut d[..rows * vocab];
            let h_chunk = &hs[r0 * h..(r0 + rows) * h];
            match &head {
                Some((wb, _)) => {
                    let wb = Weight {
                        data: wb,
                        n: vocab,
                        k: h,
                    };
                    bf16::train::product_into(h_chunk, rows, wb, buf, false);
                }
                None => matmul(buf, h_chunk, false, w, true, rows, vocab, h, false),
            }
            // d = g_r · w_r · (q − onehot(t_r))   or   g_r · (q − p_r)
            let softmax = |i: usize, row: &mut [f32]| {
                let r = r0 + i;
                let (max, lse) = match saved.get(r) {
                    Some(&s) if saved.len() == n => s,
                    _ => row_stats(row),
                };
                vector::exp_shifted_sum(row, max + lse);
            };
            match &self.target {
                Target::Hard { targets, weights } => buf
                    .par_chunks_exact_mut(vocab)
                    .enumerate()
                    .for_each(|(i, row)| {
                        softmax(i, row);
                        let r = r0 + i;
                        let scale = gs[r] * weights[r];
                        row.iter_mut().for_each(|v| *v *= scale);
                        row[targets[r] as usize] -= scale;
                    }),
                Target::Soft { log_p } => with_f32(log_p, "log_p", |lp| {
                    let lp = &lp[r0 * vocab..(r0 + rows) * vocab];
                    buf.par_chunks_exact_mut(vocab)
                        .zip(lp.par_chunks_exact(vocab))
                        .enumerate()
                        .for_each(|(i, (row, p))| {
                            softmax(i, row);
                            // ∂/∂logits of Σ p (log p − log q) is q Σp − p (Σp = 1 for a
                            // normalised teacher).
                            let mass = vector::sum_exp_shifted(p, 0.0) as f32;
                            let scale = gs[r0 + i];
                            for (v, &lpv) in row.iter_mut().zip(p) {
                                *v = scale * (*v * mass - lpv.exp());
                            }
                        });
                    Ok(())
                })?,
            }
            let dh_chunk = &mut dh[r0 * h..(r0 + rows) * h];
            if let Some((_, wt)) = &head {
                // ∂h[chunk] = d · W, as d (Wᵀ)ᵀ; ∂W += dᵀ · h[chunk], as dᵀ (h[chunk]ᵀ)ᵀ with
                // the rows padded to 32.
                let wt = Weight {
                    data: wt,
                    n: h,
                    k: vocab,
                };
                bf16::train::product_into(buf, rows, wt, dh_chunk, false);
                if want_dw {
                    let padded = rows.next_multiple_of(32);
                    let ht = bf16::train::transposed(h_chunk, rows, h, padded);
                    let ht = Weight {
                        data: &ht,
                        n: h,
                        k: padded,
                    };
                    bf16::train::product_k_major_into(buf, (rows, vocab), ht, &mut dw, r0 > 0);
                }
                continue;
            }
            // ∂h[chunk] = d · W   ([rows, V] · [V, h])
            matmul(dh_chunk, buf, false, w, false, rows, h, vocab, false);
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

    /// Hidden states `[n, h]` and an output layer `[vocab, h]` (both variables), targets,
    /// row weights, and a probe `[n]` for the gradients.
    fn hard_case(n: usize, h: usize, vocab: usize) -> (Var, Var, Vec<u32>, Vec<f32>, Tensor) {
        let dev = Device::Cpu;
        let hv = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, h), &dev).unwrap()).unwrap();
        let wv = Var::from_tensor(&Tensor::randn(0f32, 0.5, (vocab, h), &dev).unwrap()).unwrap();
        let targets: Vec<u32> = (0..n as u32).map(|i| (i * 7919) % vocab as u32).collect();
        let weights: Vec<f32> = (0..n).map(|i| [1.0, 0.5, 2.0][i % 3]).collect();
        let g = Tensor::randn(0f32, 1.0, n, &dev).unwrap();
        (hv, wv, targets, weights, g)
    }

    /// Inside a `Bf16Matmuls` scope (AMX): loss and both gradients stay within bf16 rounding
    /// of the f32 op's, over several chunks (a ragged last one, the `∂W` accumulation across
    /// chunks), and differ from them; without AMX they are the f32 op's.
    #[test]
    fn bf16_products_stay_near_f32() {
        let (n, h, vocab, chunk) = (75, 64, 96, 32);
        let (hv, wv, targets, weights, g) = hard_case(n, h, vocab);
        crate::test_util::assert_autocast_near_f32(
            || {
                let out =
                    head_nll_chunked(hv.as_tensor(), wv.as_tensor(), &targets, &weights, chunk)
                        .unwrap();
                let grads = (&out * &g).unwrap().sum_all().unwrap().backward().unwrap();
                vec![
                    out,
                    grads.get(hv.as_tensor()).unwrap().clone(),
                    grads.get(wv.as_tensor()).unwrap().clone(),
                ]
            },
            0.03,
        );
    }

    /// Loss and both gradients of `sum(out · g)` agree with the composed ops, over more rows
    /// than one chunk holds (so chunk boundaries and the `∂W` accumulation are exercised).
    #[test]
    fn matches_the_composed_ops_in_value_and_gradients() {
        // Chunks of 8 rows: four full chunks and a ragged one.
        let (n, h, vocab, chunk) = (37, 24, 300, 8);
        let (hv, wv, targets, weights, g) = hard_case(n, h, vocab);

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
            let scale = crate::test_util::max_abs(c);
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

    /// The KL against a teacher's distribution and its gradients agree with the composed ops
    /// (`Σ p (log p − log_softmax(h Wᵀ))`), across chunks; argmaxes are the logits' argmaxes.
    #[test]
    fn kl_matches_the_composed_ops_in_value_and_gradients() {
        let dev = Device::Cpu;
        // Chunks of 8 rows: four full chunks and a ragged one.
        let (n, h, vocab) = (37, 16, 4000);
        let hv = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, h), &dev).unwrap()).unwrap();
        let wv = Var::from_tensor(&Tensor::randn(0f32, 0.5, (vocab, h), &dev).unwrap()).unwrap();
        let teacher = Tensor::randn(0f32, 2.0, (n, vocab), &dev).unwrap();
        let mut log_p = candle_nn::ops::log_softmax(&teacher, D::Minus1).unwrap();
        // A teacher certain of nothing at one token: log p = −∞ contributes 0.
        let mut lp: Vec<f32> = log_p.flatten_all().unwrap().to_vec1().unwrap();
        lp[5] = f32::NEG_INFINITY;
        log_p = Tensor::from_vec(lp, (n, vocab), &dev).unwrap();
        let probe = Tensor::randn(0f32, 1.0, n, &dev).unwrap();

        let (fused, ids) = head_kl_chunked(hv.as_tensor(), wv.as_tensor(), &log_p, 8).unwrap();
        let logits = hv.as_tensor().matmul(&wv.as_tensor().t().unwrap()).unwrap();
        let log_q = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
        let p = log_p.exp().unwrap();
        let finite_lp = log_p.clamp(-1e30f32, 0f32).unwrap();
        let plain = (p * (finite_lp - &log_q).unwrap()).unwrap().sum(1).unwrap();
        assert!(
            max_diff(&fused, &plain) < 1e-4,
            "{}",
            max_diff(&fused, &plain)
        );
        let want_ids: Vec<u32> = logits.argmax(D::Minus1).unwrap().to_vec1().unwrap();
        assert_eq!(ids, want_ids);

        let gf = (fused * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gp = (plain * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&hv, &wv] {
            let want = gp.get(v.as_tensor()).unwrap();
            let d = max_diff(gf.get(v.as_tensor()).unwrap(), want);
            let scale = want
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                d < 1e-4 * scale.max(1.0),
                "gradient differs by {d} (largest {scale})"
            );
        }
        // Mismatched shapes are errors naming them.
        let err = head_kl(
            hv.as_tensor(),
            wv.as_tensor(),
            &log_p.narrow(0, 0, 3).unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("[37, 4000]"), "{err}");
    }

    /// Log-probabilities and entropies agree with the full log-softmax, over several chunks.
    #[test]
    fn inference_log_probs_and_entropies_match_the_log_softmax() {
        let dev = Device::Cpu;
        let (n, h, vocab) = (9, 8, 70_000);
        let hs = Tensor::randn(0f32, 1.0, (n, h), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.7, (vocab, h), &dev).unwrap();
        let targets: Vec<u32> = (0..n as u32).map(|i| i * 6007 % vocab as u32).collect();
        let (lp, ent) = head_log_probs(&hs, &w, &targets, true).unwrap();
        let logits = hs.matmul(&w.t().unwrap()).unwrap();
        let log_q = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
        let rows: Vec<Vec<f32>> = log_q.to_vec2().unwrap();
        for (r, row) in rows.iter().enumerate() {
            assert!((lp[r] - row[targets[r] as usize]).abs() < 1e-4, "row {r}");
            let want: f32 = -row.iter().map(|&l| l.exp() * l).sum::<f32>();
            let got = ent.as_ref().unwrap()[r];
            assert!((got - want).abs() < 1e-3 * want.max(1.0), "{got} vs {want}");
        }
        let (_, none) = head_log_probs(&hs, &w, &targets, false).unwrap();
        assert!(none.is_none());
        assert!(head_log_probs(&hs, &w, &[vocab as u32; 9], false).is_err());
    }
}
