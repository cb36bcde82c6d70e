//! The serde shapes of Hugging Face `config.json` files (llama family and gpt2), with
//! transformers' defaults, and their translation into a [`ModelConfig`].

use serde::Deserialize;

use super::{
    Architecture, Llama3RopeScaling, MlpKind, ModelConfig, NormKind, PositionEncoding, RopeScaling,
};

/// Integer sizes of the llama family's `config.json`.
const LLAMA_SIZES: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "sliding_window",
    "max_window_layers",
];
/// Integer sizes of GPT-2's `config.json`.
const GPT2_SIZES: &[&str] = &[
    "vocab_size",
    "n_embd",
    "n_layer",
    "n_head",
    "n_inner",
    "n_positions",
];

/// Check the sizes are non-negative integers and the epsilons and θ numbers before serde
/// reads them, whose messages do not name the field (`invalid type: floating point
/// \`1e12\`, expected usize`).
pub(super) fn check_field_types(
    value: &serde_json::Value,
    arch: Architecture,
) -> std::result::Result<(), String> {
    let (sizes, floats): (&[&str], &[&str]) = match arch {
        Architecture::Gpt2 => (GPT2_SIZES, &["layer_norm_epsilon"]),
        _ => (LLAMA_SIZES, &["rms_norm_eps", "rope_theta"]),
    };
    for &name in sizes {
        match value.get(name) {
            None | Some(serde_json::Value::Null) => {}
            Some(v) if v.as_u64().is_some() => {}
            Some(v) => {
                return Err(format!(
                    "`{name}` is {v}; expected a whole number ≥ 0 written without a \
                     decimal point or exponent"
                ))
            }
        }
    }
    for &name in floats {
        match value.get(name) {
            None | Some(serde_json::Value::Null) => {}
            Some(v) if v.is_number() => {}
            Some(v) => return Err(format!("`{name}` is {v}; expected a number")),
        }
    }
    Ok(())
}

/// `eos_token_id` is an integer or a list of integers.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<u32> {
        match self {
            Self::One(x) => vec![x],
            Self::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
struct RopeFile {
    #[serde(alias = "type")]
    rope_type: Option<String>,
    rope_theta: Option<f64>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<usize>,
}

/// The llama-family fields we read (mistral/qwen2/qwen3 share them).
#[derive(Debug, Deserialize)]
pub(super) struct LlamaFile {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_scaling: Option<RopeFile>,
    /// transformers 5 keeps θ and the scaling together here.
    rope_parameters: Option<RopeFile>,
    #[serde(default)]
    attention_bias: Option<bool>,
    #[serde(default)]
    mlp_bias: bool,
    hidden_act: Option<String>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    max_window_layers: Option<usize>,
    layer_types: Option<Vec<String>>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
    torch_dtype: Option<String>,
    dtype: Option<String>,
}

fn default_max_positions() -> usize {
    2048
}

fn default_rms_eps() -> f64 {
    1e-6
}

impl LlamaFile {
    pub(super) fn into_config(
        self,
        arch: Architecture,
    ) -> std::result::Result<ModelConfig, String> {
        if let Some(act) = &self.hidden_act {
            if act != "silu" && act != "swish" {
                return Err(format!(
                    "hidden_act '{act}' is not supported (expected \"silu\")"
                ));
            }
        }
        let rope = self.rope_parameters.as_ref().or(self.rope_scaling.as_ref());
        let theta = self
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_theta)
            .or(self.rope_theta)
            .unwrap_or(10_000.0);
        let scaling = match rope {
            None => None,
            Some(r) => match r.rope_type.as_deref().unwrap_or("default") {
                "default" => None,
                "linear" => Some(RopeScaling::Linear(r.factor.ok_or("rope_scaling.factor is missing")?)),
                "llama3" => Some(RopeScaling::Llama3(Llama3RopeScaling {
                    factor: r.factor.ok_or("rope_scaling.factor is missing")?,
                    low_freq_factor: r.low_freq_factor.ok_or("rope_scaling.low_freq_factor is missing")?,
                    high_freq_factor: r
                        .high_freq_factor
                        .ok_or("rope_scaling.high_freq_factor is missing")?,
                    original_max_position_embeddings: r
                        .original_max_position_embeddings
                        .ok_or("rope_scaling.original_max_position_embeddings is missing")?,
                })),
                other => {
                    return Err(format!(
                        "rope_scaling type '{other}' is not supported (supported: default, linear, llama3)"
                    ))
                }
            },
        };
        let sliding_window = match arch {
            Architecture::Mistral => self.sliding_window,
            Architecture::Qwen2 | Architecture::Qwen3 if self.use_sliding_window == Some(true) => {
                self.sliding_window
            }
            _ => None,
        };
        // Qwen windows only some layers: those `layer_types` marks, else those from
        // `max_window_layers` on (transformers' default for it is 28).
        let window_layers = match arch {
            Architecture::Qwen2 | Architecture::Qwen3 if sliding_window.is_some() => {
                Some(match &self.layer_types {
                    Some(types) => {
                        if types.len() != self.num_hidden_layers {
                            return Err(format!(
                                "layer_types has {} entries but num_hidden_layers is {}",
                                types.len(),
                                self.num_hidden_layers
                            ));
                        }
                        types
                            .iter()
                            .map(|t| match t.as_str() {
                                "sliding_attention" => Ok(true),
                                "full_attention" => Ok(false),
                                other => Err(format!(
                                    "layer_types entry '{other}' is not supported (expected \"full_attention\" or \"sliding_attention\")"
                                )),
                            })
                            .collect::<std::result::Result<Vec<bool>, String>>()?
                    }
                    None => {
                        let from = self.max_window_layers.unwrap_or(28);
                        (0..self.num_hidden_layers).map(|l| l >= from).collect()
                    }
                })
            }
            _ => None,
        };
        let qkv_bias = match arch {
            Architecture::Qwen2 => true,
            Architecture::Mistral => false,
            _ => self.attention_bias.unwrap_or(false),
        };
        Ok(ModelConfig {
            architecture: arch,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            num_kv_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            head_dim: self
                .head_dim
                .unwrap_or(self.hidden_size / self.num_attention_heads.max(1)),
            max_position_embeddings: self.max_position_embeddings,
            norm: NormKind::Rms,
            norm_eps: self.rms_norm_eps,
            positions: PositionEncoding::Rope { theta, scaling },
            mlp: MlpKind::SwiGlu,
            qkv_bias,
            o_bias: arch == Architecture::Llama && self.attention_bias.unwrap_or(false),
            mlp_bias: arch == Architecture::Llama && self.mlp_bias,
            qk_norm: arch == Architecture::Qwen3,
            sliding_window,
            window_layers,
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(false),
            bos_token_id: self.bos_token_id,
            eos_token_ids: self
                .eos_token_id
                .map(OneOrMany::into_vec)
                .unwrap_or_default(),
            torch_dtype: self.torch_dtype.or(self.dtype),
        })
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct Gpt2File {
    vocab_size: usize,
    n_embd: usize,
    n_layer: usize,
    n_head: usize,
    n_inner: Option<usize>,
    #[serde(default = "default_gpt2_positions")]
    n_positions: usize,
    #[serde(default = "default_ln_eps")]
    layer_norm_epsilon: f64,
    activation_function: Option<String>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
    torch_dtype: Option<String>,
    dtype: Option<String>,
}

fn default_gpt2_positions() -> usize {
    1024
}

fn default_ln_eps() -> f64 {
    1e-5
}

impl Gpt2File {
    pub(super) fn into_config(self) -> ModelConfig {
        let mlp = match self.activation_function.as_deref() {
            Some("gelu") => MlpKind::GeluErf,
            _ => MlpKind::GeluTanh,
        };
        ModelConfig {
            architecture: Architecture::Gpt2,
            vocab_size: self.vocab_size,
            hidden_size: self.n_embd,
            intermediate_size: self.n_inner.unwrap_or(4 * self.n_embd),
            num_layers: self.n_layer,
            num_heads: self.n_head,
            num_kv_heads: self.n_head,
            head_dim: self.n_embd / self.n_head.max(1),
            max_position_embeddings: self.n_positions,
            norm: NormKind::Layer,
            norm_eps: self.layer_norm_epsilon,
            positions: PositionEncoding::Learned,
            mlp,
            qkv_bias: true,
            o_bias: true,
            mlp_bias: true,
            qk_norm: false,
            sliding_window: None,
            window_layers: None,
            tie_word_embeddings: true,
            bos_token_id: self.bos_token_id,
            eos_token_ids: self
                .eos_token_id
                .map(OneOrMany::into_vec)
                .unwrap_or_default(),
            torch_dtype: self.torch_dtype.or(self.dtype),
        }
    }
}
