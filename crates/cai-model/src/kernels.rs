//! The CPU kernels under the decoder, apart from the model API that calls them: custom candle
//! ops (the few-row matmul of a decode step; bf16-weight matmuls; causal attention, RMSNorm,
//! rotary embeddings, SwiGLU, linear layers and head split/merge with hand-written backward
//! passes for training) and the vector and storage primitives they share.

pub mod attention_backward;
pub mod attention_heads;
pub mod bf16;
mod cpu_storage;
pub mod decode_attention;
mod dense;
pub mod head_nll;
pub mod linear_matmul;
pub mod linear_train;
pub mod mlp_block;
pub mod rms_norm;
pub mod small_matmul;
pub mod train_ops;
pub(crate) mod vector;

/// `Σ exp(x_i − shift)` on the widest vectors this CPU has (summed in f64 across blocks).
pub fn sum_exp_shifted(xs: &[f32], shift: f32) -> f64 {
    vector::sum_exp_shifted(xs, shift)
}

/// `x_i ← exp(x_i − shift)` in place on the widest vectors this CPU has; returns the sum.
pub fn exp_shifted_in_place(xs: &mut [f32], shift: f32) -> f32 {
    vector::exp_shifted_sum(xs, shift)
}
