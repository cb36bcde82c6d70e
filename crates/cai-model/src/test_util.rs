//! Helpers shared by the unit tests of the tensor ops.

use candle_core::Tensor;

/// The largest absolute element-wise difference of two tensors of one shape.
/// The largest `|t_i|`.
pub(crate) fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

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

/// Run `f` (values and gradients of one op) in f32 and inside a
/// [`crate::autocast::Bf16Matmuls`] scope. Where AMX runs, every output must differ from its
/// f32 value (the bf16 path ran) by less than `tol` times the f32 output's largest magnitude;
/// elsewhere the scope changes nothing and the outputs must be equal.
pub(crate) fn assert_autocast_near_f32(f: impl Fn() -> Vec<Tensor>, tol: f32) {
    let exact = f();
    let mixed = {
        let _scope = crate::autocast::Bf16Matmuls::enter();
        f()
    };
    assert!(
        !crate::autocast::bf16_matmuls(),
        "the scope outlived its guard"
    );
    assert_eq!(exact.len(), mixed.len());
    for (e, m) in exact.iter().zip(&mixed) {
        let diff = max_abs_diff(e, m);
        let scale = max_abs(e);
        if crate::autocast::bf16_training_products_available() {
            assert!(diff > 0.0 && diff < tol * scale, "{diff} against {scale}");
        } else {
            assert_eq!(diff, 0.0);
        }
    }
}
