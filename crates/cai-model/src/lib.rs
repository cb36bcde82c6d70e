//! cai-model: Hugging Face causal LMs (Llama, Mistral, Qwen2/3, GPT-2) on cai's own
//! differentiable candle decoder — loading, tokenizers, batched generation, log-prob scoring.
#![deny(missing_docs)]

mod atomic_file;
pub mod autocast;
pub mod batching;
pub mod bench;
pub mod bench_context;
pub mod checkpoint;
pub mod config;
pub mod decode_batch;
pub mod decoder;
pub mod device;
mod error;
pub mod fork_score;
pub mod generate;
pub mod gguf;
pub mod hub;
pub mod init;
pub mod json_prefix;
pub mod kernels;
pub mod kv_cache;
pub mod layers;
pub mod local;
pub mod lora;
pub mod mask;
pub mod memory;
pub mod prefix;
pub mod prefix_cache;
mod read_limits;
pub mod reward_model;
pub mod sampling;
pub mod score;
#[cfg(test)]
mod test_util;
pub mod tokenizer;
pub mod weights;

pub use atomic_file::{write_atomic, write_atomic_with};

pub use error::{ModelError, Result};
