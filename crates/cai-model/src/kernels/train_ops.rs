//! Two small CPU ops with hand-written backward passes for f32 training, each replacing a
//! chain of element-wise candle ops (and their backward chains): rotary embeddings and the
//! SwiGLU gate (used by inference too: one vectorised, threaded pass instead of three).
//!
//! RoPE rotates each (x₁ᵢ, x₂ᵢ) pair by θ; the transpose of a rotation is the rotation by −θ,
//! so the gradient is the same op with `sin` negated. SwiGLU is `silu(g) ⊙ u` with
//! `silu'(g) = σ(g) · (1 + g · (1 − σ(g)))`.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use crate::kernels::cpu_storage::contiguous_f32;
use crate::kernels::vector;
use rayon::prelude::*;

/// Rotary embeddings, "rotate half" convention.
/// Shapes: x `[b, h, s, d]`, cos and sin `[b, s, d/2]` -> `[b, h, s, d]`.
pub struct RopeOp;

fn rotate(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    (b, h, s, d): (usize, usize, usize, usize),
    sign: f32,
) -> Vec<f32> {
    let half = d / 2;
    let mut y = vec![0f32; x.len()];
    for bi in 0..b {
        for hi in 0..h {
            for si in 0..s {
                let base = ((bi * h + hi) * s + si) * d;
                let f = (bi * s + si) * half;
                let (xr, yr) = (&x[base..base + d], &mut y[base..base + d]);
                for i in 0..half {
                    let (c, sn) = (cos[f + i], sign * sin[f + i]);
                    yr[i] = xr[i] * c - xr[i + half] * sn;
                    yr[i + half] = xr[i + half] * c + xr[i] * sn;
                }
            }
        }
    }
    y
}

impl CustomOp3 for RopeOp {
    fn name(&self) -> &'static str {
        "rope-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name(), "x")?;
        let cos = contiguous_f32(s2, l2, self.name(), "cos")?;
        let sin = contiguous_f32(s3, l3, self.name(), "sin")?;
        let dims = l1.shape().dims4()?;
        Ok((
            CpuStorage::F32(rotate(x, cos, sin, dims, 1.0)),
            l1.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let flat = |t: &Tensor| -> candle_core::Result<Vec<f32>> { t.flatten_all()?.to_vec1() };
        let dx = rotate(&flat(grad)?, &flat(cos)?, &flat(sin)?, x.dims4()?, -1.0);
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            None,
            None,
        ))
    }
}

/// `silu(gate) ⊙ up`. Shapes: gate, up `[.., n]` -> `[.., n]`.
pub struct SwiGluOp;

/// Elements per task (and per stack buffer of sigmoids) in the SwiGLU passes.
pub(crate) const SWIGLU_BLOCK: usize = 4096;

/// `out[i] = σ(x[i])` through the vector exponential. Shapes: x, out `[n]`, equal lengths.
pub(crate) fn sigmoids<'a>(x: &[f32], out: &'a mut [f32]) -> &'a [f32] {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = -v;
    }
    vector::exp_shifted_sum(out, 0.0);
    for o in out.iter_mut() {
        *o = 1.0 / (1.0 + *o);
    }
    out
}

impl CustomOp2 for SwiGluOp {
    fn name(&self) -> &'static str {
        "swiglu-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(s1, l1, self.name(), "gate")?;
        let u = contiguous_f32(s2, l2, self.name(), "up")?;
        if g.len() != u.len() {
            candle_core::bail!("swiglu: gate has {} elements, up {}", g.len(), u.len());
        }
        let mut y = vec![0f32; g.len()];
        y.par_chunks_mut(SWIGLU_BLOCK)
            .zip(g.par_chunks(SWIGLU_BLOCK).zip(u.par_chunks(SWIGLU_BLOCK)))
            .for_each(|(y, (g, u))| {
                let mut s = [0f32; SWIGLU_BLOCK];
                let s = sigmoids(g, &mut s[..g.len()]);
                for (((y, &g), &u), &s) in y.iter_mut().zip(g).zip(u).zip(s.iter()) {
                    *y = g * s * u;
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let flat = |t: &Tensor| -> candle_core::Result<Vec<f32>> { t.flatten_all()?.to_vec1() };
        let (g, u, dy) = (flat(gate)?, flat(up)?, flat(grad)?);
        let (mut dg, mut du) = (vec![0f32; g.len()], vec![0f32; g.len()]);
        swiglu_grads(&g, &u, &dy, &mut dg, &mut du);
        Ok((
            Some(Tensor::from_vec(dg, gate.shape(), gate.device())?),
            Some(Tensor::from_vec(du, up.shape(), up.device())?),
        ))
    }
}

/// SwiGLU's input gradients from `∂y` for `y = silu(g) · u`, in parallel blocks:
/// `∂u = ∂y · g σ(g)`, `∂g = ∂y · u σ(g) (1 + g (1 − σ(g)))`. Shapes: all `[n]`.
pub(crate) fn swiglu_grads(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [f32], du: &mut [f32]) {
    dg.par_chunks_mut(SWIGLU_BLOCK)
        .zip(du.par_chunks_mut(SWIGLU_BLOCK))
        .enumerate()
        .for_each(|(c, (dg, du))| {
            let at = c * SWIGLU_BLOCK..c * SWIGLU_BLOCK + dg.len();
            let (g, u, dy) = (&g[at.clone()], &u[at.clone()], &dy[at]);
            let mut s = [0f32; SWIGLU_BLOCK];
            let s = sigmoids(g, &mut s[..g.len()]);
            for i in 0..g.len() {
                du[i] = dy[i] * g[i] * s[i];
                dg[i] = dy[i] * u[i] * s[i] * (1.0 + g[i] * (1.0 - s[i]));
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{apply_rope, Mode, Rope};
    use candle_core::{DType, Device, Var};

    use crate::test_util::max_abs_diff as max_diff;

    #[test]
    fn rope_forward_and_gradient_match_the_composed_ops() {
        let dev = Device::Cpu;
        let rope = Rope::new(8, 10_000.0, None, 16, DType::F32, &dev).unwrap();
        let at = rope
            .at(&Tensor::new(&[[0u32, 1, 2], [5, 6, 7]], &dev).unwrap(), 8)
            .unwrap();
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 3, 8), &dev).unwrap()).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (2, 3, 3, 8), &dev).unwrap();
        let fused = x.as_tensor().apply_op3(&at.cos, &at.sin, RopeOp).unwrap();
        let plain = apply_rope(x.as_tensor(), &at, Mode::Infer).unwrap();
        assert!(max_diff(&fused, &plain) < 1e-6);
        // The composed differentiable rotation, written out here as the reference.
        let cos = Tensor::cat(&[&at.cos, &at.cos], 2)
            .unwrap()
            .unsqueeze(1)
            .unwrap();
        let sin = Tensor::cat(&[&at.sin, &at.sin], 2)
            .unwrap()
            .unsqueeze(1)
            .unwrap();
        let xt = x.as_tensor();
        let rotated = Tensor::cat(
            &[
                &xt.narrow(3, 4, 4).unwrap().neg().unwrap(),
                &xt.narrow(3, 0, 4).unwrap(),
            ],
            3,
        )
        .unwrap();
        let composed =
            (xt.broadcast_mul(&cos).unwrap() + rotated.broadcast_mul(&sin).unwrap()).unwrap();
        let gf = (fused * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gc = (composed * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(max_diff(gf.get(xt).unwrap(), gc.get(xt).unwrap()) < 1e-5);
    }

    #[test]
    fn swiglu_forward_and_gradients_match_the_composed_ops() {
        let dev = Device::Cpu;
        let g = Var::from_tensor(&Tensor::randn(0f32, 2.0, (4, 6), &dev).unwrap()).unwrap();
        let u = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 6), &dev).unwrap()).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (4, 6), &dev).unwrap();
        let fused = g.as_tensor().apply_op2(u.as_tensor(), SwiGluOp).unwrap();
        let composed = (candle_nn::ops::silu(g.as_tensor()).unwrap() * u.as_tensor()).unwrap();
        assert!(max_diff(&fused, &composed) < 1e-6);
        let gf = (fused * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gc = (composed * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&g, &u] {
            assert!(
                max_diff(
                    gf.get(v.as_tensor()).unwrap(),
                    gc.get(v.as_tensor()).unwrap()
                ) < 1e-5
            );
        }
    }
}
