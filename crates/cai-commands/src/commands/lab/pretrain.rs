//! `cai lab pretrain`: make a lab base model from scratch — the world's corpus, a tokenizer, a
//! Llama of the chosen size trained on the corpus — resumable, with a progress bar, and a
//! record of how it was made and how it measures.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::Context;
use cai_lab::pretrain::{
    pretrain, LabSize, PretrainEvent, PretrainOutcome, PretrainRecipe, PretrainRun,
    LAB_MODEL_RECORD,
};
use clap::Args;

use super::eval::print_report;
use crate::human;
use crate::interrupt::{stop_on_ctrl_c, INTERRUPTED};
use crate::model_args::DeviceName;
use crate::progress;
use crate::train_progress::ShownMetrics;
use crate::usage::{ensure, UsageError};

/// Raw `cai lab pretrain` arguments.
#[derive(Debug, Args)]
pub struct LabPretrainArgs {
    /// Directory for the model (Hugging Face layout), its record and the work files; a run
    /// stopped part-way resumes when the same command is run again
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// Model size: small (~1.6M parameters), base (~5.2M, the shipped `lab`) or large (~14M)
    #[arg(long, default_value = "base", value_name = "SIZE")]
    pub size: String,
    /// Seed of the world, the initial weights and the data order
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
    /// Corpus documents [default: the recipe's 10000]
    #[arg(long, value_name = "N")]
    pub corpus_size: Option<usize>,
    /// Passes over the corpus [default: the recipe's 3]
    #[arg(long, value_name = "N")]
    pub epochs: Option<u64>,
    /// Stop training after N optimiser steps (a quick, smaller model)
    #[arg(long, value_name = "N")]
    pub max_steps: Option<u64>,
    /// Device to train on: cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: DeviceName,
}

/// Check the arguments and build the recipe they ask for.
fn recipe_from_args(args: &LabPretrainArgs) -> anyhow::Result<PretrainRecipe> {
    let size = LabSize::from_name(&args.size).ok_or_else(|| {
        UsageError(format!(
            "--size {:?}: expected small, base or large",
            args.size
        ))
    })?;
    let mut recipe = PretrainRecipe::new(size, args.seed);
    if let Some(n) = args.corpus_size {
        ensure(n > 0, || {
            "--corpus-size 0: expected at least 1 document".into()
        })?;
        recipe.world.corpus.size = n;
    }
    if let Some(n) = args.epochs {
        ensure(n > 0, || "--epochs 0: expected at least 1".into())?;
        recipe.train.epochs = n;
    }
    if let Some(n) = args.max_steps {
        ensure(n > 0, || "--max-steps 0: expected at least 1".into())?;
        recipe.train.max_steps = Some(n);
    }
    Ok(recipe)
}

/// Run `cai lab pretrain`.
pub fn run(args: LabPretrainArgs) -> anyhow::Result<ExitCode> {
    let recipe = recipe_from_args(&args)?;
    let _lock = cai_core::lock::WriterLock::acquire(&args.output)?;
    let device = cai_model::device::device_from_name(&args.device.to_string())
        .with_context(|| format!("opening device {}", args.device))?;
    let bar = progress::spinner("starting");
    let stop = stop_on_ctrl_c(bar.clone())?;
    let mut shown = ShownMetrics::new("pretrain");
    let run = PretrainRun {
        output: args.output.clone(),
        device,
        eval_max_items: None,
    };
    let outcome = pretrain(&recipe, &run, &stop, &mut |event| match event {
        PretrainEvent::Step(what) => {
            if shown.started {
                // Training is over: back to a spinner for the remaining steps.
                bar.finish_and_clear();
            }
            if bar.is_hidden() {
                tracing::info!("{what}");
            }
            bar.set_message(what);
        }
        PretrainEvent::Metric(record, total) => shown.update(&bar, record, total),
    });
    bar.finish_and_clear();
    let outcome = outcome.with_context(|| {
        format!(
            "pre-training the lab's {} model in {}",
            recipe.size.name(),
            args.output.display()
        )
    })?;
    match outcome {
        PretrainOutcome::Finished(record) => {
            println!(
                "trained {} ({} parameters) on {} documents ({} tokens): {} steps in {:.0} s, \
                 final loss {}",
                recipe.size.name(),
                human::thousands(record.parameters as u64),
                human::thousands(record.corpus_documents as u64),
                human::thousands(record.corpus_tokens as u64),
                record.train_steps,
                record.train_seconds,
                record
                    .final_train_loss
                    .map_or("-".to_owned(), |l| format!("{l:.4}")),
            );
            print_report(&record.eval);
            println!(
                "wrote {} (the model, in {}) and {}",
                args.output.display(),
                recipe.dtype,
                args.output.join(LAB_MODEL_RECORD).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        PretrainOutcome::Interrupted { checkpoint } => {
            debug_assert!(stop.load(Ordering::SeqCst));
            eprintln!("interrupted: saved the checkpoint {}", checkpoint.display());
            eprintln!("resume by running the same command again");
            Ok(ExitCode::from(INTERRUPTED))
        }
    }
}
