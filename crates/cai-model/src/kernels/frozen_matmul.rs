//! `x Wᵀ` with a frozen `W` as one op whose backward pass computes only the input's gradient.
//!
//! candle's matmul backward always computes both operands' gradients: with LoRA, every frozen
//! base matrix got a `[out, in]` gradient (an extra GEMM per layer, and the whole model's size
//! in the gradient store until the step ends) that nothing used. The forward pass is the same
//! CPU GEMM call `x.matmul(&w.t())` makes, so values are bit for bit the same.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

/// Shapes: x `[m, k]`, w `[n, k]` (frozen) -> `[m, n]`; the gradient flows to `x` only.
pub struct FrozenMatmul;

impl CustomOp2 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, k) = x_layout.shape().dims2()?;
        let (n, k2) = w_layout.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("frozen-matmul: x is [{m}, {k}] but the weight is [{n}, {k2}]");
        }
        let out = x.matmul(w, (1, m, n, k), x_layout, &w_layout.transpose(0, 1)?)?;
        Ok((out, Shape::from((m, n))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(w)?), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The same values as `x.matmul(&w.t())`, the same gradient for `x`, and none for `w`.
    #[test]
    fn matches_the_matmul_and_leaves_the_weight_without_gradient() {
        let dev = Device::Cpu;
        let x = Var::new(&[[1f32, 2.0, 3.0], [-1.0, 0.5, 4.0]], &dev).unwrap();
        let w = Tensor::new(&[[0.5f32, -1.0, 2.0], [3.0, 0.25, -0.5]], &dev).unwrap();
        let plain = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
        let fused = x.as_tensor().apply_op2(&w, FrozenMatmul).unwrap();
        let values = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
        assert_eq!(values(&plain), values(&fused));
        let weights = Tensor::new(&[[1f32, -2.0], [0.5, 3.0]], &dev).unwrap();
        let g_plain = (plain * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g_fused = (fused * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(
            values(g_plain.get(x.as_tensor()).unwrap()),
            values(g_fused.get(x.as_tensor()).unwrap())
        );
        // candle's matmul stores a gradient for the weight's transposed view; this op none.
        assert!(g_fused.get(&w).is_none());
        assert_eq!(
            g_plain.get_ids().count(),
            g_fused.get_ids().count() + 1,
            "one gradient fewer: the weight's"
        );
    }
}
