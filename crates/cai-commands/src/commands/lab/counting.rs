//! `cai lab counting`: the seed's context-distillation experiment — P("64" | "1 … 63") for a
//! model as it is, prompted with counting sequences that stop at 63, fine-tuned on them, and
//! context-distilled from them — as a table or one JSON object.

use std::path::PathBuf;

use anyhow::Context;
use cai_lab::counting_experiment::{run_counting, CountingEvent, CountingOptions, CountingReport};
use clap::Args;

use crate::model_args::DeviceName;
use crate::progress;
use crate::train_progress::ShownMetrics;
use crate::usage::ensure;

/// Raw `cai lab counting` arguments.
#[derive(Debug, Args)]
pub struct LabCountingArgs {
    /// The model, pre-trained on counting text: a directory, a cached model id, or `lab`
    /// (the lab's shipped base model, whose corpus counts up to 128)
    #[arg(long, value_name = "M", default_value = "lab")]
    pub model: String,
    /// Keep the experiment's data and its fine-tuned and distilled models here [default: a
    /// temporary directory, removed at the end]
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Where the context's sequences stop (the seed's 63; the question is the next number)
    #[arg(long, default_value_t = CountingOptions::default().last, value_name = "N")]
    pub last: usize,
    /// Sequences 1 … N in the context
    #[arg(long, default_value_t = CountingOptions::default().copies, value_name = "K")]
    pub copies: usize,
    /// Optimiser steps of the fine-tuning and of the distillation
    #[arg(long, default_value_t = CountingOptions::default().steps, value_name = "N")]
    pub steps: u64,
    /// Learning rate of both
    #[arg(long, default_value_t = CountingOptions::default().learning_rate, value_name = "LR")]
    pub learning_rate: f64,
    /// Counting documents the distillation reads
    #[arg(long, default_value_t = CountingOptions::default().documents, value_name = "N")]
    pub documents: usize,
    /// Longest sequence of those documents
    #[arg(long, default_value_t = CountingOptions::default().max_count, value_name = "N")]
    pub max_count: usize,
    /// Seed of the documents and of both trainings
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device to run on: cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: DeviceName,
    /// Print {"p64_base", "p64_prompted", "p64_sft", "p64_distilled"} as one JSON object
    #[arg(long)]
    pub json: bool,
}

/// Run `cai lab counting`.
pub fn run(args: LabCountingArgs) -> anyhow::Result<()> {
    ensure(args.last >= 1 && args.copies >= 1, || {
        "--last and --copies: expected at least 1".into()
    })?;
    ensure(args.steps >= 1, || "--steps 0: expected at least 1".into())?;
    ensure(args.documents >= 1 && args.max_count >= 1, || {
        "--documents and --max-count: expected at least 1".into()
    })?;
    let model_dir = crate::lab_models::resolve_model_dir(&args.model)?;
    let device = cai_model::device::device_from_name(&args.device.to_string())
        .with_context(|| format!("opening device {}", args.device))?;
    let temporary;
    let work = match &args.output {
        Some(dir) => dir.clone(),
        None => {
            temporary = tempfile::tempdir().context("making a temporary directory")?;
            temporary.path().to_path_buf()
        }
    };
    let opts = CountingOptions {
        last: args.last,
        copies: args.copies,
        steps: args.steps,
        learning_rate: args.learning_rate,
        documents: args.documents,
        max_count: args.max_count,
        seed: args.seed,
        ..CountingOptions::default()
    };
    let mut bar = progress::spinner("loading the model");
    let mut shown = ShownMetrics::new("train");
    let report = run_counting(
        &model_dir,
        &work,
        &opts,
        &device,
        &mut |event| match event {
            // Each stage gets a fresh spinner, which its first training record turns into a bar.
            CountingEvent::Stage(stage) => {
                bar.finish_and_clear();
                bar = progress::spinner(stage);
                shown = ShownMetrics::new("train");
            }
            CountingEvent::Metric {
                record,
                total_steps,
            } => shown.update(&bar, record, total_steps),
        },
    );
    bar.finish_and_clear();
    let report = report.with_context(|| format!("the counting experiment on {}", args.model))?;
    if args.json {
        let json = serde_json::json!({
            "p64_base": report.p64_base,
            "p64_prompted": report.p64_prompted,
            "p64_sft": report.p64_sft,
            "p64_distilled": report.p64_distilled,
        });
        println!("{json}");
    } else {
        print_report(&args.model, &report);
    }
    if let Some(dir) = &args.output {
        let path = dir.join("report.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn print_report(model: &str, r: &CountingReport) {
    let o = &r.options;
    println!(
        "P(\" {}\" | \"1 … {}\") on {model}; context: {} lines of 1 … {} ({} tokens); {} steps \
         at learning rate {:e} for both fine-tuning and distillation",
        o.last + 1,
        o.last,
        o.copies,
        o.last,
        r.context_tokens,
        o.steps,
        o.learning_rate,
    );
    let rows = [
        ("base", r.p64_base, "the model as it is"),
        ("prompted", r.p64_prompted, "with the context in front"),
        ("sft", r.p64_sft, "fine-tuned on the context"),
        (
            "distilled",
            r.p64_distilled,
            "context-distilled, no context",
        ),
    ];
    for (name, p, what) in rows {
        // Small probabilities in scientific notation, so that none reads as exactly 0.
        let shown = if p < 1e-3 {
            format!("{p:.2e}")
        } else {
            format!("{p:.4}")
        };
        println!("  {name:<10} {shown:>9}   {what}");
    }
}
