//! `cai distill`: context distillation — train a model (or LoRA adapters) without a context so
//! that it behaves as the same model does with the context in front, by per-token KL to the
//! prompted model; with a progress bar, a checkpoint on Ctrl-C and `--resume`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cai_model::config::ModelConfig;
use cai_model::lora::LoraConfig;
use cai_train::distill::data::TeacherSampling;
use cai_train::distill::{
    run_distill, DistillConfig, DistillEvent, DistillOutcome, DistillRun, DISTILL_CONFIG_FILE,
    TEACHER_SAMPLES_FILE, TEACHER_TOPK_FILE,
};
use cai_train::{Split, TrainError};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::human;
use crate::interrupt::{resume_command, stop_on_ctrl_c, INTERRUPTED};
use crate::model_args::{self, DeviceName};
use crate::progress;
use crate::train_flags::{self, read_config, set, RunFlags};
use crate::train_output::{explain, Earlier, Plan, TrainOutput, CHECKPOINTS_DIR, METRICS_FILE};
use crate::train_progress::ShownMetrics;
use crate::usage::UsageError;

/// Files of a distillation run besides the model, its config and its logs.
const EXTRA_FILES: &[&str] = &[
    TEACHER_SAMPLES_FILE,
    "teacher_samples_eval.jsonl",
    TEACHER_TOPK_FILE,
    "teacher_topk.json",
    "teacher_topk_eval.safetensors",
    "teacher_topk_eval.json",
];

/// Raw `cai distill` arguments. Settings without a flag (schedule, warmup_steps,
/// weight_decay, max_grad_norm, keep_last, LoRA dropout and targets, sample.top_p) come from
/// `--config`; unset ones take the defaults listed after `--help`.
#[derive(Debug, Default, Args)]
#[command(after_help = defaults_help())]
pub struct DistillArgs {
    /// Model to distil: the teacher (frozen, with the context) and the student's start
    #[arg(long, value_name = "M")]
    pub model: String,
    /// The context C the teacher reads first (e.g. an HHH prompt); the student learns to act
    /// as if it were there
    #[arg(long, value_name = "FILE")]
    pub context: PathBuf,
    /// Sequences to distil on, JSONL: {"text"} (a corpus, as in the paper), {"prompt",
    /// "completion"}, {"messages"}, or prompts ({"prompt"} user requests, {"messages"} ending
    /// with the user), which --sample lets the teacher answer first
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Directory for the student (or LoRA adapter), distill_config.json, metrics.jsonl,
    /// checkpoints/ and the teacher's samples and top-k
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// Held-out data in the same format: its KL to the teacher and top-1 agreement are
    /// logged with split "eval", before training and after
    #[arg(long, value_name = "FILE")]
    pub eval_data: Option<PathBuf>,
    /// Compare the teacher's K most likely tokens plus the rest of its mass instead of the
    /// whole vocabulary; the teacher's top-K is computed once and kept in --output
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    pub top_k: Option<u64>,
    /// Let the teacher, with the context, answer the prompts first (sampling at temperature
    /// 1); the student then reads prompt and answer
    #[arg(long)]
    pub sample: bool,
    /// Most new tokens per teacher answer (with --sample)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub sample_max_new_tokens: Option<u64>,
    /// Temperature of the teacher's answers (with --sample; 0 is greedy)
    #[arg(long, value_name = "T")]
    pub sample_temperature: Option<f32>,
    /// Train LoRA adapters (written as a PEFT adapter) instead of every weight
    #[arg(long)]
    pub lora: bool,
    /// LoRA rank
    #[arg(long, value_name = "R")]
    pub lora_r: Option<usize>,
    /// LoRA scale numerator: updates are scaled by alpha / r
    #[arg(long, value_name = "A")]
    pub lora_alpha: Option<f64>,
    /// Passes over the data
    #[arg(long, value_name = "N")]
    pub epochs: Option<u64>,
    /// Stop after N optimiser steps even if epochs remain
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_steps: Option<u64>,
    /// Sequences per micro-batch
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,
    /// Micro-batches per optimiser step
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub grad_accum: Option<u64>,
    /// Longest sequence in tokens (sequences are also cut so that context + sequence fit)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(2..))]
    pub max_length: Option<u64>,
    /// Evaluate every N steps with --eval-data (0: before training and at the end)
    #[arg(long, value_name = "N")]
    pub eval_every: Option<u64>,
    /// Settings every training command shares.
    #[command(flatten)]
    pub run: RunFlags,
}

/// The text after `--help`: every setting's default, as `--config` TOML.
fn defaults_help() -> String {
    let mut config = toml::Table::try_from(DistillConfig::default()).expect("a TOML table");
    config.insert(
        "sample".into(),
        toml::Value::try_from(TeacherSampling::default()).expect("a TOML table"),
    );
    let text = toml::to_string(&config).expect("DistillConfig serialises to TOML")
        + "# [sample] applies with --sample; unset by default: top_k (--top-k) and [lora]\n"
        + "# (cai sft's keys, --lora)\n";
    train_flags::defaults_help(&text, "")
}

/// A validated `cai distill` run; the trainer saves `distill` with the paths as
/// `distill_config.json` in the output directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistillCommandConfig {
    /// The model as given on the command line.
    pub model: String,
    /// Its directory.
    pub model_dir: PathBuf,
    /// The context file.
    pub context: PathBuf,
    /// Training JSONL.
    pub data: PathBuf,
    /// Held-out JSONL.
    pub eval_data: Option<PathBuf>,
    /// Output directory.
    pub output: PathBuf,
    /// Device to train on.
    pub device: DeviceName,
    /// Every setting, resolved.
    pub distill: DistillConfig,
}

impl DistillCommandConfig {
    /// Check the arguments, read `--config`, and resolve every setting.
    fn from_args(args: DistillArgs) -> anyhow::Result<(Self, Earlier, Vec<String>)> {
        let model_dir = crate::lab_models::resolve_model_dir(&args.model)?;
        let mut d: DistillConfig = read_config(args.run.config.as_deref())?;
        set(&mut d.epochs, args.epochs);
        set(&mut d.eval_every, args.eval_every);
        set(&mut d.save_every, args.run.save_every);
        set(&mut d.seed, args.run.seed);
        d.max_steps = args.max_steps.or(d.max_steps);
        d.learning_rate = args.run.learning_rate.unwrap_or(d.learning_rate);
        d.format = args.run.format.unwrap_or(d.format);
        // Clap's ranges keep these small enough for usize.
        d.batch_size = args.batch_size.map_or(d.batch_size, |n| n as usize);
        d.grad_accum = args.grad_accum.map_or(d.grad_accum, |n| n as usize);
        d.max_length = args.max_length.map_or(d.max_length, |n| n as usize);
        d.top_k = args.top_k.map(|k| k as usize).or(d.top_k);
        if let Some(dtype) = args.run.dtype {
            d.dtype = dtype.name().to_owned();
        }
        d.gradient_checkpointing |= args.run.gradient_checkpointing;
        let sample_flags =
            args.sample_max_new_tokens.is_some() || args.sample_temperature.is_some();
        if args.sample || sample_flags {
            if !args.sample && d.sample.is_none() {
                return Err(UsageError(
                    "--sample-max-new-tokens and --sample-temperature need --sample (or a \
                     [sample] table in --config)"
                        .into(),
                )
                .into());
            }
            let sample = d.sample.get_or_insert_with(TeacherSampling::default);
            sample.max_new_tokens = args
                .sample_max_new_tokens
                .map_or(sample.max_new_tokens, |n| n as usize);
            sample.temperature = args.sample_temperature.unwrap_or(sample.temperature);
        }
        if args.lora || args.lora_r.is_some() || args.lora_alpha.is_some() {
            if !args.lora && d.lora.is_none() {
                return Err(UsageError(
                    "--lora-r and --lora-alpha need --lora (or a [lora] table in --config)".into(),
                )
                .into());
            }
            let lora = d.lora.get_or_insert_with(|| {
                let config = ModelConfig::from_file(&model_dir.join("config.json"));
                let mut lora = config.map_or_else(
                    |_| LoraConfig::default(),
                    |c| LoraConfig::for_architecture(c.architecture),
                );
                lora.seed = d.seed;
                lora
            });
            lora.r = args.lora_r.unwrap_or(lora.r);
            lora.alpha = args.lora_alpha.unwrap_or(lora.alpha);
            lora.validate().map_err(|e| UsageError(e.to_string()))?;
        }
        let earlier = args.run.earlier();
        let allow = args.run.allow_config_change.clone();
        let config = Self {
            model: args.model,
            model_dir,
            context: args.context,
            data: args.data,
            eval_data: args.eval_data,
            output: args.output,
            device: args.run.device,
            distill: d,
        };
        Ok((config, earlier, allow))
    }
}

/// Run `cai distill`. Exits 130 after Ctrl-C, once the checkpoint is saved.
pub fn run(args: DistillArgs) -> anyhow::Result<ExitCode> {
    let (config, earlier, allow) = DistillCommandConfig::from_args(args)?;
    let context = model_args::read_context(&config.context)?;
    let target = TrainOutput {
        output: &config.output,
        model_dir: &config.model_dir,
        method: "distill",
        settings: serde_json::to_value(&config.distill)?,
        config_file: DISTILL_CONFIG_FILE,
        extra_files: EXTRA_FILES,
        allow_changes: &allow,
    };
    let (plan, _lock) = target.prepare(earlier)?;
    if let Plan::AlreadyFinished(weights) = plan {
        eprintln!(
            "{} already holds the distilled model ({weights}); nothing to resume. Pass \
             --overwrite to train again",
            config.output.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let device = cai_model::device::device_from_name(&config.device.to_string())
        .with_context(|| format!("opening device {}", config.device))?;
    let run = DistillRun {
        model_dir: config.model_dir.clone(),
        context,
        data: config.data.clone(),
        eval_data: config.eval_data.clone(),
        output: config.output.clone(),
        resume: earlier == Earlier::Resume,
        allow_changes: allow.clone(),
        device,
    };
    let bar = progress::spinner("loading the model and prefilling the context");
    let stop = stop_on_ctrl_c(bar.clone())?;
    let mut shown = ShownMetrics::new("distill");
    let outcome = run_distill(&run, &config.distill, &stop, &mut |event| match event {
        DistillEvent::Context { tokens } => bar.suspend(|| {
            eprintln!(
                "context {}: {tokens} tokens, prefilled once for the teacher",
                config.context.display()
            )
        }),
        DistillEvent::Sampling { split, done, total } => bar.set_message(format!(
            "the teacher answers {} prompts: {done}/{total}",
            name(split)
        )),
        DistillEvent::TopK { split, done, total } => bar.set_message(format!(
            "the teacher's top-k on the {} data: {done}/{total} sequences",
            name(split)
        )),
        DistillEvent::Metric {
            record,
            total_steps,
        } => {
            if !shown.started {
                bar.suspend(|| eprintln!("{}", describe(&config, total_steps)));
            }
            shown.update(&bar, record, total_steps);
        }
    });
    bar.finish_and_clear();
    let outcome = outcome
        .map_err(|e| match e {
            // Which file is too long, not only how long.
            TrainError::ContextTooLong { .. } => {
                anyhow::anyhow!("the context file {}: {e}", config.context.display())
            }
            e => explain(e, "distill", config.distill.learning_rate),
        })
        .with_context(|| format!("distilling {}", config.model))?;
    match outcome {
        DistillOutcome::Finished {
            steps,
            train_kl,
            eval,
        } => {
            let kl = train_kl.map_or_else(|| "-".into(), |l| format!("{l:.4}"));
            println!(
                "distilled {}: train KL {kl}",
                human::count(steps as usize, "step")
            );
            if let Some([(kl0, agree0), (kl1, agree1)]) = eval {
                let fall = if kl0 > 0.0 {
                    100.0 * (1.0 - kl1 / kl0)
                } else {
                    0.0
                };
                println!(
                    "held-out KL to the teacher {kl0:.4} -> {kl1:.4} ({fall:.0}% lower), \
                     top-1 agreement {agree0:.3} -> {agree1:.3}"
                );
            }
            println!("wrote {}: {}", config.output.display(), written(&config));
            Ok(ExitCode::SUCCESS)
        }
        DistillOutcome::Interrupted { checkpoint } => {
            eprintln!("interrupted: saved the checkpoint {}", checkpoint.display());
            eprintln!("resume with: {}", resume_command());
            Ok(ExitCode::from(INTERRUPTED))
        }
    }
}

fn name(split: Split) -> &'static str {
    match split {
        Split::Train => "training",
        Split::Eval => "held-out",
    }
}

/// One line on stderr saying what is being trained, for how many steps.
fn describe(config: &DistillCommandConfig, total_steps: u64) -> String {
    let d = &config.distill;
    let what = match &d.lora {
        Some(lora) => format!("LoRA (r {}, alpha {}) on", lora.r, lora.alpha),
        None => "every weight of".into(),
    };
    let loss = match d.top_k {
        Some(k) => format!("KL over the teacher's top-{k} and the rest"),
        None => "KL over the full vocabulary".into(),
    };
    format!(
        "distill: {what} {} on {}, {}, {loss}, learning rate {:e}, batch {} × {}",
        config.model,
        config.data.display(),
        human::count(total_steps as usize, "step"),
        d.learning_rate,
        d.batch_size,
        d.grad_accum,
    )
}

/// What the finished run wrote, for stdout.
fn written(config: &DistillCommandConfig) -> String {
    let mut logs = format!("{DISTILL_CONFIG_FILE}, {METRICS_FILE}");
    for extra in [TEACHER_SAMPLES_FILE, TEACHER_TOPK_FILE] {
        if config.output.join(extra).is_file() {
            logs += &format!(", {extra}");
        }
    }
    if config.output.join(CHECKPOINTS_DIR).is_dir() {
        logs += &format!(", {CHECKPOINTS_DIR}/");
    }
    let model = match &config.distill.lora {
        Some(_) => "a PEFT adapter (merge it with `cai merge-lora`)",
        None => "a Hugging Face model",
    };
    format!("{model} and {logs}")
}
