//! Helpers shared by the unit tests of the tensor ops.

use candle_core::Tensor;

/// The largest absolute element-wise difference of two tensors of one shape.
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("tensors of one shape")
}
