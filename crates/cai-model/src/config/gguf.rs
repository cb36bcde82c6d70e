//! A GGUF file's `{arch}.*` metadata and tensor directory as a [`ModelConfig`]: the file's
//! facts are written as the Hugging Face `config.json` transformers derives from the same
//! file, then read by the one `config.json` reader, so both paths validate alike.

use serde_json::{json, Value};

use super::{Architecture, ModelConfig};
use crate::gguf::GgufFile;
use crate::Result;

/// The `general.architecture` values cai reads.
pub const GGUF_ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3", "gpt2"];

impl ModelConfig {
    /// The config of the model in a GGUF file. Sizes come from `{arch}.embedding_length`,
    /// `block_count`, `feed_forward_length`, `attention.head_count(_kv)`, `context_length`;
    /// `attention.key_length` (else `rope.dimension_count` for Llama) gives the head width;
    /// `rope.freq_base`, `rope.scaling.{type,factor}` and the norm ε as stored; the vocabulary
    /// size from the embedding's rows; q/k/v biases and a separate output matrix from the
    /// tensors present (no `output.weight`: tied embeddings); bos/eos from `tokenizer.ggml.*`.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let arch_name = file.architecture()?;
        let arch = match arch_name {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            "qwen3" => Architecture::Qwen3,
            "gpt2" => Architecture::Gpt2,
            other => {
                return Err(crate::ModelError::UnsupportedArchitecture {
                    path: file.path().to_path_buf(),
                    model_type: format!("{other} (general.architecture)"),
                    supported: GGUF_ARCHITECTURES.join(", "),
                })
            }
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let hidden = file.required_usize(&key("embedding_length"))?;
        let layers = file.required_usize(&key("block_count"))?;
        let heads = file.required_usize(&key("attention.head_count"))?;
        let context = file.required_usize(&key("context_length"))?;
        let tensors = &file.content().tensor_infos;
        let vocab = match tensors.get("token_embd.weight") {
            Some(info) => info.shape.dims()[0],
            None => {
                return Err(file.error(
                    "tensor 'token_embd.weight' is missing; the file holds no token embeddings",
                ))
            }
        };
        let bos = file.token_id("tokenizer.ggml.bos_token_id")?;
        let eos = file.token_id("tokenizer.ggml.eos_token_id")?;
        let value = if arch == Architecture::Gpt2 {
            json!({
                "model_type": "gpt2",
                "vocab_size": vocab,
                "n_embd": hidden,
                "n_layer": layers,
                "n_head": heads,
                "n_inner": file.usize(&key("feed_forward_length"))?,
                "n_positions": context,
                "layer_norm_epsilon": file.f64(&key("attention.layer_norm_epsilon"))?.unwrap_or(1e-5),
                "activation_function": "gelu_new",
                "bos_token_id": bos,
                "eos_token_id": eos,
            })
        } else {
            let head_dim = match file.usize(&key("attention.key_length"))? {
                Some(d) => Some(d),
                None if arch == Architecture::Llama => file.usize(&key("rope.dimension_count"))?,
                None => None,
            };
            let rope_scaling = match file.str(&key("rope.scaling.type"))? {
                None | Some("none") => Value::Null,
                Some("linear") => {
                    let factor = file.f64(&key("rope.scaling.factor"))?.ok_or_else(|| {
                        file.error(format!(
                            "metadata `{}` is missing for linear RoPE scaling",
                            key("rope.scaling.factor")
                        ))
                    })?;
                    json!({"rope_type": "linear", "factor": factor})
                }
                Some(other) => {
                    return Err(file.error(format!(
                        "metadata `{}` is \"{other}\"; cai implements RoPE scaling \"linear\" \
                         (and none); convert the original Hugging Face model instead",
                        key("rope.scaling.type")
                    )))
                }
            };
            json!({
                "model_type": arch.model_type(),
                "vocab_size": vocab,
                "hidden_size": hidden,
                "intermediate_size": file.required_usize(&key("feed_forward_length"))?,
                "num_hidden_layers": layers,
                "num_attention_heads": heads,
                "num_key_value_heads": file.usize(&key("attention.head_count_kv"))?.unwrap_or(heads),
                "head_dim": head_dim,
                "max_position_embeddings": context,
                "rms_norm_eps": file.f64(&key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-6),
                "rope_theta": file.f64(&key("rope.freq_base"))?.unwrap_or(10_000.0),
                "rope_scaling": rope_scaling,
                "attention_bias": tensors.contains_key("blk.0.attn_q.bias"),
                "mlp_bias": tensors.contains_key("blk.0.ffn_up.bias"),
                "tie_word_embeddings": !tensors.contains_key("output.weight"),
                "bos_token_id": bos,
                "eos_token_id": eos,
            })
        };
        let mut config = ModelConfig::from_json(&value, file.path())?;
        if arch != Architecture::Gpt2 {
            config.o_bias = tensors.contains_key("blk.0.attn_output.bias");
            config.validate().map_err(|e| file.error(e))?;
        }
        Ok(config)
    }
}
