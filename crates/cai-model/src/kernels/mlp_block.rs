//! The first half of a SwiGLU MLP in f32 CPU training as ONE graph node:
//! `h = silu(x W_gateᵀ) ⊙ (x W_upᵀ)`.
//!
//! Through candle's ops this was nine nodes (two four-node linear layers and the SwiGLU op),
//! each of whose gradients candle's backward materialises as a zero-filled tensor plus an add,
//! and `x` received two gradients added one after the other. Here the backward pass forms
//! `∂g` and `∂u` element-wise, then `∂x = ∂g W_gate + ∂u W_up` (two GEMMs into fresh buffers,
//! then one add: bit for bit the composed ops' sum), and `∂W = ∂gᵀ x`, `∂W_up = ∂uᵀ x`. The op keeps the forward pass's `g` and `u`
//! for its backward (candle's graph kept them too, as the SwiGLU op's inputs).

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::cpu_storage::contiguous_f32;
use crate::kernels::linear_train::{forward_product, input_grad, unfilled, weight_grad, with_f32};
use crate::kernels::train_ops::{sigmoids, swiglu_grads, SWIGLU_BLOCK};

/// Shapes: x `[.., hidden]` (contiguous), w_gate and w_up `[inter, hidden]` (contiguous) ->
/// `[.., inter]`. One op value serves one forward pass (it holds that pass's `g` and `u`).
#[derive(Default)]
pub struct SwiGluProj {
    /// The gate and up projections `[m, inter]` of the forward pass.
    saved: Mutex<Option<(Vec<f32>, Vec<f32>)>>,
}

/// `(m, inter, hidden)` of an input `[.., hidden]` and weights `[inter, hidden]`.
fn dims_of(x: &Shape, wg: &Shape, wu: &Shape) -> candle_core::Result<(usize, usize, usize)> {
    let (n, k) = wg.dims2()?;
    let last = x.dims().last().copied();
    if wu.dims2()? != (n, k) || last != Some(k) {
        candle_core::bail!(
            "swiglu-proj: x is {:?}, the gate weight {:?} and the up weight {:?}; expected \
             [.., hidden] and two [inter, hidden]",
            x.dims(),
            wg.dims(),
            wu.dims()
        );
    }
    Ok((x.elem_count() / k.max(1), n, k))
}

impl CustomOp3 for SwiGluProj {
    fn name(&self) -> &'static str {
        "swiglu-proj"
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
        let (m, n, k) = dims_of(l1.shape(), l2.shape(), l3.shape())?;
        let x = contiguous_f32(s1, l1, self.name(), "x")?;
        let wg = contiguous_f32(s2, l2, self.name(), "the gate weight")?;
        let wu = contiguous_f32(s3, l3, self.name(), "the up weight")?;
        let g = forward_product(x, wg, m, n, k);
        let u = forward_product(x, wu, m, n, k);
        // SAFETY: the parallel pass below writes every element of `h`.
        let mut h = unsafe { unfilled(m * n) };
        h.par_chunks_mut(SWIGLU_BLOCK)
            .zip(g.par_chunks(SWIGLU_BLOCK).zip(u.par_chunks(SWIGLU_BLOCK)))
            .for_each(|(h, (g, u))| {
                let mut s = [0f32; SWIGLU_BLOCK];
                let s = sigmoids(g, &mut s[..g.len()]);
                for (((h, &g), &u), &s) in h.iter_mut().zip(g).zip(u).zip(s.iter()) {
                    *h = g * s * u;
                }
            });
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some((g, u));
        let mut dims = l1.shape().dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = n;
        }
        Ok((CpuStorage::F32(h), Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wg: &Tensor,
        wu: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let name = self.name();
        let dims = dims_of(x.shape(), wg.shape(), wu.shape())?;
        let (m, n, k) = dims;
        let saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        let Some((g, u)) = saved.as_ref() else {
            candle_core::bail!("swiglu-proj: the backward pass ran before the forward pass");
        };
        let grad = grad.contiguous()?;
        // SAFETY: the parallel pass below writes every element of both.
        let (mut dg, mut du) = unsafe { (unfilled(m * n), unfilled(m * n)) };
        with_f32(&grad, name, "the gradient", |dy| {
            swiglu_grads(g, u, dy, &mut dg, &mut du);
            Ok(())
        })?;
        drop(saved);
        let dx = if x.track_op() {
            // SAFETY: each `input_grad` (not accumulating) writes all m × k elements.
            let (mut dx, mut dx_up) = unsafe { (unfilled(m * k), unfilled(m * k)) };
            with_f32(wg, name, "the gate weight", |w| {
                input_grad(&mut dx, &dg, w, dims, false);
                Ok(())
            })?;
            with_f32(wu, name, "the up weight", |w| {
                input_grad(&mut dx_up, &du, w, dims, false);
                Ok(())
            })?;
            // Two products added, not one GEMM accumulating into the other: the sum is then
            // bit for bit the composed ops' (a GEMM's accumulation rounds differently).
            dx.par_chunks_mut(SWIGLU_BLOCK)
                .zip(dx_up.par_chunks(SWIGLU_BLOCK))
                .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a += b));
            Some(Tensor::from_vec(dx, x.shape(), x.device())?)
        } else {
            None
        };
        let weight = |w: &Tensor, d: &[f32]| -> candle_core::Result<Option<Tensor>> {
            if !w.track_op() {
                return Ok(None);
            }
            let dw = with_f32(x, name, "x", |x| Ok(weight_grad(d, x, dims)))?;
            Ok(Some(Tensor::from_vec(dw, (n, k), w.device())?))
        };
        Ok((dx, weight(wg, &dg)?, weight(wu, &du)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::max_abs_diff;
    use candle_core::{Device, Var};

    /// Values and the three gradients equal the composed ops' (two matmuls, silu, product) for
    /// a rank-3 input; frozen weights get no gradient while the input still does.
    #[test]
    fn matches_the_composed_ops_in_value_and_gradients() {
        let dev = Device::Cpu;
        let var = |shape: (usize, usize, usize), sd: f32| {
            Var::from_tensor(&Tensor::randn(0f32, sd, shape, &dev).unwrap()).unwrap()
        };
        let x = var((2, 5, 8), 1.0);
        let wg = Var::from_tensor(&Tensor::randn(0f32, 0.7, (11, 8), &dev).unwrap()).unwrap();
        let wu = Var::from_tensor(&Tensor::randn(0f32, 0.5, (11, 8), &dev).unwrap()).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (2, 5, 11), &dev).unwrap();
        let (xt, gt, ut) = (x.as_tensor(), wg.as_tensor(), wu.as_tensor());
        let composed = |gt: &Tensor, ut: &Tensor| {
            let g = xt.broadcast_matmul(&gt.t().unwrap()).unwrap();
            let u = xt.broadcast_matmul(&ut.t().unwrap()).unwrap();
            (candle_nn::ops::silu(&g).unwrap() * u).unwrap()
        };
        let plain = composed(gt, ut);
        let fused = xt.apply_op3(gt, ut, SwiGluProj::default()).unwrap();
        assert_eq!(fused.dims(), &[2, 5, 11]);
        assert!(max_abs_diff(&plain, &fused) < 1e-5);
        let backward = |y: Tensor| (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let (gp, gf) = (backward(plain), backward(fused));
        for t in [xt, gt, ut] {
            let d = max_abs_diff(gp.get(t).unwrap(), gf.get(t).unwrap());
            assert!(d < 1e-4, "gradient differs by {d}");
        }
        let (fg, fu) = (gt.detach(), ut.detach());
        let g = backward(xt.apply_op3(&fg, &fu, SwiGluProj::default()).unwrap());
        assert!(g.get(&fg).is_none() && g.get(&fu).is_none());
        assert!(max_abs_diff(gp.get(xt).unwrap(), g.get(xt).unwrap()) < 1e-4);
    }

    /// Weights of two shapes are an error naming the three shapes.
    #[test]
    fn mismatched_weights_are_an_error() {
        let dev = Device::Cpu;
        let z = |s: (usize, usize)| Tensor::zeros(s, candle_core::DType::F32, &dev).unwrap();
        let err = z((4, 6))
            .apply_op3(&z((3, 6)), &z((5, 6)), SwiGluProj::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("[3, 6]") && err.contains("[5, 6]"), "{err}");
    }

    /// The differing elements of two tensors of one shape, bit for bit.
    fn bits_differ(a: &Tensor, b: &Tensor) -> usize {
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        a.iter()
            .zip(&b)
            .filter(|(x, y)| x.to_bits() != y.to_bits())
            .count()
    }

    /// The fused ops give what candle's ops gave before them BIT FOR BIT, values and
    /// gradients (the quick lab pipeline's weights stay byte-identical): `LinearTrain` against
    /// reshape / matmul, `SwiGluProj` against two matmuls and the SwiGLU op, at a size where
    /// the GEMMs block and thread.
    #[test]
    fn fused_ops_match_the_ops_they_replace_bit_for_bit() {
        use crate::kernels::linear_train::LinearTrain;
        use crate::kernels::train_ops::SwiGluOp;
        let dev = Device::Cpu;
        let var = |shape: &[usize], sd: f32| {
            Var::from_tensor(&Tensor::randn(0f32, sd, shape, &dev).unwrap()).unwrap()
        };
        let (x, wg, wu) = (
            var(&[3, 37, 256], 1.0),
            var(&[1024, 256], 0.1),
            var(&[1024, 256], 0.1),
        );
        let (xt, gt, ut) = (x.as_tensor(), wg.as_tensor(), wu.as_tensor());
        let probe = Tensor::randn(0f32, 1.0, (3, 37, 1024), &dev).unwrap();
        let backward = |y: &Tensor| (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let x2 = xt.reshape((111, 256)).unwrap();
        let linear = |w: &Tensor| x2.matmul(&w.t().unwrap()).unwrap();
        let plain = linear(gt).reshape((3, 37, 1024)).unwrap();
        let fused = xt.apply_op2(gt, LinearTrain).unwrap();
        assert_eq!(bits_differ(&plain, &fused), 0);
        let (gp, gf) = (backward(&plain), backward(&fused));
        for t in [xt, gt] {
            assert_eq!(bits_differ(gp.get(t).unwrap(), gf.get(t).unwrap()), 0);
        }
        let plain = linear(gt).apply_op2(&linear(ut), SwiGluOp).unwrap();
        let plain = plain.reshape((3, 37, 1024)).unwrap();
        let fused = xt.apply_op3(gt, ut, SwiGluProj::default()).unwrap();
        assert_eq!(bits_differ(&plain, &fused), 0);
        let (gp, gf) = (backward(&plain), backward(&fused));
        for t in [xt, gt, ut] {
            assert_eq!(bits_differ(gp.get(t).unwrap(), gf.get(t).unwrap()), 0);
        }
    }
}
