//! The flags every training command shares (`sft`, `distill`, `train-pm`, `rl`): the settings
//! file, learning rate, checkpoint cadence, seed, dialogue format, dtype, device, activation
//! checkpointing, and what to do about an earlier run in `--output`.

use std::path::PathBuf;

use anyhow::Context;
use cai_model::tokenizer::DialogueFormat;
use clap::Args;

use crate::model_args::{self, DeviceName, Dtype};
use crate::train_output::Earlier;
use crate::usage::UsageError;

/// Flattened into each training command's arguments. `Default` is what clap gives when no
/// flag is given.
#[derive(Debug, Default, Args)]
pub struct RunFlags {
    /// Settings in TOML with the keys listed below; flags override them
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Peak learning rate
    #[arg(long, value_name = "LR")]
    pub learning_rate: Option<f64>,
    /// Save a resumable checkpoint every N steps (0: only on Ctrl-C)
    #[arg(long, value_name = "N")]
    pub save_every: Option<u64>,
    /// Run seed: shuffling, sampling, dropout and new weights all derive from it
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// How dialogues become text: the Human:/Assistant: transcript, the tokenizer's chat
    /// template, or auto (the chat template if the tokenizer has one)
    #[arg(long, value_parser = model_args::parse_format)]
    pub format: Option<DialogueFormat>,
    /// Compute dtype; master weights and optimiser moments stay f32
    #[arg(long, value_enum)]
    pub dtype: Option<Dtype>,
    /// Device to train on: cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`)
    #[arg(long, default_value_t = DeviceName::default(), value_name = "DEVICE")]
    pub device: DeviceName,
    /// Continue from the newest checkpoint in --output/checkpoints (same settings and data
    /// required, except what --allow-config-change names)
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// With --resume: let these settings differ from the checkpoint's (comma-separated:
    /// learning_rate, schedule, warmup_steps, max_grad_norm, weight_decay, epochs,
    /// max_steps, steps, save_every, keep_last, eval_every, sample_every,
    /// gradient_checkpointing), and `data` to continue on input files that changed since the
    /// checkpoint
    #[arg(
        long,
        value_name = "KEYS",
        value_delimiter = ',',
        requires = "resume",
        value_parser = parse_changeable
    )]
    pub allow_config_change: Vec<String>,
    /// Start afresh, deleting what an earlier run wrote to --output
    #[arg(long)]
    pub overwrite: bool,
    /// Activation checkpointing: keep only each layer's input and recompute the layer in the
    /// backward pass (far less memory for about one more forward pass of time)
    #[arg(long)]
    pub gradient_checkpointing: bool,
}

/// One `--allow-config-change` name: a setting a resume may change, or `data`.
fn parse_changeable(s: &str) -> Result<String, String> {
    let name = s.trim().to_owned();
    cai_train::core::resume::validate_allow(std::slice::from_ref(&name))
        .map_err(|e| e.to_string())?;
    Ok(name)
}

impl RunFlags {
    /// What `--resume` and `--overwrite` ask for.
    pub fn earlier(&self) -> Earlier {
        match (self.resume, self.overwrite) {
            (true, _) => Earlier::Resume,
            (false, true) => Earlier::Overwrite,
            (false, false) => Earlier::Keep,
        }
    }
}

/// A training command's settings before its flags: the `--config` TOML file's when one is
/// given (a key it does not know is a usage error naming the file), else the defaults.
pub fn read_config<T: serde::de::DeserializeOwned + Default>(
    path: Option<&std::path::Path>,
) -> anyhow::Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    Ok(parse_config(&text, &path.display().to_string())?)
}

/// A `--config` file's settings from its text; `origin` (the file) names it in errors.
pub fn parse_config<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
) -> Result<T, UsageError> {
    toml::from_str(text).map_err(|e| UsageError(format!("{origin}: {e}")))
}

/// Override a setting with a flag that was given.
pub fn set<T>(setting: &mut T, flag: Option<T>) {
    if let Some(value) = flag {
        *setting = value;
    }
}

/// The `--help` text of a training command's defaults: `toml` (the default settings, in the
/// keys of a `--config` file) indented under a line saying how they are set, with `note`
/// (what else the keys' flags do) in that line's parentheses.
pub fn defaults_help(toml: &str, note: &str) -> String {
    // Off, `gradient_checkpointing` is left out of the configs a run writes (so that they
    // stay as they were); the help lists it all the same.
    let toml = format!("gradient_checkpointing = false\n{toml}");
    let indented: Vec<String> = toml
        .lines()
        .map(|line| match line {
            "" => String::new(),
            _ => format!("  {line}"),
        })
        .collect();
    format!(
        "Unset settings take these defaults. A --config TOML file sets them with the same keys \
         (a flag is its key with '-' for '_'{note}):\n\n{}",
        indented.join("\n")
    )
}
