//! `x Wᵀ` for a linear layer in f32 CPU training as ONE graph node, whatever the rank of `x`.
//!
//! Through candle's ops a linear layer is four nodes (reshape the input to 2-D, transpose the
//! weight, matmul, reshape back), and candle's backward turns each node's gradient into a
//! zero-filled tensor plus an add: ~14 % of bench-6m training went to those adds and fills.
//! Here the forward product and both backward products (`∂x = G W`, `∂W = Gᵀ x`) go straight
//! into fresh, unfilled buffers through [`crate::kernels::dense`]; an operand that takes no
//! gradient (a frozen weight, an input made from no variable) gets none computed.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use crate::kernels::bf16;
use crate::kernels::cpu_storage::contiguous_f32;
use crate::kernels::dense::{self, Mat};

/// Shapes: x `[.., k]` (contiguous), w `[n, k]` (contiguous) -> `[.., n]`.
pub struct LinearTrain;

/// A vector of `len` f32 whose elements the caller writes before anything reads them.
///
/// # Safety
/// Every element must be written before it is read (f32 has no invalid bit patterns, so the
/// only hazard is reading garbage). Zero-filling buffers the size of a layer's activations was
/// part of the ~20 % of training time that candle's backward spent filling and adding.
pub(crate) unsafe fn unfilled(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: capacity is `len`; the caller writes every element before reading it.
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(len)
    };
    v
}

/// The f32 elements of a contiguous CPU tensor, with the storage guard that keeps them alive.
pub(crate) fn with_f32<R>(
    t: &Tensor,
    op: &str,
    what: &str,
    f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("{op}: {what} is not on the CPU");
    };
    f(contiguous_f32(cpu, layout, op, what)?)
}

/// The input's rows `m` and width `k` for a weight `[n, k]`, or an error naming both shapes.
fn rows_of(x: &Shape, w: &Shape, op: &str) -> candle_core::Result<(usize, usize, usize)> {
    let (n, k) = w.dims2()?;
    let dims = x.dims();
    match dims.last() {
        Some(&last) if last == k => Ok((x.elem_count() / k.max(1), n, k)),
        _ => candle_core::bail!("{op}: the input is {dims:?} but the weight is [{n}, {k}]"),
    }
}

/// The output shape `[.., n]` of an input `[.., k]`.
fn out_shape(x: &Shape, n: usize) -> Shape {
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    Shape::from(dims)
}

/// Whether this thread's training products take bf16 operands on AMX for a layer of `k`
/// inputs and `n` outputs (see [`crate::autocast`]).
fn in_bf16(n: usize, k: usize) -> bool {
    crate::autocast::bf16_training_products() && bf16::train::handles(n, k)
}

/// `y[m, n] = x[m, k] Wᵀ` with `w` row-major `[n, k]`, into a fresh buffer.
pub(crate) fn forward_product(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    if in_bf16(n, k) {
        return bf16::train::forward(x, w, m, n, k);
    }
    // SAFETY: `dense::gemm` without `accumulate` writes all m × n elements.
    let mut y = unsafe { unfilled(m * n) };
    let threads = rayon::current_num_threads();
    dense::gemm(
        &mut y,
        n,
        Mat::rows(x, k),
        Mat::transposed(w, k),
        m,
        n,
        k,
        1.0,
        false,
        threads,
    );
    y
}

/// `∂x[m, k] = G[m, n] W[n, k]`, or `+=` into `dx` when `accumulate`.
pub(crate) fn input_grad(
    dx: &mut [f32],
    g: &[f32],
    w: &[f32],
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
) {
    if in_bf16(n, k) {
        let product = bf16::train::input_grad(g, w, m, n, k);
        if accumulate {
            dx.iter_mut().zip(&product).for_each(|(d, p)| *d += p);
        } else {
            dx.copy_from_slice(&product);
        }
        return;
    }
    let threads = rayon::current_num_threads();
    dense::gemm(
        dx,
        k,
        Mat::rows(g, n),
        Mat::rows(w, k),
        m,
        k,
        n,
        1.0,
        accumulate,
        threads,
    );
}

/// `∂W[n, k] = Gᵀ x` for `G` `[m, n]` and `x` `[m, k]`, into a fresh buffer.
pub(crate) fn weight_grad(g: &[f32], x: &[f32], (m, n, k): (usize, usize, usize)) -> Vec<f32> {
    if in_bf16(n, k) {
        return bf16::train::weight_grad(g, x, m, n, k);
    }
    // SAFETY: `dense::gemm` without `accumulate` writes all n × k elements.
    let mut dw = unsafe { unfilled(n * k) };
    let threads = rayon::current_num_threads();
    dense::gemm(
        &mut dw,
        k,
        Mat::transposed(g, n),
        Mat::rows(x, k),
        n,
        k,
        m,
        1.0,
        false,
        threads,
    );
    dw
}

impl CustomOp2 for LinearTrain {
    fn name(&self) -> &'static str {
        "linear-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, n, k) = rows_of(l1.shape(), l2.shape(), self.name())?;
        let x = contiguous_f32(s1, l1, self.name(), "x")?;
        let w = contiguous_f32(s2, l2, self.name(), "the weight")?;
        Ok((
            CpuStorage::F32(forward_product(x, w, m, n, k)),
            out_shape(l1.shape(), n),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let name = self.name();
        let dims = rows_of(x.shape(), w.shape(), name)?;
        let grad = grad.contiguous()?;
        with_f32(&grad, name, "the gradient", |g| {
            project_backward(x, w, g, dims, name)
        })
    }
}

/// The input and weight gradients of `y = x wᵀ` from `∂y` `[m, n]`, each only when its operand
/// takes one. Shapes: x `[.., k]`, w `[n, k]`.
pub(crate) fn project_backward(
    x: &Tensor,
    w: &Tensor,
    dy: &[f32],
    dims: (usize, usize, usize),
    name: &str,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
    let (m, n, k) = dims;
    let dx = if x.track_op() {
        // SAFETY: `input_grad` without `accumulate` writes all m × k elements.
        let mut dx = unsafe { unfilled(m * k) };
        with_f32(w, name, "the weight", |w| {
            input_grad(&mut dx, dy, w, dims, false);
            Ok(())
        })?;
        Some(Tensor::from_vec(dx, x.shape(), x.device())?)
    } else {
        None
    };
    let dw = if w.track_op() {
        let dw = with_f32(x, name, "x", |x| Ok(weight_grad(dy, x, dims)))?;
        Some(Tensor::from_vec(dw, (n, k), w.device())?)
    } else {
        None
    };
    Ok((dx, dw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::max_abs_diff;
    use candle_core::{Device, Var};

    /// Values and both gradients equal `x.matmul(wᵀ)`'s for a rank-3 input; a frozen weight
    /// (a plain tensor) gets no gradient and the input still does.
    #[test]
    fn matches_the_matmul_in_value_and_gradients() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 5, 7), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 7), &dev).unwrap()).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (2, 5, 3), &dev).unwrap();
        let (xt, wt) = (x.as_tensor(), w.as_tensor());
        let plain = xt.broadcast_matmul(&wt.t().unwrap()).unwrap();
        let fused = xt.apply_op2(wt, LinearTrain).unwrap();
        assert_eq!(fused.dims(), &[2, 5, 3]);
        assert!(max_abs_diff(&plain, &fused) < 1e-5);
        let backward = |y: Tensor| (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let (gp, gf) = (backward(plain), backward(fused));
        for t in [xt, wt] {
            assert!(max_abs_diff(gp.get(t).unwrap(), gf.get(t).unwrap()) < 1e-5);
        }
        let frozen = wt.detach();
        let g = backward(xt.apply_op2(&frozen, LinearTrain).unwrap());
        assert!(g.get(&frozen).is_none(), "a frozen weight got a gradient");
        assert!(max_abs_diff(gp.get(xt).unwrap(), g.get(xt).unwrap()) < 1e-5);
    }

    /// Inside a `Bf16Matmuls` scope the value and both gradients stay within bf16 rounding of
    /// the f32 ones and differ from them where AMX runs; without AMX they are the f32 ones.
    /// The scope ends with its guard.
    #[test]
    fn autocast_products_stay_near_f32() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 5, 64), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (32, 64), &dev).unwrap()).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (2, 5, 32), &dev).unwrap();
        let (xt, wt) = (x.as_tensor(), w.as_tensor());
        crate::test_util::assert_autocast_near_f32(
            || {
                let y = xt.apply_op2(wt, LinearTrain).unwrap();
                let g = (&y * &probe)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                vec![y, g.get(xt).unwrap().clone(), g.get(wt).unwrap().clone()]
            },
            0.02,
        );
    }

    /// A weight whose width is not the input's is an error that names both shapes.
    #[test]
    fn mismatched_shapes_are_an_error() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((4, 6), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::zeros((3, 5), candle_core::DType::F32, &dev).unwrap();
        let err = x.apply_op2(&w, LinearTrain).unwrap_err().to_string();
        assert!(err.contains("[4, 6]") && err.contains("[3, 5]"), "{err}");
    }
}
