//! The reshapes around attention in f32 CPU training as one graph node each: splitting a
//! projection `[b, s, heads · d]` into heads `[b, heads, s, d]` with rotary embeddings applied
//! on the way ([`SplitHeads`]), and merging the heads back ([`MergeHeads`]). Each op also
//! comes with the linear layer on its side built in (a `CustomOp2` with the weight): then the
//! projection's `[b, s, heads · d]` output is never kept for the backward pass (the graph kept
//! it beside the split heads: ~240 MB of an 8 × 256 SmolLM2 step) and is one node fewer.
//!
//! Through candle's ops a split was four nodes (reshape, transpose, contiguous copy, RoPE) and
//! a merge two (transpose, reshape copy); candle's backward turns each node's gradient into a
//! zero-filled tensor plus an add. Each op here is one pass forward and one backward, with the
//! same products and sums as the ops it replaces, so the same bits.
//! RoPE ("rotate half", as [`crate::kernels::train_ops::RopeOp`]) rotates each (x₁ᵢ, x₂ᵢ)
//! pair by θ; its transpose is the rotation by −θ.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::cpu_storage::contiguous_f32;
use crate::kernels::linear_train::{
    forward_product, input_grad, project_backward, unfilled, weight_grad, with_f32,
};
use crate::layers::RopeAt;

/// `[b, s, heads · d]` -> `[b, heads, s, d]`, each head's vector rotated by the rotary factors
/// of its row and position when `rope` is given (`cos`, `sin` `[b, s, d/2]`, f32, contiguous).
/// As a `CustomOp2` it takes the layer's input and weight, x `[b, s, k]` and w
/// `[heads · d, k]`, and splits `x wᵀ`.
pub struct SplitHeads {
    /// Number of heads.
    pub heads: usize,
    /// The rotary factors of the pass, or `None` (no rotation).
    pub rope: Option<RopeAt>,
}

/// `[b, heads, s, d]` -> `[b, s, heads · d]`. As a `CustomOp2` it takes the heads and the
/// next layer's weight w `[n, heads · d]` and gives `merge(heads) wᵀ` `[b, s, n]`.
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
        self.dims_of(b, s, width)
    }

    /// `(b, s, heads, d)` of `b × s` projections of `width`, checked against the factors.
    fn dims_of(
        &self,
        b: usize,
        s: usize,
        width: usize,
    ) -> candle_core::Result<(usize, usize, usize, usize)> {
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
        let x = contiguous_f32(s1, l1, CustomOp1::name(self), "x")?;
        let out = with_factors(&self.rope, |f| Ok(split(x, f, dims, 1.0)))?;
        let (b, s, h, d) = dims;
        Ok((CpuStorage::F32(out), Shape::from((b, h, s, d))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dims = self.dims(x.shape())?;
        let grad = grad.contiguous()?;
        let dx = with_f32(&grad, CustomOp1::name(self), "the gradient", |g| {
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
        let x = contiguous_f32(s1, l1, CustomOp1::name(self), "x")?;
        Ok((
            CpuStorage::F32(merge(x, None, (b, s, h, d), 1.0)),
            Shape::from((b, s, h * d)),
        ))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (b, h, s, d) = x.dims4()?;
        let grad = grad.contiguous()?;
        let dx = with_f32(&grad, CustomOp1::name(self), "the gradient", |g| {
            Ok(split(g, None, (b, s, h, d), 1.0))
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// `(b, s, k, n)` of an input x `[b, s, k]` and a weight w `[n, k]`, or an error naming both.
fn projection_dims(
    x: &Shape,
    w: &Shape,
    op: &str,
) -> candle_core::Result<(usize, usize, usize, usize)> {
    let (b, s, k) = x.dims3()?;
    let (n, k2) = w.dims2()?;
    if k != k2 {
        candle_core::bail!("{op}: the input is [{b}, {s}, {k}] but the weight is [{n}, {k2}]");
    }
    Ok((b, s, k, n))
}

impl CustomOp2 for SplitHeads {
    fn name(&self) -> &'static str {
        "project-split-heads"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = CustomOp2::name(self);
        let (b, s, k, n) = projection_dims(l1.shape(), l2.shape(), name)?;
        let dims = self.dims_of(b, s, n)?;
        let x = contiguous_f32(s1, l1, name, "x")?;
        let w = contiguous_f32(s2, l2, name, "the weight")?;
        let y = forward_product(x, w, b * s, n, k);
        let out = with_factors(&self.rope, |f| Ok(split(&y, f, dims, 1.0)))?;
        let (b, s, h, d) = dims;
        Ok((CpuStorage::F32(out), Shape::from((b, h, s, d))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let name = CustomOp2::name(self);
        let (b, s, k, n) = projection_dims(x.shape(), w.shape(), name)?;
        let dims = self.dims_of(b, s, n)?;
        let grad = grad.contiguous()?;
        let dy = with_f32(&grad, name, "the gradient", |g| {
            with_factors(&self.rope, |f| Ok(merge(g, f, dims, -1.0)))
        })?;
        project_backward(x, w, &dy, (b * s, n, k), name)
    }
}

impl CustomOp2 for MergeHeads {
    fn name(&self) -> &'static str {
        "merge-heads-project"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = CustomOp2::name(self);
        let (b, h, s, d) = l1.shape().dims4()?;
        let (n, k) = l2.shape().dims2()?;
        if k != h * d {
            candle_core::bail!("{name}: heads [{b}, {h}, {s}, {d}] but the weight is [{n}, {k}]");
        }
        let o = contiguous_f32(s1, l1, name, "the heads")?;
        let w = contiguous_f32(s2, l2, name, "the weight")?;
        let merged = merge(o, None, (b, s, h, d), 1.0);
        let y = forward_product(&merged, w, b * s, n, k);
        Ok((CpuStorage::F32(y), Shape::from((b, s, n))))
    }

    fn bwd(
        &self,
        o: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let name = CustomOp2::name(self);
        let (b, h, s, d) = o.dims4()?;
        let (n, k) = w.dims2()?;
        let dims = (b * s, n, k);
        let grad = grad.contiguous()?;
        with_f32(&grad, name, "the gradient", |g| {
            let d_heads = if o.track_op() {
                // SAFETY: `input_grad` without `accumulate` writes all b·s × k elements.
                let mut dm = unsafe { unfilled(b * s * k) };
                with_f32(w, name, "the weight", |w| {
                    input_grad(&mut dm, g, w, dims, false);
                    Ok(())
                })?;
                let dh = split(&dm, None, (b, s, h, d), 1.0);
                Some(Tensor::from_vec(dh, o.shape(), o.device())?)
            } else {
                None
            };
            let dw = if w.track_op() {
                // The merged heads are made again (one copy) rather than kept from the forward.
                let merged = with_f32(o, name, "the heads", |o| {
                    Ok(merge(o, None, (b, s, h, d), 1.0))
                })?;
                Some(Tensor::from_vec(
                    weight_grad(g, &merged, dims),
                    (n, k),
                    w.device(),
                )?)
            } else {
                None
            };
            Ok((d_heads, dw))
        })
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

    /// The ops with their linear layer built in give, bit for bit, the values and gradients
    /// of the linear layer and the plain op one after the other; a frozen weight gets none.
    #[test]
    fn built_in_projections_match_linear_then_op_bit_for_bit() {
        use crate::kernels::linear_train::LinearTrain;
        let dev = Device::Cpu;
        let (b, s, k, h, d) = (2, 70, 24, 3, 8);
        let rope = Rope::new(d, 10_000.0, None, 128, DType::F32, &dev).unwrap();
        let pos: Vec<u32> = (0..b * s).map(|i| (i % s) as u32).collect();
        let at = rope
            .at(&Tensor::from_vec(pos, (b, s), &dev).unwrap(), s)
            .unwrap();
        let var = |shape: &[usize]| {
            Var::from_tensor(&Tensor::randn(0f32, 1.0, shape, &dev).unwrap()).unwrap()
        };
        let (x, w) = (var(&[b, s, k]), var(&[h * d, k]));
        let (xt, wt) = (x.as_tensor(), w.as_tensor());
        let bits = |t: &Tensor| -> Vec<u32> {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        let probe = Tensor::randn(0f32, 1.0, (b, h, s, d), &dev).unwrap();
        let split = || SplitHeads {
            heads: h,
            rope: Some(at.clone()),
        };
        let two = xt
            .apply_op2(wt, LinearTrain)
            .unwrap()
            .apply_op1(split())
            .unwrap();
        let one = xt.apply_op2(wt, split()).unwrap();
        assert_eq!(bits(&two), bits(&one));
        let backward =
            |y: &Tensor, p: &Tensor| (y * p).unwrap().sum_all().unwrap().backward().unwrap();
        let (g2, g1) = (backward(&two, &probe), backward(&one, &probe));
        for t in [xt, wt] {
            assert_eq!(bits(g2.get(t).unwrap()), bits(g1.get(t).unwrap()));
        }
        let (o, wo) = (var(&[b, h, s, d]), var(&[k, h * d]));
        let (ot, wot) = (o.as_tensor(), wo.as_tensor());
        let p2 = Tensor::randn(0f32, 1.0, (b, s, k), &dev).unwrap();
        let two = ot
            .apply_op1(MergeHeads)
            .unwrap()
            .apply_op2(wot, LinearTrain)
            .unwrap();
        let one = ot.apply_op2(wot, MergeHeads).unwrap();
        assert_eq!(bits(&two), bits(&one));
        let (g2, g1) = (backward(&two, &p2), backward(&one, &p2));
        for t in [ot, wot] {
            assert_eq!(bits(g2.get(t).unwrap()), bits(g1.get(t).unwrap()));
        }
        let frozen = wot.detach();
        let g = backward(&ot.apply_op2(&frozen, MergeHeads).unwrap(), &p2);
        assert!(g.get(&frozen).is_none());
        assert_eq!(bits(g.get(ot).unwrap()), bits(g1.get(ot).unwrap()));
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
