//! The seed's counting experiment (docs/DESIGN.md §1, context distillation). The context C holds
//! counting sequences that all stop at 63. A model prompted with C still continues
//! "1 … 63" with 64, as pre-training taught it; a model fine-tuned on C learns that sequences
//! end at 63 and gives 64 a low probability; a model context-distilled from C — trained to
//! match the prompted model on other counting text — keeps the prompted behaviour. The
//! experiment measures P(" 64" | "1 … 63") for the base, prompted, fine-tuned and distilled
//! models, with the same optimiser budget for both trainings.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use cai_core::rng::{derive_seed, rng_from_seed};
use cai_core::{LanguageModel, ScoreRequest};
use cai_model::local::{LoadOptions, LocalModel};
use cai_train::distill::{run_distill, DistillConfig, DistillEvent, DistillOutcome, DistillRun};
use cai_train::sft::{run_sft, SftConfig, SftOutcome, SftRun};
use cai_train::MetricRecord;
use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::counting::{counting_document, counting_sequence, DEFAULT_MAX_COUNT};
use crate::LabError;

/// The experiment's settings; saved in its report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CountingOptions {
    /// Where every sequence of the context stops (the seed: 63).
    pub last: usize,
    /// Sequences `1 … last` in the context, one per line.
    pub copies: usize,
    /// Optimiser steps of the fine-tuning and of the distillation (the same budget for both).
    pub steps: u64,
    /// Learning rate of both (constant).
    pub learning_rate: f64,
    /// Counting documents the distillation reads, as in the lab corpus: one to three
    /// sequences each, of lengths drawn up to `max_count`.
    pub documents: usize,
    /// Longest sequence of those documents.
    pub max_count: usize,
    /// Documents per distillation step.
    pub batch_size: usize,
    /// Seed of the documents and of both trainings.
    pub seed: u64,
}

impl Default for CountingOptions {
    fn default() -> Self {
        Self {
            last: 63,
            copies: 3,
            steps: 30,
            learning_rate: 1e-4,
            documents: 64,
            max_count: DEFAULT_MAX_COUNT,
            batch_size: 4,
            seed: 0,
        }
    }
}

/// P(" {last + 1}" | "1 … {last}") of each model, and what they were made with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountingReport {
    /// The model as it is.
    pub p64_base: f64,
    /// The model with the context in front.
    pub p64_prompted: f64,
    /// The model fine-tuned on the context, without it.
    pub p64_sft: f64,
    /// The model context-distilled from the context, without it.
    pub p64_distilled: f64,
    /// Tokens of the context.
    pub context_tokens: usize,
    /// The settings.
    pub options: CountingOptions,
}

/// What [`run_counting`] reports as it goes.
#[derive(Debug)]
pub enum CountingEvent<'a> {
    /// A stage starts ("fine-tuning on the context", …).
    Stage(&'static str),
    /// A training step or evaluation of the current stage.
    Metric {
        /// The record.
        record: &'a MetricRecord,
        /// Optimiser steps of the stage.
        total_steps: u64,
    },
}

/// The context: `copies` lines of `1 2 … last`.
pub fn counting_context(last: usize, copies: usize) -> String {
    vec![counting_sequence(last); copies].join("\n")
}

/// Run the experiment on the model in `model_dir`, writing its data and the two trained
/// models under `work` (`context.txt`, `sft/`, `distilled/`, …).
pub fn run_counting(
    model_dir: &Path,
    work: &Path,
    opts: &CountingOptions,
    device: &Device,
    progress: &mut dyn FnMut(CountingEvent<'_>),
) -> Result<CountingReport, LabError> {
    if [
        opts.last,
        opts.copies,
        opts.documents,
        opts.max_count,
        opts.batch_size,
    ]
    .contains(&0)
        || opts.steps == 0
    {
        return Err(LabError::Config(
            "last, copies, steps, documents, max_count and batch_size must each be at least 1"
                .into(),
        ));
    }
    std::fs::create_dir_all(work).map_err(|e| LabError::io(work, e))?;
    let context = counting_context(opts.last, opts.copies);
    let query = counting_sequence(opts.last);
    let next = format!(" {}", opts.last + 1);
    write(&work.join("context.txt"), &context)?;
    let sft_data = work.join("sft_data.jsonl");
    write(
        &sft_data,
        &(serde_json::json!({ "text": context }).to_string() + "\n"),
    )?;
    let mut rng = rng_from_seed(derive_seed(opts.seed, &["counting-distill"]));
    let documents: Vec<String> = (0..opts.documents)
        .map(|_| {
            let (text, _) = counting_document(opts.max_count, &mut rng);
            serde_json::json!({ "text": text }).to_string() + "\n"
        })
        .collect();
    let distill_data = work.join("distill_data.jsonl");
    write(&distill_data, &documents.concat())?;

    let load = |dir: &Path| -> Result<LocalModel, LabError> {
        let options = LoadOptions {
            device: device.clone(),
            dtype: None,
        };
        Ok(LocalModel::load(&dir.display().to_string(), &options)?)
    };
    let p_next = |model: &LocalModel, prefix: &str, prompt: &str| -> Result<f64, LabError> {
        let request = ScoreRequest {
            prefix: prefix.to_owned(),
            ..ScoreRequest::new(prompt, next.as_str())
        };
        let score = model.score(std::slice::from_ref(&request))?;
        Ok(score[0].logprob.exp())
    };

    progress(CountingEvent::Stage("scoring the base and prompted model"));
    let base = load(model_dir)?;
    let p64_base = p_next(&base, "", &query)?;
    let p64_prompted = p_next(&base, &context, &format!("\n{query}"))?;
    let context_tokens = base.prefix(&context)?.map_or(0, |p| p.len());
    drop(base);

    // Neither run is interrupted: the flag stays down (Ctrl-C ends the process).
    let stop = AtomicBool::new(false);
    progress(CountingEvent::Stage("fine-tuning on the context"));
    let sft_dir = work.join("sft");
    let sft = SftConfig {
        epochs: opts.steps,
        max_steps: Some(opts.steps),
        learning_rate: opts.learning_rate,
        batch_size: 1,
        save_every: 0,
        seed: opts.seed,
        ..SftConfig::default()
    };
    let run = SftRun {
        model_dir: model_dir.to_path_buf(),
        data: sft_data,
        eval_data: None,
        output: sft_dir.clone(),
        resume: false,
        allow_changes: Vec::new(),
        device: device.clone(),
    };
    let outcome = run_sft(&run, &sft, &stop, &mut |record, total_steps| {
        progress(CountingEvent::Metric {
            record,
            total_steps,
        })
    })?;
    debug_assert!(matches!(outcome, SftOutcome::Finished { .. }));
    let p64_sft = p_next(&load(&sft_dir)?, "", &query)?;

    progress(CountingEvent::Stage("distilling the context"));
    let distilled_dir = work.join("distilled");
    let distill = DistillConfig {
        epochs: opts.steps,
        max_steps: Some(opts.steps),
        learning_rate: opts.learning_rate,
        batch_size: opts.batch_size,
        save_every: 0,
        seed: opts.seed,
        ..DistillConfig::default()
    };
    let run = DistillRun {
        model_dir: model_dir.to_path_buf(),
        context: context.clone(),
        data: distill_data,
        eval_data: None,
        output: distilled_dir.clone(),
        resume: false,
        allow_changes: Vec::new(),
        device: device.clone(),
    };
    let outcome = run_distill(&run, &distill, &stop, &mut |event| {
        if let DistillEvent::Metric {
            record,
            total_steps,
        } = event
        {
            progress(CountingEvent::Metric {
                record,
                total_steps,
            })
        }
    })?;
    debug_assert!(matches!(outcome, DistillOutcome::Finished { .. }));
    let p64_distilled = p_next(&load(&distilled_dir)?, "", &query)?;

    Ok(CountingReport {
        p64_base,
        p64_prompted,
        p64_sft,
        p64_distilled,
        context_tokens,
        options: opts.clone(),
    })
}

fn write(path: &Path, text: &str) -> Result<(), LabError> {
    std::fs::write(path, text).map_err(|e| LabError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_repeats_the_sequence_that_stops_at_last() {
        assert_eq!(counting_context(3, 2), "1 2 3\n1 2 3");
        let seed = counting_context(63, 3);
        assert_eq!(seed.lines().count(), 3);
        assert!(seed
            .lines()
            .all(|l| l.starts_with("1 2 3") && l.ends_with(" 62 63")));
    }

    #[test]
    fn settings_out_of_range_are_refused_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        let opts = CountingOptions {
            steps: 0,
            ..CountingOptions::default()
        };
        let err = run_counting(
            dir.path(),
            &dir.path().join("work"),
            &opts,
            &Device::Cpu,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("at least 1"), "{err}");
        assert!(!dir.path().join("work").exists());
    }
}
