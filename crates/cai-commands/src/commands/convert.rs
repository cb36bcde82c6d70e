//! `cai convert`: write any model cai loads (a GGUF file, a model directory, a model id,
//! `lab`) as a Hugging Face folder: safetensors under Hugging Face's tensor names,
//! config.json, tokenizer.json, tokenizer_config.json with the chat template, and
//! generation_config.json.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cai_model::local::{GenerationDefaults, LoadOptions, LocalModel};
use cai_model::tokenizer::Tokenizer;
use cai_model::weights::{parse_dtype, save_decoder};
use candle_core::{DType, Device};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::model_args::Dtype;
use crate::progress;
use crate::usage::ensure;

/// The file in the output that records how it was made.
const CONVERT_CONFIG_FILE: &str = "convert_config.json";

/// Raw `cai convert` arguments.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The model to convert: a GGUF file (llama.cpp, Ollama), a directory in Hugging Face
    /// layout, a Hugging Face model id, or `lab`
    #[arg(long, value_name = "M")]
    pub model: String,
    /// Directory to write the Hugging Face model to (created if needed)
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// Dtype of the weights on disk [default: the model's torch_dtype, else f32; a GGUF
    /// file's weights are dequantised to it]
    #[arg(long, value_enum)]
    pub dtype: Option<Dtype>,
    /// Replace a model already in --output
    #[arg(long)]
    pub overwrite: bool,
}

/// A validated `cai convert` run; saved in the output as `convert_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvertConfig {
    /// The model as given.
    pub model: String,
    /// Its directory or GGUF file.
    pub source: PathBuf,
    /// The Hugging Face folder written.
    pub output: PathBuf,
    /// Dtype of the weights on disk (`None`: the model's own `torch_dtype`, else f32).
    pub dtype: Option<Dtype>,
}

impl ConvertConfig {
    /// Check the arguments: a local model, an output that is not the input and (without
    /// `--overwrite`) holds no model yet.
    pub fn from_args(args: ConvertArgs) -> anyhow::Result<Self> {
        ensure(!cai_remote::is_remote_spec(&args.model), || {
            format!(
                "--model {}: an endpoint serves a model but does not hand out its weights; \
                 pass a GGUF file, a model directory or a model id",
                args.model
            )
        })?;
        let source = crate::lab_models::resolve_model_dir(&args.model)?;
        ensure(!same_path(&args.output, &source), || {
            format!(
                "--output {} is the --model itself; choose another directory",
                args.output.display()
            )
        })?;
        ensure(args.output.is_dir() || !args.output.exists(), || {
            format!(
                "--output {} is a file; choose a directory",
                args.output.display()
            )
        })?;
        ensure(
            args.overwrite || !args.output.join("config.json").exists(),
            || {
                format!(
                    "{} already holds a model (config.json); pass --overwrite to replace it",
                    args.output.display()
                )
            },
        )?;
        Ok(Self {
            model: args.model,
            source,
            output: args.output,
            dtype: args.dtype,
        })
    }
}

/// True when both paths exist and are the same file or directory.
fn same_path(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

/// Run `cai convert`.
pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    let config = ConvertConfig::from_args(args)?;
    let _lock = cai_core::lock::WriterLock::acquire(&config.output.join("config.json"))?;
    let spinner = progress::spinner(format!("converting {}", config.model));
    // Loaded in f32 whatever the dtype on disk: dequantised or converted values are rounded
    // once, when they are written.
    let options = LoadOptions {
        device: Device::Cpu,
        dtype: Some(DType::F32),
    };
    let model = LocalModel::load(&config.source.display().to_string(), &options)
        .with_context(|| format!("loading model '{}'", config.model))?;
    let dtype = match config.dtype {
        Some(dtype) => dtype.to_candle(),
        None => model
            .decoder()
            .config()
            .torch_dtype
            .as_deref()
            .and_then(parse_dtype)
            .unwrap_or(DType::F32),
    };
    let out = &config.output;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let tokenizer = model
        .tokenizer()
        .clone()
        .with_model_max_length(model.decoder().config().max_position_embeddings);
    tokenizer
        .save(out)
        .with_context(|| format!("writing the tokenizer to {}", out.display()))?;
    let generation = generation_config(&tokenizer, model.generation_defaults());
    let path = out.join("generation_config.json");
    let text = serde_json::to_string_pretty(&generation).expect("JSON values serialise") + "\n";
    cai_model::write_atomic(&path, text.as_bytes())?;
    let record = out.join(CONVERT_CONFIG_FILE);
    let json = serde_json::to_string_pretty(&config).expect("configs serialise") + "\n";
    cai_model::write_atomic(&record, json.as_bytes())?;
    // The weights and config.json last: config.json appears only beside complete weights
    // and tokenizer files, so a failure leaves no folder that looks like a model.
    save_decoder(model.decoder(), out, dtype)
        .with_context(|| format!("writing the model to {}", out.display()))?;
    spinner.finish_and_clear();
    let name = cai_model::weights::dtype_short_name(dtype);
    println!(
        "wrote {} ({}, {name}): config.json, model.safetensors, tokenizer.json, \
         tokenizer_config.json, generation_config.json, {CONVERT_CONFIG_FILE}",
        out.display(),
        model.decoder().config().describe()
    );
    Ok(())
}

/// `generation_config.json`: the special token ids and the model's sampling defaults.
fn generation_config(tokenizer: &Tokenizer, defaults: &GenerationDefaults) -> Value {
    let eos: Value = match tokenizer.eos_ids() {
        [one] => json!(one),
        many => json!(many),
    };
    let mut config = json!({
        "bos_token_id": tokenizer.bos_id(),
        "eos_token_id": eos,
        "pad_token_id": tokenizer.pad_id(),
    });
    let fields = [
        ("do_sample", defaults.do_sample.map(|v| json!(v))),
        ("temperature", defaults.temperature.map(|v| json!(v))),
        ("top_p", defaults.top_p.map(|v| json!(v))),
        ("top_k", defaults.top_k.map(|v| json!(v))),
        ("max_new_tokens", defaults.max_new_tokens.map(|v| json!(v))),
    ];
    for (key, value) in fields {
        if let Some(value) = value {
            config[key] = value;
        }
    }
    config
}
