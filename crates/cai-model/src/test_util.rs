//! Helpers shared by the unit tests of the tensor ops.

use candle_core::Tensor;

/// The largest absolute element-wise difference of two tensors of one shape.
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("tensors of one shape")
}

/// A random f32 Llama on the CPU small enough for a unit test: hidden 32, 2 layers, 4 heads,
/// intermediate 64, vocabulary 100, `positions` positions.
pub(crate) fn tiny_decoder(positions: usize) -> crate::decoder::Decoder {
    let shape = crate::init::ModelShape {
        hidden_size: 32,
        num_layers: 2,
        num_heads: 4,
        intermediate_size: 64,
        vocab_size: 100,
        max_position_embeddings: positions,
        ..crate::init::ModelShape::default()
    };
    let config = shape.config().expect("a valid shape");
    crate::weights::random_decoder(
        config,
        0,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .expect("a random decoder")
}
