//! The reshapes around attention in f32 CPU training as one graph node each: splitting a
//! projection `[b, s, heads · d]` into heads `[b, heads, s, d]` with rotary embeddings applied
//! on the way ([`SplitHeads`]), and merging the heads back ([`MergeHeads`]).
//!
//! Through candle's ops a split was four nodes (reshape, transpose, contiguous copy, RoPE) and
//! a merge two (transpose, reshape copy); candle's backward turns each node's gradient into a
//! zero-filled tensor plus an add. Each op here is one pass forward and one backward.
//! RoPE ("rotate half", as [`crate::kernels::train_ops::RopeOp`]) rotates each (x₁ᵢ, x₂ᵢ)
//! pair by θ; its transpose is the rotation by −θ.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::cpu_storage::contiguous_f32;
use crate::kernels::linear_train::{unfilled, with_f32};
use crate::layers::RopeAt;

/// `[b, s, heads · d]` -> `[b, heads, s, d]`, each head's vector rotated by the rotary factors
/// of its row and position when `rope` is given (`cos`, `sin` `[b, s, d/2]`, f32, contiguous).
pub struct SplitHeads {
    /// Number of heads.
    pub heads: usize,
    /// The rotary factors of the pass, or `None` (no rotation).
    pub rope: Option<RopeAt>,
}

/// `[b, heads, s, d]` -> `[b, s, heads · d]`.
pub struct MergeHeads;

/// Copy one head vector `src` into `dst`, rotated by `sign · θ` (`cos`, `sin` `[d/2]`) or as is.
#[inline]
fn rotate_into(dst: &mut [f32], src: &[f32], factors: Option<(&[f32], &[f32])>, sign: f32) {
    let Some((cos, sin)) = factors else {
        dst.copy_from_slice(src);
        return;
    };
    let half = dst.len() / 2;
    let (d1, d2) = dst.split_at_mut(half);
    let (x1, x2) = src.split_at(half);
    for i in 0..half {
        let (c, s) = (cos[i], sign * sin[i]);
        d1[i] = x1[i] * c - x2[i] * s;
        d2[i] = x2[i] * c + x1[i] * s;
    }
}

/// The rotary factors of a pass as slices, read under their storage guards.
fn with_factors<R>(
    rope: &Option<RopeAt>,
    f: impl FnOnce(Option<(&[f32], &[f32])>) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    match rope {
        None => f(None),
        Some(at) => with_f32(&at.cos, "split-heads", "cos", |cos| {
            with_f32(&at.sin, "split-heads", "sin", |sin| f(Some((cos, sin))))
        }),
    }
}

/// `out[b, h, s, :] = rot(x[b, s, h, :])`. Shapes: x `[b, s, heads, d]` -> `[b, heads, s, d]`.
fn split(
    x: &[f32],
    factors: Option<(&[f32], &[f32])>,
    (b, s, heads, d): (usize, usize, usize, usize),
    sign: f32,
) -> Vec<f32> {
    let half = d / 2;
    // SAFETY: every (row, head) chunk below writes all its s × d elements.
    let mut out = unsafe { unfilled(b * heads * s * d) };
    out.par_chunks_mut((s * d).max(1))
        .enumerate()
        .for_each(|(bh, chunk)| {
            let (bi, hi) = (bh / heads, bh % heads);
            for si in 0..s {
                let src = &x[((bi * s + si) * heads + hi) * d..][..d];
                let f = (bi * s + si) * half;
                let fac = factors.map(|(c, sn)| (&c[f..f + half], &sn[f..f + half]));
                rotate_into(&mut chunk[si * d..(si + 1) * d], src, fac, sign);
            }
        });
    out
}

/// `out[b, s, h, :] = rot(x[b, h, s, :])`. Shapes: x `[b, heads, s, d]` -> `[b, s, heads, d]`.
fn merge(
    x: &[f32],
    factors: Option<(&[f32], &[f32])>,
    (b, s, heads, d): (usize, usize, usize, usize),
    sign: f32,
) -> Vec<f32> {
    let half = d / 2;
    // SAFETY: every (row, position) chunk below writes all its heads × d elements.
    let mut out = unsafe { unfilled(b * heads * s * d) };
    out.par_chunks_mut((heads * d).max(1))
        .enumerate()
        .for_each(|(bs, chunk)| {
            let (bi, si) = (bs / s, bs % s);
            let f = bs * half;
            let fac = factors.map(|(c, sn)| (&c[f..f + half], &sn[f..f + half]));
            for hi in 0..heads {
                let src = &x[((bi * heads + hi) * s + si) * d..][..d];
                rotate_into(&mut chunk[hi * d..(hi + 1) * d], src, fac, sign);
            }
        });
    out
}

impl SplitHeads {
    /// `(b, s, heads, d)` of an input `[b, s, heads · d]`, checked against the factors.
    fn dims(&self, x: &Shape) -> candle_core::Result<(usize, usize, usize, usize)> {
        let (b, s, width) = x.dims3()?;
        if self.heads == 0
            || !width.is_multiple_of(self.heads)
            || !(width / self.heads).is_multiple_of(2)
        {
            candle_core::bail!(
                "split-heads: a width of {width} does not split into {} heads of even size",
                self.heads
            );
        }
        let d = width / self.heads;
        if let Some(at) = &self.rope {
            if at.cos.dims() != [b, s, d / 2] || at.sin.dims() != [b, s, d / 2] {
                candle_core::bail!(
                    "split-heads: rotary factors {:?} for an input [{b}, {s}, {width}]; expected \
                     [{b}, {s}, {}]",
                    at.cos.dims(),
                    d / 2
                );
            }
        }
        Ok((b, s, self.heads, d))
    }
}

impl CustomOp1 for SplitHeads {
    fn name(&self) -> &'static str {
        "split-heads"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = self.dims(l1.shape())?;
        let x = contiguous_f32(s1, l1, self.name(), "x")?;
        let out = with_factors(&self.rope, |f| Ok(split(x, f, dims, 1.0)))?;
        let (b, s, h, d) = dims;
        Ok((CpuStorage::F32(out), Shape::from((b, h, s, d))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dims = self.dims(x.shape())?;
        let grad = grad.contiguous()?;
        let dx = with_f32(&grad, self.name(), "the gradient", |g| {
            with_factors(&self.rope, |f| Ok(merge(g, f, dims, -1.0)))
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

impl CustomOp1 for MergeHeads {
    fn name(&self) -> &'static str {
        "merge-heads"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, h, s, d) = l1.shape().dims4()?;
        let x = contiguous_f32(s1, l1, self.name(), "x")?;
        Ok((
            CpuStorage::F32(merge(x, None, (b, s, h, d), 1.0)),
            Shape::from((b, s, h * d)),
        ))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (b, h, s, d) = x.dims4()?;
        let grad = grad.contiguous()?;
        let dx = with_f32(&grad, self.name(), "the gradient", |g| {
            Ok(split(g, None, (b, s, h, d), 1.0))
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{apply_rope, Mode, Rope};
    use crate::test_util::max_abs_diff;
    use candle_core::{DType, Device, Var};

    /// Split (with and without RoPE) and merge give the values and input gradients of the
    /// composed reshape / transpose / rotate ops.
    #[test]
    fn split_and_merge_match_the_composed_ops() {
        let dev = Device::Cpu;
        let (b, s, h, d) = (2, 5, 3, 8);
        let rope = Rope::new(d, 10_000.0, None, 16, DType::F32, &dev).unwrap();
        let pos = Tensor::new(&[[0u32, 1, 2, 3, 4], [0, 0, 1, 2, 3]], &dev).unwrap();
        let at = rope.at(&pos, 5).unwrap();
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, s, h * d), &dev).unwrap()).unwrap();
        let xt = x.as_tensor();
        let probe = Tensor::randn(0f32, 1.0, (b, h, s, d), &dev).unwrap();
        let backward =
            |y: &Tensor, p: &Tensor| (y * p).unwrap().sum_all().unwrap().backward().unwrap();
        for with_rope in [false, true] {
            let heads = xt.reshape((b, s, h, d)).unwrap().transpose(1, 2).unwrap();
            let composed = if with_rope {
                apply_rope(&heads, &at, Mode::Train).unwrap()
            } else {
                heads.contiguous().unwrap()
            };
            let op = SplitHeads {
                heads: h,
                rope: with_rope.then(|| at.clone()),
            };
            let fused = xt.apply_op1(op).unwrap();
            assert_eq!(fused.dims(), &[b, h, s, d]);
            assert!(max_abs_diff(&composed, &fused) < 1e-6);
            let (gc, gf) = (backward(&composed, &probe), backward(&fused, &probe));
            assert!(max_abs_diff(gc.get(xt).unwrap(), gf.get(xt).unwrap()) < 1e-5);
        }
        let y = Var::from_tensor(&probe).unwrap();
        let yt = y.as_tensor();
        let composed = yt.transpose(1, 2).unwrap().reshape((b, s, h * d)).unwrap();
        let fused = yt.apply_op1(MergeHeads).unwrap();
        assert!(max_abs_diff(&composed, &fused) < 1e-7);
        let p2 = Tensor::randn(0f32, 1.0, (b, s, h * d), &dev).unwrap();
        let (gc, gf) = (backward(&composed, &p2), backward(&fused, &p2));
        assert!(max_abs_diff(gc.get(yt).unwrap(), gf.get(yt).unwrap()) < 1e-7);
    }

    /// A width that is not a whole number of even heads is an error naming the width.
    #[test]
    fn a_width_that_does_not_split_is_an_error() {
        let x = Tensor::zeros((1, 2, 10), DType::F32, &Device::Cpu).unwrap();
        let op = SplitHeads {
            heads: 3,
            rope: None,
        };
        let err = x.apply_op1(op).unwrap_err().to_string();
        assert!(err.contains("width of 10"), "{err}");
    }
}
