//! Flags shared by the commands that run a model: which model, on which device and dtype,
//! how to sample, and how dialogues are rendered; and loading the model they name.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use anyhow::Context;
use cai_core::Sampling;
use cai_model::local::{GenerationDefaults, LoadOptions, LocalModel};
use cai_model::tokenizer::DialogueFormat;
use candle_core::DType;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::backend::{self, Backend};
use crate::progress;
use crate::usage::{ensure, UsageError};

/// `--model`, `--device`, `--dtype`. Clap's value parsers already give them their types, so
/// the parsed flags are the validated config.
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
pub struct ModelArgs {
    /// Model directory in Hugging Face layout, a GGUF file, a Hub model id (`org/name`,
    /// optionally `@revision`: from the Hugging Face cache, else downloaded into it unless
    /// HF_HUB_OFFLINE=1), `lab` for the lab's shipped base model, or OpenAI-compatible
    /// endpoints (`http://host:port/v1`, several comma-separated).
    #[arg(long, value_name = "M")]
    pub model: String,
    /// Device to run on: cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value_t = DeviceName::default(), value_name = "DEVICE")]
    pub device: DeviceName,
    /// Compute dtype [default: f32 on the CPU, the model's torch_dtype on a GPU].
    #[arg(long, value_enum)]
    pub dtype: Option<Dtype>,
}

impl ModelArgs {
    /// Load the model, with a spinner while the weights are read, or open the endpoints.
    pub fn load(&self) -> anyhow::Result<Backend> {
        if cai_remote::is_remote_spec(&self.model) {
            return Ok(Backend::Remote(backend::open_remote(&self.model)?));
        }
        let device = cai_model::device::device_from_name(&self.device.to_string())
            .with_context(|| format!("opening device {}", self.device))?;
        let options = LoadOptions {
            device,
            dtype: self.dtype.map(Dtype::to_candle),
        };
        let spinner = progress::spinner(format!("loading {}", self.model));
        let dir = crate::lab_models::resolve_model_dir(&self.model)?;
        let model = LocalModel::load(&dir.display().to_string(), &options)
            .with_context(|| format!("loading model '{}'", self.model))?;
        spinner.finish_and_clear();
        let config = model.decoder().config();
        tracing::info!(
            model = %model.dir().display(),
            architecture = config.architecture.model_type(),
            parameters = config.num_parameters(),
            dtype = ?model.decoder().dtype(),
            "model loaded"
        );
        Ok(Backend::Local(Box::new(model)))
    }
}

/// A device name: `cpu`, `cuda` (device 0) or `cuda:N` (the CPU by default, as `--device`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceName {
    /// The CPU.
    #[default]
    Cpu,
    /// A CUDA device by ordinal.
    Cuda(usize),
}

impl FromStr for DeviceName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("'{s}' is not a device; expected cpu, cuda or cuda:N")),
        }
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl TryFrom<String> for DeviceName {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DeviceName> for String {
    fn from(d: DeviceName) -> String {
        d.to_string()
    }
}

/// A floating-point dtype for weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 32-bit float.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl Dtype {
    /// The name on the command line: `f32`, `f16` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        }
    }

    /// The candle dtype.
    pub fn to_candle(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
        }
    }
}

/// `--format`'s default: the chat template if the tokenizer has one.
pub const DEFAULT_FORMAT: &str = "auto";

/// Parse `--format`: `auto`, `transcript` or `chat-template`.
pub fn parse_format(s: &str) -> Result<DialogueFormat, String> {
    match s {
        "auto" => Ok(DialogueFormat::Auto),
        "transcript" => Ok(DialogueFormat::Transcript),
        "chat-template" | "chat_template" => Ok(DialogueFormat::ChatTemplate),
        _ => Err(format!(
            "'{s}' is not a dialogue format; expected auto, transcript or chat-template"
        )),
    }
}

/// Whether dialogues are rendered as `Human:`/`Assistant:` transcripts with this tokenizer
/// and format (then the transcript's stop strings apply).
pub fn renders_transcript(model: &Backend, format: DialogueFormat) -> bool {
    model.renders_transcript(format)
}

/// Sampling flags as typed; unset ones fall back to the model's `generation_config.json`.
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Most new tokens per completion [default: generation_config.json's max_new_tokens,
    /// else 128]
    #[arg(long, value_name = "N")]
    pub max_new_tokens: Option<usize>,
    /// Softmax temperature; 0 is greedy [default: generation_config.json, else 1]
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    pub temperature: Option<f32>,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass, in (0, 1]
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub top_p: Option<f32>,
    /// Keep only the K most likely tokens
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Run seed: each request's sampler is seeded from it and the request's id, so results
    /// do not depend on batching
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Validated sampling settings: what the user asked for. Unset fields are the model's
/// defaults, resolved by [`SamplingConfig::resolve`] once the model is loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingConfig {
    /// Token budget per completion.
    pub max_new_tokens: Option<usize>,
    /// Temperature (0: greedy).
    pub temperature: Option<f32>,
    /// Nucleus mass.
    pub top_p: Option<f32>,
    /// Top-k cut.
    pub top_k: Option<usize>,
    /// Run seed.
    pub seed: u64,
}

/// The token budget when neither the flags nor `generation_config.json` give one: the CAI
/// paper's bound on response length (Bai et al. 2022, responses ≤ 128 tokens).
pub const DEFAULT_MAX_NEW_TOKENS: usize = 128;

impl SamplingArgs {
    /// Check the ranges.
    pub fn validate(&self) -> Result<SamplingConfig, UsageError> {
        if let Some(t) = self.temperature {
            ensure(t.is_finite() && t >= 0.0, || {
                format!("--temperature {t}: expected a number ≥ 0 (0 is greedy)")
            })?;
        }
        if let Some(p) = self.top_p {
            ensure(p > 0.0 && p <= 1.0, || {
                format!("--top-p {p}: expected a probability in (0, 1]")
            })?;
        }
        ensure(self.top_k != Some(0), || {
            "--top-k 0: expected at least 1".into()
        })?;
        ensure(self.max_new_tokens != Some(0), || {
            "--max-new-tokens 0: expected at least 1".into()
        })?;
        Ok(SamplingConfig {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            seed: self.seed,
        })
    }
}

impl SamplingConfig {
    /// The sampling and token budget to use: the flags, else the model's defaults.
    pub fn resolve(&self, defaults: &GenerationDefaults) -> (Sampling, usize) {
        let mut sampling = defaults.sampling();
        if let Some(t) = self.temperature {
            sampling.temperature = t;
        }
        if self.top_p.is_some() {
            sampling.top_p = self.top_p;
        }
        if self.top_k.is_some() {
            sampling.top_k = self.top_k;
        }
        let budget = self
            .max_new_tokens
            .or(defaults.max_new_tokens)
            .unwrap_or(DEFAULT_MAX_NEW_TOKENS);
        (sampling, budget)
    }
}

/// One line describing the sampling, for stderr.
pub fn describe_sampling(sampling: &Sampling, max_new_tokens: usize) -> String {
    let mut text = if sampling.is_greedy() {
        "greedy".to_owned()
    } else {
        format!("temperature {}", sampling.temperature)
    };
    if let Some(p) = sampling.top_p {
        text += &format!(", top-p {p}");
    }
    if let Some(k) = sampling.top_k {
        text += &format!(", top-k {k}");
    }
    text + &format!(", at most {max_new_tokens} new tokens")
}

/// Read a `--context` file: the dialogue-prompting context put in front of every request.
pub fn read_context(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the context file {}", path.display()))?;
    anyhow::ensure!(
        !text.trim().is_empty(),
        "the context file {} is empty; expected the text to put in front of every prompt",
        path.display()
    );
    Ok(text)
}

/// Prefill the context once (the model keeps its KV cache for every later request) and
/// report its length on stderr; endpoints get the context in front of every prompt.
pub fn prefill_context(model: &Backend, context: &str, path: &Path) -> anyhow::Result<()> {
    let Some(model) = model.local() else {
        eprintln!(
            "context {}: {} characters, sent in front of every prompt",
            path.display(),
            context.chars().count()
        );
        return Ok(());
    };
    let spinner = progress::spinner("prefilling the context");
    let prefix = model
        .prefix(context)
        .with_context(|| format!("prefilling the context {}", path.display()))?;
    spinner.finish_and_clear();
    let tokens = prefix.map_or(0, |p| p.len());
    let max = model.decoder().config().max_position_embeddings;
    eprintln!(
        "context {}: {tokens} tokens (of the model's {max})",
        path.display()
    );
    Ok(())
}
