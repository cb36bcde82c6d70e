//! Model configuration: Hugging Face `config.json` for llama, mistral, qwen2, qwen3 and gpt2,
//! read into one architecture-neutral [`ModelConfig`] and written back in HF form. The serde
//! shapes of the files themselves are in `config/hf_files.rs`.

mod gguf;
mod hf_files;

use std::path::Path;

use candle_core::DType;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{ModelError, Result};
pub use gguf::GGUF_ARCHITECTURES;
use hf_files::{Gpt2File, LlamaFile};

/// The `model_type` values cai implements.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["llama", "mistral", "qwen2", "qwen3", "gpt2"];

/// A supported architecture family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Llama 1/2/3: RMSNorm, RoPE, SwiGLU, GQA.
    Llama,
    /// Mistral: Llama plus sliding-window attention.
    Mistral,
    /// Qwen2: Llama plus q/k/v biases.
    Qwen2,
    /// Qwen3: Llama plus per-head RMSNorm of q and k.
    Qwen3,
    /// GPT-2: LayerNorm, learned positions, GELU MLP, fused Conv1D `c_attn`.
    Gpt2,
}

impl Architecture {
    /// Parse a `model_type` string.
    pub fn from_model_type(s: &str) -> Option<Self> {
        Some(match s {
            "llama" => Self::Llama,
            "mistral" => Self::Mistral,
            "qwen2" => Self::Qwen2,
            "qwen3" => Self::Qwen3,
            "gpt2" => Self::Gpt2,
            _ => return None,
        })
    }

    /// The `model_type` string.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Gpt2 => "gpt2",
        }
    }

    /// The transformers class name written into `architectures`.
    pub fn hf_class(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Mistral => "MistralForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Qwen3 => "Qwen3ForCausalLM",
            Self::Gpt2 => "GPT2LMHeadModel",
        }
    }
}

/// Llama-3 style frequency-dependent RoPE scaling (`rope_type: "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    /// Overall scale factor.
    pub factor: f64,
    /// Wavelengths longer than `original_max_position_embeddings / low_freq_factor` are scaled.
    pub low_freq_factor: f64,
    /// Wavelengths shorter than `original_max_position_embeddings / high_freq_factor` are kept.
    pub high_freq_factor: f64,
    /// The context length the model was pre-trained with.
    pub original_max_position_embeddings: usize,
}

/// RoPE frequency scaling.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum RopeScaling {
    /// Positions divided by `factor` (`rope_type: "linear"`).
    Linear(f64),
    /// Llama 3.
    Llama3(Llama3RopeScaling),
}

/// How positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum PositionEncoding {
    /// Rotary embeddings on q and k.
    Rope {
        /// Base θ.
        theta: f64,
        /// Optional scaling.
        scaling: Option<RopeScaling>,
    },
    /// A learned position embedding table (GPT-2 `wpe`).
    Learned,
}

/// The normalisation layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NormKind {
    /// RMSNorm with a weight.
    Rms,
    /// LayerNorm with weight and bias.
    Layer,
}

/// The MLP's shape and activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MlpKind {
    /// `down(silu(gate(x)) * up(x))`.
    SwiGlu,
    /// `c_proj(gelu(c_fc(x)))`, tanh approximation (GPT-2's `gelu_new`).
    GeluTanh,
    /// `c_proj(gelu(c_fc(x)))`, exact erf GELU.
    GeluErf,
}

/// Everything the decoder needs to know about a model's shape, in one neutral form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Architecture family.
    pub architecture: Architecture,
    /// Rows of the embedding and output matrices.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_layers: usize,
    /// Attention heads for queries.
    pub num_heads: usize,
    /// Attention heads for keys and values (grouped-query attention when fewer).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Longest sequence the model supports.
    pub max_position_embeddings: usize,
    /// Normalisation kind.
    pub norm: NormKind,
    /// Normalisation epsilon.
    pub norm_eps: f64,
    /// Position encoding.
    pub positions: PositionEncoding,
    /// MLP kind.
    pub mlp: MlpKind,
    /// Biases on q, k, v.
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_bias: bool,
    /// Biases in the MLP projections.
    pub mlp_bias: bool,
    /// Per-head RMSNorm on q and k (Qwen3).
    pub qk_norm: bool,
    /// Sliding attention window in tokens (Mistral; Qwen with `use_sliding_window`).
    pub sliding_window: Option<usize>,
    /// Which layers use the window (`None`: every layer, as in Mistral). Qwen chooses them
    /// with `max_window_layers` (layers from that index on) or an explicit `layer_types`.
    #[serde(default)]
    pub window_layers: Option<Vec<bool>>,
    /// Output matrix shares the embedding.
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence token id from the config.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token ids from the config.
    pub eos_token_ids: Vec<u32>,
    /// Dtype on disk as named by the config (`torch_dtype`/`dtype`), if any.
    pub torch_dtype: Option<String>,
}

impl ModelConfig {
    /// Read `config.json` from a file.
    pub fn from_file(path: &Path) -> Result<Self> {
        if let Some(e) = path.parent().and_then(crate::gguf::folder_needed) {
            return Err(e);
        }
        let text = crate::read_limits::read_text(path, crate::read_limits::CONFIG_LIMIT)
            .map_err(|e| ModelError::io(path, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            message: format!("not valid JSON: {e}"),
        })?;
        Self::from_json(&value, path)
    }

    /// Interpret a parsed `config.json`; `path` is used in error messages.
    pub fn from_json(value: &Value, path: &Path) -> Result<Self> {
        let err = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let model_type = value
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| err("missing field `model_type` (a string such as \"llama\")".into()))?;
        let architecture = Architecture::from_model_type(model_type).ok_or_else(|| {
            ModelError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                model_type: model_type.to_string(),
                supported: SUPPORTED_MODEL_TYPES.join(", "),
            }
        })?;
        hf_files::check_field_types(value, architecture).map_err(err)?;
        let cfg = match architecture {
            Architecture::Gpt2 => {
                let raw: Gpt2File = serde_json::from_value(value.clone())
                    .map_err(|e| err(format!("{e} (reading a gpt2 config)")))?;
                raw.into_config()
            }
            arch => {
                let raw: LlamaFile = serde_json::from_value(value.clone())
                    .map_err(|e| err(format!("{e} (reading a {} config)", arch.model_type())))?;
                raw.into_config(arch).map_err(err)?
            }
        };
        cfg.validate().map_err(err)?;
        Ok(cfg)
    }

    /// Check every size is positive and within range and the numbers fit together (heads
    /// divide the width, …). Messages name the fields as this architecture's `config.json`
    /// spells them.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let names = FieldNames::of(self.architecture);
        let sizes = [
            (names.vocab, self.vocab_size),
            (names.hidden, self.hidden_size),
            (names.intermediate, self.intermediate_size),
            (names.layers, self.num_layers),
            (names.heads, self.num_heads),
            (names.kv_heads, self.num_kv_heads),
            (names.positions, self.max_position_embeddings),
        ];
        for (name, v) in sizes {
            if v == 0 {
                return Err(format!("`{name}` is 0; it must be positive"));
            }
        }
        // Token ids, positions and every index into a weight are 32-bit in the kernels.
        for (name, v) in sizes.into_iter().take(6) {
            if v > MAX_SIZE {
                return Err(format!(
                    "`{name}` is {v}, beyond the largest size cai supports ({MAX_SIZE})"
                ));
            }
        }
        if self.architecture == Architecture::Gpt2
            && self.head_dim * self.num_heads != self.hidden_size
        {
            return Err(format!(
                "n_embd ({}) must be divisible by n_head ({})",
                self.hidden_size, self.num_heads
            ));
        }
        if self.head_dim == 0 || self.head_dim > MAX_SIZE {
            return Err(format!(
                "`head_dim` is {}; it must be positive and at most {MAX_SIZE}",
                self.head_dim
            ));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_heads, self.num_kv_heads
            ));
        }
        if let Some(0) = self.sliding_window {
            return Err("`sliding_window` is 0; it must be positive (or null: no window)".into());
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return Err(format!(
                "`{}` is {}; it must be a finite number ≥ 0",
                names.eps, self.norm_eps
            ));
        }
        if let PositionEncoding::Rope { theta, scaling } = self.positions {
            if !self.head_dim.is_multiple_of(2) {
                return Err(format!(
                    "head_dim ({}) must be even for rotary embeddings",
                    self.head_dim
                ));
            }
            if !(theta.is_finite() && theta > 0.0) {
                return Err(format!("`rope_theta` is {theta}; it must be positive"));
            }
            validate_rope_scaling(scaling)?;
        }
        Ok(())
    }

    /// The model in a line for messages: architecture, parameters and the sizes that make
    /// them, under this architecture's `config.json` names.
    pub fn describe(&self) -> String {
        let names = FieldNames::of(self.architecture);
        format!(
            "a {} model of {} parameters ({} {}, {} {}, {} {}, {} {}, {} {}, {} {})",
            self.architecture.model_type(),
            thousands(self.parameter_count()),
            names.vocab,
            self.vocab_size,
            names.hidden,
            self.hidden_size,
            names.intermediate,
            self.intermediate_size,
            names.layers,
            self.num_layers,
            names.heads,
            self.num_heads,
            names.positions,
            self.max_position_embeddings,
        )
    }

    /// The attention window of one layer, if it has one.
    pub fn layer_window(&self, layer: usize) -> Option<usize> {
        let window = self.sliding_window?;
        match &self.window_layers {
            None => Some(window),
            Some(layers) => layers
                .get(layer)
                .copied()
                .unwrap_or(false)
                .then_some(window),
        }
    }

    /// Number of parameters (embeddings included, a tied output matrix counted once);
    /// `usize::MAX` where it does not fit.
    pub fn num_parameters(&self) -> usize {
        usize::try_from(self.parameter_count()).unwrap_or(usize::MAX)
    }

    /// Number of parameters, computed without overflow for any sizes (saturating).
    pub fn parameter_count(&self) -> u128 {
        let n = |v: usize| v as u128;
        let h = n(self.hidden_size);
        let inter = n(self.intermediate_size);
        let (q, kv) = (
            n(self.num_heads).saturating_mul(n(self.head_dim)),
            n(self.num_kv_heads).saturating_mul(n(self.head_dim)),
        );
        let norm = if self.norm == NormKind::Layer {
            2 * h
        } else {
            h
        };
        let attn = h
            .saturating_mul(q)
            .saturating_add(h.saturating_mul(kv).saturating_mul(2))
            .saturating_add(q.saturating_mul(h))
            .saturating_add(if self.qkv_bias { q + 2 * kv } else { 0 })
            .saturating_add(if self.o_bias { h } else { 0 })
            .saturating_add(if self.qk_norm {
                2 * n(self.head_dim)
            } else {
                0
            });
        let (mats, biases) = match self.mlp {
            MlpKind::SwiGlu => (3, 2),
            _ => (2, 1),
        };
        let mlp = h
            .saturating_mul(inter)
            .saturating_mul(mats)
            .saturating_add(if self.mlp_bias { inter * biases + h } else { 0 });
        let per_layer = attn.saturating_add(mlp).saturating_add(2 * norm);
        let embed = n(self.vocab_size).saturating_mul(h).saturating_add(
            if self.positions == PositionEncoding::Learned {
                n(self.max_position_embeddings).saturating_mul(h)
            } else {
                0
            },
        );
        let head = if self.tie_word_embeddings {
            0
        } else {
            n(self.vocab_size).saturating_mul(h)
        };
        embed
            .saturating_add(n(self.num_layers).saturating_mul(per_layer))
            .saturating_add(norm)
            .saturating_add(head)
    }

    /// Bytes of the weights in `dtype`.
    pub fn weight_bytes(&self, dtype: DType) -> u128 {
        self.parameter_count()
            .saturating_mul(dtype.size_in_bytes() as u128)
    }

    /// Bytes a decoder of this config holds in `dtype`: its weights, plus the blocks that
    /// hold them (a struct of tensor handles per layer, which only a config of millions of
    /// tiny layers makes count).
    pub fn memory_bytes(&self, dtype: DType) -> u128 {
        (self.num_layers as u128)
            .saturating_mul(LAYER_OVERHEAD_BYTES)
            .saturating_add(self.weight_bytes(dtype))
    }

    /// The `config.json` Hugging Face transformers reads for this model.
    pub fn to_hf_json(&self) -> Value {
        let dtype = self.torch_dtype.clone().unwrap_or_else(|| "float32".into());
        let eos: Value = match self.eos_token_ids.as_slice() {
            [] => Value::Null,
            [one] => json!(one),
            many => json!(many),
        };
        if self.architecture == Architecture::Gpt2 {
            return json!({
                "architectures": [self.architecture.hf_class()],
                "model_type": "gpt2",
                "vocab_size": self.vocab_size,
                "n_embd": self.hidden_size,
                "n_layer": self.num_layers,
                "n_head": self.num_heads,
                "n_inner": self.intermediate_size,
                "n_positions": self.max_position_embeddings,
                "n_ctx": self.max_position_embeddings,
                "layer_norm_epsilon": self.norm_eps,
                "activation_function": if self.mlp == MlpKind::GeluErf { "gelu" } else { "gelu_new" },
                "tie_word_embeddings": true,
                "bos_token_id": self.bos_token_id,
                "eos_token_id": eos,
                "torch_dtype": dtype,
            });
        }
        let (theta, scaling) = match self.positions {
            PositionEncoding::Rope { theta, scaling } => (theta, scaling),
            PositionEncoding::Learned => (10_000.0, None),
        };
        let rope_scaling = match scaling {
            None => Value::Null,
            Some(RopeScaling::Linear(f)) => json!({"rope_type": "linear", "factor": f}),
            Some(RopeScaling::Llama3(s)) => json!({
                "rope_type": "llama3",
                "factor": s.factor,
                "low_freq_factor": s.low_freq_factor,
                "high_freq_factor": s.high_freq_factor,
                "original_max_position_embeddings": s.original_max_position_embeddings,
            }),
        };
        let mut v = json!({
            "architectures": [self.architecture.hf_class()],
            "model_type": self.architecture.model_type(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": theta,
            "rope_scaling": rope_scaling,
            "hidden_act": "silu",
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "torch_dtype": dtype,
        });
        let obj = v.as_object_mut().expect("object literal");
        match self.architecture {
            Architecture::Llama => {
                obj.insert("attention_bias".into(), json!(self.qkv_bias));
                obj.insert("mlp_bias".into(), json!(self.mlp_bias));
            }
            Architecture::Mistral => {
                obj.insert("sliding_window".into(), json!(self.sliding_window));
            }
            Architecture::Qwen2 | Architecture::Qwen3 => {
                let windowed: Vec<bool> = (0..self.num_layers)
                    .map(|l| self.layer_window(l).is_some())
                    .collect();
                let first = windowed.iter().position(|&w| w).unwrap_or(self.num_layers);
                let types: Vec<&str> = windowed
                    .iter()
                    .map(|&w| {
                        if w {
                            "sliding_attention"
                        } else {
                            "full_attention"
                        }
                    })
                    .collect();
                obj.insert(
                    "use_sliding_window".into(),
                    json!(self.sliding_window.is_some()),
                );
                obj.insert("sliding_window".into(), json!(self.sliding_window));
                obj.insert("max_window_layers".into(), json!(first));
                obj.insert("layer_types".into(), json!(types));
                if self.architecture == Architecture::Qwen3 {
                    obj.insert("attention_bias".into(), json!(self.qkv_bias));
                }
            }
            Architecture::Gpt2 => unreachable!("handled above"),
        }
        v
    }
}

/// Memory of one decoder block besides its weights: the block's struct and its tensors'
/// handles (under 1 KiB each as built; a generous bound).
const LAYER_OVERHEAD_BYTES: u128 = 8 * 1024;

/// The largest size of one dimension: token ids, positions and tensor indices are 32-bit.
pub const MAX_SIZE: usize = u32::MAX as usize;

/// The `config.json` name of each size, as one architecture's file spells it.
struct FieldNames {
    vocab: &'static str,
    hidden: &'static str,
    intermediate: &'static str,
    layers: &'static str,
    heads: &'static str,
    kv_heads: &'static str,
    positions: &'static str,
    eps: &'static str,
}

impl FieldNames {
    fn of(arch: Architecture) -> Self {
        if arch == Architecture::Gpt2 {
            Self {
                vocab: "vocab_size",
                hidden: "n_embd",
                intermediate: "n_inner",
                layers: "n_layer",
                heads: "n_head",
                kv_heads: "n_head",
                positions: "n_positions",
                eps: "layer_norm_epsilon",
            }
        } else {
            Self {
                vocab: "vocab_size",
                hidden: "hidden_size",
                intermediate: "intermediate_size",
                layers: "num_hidden_layers",
                heads: "num_attention_heads",
                kv_heads: "num_key_value_heads",
                positions: "max_position_embeddings",
                eps: "rms_norm_eps",
            }
        }
    }
}

/// RoPE scaling factors that give finite, positive frequencies.
fn validate_rope_scaling(scaling: Option<RopeScaling>) -> std::result::Result<(), String> {
    let positive = |name: &str, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(())
        } else {
            Err(format!("`rope_scaling.{name}` is {v}; it must be positive"))
        }
    };
    match scaling {
        None => Ok(()),
        Some(RopeScaling::Linear(factor)) => positive("factor", factor),
        Some(RopeScaling::Llama3(s)) => {
            positive("factor", s.factor)?;
            positive("low_freq_factor", s.low_freq_factor)?;
            positive("high_freq_factor", s.high_freq_factor)?;
            if s.high_freq_factor <= s.low_freq_factor {
                return Err(format!(
                    "`rope_scaling.high_freq_factor` ({}) must be greater than \
                     `rope_scaling.low_freq_factor` ({})",
                    s.high_freq_factor, s.low_freq_factor
                ));
            }
            if s.original_max_position_embeddings == 0 {
                return Err(
                    "`rope_scaling.original_max_position_embeddings` is 0; it must be positive"
                        .into(),
                );
            }
            Ok(())
        }
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
