//! `cai train-pm`: a preference model — the model with a scalar head, trained on pairs with
//! soft labels (`cai label` output, TRL preference records, hh-rlhf comparisons) mixed with
//! weights — with a progress bar, a checkpoint on Ctrl-C, `--resume`, and its accuracy and
//! calibration (table and reliability plot) written beside it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use cai_train::core::schedule::ScheduleKind;
use cai_train::pm::data::DataSource;
use cai_train::pm::eval::{PmEval, PM_EVAL_FILE, RELIABILITY_PLOT_FILE};
use cai_train::pm::{run_pm, PmConfig, PmOutcome, PmRun, PM_CONFIG_FILE};
use clap::Args;

use crate::human;
use crate::interrupt::{resume_command, stop_on_ctrl_c, INTERRUPTED};
use crate::progress;
use crate::train_flags::{self, read_config, set, RunFlags};
use crate::train_output::{explain, Earlier, Plan, TrainOutput};
use crate::train_progress::ShownMetrics;
use crate::usage::UsageError;

/// Raw `cai train-pm` arguments. A setting left unset comes from `--config`, else from the
/// defaults listed after `--help`.
#[derive(Debug, Default, Args)]
#[command(after_help = defaults_help())]
pub struct TrainPmArgs {
    /// Model to start from: a causal LM (a new scalar head is added) or a preference model
    #[arg(long, value_name = "M")]
    pub model: String,
    /// Preference data, repeatable, each optionally with a mixture weight (FILE:WEIGHT; 2
    /// repeats every pair, 0.5 keeps half): `cai label` records (soft labels), TRL records
    /// ({"prompt", "chosen", "rejected"}) or hh-rlhf ({"chosen", "rejected"} transcripts)
    #[arg(long, value_name = "FILE[:W]", required = true, value_parser = parse_source)]
    pub data: Vec<DataSource>,
    /// Directory for the preference model (in the *ForSequenceClassification layout),
    /// pm_config.json, metrics.jsonl, pm_eval.json, reliability.svg and checkpoints/
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// Labelled pairs to evaluate on (same formats); without, the final report is on the
    /// training pairs
    #[arg(long, value_name = "FILE")]
    pub eval_data: Option<PathBuf>,
    /// Passes over the data
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
    /// Pairs per micro-batch
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,
    /// Micro-batches per optimiser step
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub grad_accum: Option<u64>,
    /// Longest dialogue in tokens; longer pairs are left out
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(2..))]
    pub max_length: Option<u64>,
    /// Decoupled weight decay of matrices and embeddings
    #[arg(long, value_name = "W")]
    pub weight_decay: Option<f64>,
    /// Clip the global gradient norm to this (0: no clipping)
    #[arg(long, value_name = "NORM")]
    pub max_grad_norm: Option<f64>,
    /// Evaluate every N steps with --eval-data (0: only at the end)
    #[arg(long, value_name = "N")]
    pub eval_every: Option<u64>,
    /// Settings every training command shares.
    #[command(flatten)]
    pub run: RunFlags,
}

/// `FILE` or `FILE:WEIGHT` (a file whose name ends in `:<number>` needs an explicit weight).
fn parse_source(s: &str) -> Result<DataSource, String> {
    if let Some((path, weight)) = s.rsplit_once(':') {
        if let Ok(weight) = weight.parse::<f64>() {
            if !(weight.is_finite() && weight >= 0.0) {
                return Err(format!("'{s}': the weight must be a number ≥ 0"));
            }
            return Ok(DataSource {
                path: path.into(),
                weight,
            });
        }
    }
    Ok(DataSource {
        path: s.into(),
        weight: 1.0,
    })
}

/// The text after `--help`: every setting's default, as `--config` TOML.
fn defaults_help() -> String {
    let text = toml::to_string(&PmConfig::default()).expect("PmConfig serialises to TOML");
    train_flags::defaults_help(&text, "")
}

/// The resolved settings: `--config`, then the flags.
fn resolve(args: &TrainPmArgs) -> anyhow::Result<PmConfig> {
    let mut pm: PmConfig = read_config(args.run.config.as_deref())?;
    set(&mut pm.epochs, args.epochs);
    set(&mut pm.learning_rate, args.run.learning_rate);
    set(&mut pm.schedule, args.schedule);
    set(&mut pm.warmup_steps, args.warmup_steps);
    set(&mut pm.weight_decay, args.weight_decay);
    set(&mut pm.max_grad_norm, args.max_grad_norm);
    set(&mut pm.eval_every, args.eval_every);
    set(&mut pm.save_every, args.run.save_every);
    set(&mut pm.seed, args.run.seed);
    set(&mut pm.format, args.run.format);
    if args.max_steps.is_some() {
        pm.max_steps = args.max_steps;
    }
    // Clap's ranges keep these small enough for usize.
    set(&mut pm.batch_size, args.batch_size.map(|n| n as usize));
    set(&mut pm.grad_accum, args.grad_accum.map(|n| n as usize));
    set(&mut pm.max_length, args.max_length.map(|n| n as usize));
    if let Some(dtype) = args.run.dtype {
        pm.dtype = dtype.name().to_owned();
    }
    pm.gradient_checkpointing |= args.run.gradient_checkpointing;
    pm.validate(&args.data)
        .map_err(|e| UsageError(e.to_string()))?;
    Ok(pm)
}

/// Run `cai train-pm`. Exits 130 after Ctrl-C, once the checkpoint is saved.
pub fn run(args: TrainPmArgs) -> anyhow::Result<ExitCode> {
    let pm = resolve(&args)?;
    let model_dir = crate::lab_models::resolve_model_dir(&args.model)
        .with_context(|| format!("finding model '{}'", args.model))?;
    let earlier = args.run.earlier();
    let target = TrainOutput {
        output: &args.output,
        model_dir: &model_dir,
        method: "pm",
        settings: serde_json::to_value(&pm)?,
        config_file: PM_CONFIG_FILE,
        extra_files: &[PM_EVAL_FILE, RELIABILITY_PLOT_FILE],
        allow_changes: &args.run.allow_config_change,
    };
    let (plan, _lock) = target.prepare(earlier)?;
    if let Plan::AlreadyFinished(weights) = plan {
        eprintln!(
            "{} already holds the finished preference model ({weights}); nothing to resume. \
             Pass --overwrite to train again",
            args.output.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let device = cai_model::device::device_from_name(&args.run.device.to_string())
        .with_context(|| format!("opening device {}", args.run.device))?;
    let run = PmRun {
        model_dir,
        data: args.data.clone(),
        eval_data: args.eval_data.clone(),
        output: args.output.clone(),
        resume: earlier == Earlier::Resume,
        allow_changes: args.run.allow_config_change.clone(),
        device,
    };
    let bar = progress::spinner("loading the model and the pairs");
    let stop = stop_on_ctrl_c(bar.clone())?;
    let mut shown = ShownMetrics::new("train-pm");
    let outcome = run_pm(&run, &pm, &stop, &mut |record, total_steps| {
        if !shown.started {
            bar.suspend(|| eprintln!("{}", describe(&args, &pm, total_steps)));
        }
        shown.update(&bar, record, total_steps);
    });
    bar.finish_and_clear();
    let outcome = outcome
        .map_err(|e| explain(e, "pm", pm.learning_rate))
        .with_context(|| format!("training a preference model from {}", args.model))?;
    match outcome {
        PmOutcome::Finished {
            steps,
            pairs,
            too_long,
            train_loss,
            eval,
        } => {
            if too_long > 0 {
                eprintln!(
                    "left out {} longer than {} tokens",
                    human::count(too_long, "pair"),
                    pm.max_length
                );
            }
            println!(
                "trained {} on {}: train loss {}",
                human::count(steps as usize, "step"),
                human::count(pairs, "pair"),
                train_loss.map_or_else(|| "-".into(), |l| format!("{l:.4}"))
            );
            println!("{}", summary(&eval));
            print!("{}", eval.calibration.table_text());
            println!(
                "wrote {}: a preference model (config.json, model.safetensors, tokenizer), \
                 {PM_CONFIG_FILE}, metrics.jsonl, {PM_EVAL_FILE} and {RELIABILITY_PLOT_FILE}",
                args.output.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        PmOutcome::Interrupted { checkpoint } => {
            eprintln!("interrupted: saved the checkpoint {}", checkpoint.display());
            eprintln!("resume with: {}", resume_command());
            Ok(ExitCode::from(INTERRUPTED))
        }
    }
}

/// The evaluation in one line.
fn summary(eval: &PmEval) -> String {
    let accuracy = eval
        .accuracy
        .map_or_else(|| "-".into(), |a| format!("{a:.4}"));
    format!(
        "{} pairs: accuracy {accuracy} on {} decided, loss {:.4}, ECE {:.4}",
        eval.split, eval.decided, eval.loss, eval.calibration.ece
    )
}

/// One line on stderr saying what is trained, for how many steps.
fn describe(args: &TrainPmArgs, pm: &PmConfig, total_steps: u64) -> String {
    let data: Vec<String> = args
        .data
        .iter()
        .map(|d| format!("{} (weight {})", show(&d.path), d.weight))
        .collect();
    format!(
        "train-pm: {} on {}, {}, learning rate {:e}, batch {} × {} pairs, {}",
        args.model,
        data.join(" + "),
        human::count(total_steps as usize, "step"),
        pm.learning_rate,
        pm.batch_size,
        pm.grad_accum,
        pm.dtype
    )
}

fn show(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_take_an_optional_weight() {
        let plain = parse_source("prefs.jsonl").unwrap();
        assert_eq!(
            (plain.path, plain.weight),
            (PathBuf::from("prefs.jsonl"), 1.0)
        );
        let weighted = parse_source("data/hh.jsonl:0.5").unwrap();
        assert_eq!(
            (weighted.path, weighted.weight),
            (PathBuf::from("data/hh.jsonl"), 0.5)
        );
        assert!(parse_source("hh.jsonl:-1").is_err());
        let odd = parse_source("c:/x.jsonl").unwrap();
        assert_eq!(odd.path, PathBuf::from("c:/x.jsonl"));
    }

    #[test]
    fn defaults_help_lists_the_config_keys() {
        let help = defaults_help();
        assert!(help.contains("  learning_rate = 0.0001"), "{help}");
        assert!(help.contains("  epochs = 1"), "{help}");
    }
}
