//! `cai sft`: supervised fine-tuning of a whole model or of LoRA adapters on JSONL dialogues or
//! prompt/completion pairs, with a progress bar, a checkpoint on Ctrl-C and `--resume`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use cai_model::config::ModelConfig;
use cai_model::lora::{LoraConfig, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
use cai_train::core::schedule::ScheduleKind;
use cai_train::sft::{run_sft, HelpfulMix, SftConfig, SftOutcome, SftRun, SFT_CONFIG_FILE};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::human;
use crate::interrupt::{resume_command, stop_on_ctrl_c, INTERRUPTED};
use crate::model_args::DeviceName;
use crate::progress;
use crate::train_flags::{self, set, RunFlags};
use crate::train_output::{explain, Earlier, Plan, TrainOutput, CHECKPOINTS_DIR, METRICS_FILE};
use crate::train_progress::ShownMetrics;
use crate::usage::UsageError;

/// Raw `cai sft` arguments. A training setting left unset comes from `--config`, else from
/// the defaults listed after `--help`.
#[derive(Debug, Default, Args)]
#[command(after_help = defaults_help())]
pub struct SftArgs {
    /// Model to fine-tune: a directory in Hugging Face layout, or a model id in the local
    /// Hugging Face cache
    #[arg(long, value_name = "M")]
    pub model: String,
    /// Training data: JSONL of {"messages": [{role, content}]} or {"prompt", "completion"}
    /// records, or `cai critique` records (SL-CAI: each round's revision is a target)
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Directory for the fine-tuned model (or LoRA adapter), sft_config.json, metrics.jsonl
    /// and checkpoints/
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// Evaluation data in the same format; its loss is logged with split "eval"
    #[arg(long, value_name = "FILE")]
    pub eval_data: Option<PathBuf>,
    /// SL-CAI: train on the revisions of rounds 1..=N of `cai critique` records [default:
    /// every round's revision, as in the CAI paper]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub revision_rounds: Option<u64>,
    /// SL-CAI: helpfulness samples (SFT records, e.g. from `cai critique --helpful-prompts`)
    /// mixed into the training data
    #[arg(long, value_name = "FILE")]
    pub helpful_data: Option<PathBuf>,
    /// Helpful examples per training example, in a seeded order and repeated if there are too
    /// few [default: each helpful example once]
    #[arg(long, value_name = "R")]
    pub helpful_ratio: Option<f64>,
    /// Train LoRA adapters (written as a PEFT adapter) instead of every weight
    #[arg(long)]
    pub lora: bool,
    /// LoRA rank
    #[arg(long, value_name = "R")]
    pub lora_r: Option<usize>,
    /// LoRA scale numerator: updates are scaled by alpha / r
    #[arg(long, value_name = "A")]
    pub lora_alpha: Option<f64>,
    /// Dropout on the adapters' input, in [0, 1)
    #[arg(long, value_name = "P")]
    pub lora_dropout: Option<f64>,
    /// Modules to adapt, comma-separated PEFT names (q_proj, v_proj, o_proj, c_attn, …)
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub lora_targets: Option<Vec<String>>,
    /// Passes over the training data
    #[arg(long, value_name = "N")]
    pub epochs: Option<u64>,
    /// Stop after N optimiser steps even if epochs remain
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_steps: Option<u64>,
    /// Learning-rate shape after warm-up: constant, cosine or linear (decay to 0)
    #[arg(long, value_parser = <ScheduleKind as std::str::FromStr>::from_str)]
    pub schedule: Option<ScheduleKind>,
    /// Steps of linear warm-up from 0
    #[arg(long, value_name = "N")]
    pub warmup_steps: Option<u64>,
    /// Sequences per micro-batch
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,
    /// Micro-batches per optimiser step (gradient accumulation)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub grad_accum: Option<u64>,
    /// Longest sequence in tokens; longer examples are cut
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(2..))]
    pub max_length: Option<u64>,
    /// Concatenate short examples into rows of --max-length tokens (--packing=false turns
    /// off a config file's packing)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub packing: Option<bool>,
    /// Decoupled weight decay of matrices and embeddings (never norms or biases)
    #[arg(long, value_name = "W")]
    pub weight_decay: Option<f64>,
    /// Clip the global gradient norm to this (0: no clipping)
    #[arg(long, value_name = "NORM")]
    pub max_grad_norm: Option<f64>,
    /// Evaluate every N steps with --eval-data (0: only at the end)
    #[arg(long, value_name = "N")]
    pub eval_every: Option<u64>,
    /// Checkpoints to keep, newest first: a number ≥ 1, or "all"
    #[arg(long, value_name = "N", value_parser = parse_keep_last)]
    pub keep_last: Option<KeepLast>,
    /// Settings every training command shares.
    #[command(flatten)]
    pub run: RunFlags,
}

/// `--keep-last`: how many checkpoints to keep (`None`: all of them).
#[derive(Debug, Clone, Copy)]
pub struct KeepLast(Option<usize>);

fn parse_keep_last(s: &str) -> Result<KeepLast, String> {
    match s {
        "all" => Ok(KeepLast(None)),
        _ => match s.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(KeepLast(Some(n))),
            _ => Err(format!("'{s}': expected a number ≥ 1, or \"all\"")),
        },
    }
}

/// The text after `--help`: every training setting's default, as `--config` TOML.
fn defaults_help() -> String {
    let mut lora = toml::Table::try_from(LoraConfig::default()).expect("LoraConfig is a table");
    lora.remove("target_modules");
    lora.remove("seed");
    let text = toml::to_string(&SftConfig::default()).expect("SftConfig serialises to TOML")
        + "\n[lora]  # with --lora\n"
        + &toml::to_string(&lora).expect("a TOML table serialises")
        + "# target_modules: the architecture's (q_proj, v_proj; c_attn for gpt2)\n"
        + "# seed: the run's seed\n";
    train_flags::defaults_help(&text, "; --lora-r sets [lora] r")
}

/// A validated `cai sft` run. The trainer saves `sft` with the model and data paths as
/// `sft_config.json` in the output directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftCommandConfig {
    /// The model as given on the command line.
    pub model: String,
    /// Its directory.
    pub model_dir: PathBuf,
    /// Training JSONL.
    pub data: PathBuf,
    /// Evaluation JSONL.
    pub eval_data: Option<PathBuf>,
    /// Output directory.
    pub output: PathBuf,
    /// Device to train on.
    pub device: DeviceName,
    /// Every training setting, resolved.
    pub sft: SftConfig,
}

impl SftCommandConfig {
    /// Check the arguments, read `--config`, and resolve every setting.
    fn from_args(args: SftArgs) -> anyhow::Result<(Self, Earlier, Vec<String>)> {
        let model_dir = crate::lab_models::resolve_model_dir(&args.model)?;
        let (mut sft, file_lora) = match &args.run.config {
            Some(path) => read_config_file(path)?,
            None => (SftConfig::default(), FileLora::default()),
        };
        set(&mut sft.epochs, args.epochs);
        set(&mut sft.learning_rate, args.run.learning_rate);
        set(&mut sft.schedule, args.schedule);
        set(&mut sft.warmup_steps, args.warmup_steps);
        set(&mut sft.packing, args.packing);
        set(&mut sft.weight_decay, args.weight_decay);
        set(&mut sft.max_grad_norm, args.max_grad_norm);
        set(&mut sft.eval_every, args.eval_every);
        set(&mut sft.save_every, args.run.save_every);
        set(&mut sft.seed, args.run.seed);
        set(&mut sft.format, args.run.format);
        sft.gradient_checkpointing |= args.run.gradient_checkpointing;
        if args.max_steps.is_some() {
            sft.max_steps = args.max_steps;
        }
        if let Some(n) = args.revision_rounds {
            sft.revision_rounds = Some(n as usize);
        }
        sft.helpful = resolve_helpful(&args, sft.helpful.take())?;
        // Clap's ranges keep these small enough for usize.
        set(&mut sft.batch_size, args.batch_size.map(|n| n as usize));
        set(&mut sft.grad_accum, args.grad_accum.map(|n| n as usize));
        set(&mut sft.max_length, args.max_length.map(|n| n as usize));
        if let Some(KeepLast(keep)) = args.keep_last {
            sft.keep_last = keep;
        }
        if let Some(dtype) = args.run.dtype {
            sft.dtype = dtype.name().to_owned();
        }
        sft.lora = resolve_lora(&args, sft.lora.take(), &file_lora, sft.seed, &model_dir)?;

        let earlier = args.run.earlier();
        let allow = args.run.allow_config_change.clone();
        let config = Self {
            model: args.model,
            model_dir,
            data: args.data,
            eval_data: args.eval_data,
            output: args.output,
            device: args.run.device,
            sft,
        };
        Ok((config, earlier, allow))
    }
}

/// Which `[lora]` keys a config file set, so that unset ones can follow the run.
#[derive(Debug, Default)]
pub(crate) struct FileLora {
    target_modules: bool,
    seed: bool,
}

/// Read a `--config` TOML file. Unknown keys are an error naming the key.
fn read_config_file(path: &Path) -> anyhow::Result<(SftConfig, FileLora)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    Ok(parse_config(&text, &path.display().to_string())?)
}

/// A `--config` file's settings from its text; `origin` (the file) names it in errors.
pub(crate) fn parse_config(text: &str, origin: &str) -> Result<(SftConfig, FileLora), UsageError> {
    let bad = |e: toml::de::Error| UsageError(format!("{origin}: {e}"));
    let sft: SftConfig = toml::from_str(text).map_err(bad)?;
    let table: toml::Table = text.parse().map_err(bad)?;
    let mut file_lora = FileLora::default();
    // SftConfig rejects unknown keys itself, but LoraConfig does not; check [lora] here.
    if let Some(toml::Value::Table(lora)) = table.get("lora") {
        let known = toml::Table::try_from(LoraConfig::default()).expect("LoraConfig is a table");
        if let Some(key) = lora.keys().find(|key| !known.contains_key(*key)) {
            let expected: Vec<&str> = known.keys().map(String::as_str).collect();
            return Err(UsageError(format!(
                "{origin}: unknown key `{key}` in [lora]; expected one of {}",
                expected.join(", ")
            )));
        }
        file_lora.target_modules = lora.contains_key("target_modules");
        file_lora.seed = lora.contains_key("seed");
    }
    Ok((sft, file_lora))
}

/// The helpful mix: `--helpful-data`, else a config file's `[helpful]` table, with
/// `--helpful-ratio` on top.
fn resolve_helpful(
    args: &SftArgs,
    from_file: Option<HelpfulMix>,
) -> Result<Option<HelpfulMix>, UsageError> {
    let mut helpful = match (&args.helpful_data, from_file) {
        (Some(data), file) => HelpfulMix {
            data: data.clone(),
            ratio: file.and_then(|h| h.ratio),
        },
        (None, Some(file)) => file,
        (None, None) if args.helpful_ratio.is_some() => {
            return Err(UsageError(
                "--helpful-ratio needs --helpful-data (or a [helpful] table in --config)".into(),
            ))
        }
        (None, None) => return Ok(None),
    };
    if let Some(ratio) = args.helpful_ratio {
        if !(ratio.is_finite() && ratio >= 0.0) {
            return Err(UsageError(format!(
                "--helpful-ratio {ratio}: expected a number ≥ 0 (helpful examples per training \
                 example)"
            )));
        }
        helpful.ratio = Some(ratio);
    }
    Ok(Some(helpful))
}

/// The LoRA settings: a config file's `[lora]` table or `--lora`, with the `--lora-*` flags
/// on top. Targets default to the architecture's (PEFT's choice) and the seed to the run's.
fn resolve_lora(
    args: &SftArgs,
    from_file: Option<LoraConfig>,
    file_lora: &FileLora,
    seed: u64,
    model_dir: &Path,
) -> anyhow::Result<Option<LoraConfig>> {
    let lora_flag = [
        ("--lora-r", args.lora_r.is_some()),
        ("--lora-alpha", args.lora_alpha.is_some()),
        ("--lora-dropout", args.lora_dropout.is_some()),
        ("--lora-targets", args.lora_targets.is_some()),
    ]
    .into_iter()
    .find(|(_, given)| *given);
    let (mut lora, explicit_targets, explicit_seed) = match from_file {
        Some(lora) => (lora, file_lora.target_modules, file_lora.seed),
        None if args.lora => (LoraConfig::default(), false, false),
        None => {
            if let Some((flag, _)) = lora_flag {
                return Err(UsageError(format!(
                    "{flag} needs --lora (or a [lora] table in --config)"
                ))
                .into());
            }
            return Ok(None);
        }
    };
    if !explicit_targets {
        let config = ModelConfig::from_file(&model_dir.join("config.json"))?;
        lora.target_modules = LoraConfig::for_architecture(config.architecture).target_modules;
    }
    if !explicit_seed {
        lora.seed = seed;
    }
    if let Some(r) = args.lora_r {
        lora.r = r;
    }
    if let Some(alpha) = args.lora_alpha {
        lora.alpha = alpha;
    }
    if let Some(dropout) = args.lora_dropout {
        lora.dropout = dropout;
    }
    if let Some(targets) = &args.lora_targets {
        lora.target_modules = targets
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
    }
    lora.validate().map_err(|e| UsageError(e.to_string()))?;
    Ok(Some(lora))
}

/// Run `cai sft`. Exits 130 after Ctrl-C, once the checkpoint is saved.
pub fn run(args: SftArgs) -> anyhow::Result<ExitCode> {
    let (config, earlier, allow) = SftCommandConfig::from_args(args)?;
    let target = TrainOutput {
        output: &config.output,
        model_dir: &config.model_dir,
        method: "sft",
        settings: serde_json::to_value(&config.sft)?,
        config_file: SFT_CONFIG_FILE,
        extra_files: &[],
        allow_changes: &allow,
    };
    let (plan, _lock) = target.prepare(earlier)?;
    if let Plan::AlreadyFinished(weights) = plan {
        eprintln!(
            "{} already holds the finished model ({weights}); nothing to resume. Pass \
             --overwrite to train again",
            config.output.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let device = cai_model::device::device_from_name(&config.device.to_string())
        .with_context(|| format!("opening device {}", config.device))?;
    let run = SftRun {
        model_dir: config.model_dir.clone(),
        data: config.data.clone(),
        eval_data: config.eval_data.clone(),
        output: config.output.clone(),
        resume: earlier == Earlier::Resume,
        allow_changes: allow.clone(),
        device,
    };
    let bar = progress::spinner("loading the model and data");
    let stop = stop_on_ctrl_c(bar.clone())?;
    let mut shown = ShownMetrics::new("sft");
    let outcome = run_sft(&run, &config.sft, &stop, &mut |record, total_steps| {
        if !shown.started {
            // Said once training runs, so that loading errors come first on stderr.
            let from = match record.step {
                1 => String::new(),
                step => format!(", resuming after step {}", step - 1),
            };
            bar.suspend(|| eprintln!("{}{from}", describe(&config, total_steps)));
        }
        shown.update(&bar, record, total_steps);
    });
    bar.finish_and_clear();
    let outcome = outcome
        .map_err(|e| explain(e, "sft", config.sft.learning_rate))
        .with_context(|| format!("fine-tuning {}", config.model))?;

    match outcome {
        SftOutcome::Finished {
            steps,
            train_loss,
            eval_loss,
        } => {
            let mut losses = format!("train loss {}", show_loss(train_loss));
            if config.eval_data.is_some() {
                losses += &format!(", eval loss {}", show_loss(eval_loss));
            }
            println!("trained {}: {losses}", human::count(steps as usize, "step"));
            println!("wrote {}: {}", config.output.display(), written(&config));
            Ok(ExitCode::SUCCESS)
        }
        SftOutcome::Interrupted { checkpoint } => {
            eprintln!("interrupted: saved the checkpoint {}", checkpoint.display());
            eprintln!("resume with: {}", resume_command());
            Ok(ExitCode::from(INTERRUPTED))
        }
    }
}

/// One line on stderr saying what is being trained, for how many steps.
fn describe(config: &SftCommandConfig, total_steps: u64) -> String {
    let sft = &config.sft;
    let what = match &sft.lora {
        Some(lora) => format!(
            "LoRA (r {}, alpha {}) on {} of",
            lora.r,
            lora.alpha,
            lora.target_modules.join(", ")
        ),
        None => "every weight of".into(),
    };
    let steps = human::count(total_steps as usize, "step");
    format!(
        "sft: {what} {} on {}, {steps}, learning rate {:e} ({}), batch {} × {}, {}",
        config.model,
        config.data.display(),
        sft.learning_rate,
        schedule_name(sft.schedule),
        sft.batch_size,
        sft.grad_accum,
        sft.dtype,
    )
}

fn schedule_name(kind: ScheduleKind) -> &'static str {
    match kind {
        ScheduleKind::Constant => "constant",
        ScheduleKind::Cosine => "cosine",
        ScheduleKind::Linear => "linear",
    }
}

/// What the finished run wrote, for stdout.
fn written(config: &SftCommandConfig) -> String {
    let mut logs = format!("{SFT_CONFIG_FILE}, {METRICS_FILE}");
    if config.output.join(CHECKPOINTS_DIR).is_dir() {
        logs += &format!(", {CHECKPOINTS_DIR}/");
    }
    match &config.sft.lora {
        Some(_) => format!(
            "a PEFT adapter ({ADAPTER_CONFIG_FILE}, {ADAPTER_WEIGHTS_FILE}, tokenizer) and \
             {logs}; `cai merge-lora --model {} --adapter {} --output DIR` makes it a model",
            config.model,
            config.output.display()
        ),
        None => {
            format!("a Hugging Face model (config.json, model.safetensors, tokenizer) and {logs}")
        }
    }
}

fn show_loss(loss: Option<f64>) -> String {
    loss.map_or_else(|| "-".into(), |l| format!("{l:.4}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_last_takes_a_count_or_all() {
        assert_eq!(parse_keep_last("3").unwrap().0, Some(3));
        assert_eq!(parse_keep_last("all").unwrap().0, None);
        assert!(parse_keep_last("0").is_err());
        assert!(parse_keep_last("x").is_err());
    }

    #[test]
    fn schedules_parse_by_name() {
        assert_eq!(
            "cosine".parse::<ScheduleKind>().unwrap(),
            ScheduleKind::Cosine
        );
        assert!("step".parse::<ScheduleKind>().is_err());
    }

    #[test]
    fn defaults_help_lists_the_config_keys() {
        let help = defaults_help();
        assert!(help.contains("  learning_rate = "), "{help}");
        assert!(help.contains("  epochs = 1"), "{help}");
    }
}
