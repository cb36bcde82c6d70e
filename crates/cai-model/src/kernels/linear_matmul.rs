//! `x Wᵀ` for a linear layer's weight `[out, in]` as one op, for f32 on the CPU: inference, and
//! training over a frozen weight.
//!
//! Forward, the product goes straight into a fresh output through [`crate::kernels::dense`]
//! (candle's matmul zero-fills its output first: ~4 % of a SmolLM2 scoring pass). Backward,
//! `∂x = G W` and, only when asked (`weight_grad`), `∂W = Gᵀ x`: candle's matmul always computed
//! both operands' gradients (with LoRA, a frozen base matrix got an unused `[out, in]` gradient:
//! an extra GEMM per layer and the model's size in the gradient store). A trainable weight stays
//! on candle's matmul ([`crate::layers::Linear`] says why).

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use crate::kernels::dense::{self, Mat};

/// Shapes: x `[m, k]`, w `[n, k]` (any strides) -> `[m, n]`.
pub struct LinearMatmul {
    /// Whether the backward pass computes the weight's gradient (false: a frozen weight).
    pub weight_grad: bool,
}

/// A strided 2-D operand of the op: its elements and `(rows, cols)` strides.
fn operand<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<(Mat<'a>, usize, usize)> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("linear-matmul: {what} must be f32");
    };
    let (rows, cols) = l.shape().dims2()?;
    let st = l.stride();
    Ok((
        Mat {
            data: &data[l.start_offset()..],
            rs: st[0],
            cs: st[1],
        },
        rows,
        cols,
    ))
}

impl CustomOp2 for LinearMatmul {
    fn name(&self) -> &'static str {
        "linear-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, m, k) = operand(s1, l1, "x")?;
        let (w, n, k2) = operand(s2, l2, "the weight")?;
        if k != k2 {
            candle_core::bail!("linear-matmul: x is [{m}, {k}] but the weight is [{n}, {k2}]");
        }
        // Wᵀ as a [k, n] operand: element (t, j) is w(j, t).
        let wt = Mat {
            data: w.data,
            rs: w.cs,
            cs: w.rs,
        };
        let mut out: Vec<f32> = Vec::with_capacity(m * n);
        // SAFETY: f32 has no invalid bit patterns, and `dense::gemm` without `accumulate`
        // writes every one of the m × n elements before anything reads them (zero-filling
        // first was ~4 % of a SmolLM2 scoring pass).
        #[allow(clippy::uninit_vec)]
        unsafe {
            out.set_len(m * n)
        };
        let threads = rayon::current_num_threads();
        dense::gemm(&mut out, n, x, wt, m, n, k, 1.0, false, threads);
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = grad.matmul(w)?;
        let dw = if self.weight_grad {
            Some(grad.t()?.matmul(x)?)
        } else {
            None
        };
        Ok((Some(dx), dw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
    }

    /// The same values and gradients as `x.matmul(&w.t())`; a frozen weight gets none.
    #[test]
    fn matches_the_matmul_in_value_and_gradients() {
        let dev = Device::Cpu;
        let x = Var::new(&[[1f32, 2.0, 3.0], [-1.0, 0.5, 4.0]], &dev).unwrap();
        let w = Var::new(&[[0.5f32, -1.0, 2.0], [3.0, 0.25, -0.5]], &dev).unwrap();
        let probe = Tensor::new(&[[1f32, -2.0], [0.5, 3.0]], &dev).unwrap();
        let (xt, wt) = (x.as_tensor(), w.as_tensor());
        let plain = xt.matmul(&wt.t().unwrap()).unwrap();
        let backward = |y: Tensor| (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let g_plain = backward(plain.clone());
        for weight_grad in [true, false] {
            let fused = xt.apply_op2(wt, LinearMatmul { weight_grad }).unwrap();
            assert!(close(&values(&plain), &values(&fused)));
            let g = backward(fused);
            assert!(close(
                &values(g_plain.get(xt).unwrap()),
                &values(g.get(xt).unwrap())
            ));
            match g.get(wt) {
                Some(dw) => {
                    assert!(weight_grad, "a frozen weight got a gradient");
                    assert!(close(&values(g_plain.get(wt).unwrap()), &values(dw)));
                }
                None => assert!(!weight_grad, "a training weight got no gradient"),
            }
        }
    }

    /// A weight stored transposed (`[in, out]` storage seen as `[out, in]`) and a strided input.
    #[test]
    fn strided_operands_give_the_plain_product() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (5, 14), &dev)
            .unwrap()
            .narrow(1, 2, 7)
            .unwrap();
        let w_in_out = Tensor::randn(0f32, 1.0, (7, 9), &dev).unwrap();
        let w = w_in_out.t().unwrap(); // [9, 7], not contiguous
        let want = x.matmul(&w.t().unwrap()).unwrap();
        let op = LinearMatmul { weight_grad: false };
        let got = x.apply_op2_no_bwd(&w, &op).unwrap();
        assert!(close(&values(&want), &values(&got)));
    }
}
