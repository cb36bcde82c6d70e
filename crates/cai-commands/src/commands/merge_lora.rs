//! `cai merge-lora`: fold a PEFT LoRA adapter into its base model's weights and write a plain
//! Hugging Face model that loads without the adapter.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cai_model::checkpoint::Checkpoint;
use cai_model::config::ModelConfig;
use cai_model::hub::resolve_model_dir;
use cai_model::lora::{load_adapter, merge_lora, AdapterUse, ADAPTER_CONFIG_FILE};
use cai_model::weights::{load_decoder, parse_dtype, save_decoder};
use candle_core::{DType, Device};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::model_args::Dtype;
use crate::progress;
use crate::usage::ensure;

/// The file in the merged model's directory that records how it was made.
const MERGE_CONFIG_FILE: &str = "merge_lora_config.json";

/// Tokenizer and generation files a model directory carries beside its weights.
const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
];

/// Raw `cai merge-lora` arguments.
#[derive(Debug, Args)]
pub struct MergeLoraArgs {
    /// The base model the adapter was trained on: a directory in Hugging Face layout, a GGUF
    /// file, or a Hub model id (from the Hugging Face cache, else downloaded)
    #[arg(long, value_name = "M")]
    pub model: String,
    /// PEFT adapter directory (adapter_config.json, adapter_model.safetensors), such as the
    /// --output of `cai sft --lora`
    #[arg(long, value_name = "DIR")]
    pub adapter: PathBuf,
    /// Directory to write the merged model to (created if needed)
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// Dtype of the merged weights on disk [default: the base model's torch_dtype, else f32]
    #[arg(long, value_enum)]
    pub dtype: Option<Dtype>,
    /// Replace a model already in --output
    #[arg(long)]
    pub overwrite: bool,
}

/// A validated `cai merge-lora` run; saved in the output as `merge_lora_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeLoraConfig {
    /// The base model as given.
    pub model: String,
    /// Its directory.
    pub model_dir: PathBuf,
    /// The adapter directory.
    pub adapter: PathBuf,
    /// The merged model's directory.
    pub output: PathBuf,
    /// Dtype on disk.
    pub dtype: Dtype,
}

impl MergeLoraConfig {
    /// Check the arguments against the files: the adapter must be one, and the output must be
    /// neither input nor (without `--overwrite`) an existing model.
    pub fn from_args(args: MergeLoraArgs) -> anyhow::Result<Self> {
        let model_dir = crate::lab_models::resolve_model_dir(&args.model)?;
        ensure(args.adapter.join(ADAPTER_CONFIG_FILE).is_file(), || {
            format!(
                "--adapter {}: no {ADAPTER_CONFIG_FILE} there; expected a PEFT adapter \
                 directory such as the --output of `cai sft --lora`",
                args.adapter.display()
            )
        })?;
        for (flag, input) in [("--model", &model_dir), ("--adapter", &args.adapter)] {
            ensure(!same_dir(&args.output, input), || {
                format!(
                    "--output {} is the {flag} directory; choose another directory",
                    args.output.display()
                )
            })?;
        }
        ensure(
            args.overwrite || !args.output.join("config.json").exists(),
            || {
                format!(
                    "{} already holds a model (config.json); pass --overwrite to replace it",
                    args.output.display()
                )
            },
        )?;
        anyhow::ensure!(
            [&model_dir, &args.adapter]
                .iter()
                .any(|dir| dir.join("tokenizer.json").is_file()),
            "neither {} nor {} has a tokenizer.json for the merged model",
            model_dir.display(),
            args.adapter.display()
        );
        let dtype = match args.dtype {
            Some(dtype) => dtype,
            None => {
                let config = ModelConfig::from_file(&model_dir.join("config.json"))?;
                disk_dtype(config.torch_dtype.as_deref())
            }
        };
        Ok(Self {
            model: args.model,
            model_dir,
            adapter: args.adapter,
            output: args.output,
            dtype,
        })
    }
}

/// The dtype a `torch_dtype` names, f32 when it names none cai writes.
fn disk_dtype(torch_dtype: Option<&str>) -> Dtype {
    match torch_dtype.and_then(parse_dtype) {
        Some(DType::BF16) => Dtype::Bf16,
        Some(DType::F16) => Dtype::F16,
        _ => Dtype::F32,
    }
}

/// True when both paths exist and are the same directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

/// Run `cai merge-lora`.
pub fn run(args: MergeLoraArgs) -> anyhow::Result<()> {
    let config = MergeLoraConfig::from_args(args)?;
    let _lock = cai_core::lock::WriterLock::acquire(&config.output)?;
    let spinner = progress::spinner(format!("merging {}", config.adapter.display()));
    let model_config = ModelConfig::from_file(&config.model_dir.join("config.json"))?;
    let ckpt = Checkpoint::open_dir(&config.model_dir)?;
    // The merge runs in f32 whatever the dtype on disk, so the sum W + (α/r)·BA is rounded
    // once, when it is written.
    let mut decoder = load_decoder(model_config, &ckpt, DType::F32, &Device::Cpu)
        .with_context(|| format!("loading model '{}'", config.model))?;
    let adapter = load_adapter(&mut decoder, &config.adapter, AdapterUse::Inference)
        .with_context(|| format!("loading the adapter {}", config.adapter.display()))?;
    let merged = merge_lora(&decoder)?;
    drop(decoder);
    save_decoder(&merged, &config.output, config.dtype.to_candle())
        .with_context(|| format!("writing the merged model to {}", config.output.display()))?;
    let copied = copy_tokenizer_files(&config)?;
    let record = config.output.join(MERGE_CONFIG_FILE);
    let json = serde_json::to_string_pretty(&config).expect("configs serialise") + "\n";
    std::fs::write(&record, json).with_context(|| format!("writing {}", record.display()))?;
    spinner.finish_and_clear();

    if let Some(trained_on) = &adapter.base_model_name_or_path {
        if !same_model(trained_on, &config.model, &config.model_dir) {
            eprintln!(
                "warning: the adapter was trained on '{trained_on}' (its {ADAPTER_CONFIG_FILE} \
                 says so), not on '{}'; the merged model is only meaningful on that base",
                config.model
            );
        }
    }
    let lora = &adapter.config;
    println!(
        "merged LoRA (r {}, alpha {}, on {}) from {} into {}",
        lora.r,
        lora.alpha,
        lora.target_modules.join(", "),
        config.adapter.display(),
        config.model
    );
    let mut files = vec!["config.json", "model.safetensors"];
    files.extend(copied);
    files.push(MERGE_CONFIG_FILE);
    println!(
        "wrote {} ({}): {}",
        config.output.display(),
        config.dtype.name(),
        files.join(", ")
    );
    Ok(())
}

/// Whether the base an adapter names is the model given: the same text, or a path or id
/// that resolves to the same directory.
fn same_model(trained_on: &str, given: &str, given_dir: &Path) -> bool {
    trained_on == given || resolve_model_dir(trained_on).is_ok_and(|dir| same_dir(&dir, given_dir))
}

/// Copy the tokenizer and generation files of the base (or, for those it lacks, of the
/// adapter directory) into the output; returns the names copied.
fn copy_tokenizer_files(config: &MergeLoraConfig) -> anyhow::Result<Vec<&'static str>> {
    let mut copied = Vec::new();
    for name in TOKENIZER_FILES {
        let source = [&config.model_dir, &config.adapter]
            .into_iter()
            .map(|dir| dir.join(name))
            .find(|path| path.is_file());
        if let Some(source) = source {
            let target = config.output.join(name);
            std::fs::copy(&source, &target)
                .with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
            copied.push(name);
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_dtype_follows_torch_dtype() {
        assert_eq!(disk_dtype(Some("bfloat16")), Dtype::Bf16);
        assert_eq!(disk_dtype(Some("float16")), Dtype::F16);
        assert_eq!(disk_dtype(Some("float32")), Dtype::F32);
        assert_eq!(disk_dtype(None), Dtype::F32);
    }
}
