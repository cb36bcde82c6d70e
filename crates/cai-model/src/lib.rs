//! cai-model: Hugging Face causal LMs (Llama, Mistral, Qwen2/3, GPT-2) on cai's own
//! differentiable candle decoder — loading, tokenizers, batched generation, log-prob scoring.
#![deny(missing_docs)]

mod atomic_file;
pub mod attention_backward;
pub mod batching;
pub mod bench;
pub mod bench_context;
pub mod checkpoint;
pub mod config;
mod cpu_storage;
pub mod decode_attention;
pub mod decode_batch;
pub mod decoder;
pub mod device;
mod error;
pub mod fork_score;
pub mod generate;
pub mod hub;
pub mod init;
pub mod kv_cache;
pub mod layers;
pub mod local;
pub mod lora;
pub mod mask;
pub mod memory;
pub mod prefix;
mod read_limits;
pub mod reward_model;
pub mod rms_norm;
pub mod sampling;
pub mod score;
pub mod small_matmul;
#[cfg(test)]
mod test_util;
pub mod tokenizer;
pub mod train_ops;
mod vector;
pub mod weights;

pub use atomic_file::{write_atomic, write_atomic_with};

pub use error::{ModelError, Result};
