//! RMSNorm as one CPU op with a hand-written backward pass, for training in f32: the
//! composition of differentiable ops costs about six element-wise passes forward and a dozen
//! backward per norm; this costs one and two.
//!
//! Forward: `y = w ⊙ x · r` with `r = (mean(x²) + ε)^-½` per row. Backward, with `g = ∂L/∂y`:
//! `∂L/∂w = Σ_rows g ⊙ x · r` and `∂L/∂x = r · (g ⊙ w) − x · r³ · mean(g ⊙ w ⊙ x)`.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use crate::kernels::cpu_storage::contiguous_f32;

/// The op; see the module docs. Shapes: x `[.., h]`, w `[h]` -> `[.., h]`.
pub struct RmsNormOp {
    /// ε inside the square root.
    pub eps: f32,
}

/// `r` of each row of `x` (`[rows, h]` row-major).
fn inverse_rms(x: &[f32], h: usize, eps: f32) -> Vec<f32> {
    x.chunks_exact(h)
        .map(|row| {
            let ms = row.iter().map(|v| v * v).sum::<f32>() / h as f32;
            1.0 / (ms + eps).sqrt()
        })
        .collect()
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "rms-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w) = (
            contiguous_f32(s1, l1, self.name(), "x")?,
            contiguous_f32(s2, l2, self.name(), "w")?,
        );
        let h = w.len();
        let r = inverse_rms(x, h, self.eps);
        let mut y = vec![0f32; x.len()];
        for ((yr, xr), &ri) in y.chunks_exact_mut(h).zip(x.chunks_exact(h)).zip(&r) {
            for ((yv, &xv), &wv) in yr.iter_mut().zip(xr).zip(w) {
                *yv = wv * xv * ri;
            }
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let h = w.dim(0)?;
        let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let ws: Vec<f32> = w.to_vec1()?;
        let gs: Vec<f32> = grad.flatten_all()?.to_vec1()?;
        let r = inverse_rms(&xs, h, self.eps);
        let mut dx = vec![0f32; xs.len()];
        let mut dw = vec![0f32; h];
        for (((dxr, xr), gr), &ri) in dx
            .chunks_exact_mut(h)
            .zip(xs.chunks_exact(h))
            .zip(gs.chunks_exact(h))
            .zip(&r)
        {
            let mut dot = 0f32;
            for ((&xv, &gv), (&wv, dwv)) in xr.iter().zip(gr).zip(ws.iter().zip(dw.iter_mut())) {
                dot += gv * wv * xv;
                *dwv += gv * xv * ri;
            }
            let c = ri * ri * ri * dot / h as f32;
            for ((d, &xv), (&gv, &wv)) in dxr.iter_mut().zip(xr).zip(gr.iter().zip(&ws)) {
                *d = ri * gv * wv - xv * c;
            }
        }
        let dx = Tensor::from_vec(dx, x.shape(), x.device())?;
        // A frozen weight (LoRA training) gets no gradient at all, as with candle's own ops.
        let dw = if w.track_op() {
            Some(Tensor::from_vec(dw, h, w.device())?)
        } else {
            None
        };
        Ok((Some(dx), dw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::rms_norm_differentiable;
    use candle_core::{Device, Var};

    #[test]
    fn forward_and_gradients_match_the_composition_of_differentiable_ops() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 5, 8), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(1f32, 0.2, 8, &dev).unwrap()).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (3, 5, 8), &dev).unwrap();
        let fused = x
            .as_tensor()
            .apply_op2(w.as_tensor(), RmsNormOp { eps: 1e-5 })
            .unwrap();
        let plain = rms_norm_differentiable(x.as_tensor(), w.as_tensor(), 1e-5).unwrap();
        let diff = crate::test_util::max_abs_diff;
        assert!(diff(&fused, &plain) < 1e-5);
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
        for v in [&x, &w] {
            let (a, b) = (
                gf.get(v.as_tensor()).unwrap(),
                gp.get(v.as_tensor()).unwrap(),
            );
            assert!(diff(a, b) < 1e-4, "gradient differs by {}", diff(a, b));
        }
    }
}
