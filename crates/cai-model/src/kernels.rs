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
