//! Making new models: a config for any supported architecture and size, seeded random
//! weights, and a tokenizer (given or trained), written as a Hugging Face model directory.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::atomic_file::write_atomic;
use crate::checkpoint::SINGLE_FILE;
use crate::config::{Architecture, MlpKind, ModelConfig, NormKind, PositionEncoding};
use crate::tokenizer::{BpeStyle, Tokenizer};
use crate::weights::{random_decoder, save_decoder, torch_dtype_name};
use crate::{ModelError, Result};

/// The shape of a new model. Defaults are `bench-6m` from docs/BENCH.md (Llama, hidden 256,
/// 4 layers, 4 heads, intermediate 1024, vocab 4096, untied, θ = 10 000, ε = 1e-5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelShape {
    /// Architecture family.
    pub architecture: Architecture,
    /// Residual width.
    pub hidden_size: usize,
    /// Decoder blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (`None`: as many as query heads).
    pub num_kv_heads: Option<usize>,
    /// MLP width.
    pub intermediate_size: usize,
    /// Vocabulary rows (must cover the tokenizer).
    pub vocab_size: usize,
    /// Context length.
    pub max_position_embeddings: usize,
    /// Share the embedding with the output layer (always true for GPT-2).
    pub tie_word_embeddings: bool,
    /// RoPE θ.
    pub rope_theta: f64,
    /// Norm ε.
    pub norm_eps: f64,
    /// Mistral's sliding window (`None`: full attention).
    pub sliding_window: Option<usize>,
}

impl Default for ModelShape {
    fn default() -> Self {
        Self {
            architecture: Architecture::Llama,
            hidden_size: 256,
            num_layers: 4,
            num_heads: 4,
            num_kv_heads: None,
            intermediate_size: 1024,
            vocab_size: 4096,
            max_position_embeddings: 2048,
            tie_word_embeddings: false,
            rope_theta: 10_000.0,
            norm_eps: 1e-5,
            sliding_window: None,
        }
    }
}

impl ModelShape {
    /// SmolLM2-135M's shape (docs/BENCH.md "The real shape"): Llama, hidden 576, 30 layers,
    /// 9 heads (3 KV heads), intermediate 1536, vocab 49,152, tied embeddings, θ = 100 000,
    /// ε = 1e-5, context 8,192.
    pub fn smollm2_135m() -> Self {
        Self {
            architecture: Architecture::Llama,
            hidden_size: 576,
            num_layers: 30,
            num_heads: 9,
            num_kv_heads: Some(3),
            intermediate_size: 1536,
            vocab_size: 49_152,
            max_position_embeddings: 8192,
            tie_word_embeddings: true,
            rope_theta: 100_000.0,
            norm_eps: 1e-5,
            sliding_window: None,
        }
    }

    /// The full model configuration for this shape.
    pub fn config(&self) -> Result<ModelConfig> {
        let arch = self.architecture;
        let gpt2 = arch == Architecture::Gpt2;
        let cfg = ModelConfig {
            architecture: arch,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_layers,
            num_heads: self.num_heads,
            num_kv_heads: if gpt2 {
                self.num_heads
            } else {
                self.num_kv_heads.unwrap_or(self.num_heads)
            },
            head_dim: self.hidden_size / self.num_heads.max(1),
            max_position_embeddings: self.max_position_embeddings,
            norm: if gpt2 { NormKind::Layer } else { NormKind::Rms },
            norm_eps: self.norm_eps,
            positions: if gpt2 {
                PositionEncoding::Learned
            } else {
                PositionEncoding::Rope {
                    theta: self.rope_theta,
                    scaling: None,
                }
            },
            mlp: if gpt2 {
                MlpKind::GeluTanh
            } else {
                MlpKind::SwiGlu
            },
            qkv_bias: gpt2 || arch == Architecture::Qwen2,
            o_bias: gpt2,
            mlp_bias: gpt2,
            qk_norm: arch == Architecture::Qwen3,
            sliding_window: if arch == Architecture::Mistral
                || arch == Architecture::Qwen2
                || arch == Architecture::Qwen3
            {
                self.sliding_window
            } else {
                None
            },
            // A new Qwen model windows every layer (when it has a window at all).
            window_layers: None,
            tie_word_embeddings: gpt2 || self.tie_word_embeddings,
            bos_token_id: None,
            eos_token_ids: Vec::new(),
            torch_dtype: None,
        };
        if !self.hidden_size.is_multiple_of(self.num_heads.max(1)) {
            return Err(ModelError::Request(format!(
                "hidden size {} is not divisible by {} heads",
                self.hidden_size, self.num_heads
            )));
        }
        cfg.validate().map_err(ModelError::Request)?;
        Ok(cfg)
    }
}

/// Where a new model's tokenizer comes from.
#[derive(Clone)]
pub enum TokenizerSource {
    /// An existing `tokenizer.json`.
    File(PathBuf),
    /// Train a byte-level BPE of `vocab_size` tokens on this text file.
    Train(PathBuf),
    /// An already loaded tokenizer.
    Loaded(Box<Tokenizer>),
}

/// The files [`init_model`] writes, in the order they are moved into place: `config.json`
/// last, since it is what makes a folder a model.
const INIT_FILES: [&str; 5] = [
    SINGLE_FILE,
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "config.json",
];

/// The hidden folder in the model folder that [`init_model`] writes into first, followed by
/// its process id.
const STAGING_PREFIX: &str = ".cai-init.tmp.";

/// Bytes [`init_model`] holds at once: the weights in f32 as they are drawn, plus their copy
/// in the dtype on disk when that is another.
pub fn init_bytes(config: &ModelConfig, dtype: DType) -> u128 {
    let f32_bytes = config.memory_bytes(DType::F32);
    if dtype == DType::F32 {
        f32_bytes
    } else {
        f32_bytes.saturating_add(config.weight_bytes(dtype))
    }
}

/// Fail with [`ModelError::Memory`] when making a model of `shape` in `dtype` would need more
/// memory than is available, before anything is allocated or written.
pub fn check_init_memory(shape: &ModelShape, dtype: DType) -> Result<ModelConfig> {
    let config = shape.config()?;
    crate::memory::check(&Device::Cpu, init_bytes(&config, dtype), || match dtype {
        DType::F32 => format!("{}, drawn in f32,", config.describe()),
        other => format!(
            "{}, drawn in f32 and written in {},",
            config.describe(),
            crate::weights::dtype_short_name(other)
        ),
    })?;
    Ok(config)
}

/// Write a new randomly initialised model with its tokenizer to `dir` in HF layout:
/// `config.json`, `model.safetensors`, `generation_config.json`, `tokenizer.json`,
/// `tokenizer_config.json`. Returns the config written.
///
/// Sizes and memory are checked before anything is allocated. The files are written into a
/// hidden folder in `dir` first and moved into place only when all of them are complete, so a
/// failure leaves a model already in `dir` as it was; other files in `dir` are never touched.
pub fn init_model(
    shape: &ModelShape,
    tokenizer: TokenizerSource,
    seed: u64,
    dtype: DType,
    dir: &Path,
) -> Result<ModelConfig> {
    let mut config = check_init_memory(shape, dtype)?;
    let tokenizer = match tokenizer {
        TokenizerSource::File(p) => Tokenizer::from_tokenizer_json(&p)?,
        TokenizerSource::Train(p) => Tokenizer::train_bpe_with(
            &p,
            shape.vocab_size,
            BpeStyle::for_architecture(shape.architecture),
        )?,
        TokenizerSource::Loaded(t) => *t,
    };
    tokenizer.check_fits(config.vocab_size, dir)?;
    config.bos_token_id = tokenizer.bos_id();
    config.eos_token_ids = tokenizer.eos_ids().to_vec();
    let decoder = random_decoder(config.clone(), seed, DType::F32, &Device::Cpu)?;
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    // A killed init left its staging folder: remove it when it holds only the files an init
    // writes there (and their temporaries), which proves it is one.
    crate::atomic_file::remove_stale(dir, STAGING_PREFIX, |stale| {
        let ours = std::fs::read_dir(stale)?.all(|e| {
            e.is_ok_and(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                INIT_FILES
                    .iter()
                    .any(|f| name == *f || name.starts_with(&format!(".{f}.tmp.")))
            })
        });
        if ours {
            std::fs::remove_dir_all(stale)
        } else {
            Ok(())
        }
    });
    let staging = dir.join(format!("{STAGING_PREFIX}{}", std::process::id()));
    let written = write_model_files(&decoder, tokenizer, dtype, &staging)
        .and_then(|()| move_into_place(&staging, dir));
    // Best effort: the folder is ours; the error being returned matters more.
    let _ = std::fs::remove_dir_all(&staging);
    written?;
    config.torch_dtype = Some(torch_dtype_name(dtype).to_string());
    Ok(config)
}

/// Write every file of a new model into `dir`.
fn write_model_files(
    decoder: &crate::decoder::Decoder,
    tokenizer: Tokenizer,
    dtype: DType,
    dir: &Path,
) -> Result<()> {
    save_decoder(decoder, dir, dtype)?;
    let tokenizer = tokenizer.with_model_max_length(decoder.config().max_position_embeddings);
    tokenizer.save(dir)?;
    let generation = json!({
        "bos_token_id": tokenizer.bos_id(),
        "eos_token_id": tokenizer.eos_ids(),
        "pad_token_id": tokenizer.pad_id(),
        "do_sample": true,
        "temperature": 1.0,
    });
    write_atomic(
        &dir.join("generation_config.json"),
        (serde_json::to_string_pretty(&generation).expect("json") + "\n").as_bytes(),
    )
}

/// Move the files of [`INIT_FILES`] from `staging` into `dir`, after checking that no folder
/// stands where one of them goes (the one failure a rename could meet half-way).
fn move_into_place(staging: &Path, dir: &Path) -> Result<()> {
    for name in INIT_FILES {
        let to = dir.join(name);
        if to.is_dir() {
            return Err(ModelError::io(
                &to,
                std::io::Error::other(
                    "a folder stands where the model's file goes; move it away and run again",
                ),
            ));
        }
    }
    for name in INIT_FILES {
        let (from, to) = (staging.join(name), dir.join(name));
        std::fs::rename(&from, &to).map_err(|e| ModelError::io(&to, e))?;
    }
    crate::atomic_file::sync_dir(dir)
}
