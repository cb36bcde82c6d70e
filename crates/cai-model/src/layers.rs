//! The decoder's building blocks — linear, embedding, RMSNorm/LayerNorm, rotary embeddings —
//! each with a fused inference path and a differentiable training path.
//!
//! candle-nn's fused `rms_norm`, `layer_norm`, `softmax_last_dim` and `rope` have no backward
//! pass: gradients silently stop there. [`Mode::Train`] therefore uses compositions of
//! differentiable ops; [`Mode::Infer`] uses the fused kernels. A test checks both agree.

use std::sync::{Arc, RwLock};

use candle_core::{DType, Device, Tensor, D};

use crate::config::{Llama3RopeScaling, RopeScaling};
use crate::kernels::bf16::Bf16Matmul;
use crate::kernels::linear_matmul::LinearMatmul;
use crate::kernels::linear_train::LinearTrain;
use crate::kernels::small_matmul::{self, SmallMatmul, SmallMatmulT};
use crate::lora::LoraAdapter;
use crate::Result;

/// Which kernels a forward pass may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fused kernels without backward: generation and scoring. Nothing is recorded for
    /// backprop, even over trainable parameters.
    Infer,
    /// Differentiable ops only: every parameter receives its gradient.
    Train,
}

/// `y = x Wᵀ + b` with `W` stored `[out, in]` (GPT-2's Conv1D `[in, out]` is transposed on load),
/// plus `scale · dropout(x) Aᵀ Bᵀ` when a LoRA adapter is installed and switched on.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Tensor,
    /// `[out]`.
    pub bias: Option<Tensor>,
    /// A LoRA adapter on top of the frozen weight (see [`crate::lora`]).
    pub lora: Option<LoraAdapter>,
}

impl Linear {
    /// A plain layer without an adapter.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight,
            bias,
            lora: None,
        }
    }

    /// Inference forward: an adapter applies without dropout.
    /// Shapes: x `[.., in]` -> `[.., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_mode(x, Mode::Infer)
    }

    /// Forward in `mode`: the base path picks its kernel as [`Linear::forward`] does; in
    /// [`Mode::Train`] an adapter's input dropout applies. Shapes: x `[.., in]` -> `[.., out]`.
    pub fn forward_mode(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        if mode == Mode::Train && train_kernel(x, &self.weight) {
            // One graph node instead of four (see `LinearTrain`); a frozen weight gets no
            // gradient. A LoRA layer's base product takes the same op, so switching adapters
            // off gives the plain layer's values bit for bit.
            let mut y = x.contiguous()?.apply_op2(&self.weight, LinearTrain)?;
            if let Some(b) = &self.bias {
                y = y.broadcast_add(b)?;
            }
            if let Some(lora) = &self.lora {
                let dims = y.dims().to_vec();
                let (in_dim, out_dim) = (x.dim(D::Minus1)?, y.dim(D::Minus1)?);
                let rows = y.elem_count() / out_dim.max(1);
                let x2 = x.reshape((rows, in_dim))?;
                y = lora
                    .add_delta(&x2, y.reshape((rows, out_dim))?, mode)?
                    .reshape(dims)?;
            }
            return Ok(y);
        }
        let dims = x.dims().to_vec();
        let in_dim = *dims.last().expect("rank >= 1");
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let x2 = x.reshape((rows, in_dim))?;
        // Inference records nothing for backprop, even over trainable weights (a rollout, an
        // evaluation, sampling from the model being trained): a recorded op would keep every
        // layer's activations alive until the output is dropped, and a tracked weight or input
        // would keep the product off the few-row kernels.
        let (x2, weight, bias) = match mode {
            Mode::Infer => (
                x2.detach(),
                self.weight.detach(),
                self.bias.as_ref().map(Tensor::detach),
            ),
            Mode::Train => (x2, self.weight.clone(), self.bias.clone()),
        };
        let bf16_weight = mode == Mode::Infer
            && x2.device().is_cpu()
            && x2.dtype() == DType::F32
            && weight.dtype() == DType::BF16;
        let mut y = match small_matmul_kind(&x2, &weight) {
            // bf16 weights under f32 activations (`Decoder::prepare_for_bf16_inference`).
            _ if bf16_weight => x2
                .contiguous()?
                .apply_op2_no_bwd(&weight.contiguous()?, &Bf16Matmul)?,
            Some(WeightLayout::OutIn) => {
                x2.contiguous()?.apply_op2_no_bwd(&weight, &SmallMatmul)?
            }
            Some(WeightLayout::InOut) => x2
                .contiguous()?
                .apply_op2_no_bwd(&weight.t()?, &SmallMatmulT)?,
            // On the CPU in f32 one op each way (see `LinearMatmul`); in inference, or over a
            // frozen weight (LoRA's base, or a model no parameter of which trains), no
            // gradient for the weight. `track_op` is false only for a tensor that is neither a
            // variable nor made from one. A trainable weight in training keeps candle's
            // matmul: through this op its backward measured slower and ~20 % larger (bench-6m
            // train, 3,310 against 3,610 tok/s, 614 against 506 MiB).
            None if (mode == Mode::Infer || !weight.track_op())
                && x2.device().is_cpu()
                && x2.dtype() == DType::F32
                && weight.dtype() == DType::F32 =>
            {
                x2.apply_op2(&weight, LinearMatmul { weight_grad: false })?
            }
            // A weight in another dtype than the activations (a bf16 weight under f32
            // activations, trained after all) is converted.
            None if weight.dtype() != x2.dtype() => {
                x2.matmul(&weight.to_dtype(x2.dtype())?.t()?)?
            }
            None => x2.matmul(&weight.t()?)?,
        };
        if let Some(b) = &bias {
            y = y.broadcast_add(b)?;
        }
        if let Some(lora) = &self.lora {
            y = lora.add_delta(&x2, y, mode)?;
        }
        let mut out_dims = dims;
        *out_dims.last_mut().expect("rank >= 1") = self.weight.dim(0)?;
        Ok(y.reshape(out_dims)?)
    }
}

/// The hand-differentiated training kernels ([`LinearTrain`],
/// [`crate::kernels::mlp_block::SwiGluProj`]) serve f32 CPU training over a row-major
/// `[out, in]` weight.
pub(crate) fn train_kernel(x: &Tensor, w: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32 && w.is_contiguous()
}

/// How a weight `[out, in]` is laid out in memory.
enum WeightLayout {
    /// Row-major `[out, in]`, as loaded.
    OutIn,
    /// A transposed view of row-major `[in, out]` storage (after `prepare_for_inference`).
    InOut,
}

/// The few-row kernels serve f32 CPU inference; anything that tracks gradients, other dtypes
/// and devices, and large row counts go through candle's matmul.
fn small_matmul_kind(x: &Tensor, w: &Tensor) -> Option<WeightLayout> {
    let eligible = x.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && x.dim(0).is_ok_and(|m| m <= small_matmul::MAX_ROWS)
        && !x.track_op()
        && !w.track_op();
    if !eligible {
        None
    } else if w.is_contiguous() {
        Some(WeightLayout::OutIn)
    } else if w.t().is_ok_and(|t| t.is_contiguous()) {
        Some(WeightLayout::InOut)
    } else {
        None
    }
}

/// RMSNorm (`bias == None`) or LayerNorm (`bias == Some`).
#[derive(Debug, Clone)]
pub struct Norm {
    /// `[hidden]`.
    pub weight: Tensor,
    /// `[hidden]`, LayerNorm only.
    pub bias: Option<Tensor>,
    /// Epsilon inside the square root.
    pub eps: f64,
}

impl Norm {
    /// Shapes: x `[.., hidden]` -> `[.., hidden]`.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let eps = self.eps as f32;
        Ok(match (&self.bias, mode) {
            (None, Mode::Infer) => candle_nn::ops::rms_norm(x, &self.weight, eps)?,
            (None, Mode::Train) if fused_train_norm(x, &self.weight) => x
                .contiguous()?
                .apply_op2(&self.weight, crate::kernels::rms_norm::RmsNormOp { eps })?,
            (None, Mode::Train) => rms_norm_differentiable(x, &self.weight, self.eps)?,
            (Some(b), Mode::Infer) => candle_nn::ops::layer_norm(x, &self.weight, b, eps)?,
            (Some(b), Mode::Train) => layer_norm_differentiable(x, &self.weight, b, self.eps)?,
        })
    }
}

/// The hand-differentiated RMSNorm op serves f32 CPU training.
fn fused_train_norm(x: &Tensor, w: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32 && w.is_contiguous()
}

/// RMSNorm from differentiable ops, computed in f32 for half-precision inputs.
/// Shapes: x `[.., h]`, w `[h]` -> `[.., h]`.
pub fn rms_norm_differentiable(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = x.to_dtype(norm_dtype(dtype))?;
    let ms = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = xf.broadcast_mul(&(ms + eps)?.sqrt()?.recip()?)?;
    Ok(normed.to_dtype(dtype)?.broadcast_mul(w)?)
}

/// LayerNorm from differentiable ops. Shapes: x `[.., h]`, w, b `[h]` -> `[.., h]`.
pub fn layer_norm_differentiable(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = x.to_dtype(norm_dtype(dtype))?;
    let centred = xf.broadcast_sub(&xf.mean_keepdim(D::Minus1)?)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_mul(&(var + eps)?.sqrt()?.recip()?)?;
    Ok(normed.to_dtype(dtype)?.broadcast_mul(w)?.broadcast_add(b)?)
}

/// The dtype norm statistics are computed in: f32 for half-precision inputs, else the input's
/// own (an f64 model keeps f64 precision).
fn norm_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        other => other,
    }
}

/// Softmax over the last dimension. Shapes: x `[..., n]` -> `[..., n]`.
pub fn softmax_last(x: &Tensor, mode: Mode) -> Result<Tensor> {
    Ok(match mode {
        Mode::Infer => candle_nn::ops::softmax_last_dim(x)?,
        Mode::Train => candle_nn::ops::softmax(x, D::Minus1)?,
    })
}

/// Rotary tables for positions `0..max_positions`, built lazily: they cover the positions
/// runs have reached so far (at least doubling when they grow), never the declared maximum,
/// which a config may set to 10¹² (a table that size would need terabytes). Clones share one
/// table.
#[derive(Debug, Clone)]
pub struct Rope {
    /// `[head_dim / 2]` frequencies.
    inv_freq: Arc<Vec<f64>>,
    /// Positions the model supports (the config's `max_position_embeddings`).
    max_positions: usize,
    dtype: DType,
    device: Device,
    table: Arc<RwLock<RopeTable>>,
}

/// The rows built so far.
#[derive(Debug)]
struct RopeTable {
    /// `[rows, head_dim / 2]`.
    cos: Tensor,
    /// `[rows, head_dim / 2]`.
    sin: Tensor,
}

/// The fewest rows a table grows to: small sequences do not regrow it token by token.
const MIN_ROPE_ROWS: usize = 256;

/// The per-row rotary factors of one forward pass.
#[derive(Debug, Clone)]
pub struct RopeAt {
    /// `[batch, seq, head_dim / 2]`.
    pub cos: Tensor,
    /// `[batch, seq, head_dim / 2]`.
    pub sin: Tensor,
}

impl Rope {
    /// Rotary factors (in `dtype` on `device`) for `head_dim`, θ and optional scaling, for
    /// positions below `max_positions`. Allocates nothing until [`Rope::at`] needs rows.
    pub fn new(
        head_dim: usize,
        theta: f64,
        scaling: Option<RopeScaling>,
        max_positions: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let inv_freq = inverse_frequencies(head_dim, theta, scaling);
        let half = inv_freq.len();
        let empty = Tensor::zeros((0, half), dtype, device)?;
        Ok(Self {
            inv_freq: Arc::new(inv_freq),
            max_positions,
            dtype,
            device: device.clone(),
            table: Arc::new(RwLock::new(RopeTable {
                cos: empty.clone(),
                sin: empty,
            })),
        })
    }

    /// Gather the factors for per-row positions, all below `end` (one past the largest).
    /// Shapes: positions `[b, s]` (u32) -> `[b, s, d/2]`.
    pub fn at(&self, positions: &Tensor, end: usize) -> Result<RopeAt> {
        let (b, s) = positions.dims2()?;
        let flat = positions.flatten_all()?;
        let (cos, sin) = self.rows(end)?;
        let half = cos.dim(1)?;
        Ok(RopeAt {
            cos: cos.index_select(&flat, 0)?.reshape((b, s, half))?,
            sin: sin.index_select(&flat, 0)?.reshape((b, s, half))?,
        })
    }

    /// Tables `[rows ≥ end, d/2]`, grown first when they are shorter.
    fn rows(&self, end: usize) -> Result<(Tensor, Tensor)> {
        if end > self.max_positions {
            return Err(crate::ModelError::Request(format!(
                "position {} is beyond the model's max_position_embeddings ({})",
                end - 1,
                self.max_positions
            )));
        }
        {
            let table = self.table.read().unwrap_or_else(|e| e.into_inner());
            if table.cos.dim(0)? >= end {
                return Ok((table.cos.clone(), table.sin.clone()));
            }
        }
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        let have = table.cos.dim(0)?;
        if have < end {
            let rows = end.max(2 * have).max(MIN_ROPE_ROWS).min(self.max_positions);
            let half = self.inv_freq.len();
            let mut cos = Vec::with_capacity((rows - have) * half);
            let mut sin = Vec::with_capacity((rows - have) * half);
            for p in have..rows {
                for f in self.inv_freq.iter() {
                    let angle = p as f64 * f;
                    cos.push(angle.cos() as f32);
                    sin.push(angle.sin() as f32);
                }
            }
            let shape = (rows - have, half);
            let cos = Tensor::from_vec(cos, shape, &self.device)?.to_dtype(self.dtype)?;
            let sin = Tensor::from_vec(sin, shape, &self.device)?.to_dtype(self.dtype)?;
            table.cos = Tensor::cat(&[&table.cos, &cos], 0)?;
            table.sin = Tensor::cat(&[&table.sin, &sin], 0)?;
        }
        Ok((table.cos.clone(), table.sin.clone()))
    }

    /// Longest sequence the model supports.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }
}

/// θ^(-2i/d), adjusted by the scaling rule. Returns `head_dim / 2` frequencies.
pub fn inverse_frequencies(head_dim: usize, theta: f64, scaling: Option<RopeScaling>) -> Vec<f64> {
    let base: Vec<f64> = (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64))
        .collect();
    match scaling {
        None => base,
        Some(RopeScaling::Linear(factor)) => base.into_iter().map(|f| f / factor).collect(),
        Some(RopeScaling::Llama3(s)) => base.into_iter().map(|f| llama3_scale(f, &s)).collect(),
    }
}

fn llama3_scale(freq: f64, s: &Llama3RopeScaling) -> f64 {
    let old = s.original_max_position_embeddings as f64;
    let low_freq_wavelen = old / s.low_freq_factor;
    let high_freq_wavelen = old / s.high_freq_factor;
    let wavelen = 2.0 * std::f64::consts::PI / freq;
    if wavelen < high_freq_wavelen {
        freq
    } else if wavelen > low_freq_wavelen {
        freq / s.factor
    } else {
        let smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        (1.0 - smooth) * freq / s.factor + smooth * freq
    }
}

/// The hand-differentiated RoPE op serves f32 CPU training.
fn fused_train_rope(x: &Tensor, at: &RopeAt) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && at.cos.dtype() == DType::F32
}

/// Apply rotary embeddings (the "rotate half" convention of HF Llama).
/// Shapes: x `[b, heads, s, d]`, factors `[b, s, d/2]` -> `[b, heads, s, d]`.
pub fn apply_rope(x: &Tensor, at: &RopeAt, mode: Mode) -> Result<Tensor> {
    match mode {
        Mode::Infer => Ok(candle_nn::rotary_emb::rope(
            &x.contiguous()?,
            &at.cos,
            &at.sin,
        )?),
        Mode::Train if fused_train_rope(x, at) => Ok(x.contiguous()?.apply_op3(
            &at.cos.contiguous()?,
            &at.sin.contiguous()?,
            crate::kernels::train_ops::RopeOp,
        )?),
        Mode::Train => {
            let d = x.dim(D::Minus1)?;
            let cos = Tensor::cat(&[&at.cos, &at.cos], D::Minus1)?.unsqueeze(1)?;
            let sin = Tensor::cat(&[&at.sin, &at.sin], D::Minus1)?.unsqueeze(1)?;
            let x1 = x.narrow(D::Minus1, 0, d / 2)?;
            let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
            let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
            Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &Tensor, b: &Tensor, tol: f32) {
        let d = crate::test_util::max_abs_diff(a, b);
        assert!(d < tol, "max abs difference {d}");
    }

    #[test]
    fn fused_and_differentiable_paths_agree() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 5, 8), &dev).unwrap();
        let w = Tensor::randn(1f32, 0.1, 8, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, 8, &dev).unwrap();
        let rms = Norm {
            weight: w.clone(),
            bias: None,
            eps: 1e-5,
        };
        close(
            &rms.forward(&x, Mode::Infer).unwrap(),
            &rms.forward(&x, Mode::Train).unwrap(),
            1e-5,
        );
        let ln = Norm {
            weight: w,
            bias: Some(b),
            eps: 1e-5,
        };
        close(
            &ln.forward(&x, Mode::Infer).unwrap(),
            &ln.forward(&x, Mode::Train).unwrap(),
            1e-5,
        );
        close(
            &softmax_last(&x, Mode::Infer).unwrap(),
            &softmax_last(&x, Mode::Train).unwrap(),
            1e-6,
        );

        let rope = Rope::new(8, 10_000.0, None, 16, DType::F32, &dev).unwrap();
        let pos = Tensor::new(&[[0u32, 1, 2, 3, 4], [3, 4, 5, 6, 7]], &dev).unwrap();
        let at = rope.at(&pos, 8).unwrap();
        close(
            &apply_rope(&x, &at, Mode::Infer).unwrap(),
            &apply_rope(&x, &at, Mode::Train).unwrap(),
            1e-5,
        );
    }

    #[test]
    fn rope_rotates_pairs_by_position_times_frequency() {
        // head_dim 2, θ irrelevant for the first pair: frequency 1, so position p rotates by p rad.
        let dev = Device::Cpu;
        let rope = Rope::new(2, 10_000.0, None, 4, DType::F32, &dev).unwrap();
        let x = Tensor::new(&[[[[1f32, 0.0], [1.0, 0.0]]]], &dev).unwrap();
        let at = rope
            .at(&Tensor::new(&[[0u32, 2]], &dev).unwrap(), 3)
            .unwrap();
        let y: Vec<f32> = apply_rope(&x, &at, Mode::Train)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let expected = [1.0, 0.0, 2f32.cos(), 2f32.sin()];
        for (a, e) in y.iter().zip(expected) {
            assert!((a - e).abs() < 1e-6, "{y:?}");
        }
    }

    #[test]
    fn rope_tables_cover_the_positions_used_not_the_declared_maximum() {
        // 10¹² declared positions: building the whole table would need 32 TB.
        let dev = Device::Cpu;
        let huge = Rope::new(16, 10_000.0, None, 1_000_000_000_000, DType::F32, &dev).unwrap();
        let rows = |r: &Rope| r.table.read().unwrap().cos.dim(0).unwrap();
        assert_eq!(rows(&huge), 0);
        let pos = Tensor::new(&[[0u32, 7, 300], [1, 2, 3]], &dev).unwrap();
        let grown = huge.at(&pos, 301).unwrap();
        assert_eq!(rows(&huge), 301.max(MIN_ROPE_ROWS));
        // A clone shares the table; reaching further doubles it.
        let clone = huge.clone();
        clone
            .at(&Tensor::new(&[[400u32]], &dev).unwrap(), 401)
            .unwrap();
        assert_eq!(rows(&huge), 602);
        // The factors are those of a table built whole.
        let whole = Rope::new(16, 10_000.0, None, 301, DType::F32, &dev).unwrap();
        let expected = whole.at(&pos, 301).unwrap();
        assert_eq!(
            crate::test_util::max_abs_diff(&grown.cos, &expected.cos),
            0.0
        );
        assert_eq!(
            crate::test_util::max_abs_diff(&grown.sin, &expected.sin),
            0.0
        );
        let err = whole.at(&pos, 302).unwrap_err().to_string();
        assert!(err.contains("max_position_embeddings (301)"), "{err}");
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let s = Llama3RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        let plain = inverse_frequencies(128, 500_000.0, None);
        let scaled = inverse_frequencies(128, 500_000.0, Some(RopeScaling::Llama3(s)));
        assert_eq!(plain[0], scaled[0]); // wavelength 2π < 2048: unchanged
        let last = plain.len() - 1; // wavelength ≫ 8192: divided by the factor
        assert!((scaled[last] - plain[last] / 8.0).abs() < 1e-15);
    }
}
