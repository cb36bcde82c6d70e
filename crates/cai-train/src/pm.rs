//! Preference-model training (`cai train-pm`): the config, and the loop — batch of pairs →
//! rewards of both dialogues → margins → soft cross entropy against p_a → backward → clip →
//! step → schedule → log → eval → checkpoint — with exact resume, a stop flag for Ctrl-C, and
//! the final model in transformers' `*ForSequenceClassification` layout with its calibration
//! report.

pub mod calibration;
pub mod config;
pub mod data;
pub mod eval;
pub mod loss;
pub mod reliability_plot;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use cai_model::layers::Mode;
use cai_model::reward_model::RewardModel;
use cai_model::tokenizer::Tokenizer;
use cai_model::weights::parse_dtype;
use candle_core::{Device, Tensor};
use serde_json::json;

use crate::core::checkpoint::save_checkpoint_with;
use crate::core::data_order::epoch_order;
use crate::core::resume::{self, fingerprint, FINGERPRINT_KEY};
pub use crate::pm::config::PmConfig;
use crate::pm::data::{load_pairs, mix, DataSource, PreferencePair};
use crate::pm::eval::{collate_pairs, evaluate, margins, write_report, PmEval};
use crate::pm::loss::soft_preference_loss;
use crate::{
    core::divergence, latest_checkpoint, load_checkpoint, AdamW, AdamWConfig, Checkpoint,
    CheckpointOptions, GradAccumulator, MetricRecord, MetricsWriter, Result, Schedule, Split,
    TrainError, TrainParam, TrainerState,
};

/// What to train on and where to write.
#[derive(Debug, Clone)]
pub struct PmRun {
    /// A causal LM (a new head is added) or a preference model to train further.
    pub model_dir: PathBuf,
    /// The training files and their mixture weights.
    pub data: Vec<DataSource>,
    /// Pairs to evaluate on.
    pub eval_data: Option<PathBuf>,
    /// Output directory.
    pub output: PathBuf,
    /// Continue from the newest checkpoint in `output/checkpoints` if there is one.
    pub resume: bool,
    /// Settings a resume may change, and `"data"` for changed input data (see
    /// [`crate::core::resume`]); anything else that differs from the checkpoint is refused.
    pub allow_changes: Vec<String>,
    /// Device to train on.
    pub device: Device,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum PmOutcome {
    /// Every step ran; the model and its evaluation report are in the output directory.
    Finished {
        /// Optimiser steps.
        steps: u64,
        /// Training pairs after mixing.
        pairs: usize,
        /// Pairs left out for a dialogue longer than `max_length`.
        too_long: usize,
        /// Last training loss.
        train_loss: Option<f64>,
        /// The final evaluation (on the eval data, else on the training pairs).
        eval: PmEval,
    },
    /// The stop flag was raised; a checkpoint was saved to resume from.
    Interrupted {
        /// The checkpoint written.
        checkpoint: PathBuf,
    },
}

/// Name of the resolved config written beside the outputs.
pub const PM_CONFIG_FILE: &str = "pm_config.json";

/// Train. `progress` sees every metric record as it is written; `stop` is polled between
/// steps (Ctrl-C).
pub fn run_pm(
    run: &PmRun,
    cfg: &PmConfig,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&MetricRecord, u64),
) -> Result<PmOutcome> {
    cfg.validate(&run.data)?;
    let dtype = parse_dtype(&cfg.dtype).ok_or_else(|| {
        TrainError::Config(format!("dtype '{}': expected f32, bf16 or f16", cfg.dtype))
    })?;
    let tokenizer = Tokenizer::from_dir(&run.model_dir)?;
    let mut model = RewardModel::load(&run.model_dir, dtype, &run.device, cfg.seed)?;
    tokenizer.check_fits(model.decoder().config().vocab_size, &run.model_dir)?;
    model.set_pad_token_id(Some(tokenizer.pad_id()));

    let mut too_long = 0;
    let mut sources = Vec::with_capacity(run.data.len());
    for source in &run.data {
        let loaded = load_pairs(&source.path, &tokenizer, cfg.format, cfg.max_length)?;
        if let Some(warning) = loaded.warning(&source.path, cfg.max_length) {
            tracing::warn!("{warning}");
        }
        too_long += loaded.too_long;
        sources.push((loaded.pairs, source.weight));
    }
    let pairs = mix(sources, cfg.seed);
    if pairs.is_empty() {
        return Err(TrainError::Config(format!(
            "no training pairs (after mixing, {too_long} too long for max_length {})",
            cfg.max_length
        )));
    }
    let eval_pairs = match &run.eval_data {
        Some(path) => {
            let loaded = load_pairs(path, &tokenizer, cfg.format, cfg.max_length)?;
            if let Some(warning) = loaded.warning(path, cfg.max_length) {
                if loaded.pairs.is_empty() {
                    // An evaluation on no pairs would report numbers about nothing.
                    return Err(TrainError::Config(format!(
                        "{warning}; none is left to evaluate on"
                    )));
                }
                tracing::warn!("{warning}");
            }
            loaded.pairs
        }
        None => Vec::new(),
    };

    let params: Vec<TrainParam> = model
        .make_trainable()?
        .into_iter()
        .map(|(spec, var)| TrainParam::from_spec(&spec, var))
        .collect();
    let mut optimizer = AdamW::new(
        params.clone(),
        AdamWConfig {
            lr: cfg.learning_rate,
            weight_decay: cfg.weight_decay,
            ..AdamWConfig::default()
        },
    )?;
    let schedule = Schedule::for_run(
        cfg.schedule,
        cfg.warmup_steps,
        pairs.len(),
        cfg.batch_size * cfg.grad_accum,
        cfg.epochs,
        cfg.max_steps,
    )?;
    let total_steps = schedule.total_steps;

    let checkpoints = run.output.join("checkpoints");
    let mut inputs: Vec<(String, Option<&Path>)> = run
        .data
        .iter()
        .enumerate()
        .map(|(i, source)| (format!("data[{i}]"), Some(source.path.as_path())))
        .collect();
    inputs.push(("eval_data".into(), run.eval_data.as_deref()));
    let inputs: Vec<(&str, Option<&Path>)> = inputs
        .iter()
        .map(|(name, path)| (name.as_str(), *path))
        .collect();
    let mut data_fingerprint = fingerprint(&inputs)?;
    // A file's mixture weight is part of what it contributes.
    for (i, source) in run.data.iter().enumerate() {
        data_fingerprint[format!("data[{i}]")]["weight"] = json!(source.weight);
    }
    let config_json = json!({
        "pm": cfg,
        "model": run.model_dir,
        "data": run.data,
        "eval_data": run.eval_data,
        FINGERPRINT_KEY: data_fingerprint,
    });
    std::fs::create_dir_all(&run.output).map_err(|e| TrainError::io(&run.output, e))?;
    let metrics_path = run.output.join("metrics.jsonl");
    let mut state = TrainerState::new(cfg.seed);
    let mut metrics = match latest_checkpoint(&checkpoints)?.filter(|_| run.resume) {
        Some(dir) => {
            let loaded = load_checkpoint(&dir, cai_model::checkpoint::SINGLE_FILE, &run.device)?;
            resume::check(&dir, "pm", &loaded.config, &config_json, &run.allow_changes)?;
            restore_weights(&params, &loaded.weights, &model, &dir)?;
            loaded.restore_optimizer(&mut optimizer)?;
            state = loaded.state;
            tracing::info!("resuming from {} at step {}", dir.display(), state.step);
            MetricsWriter::resume(&metrics_path, state.step)?
        }
        None => {
            if metrics_path.exists() {
                std::fs::remove_file(&metrics_path)
                    .map_err(|e| TrainError::io(&metrics_path, e))?;
            }
            MetricsWriter::open(&metrics_path)?
        }
    };
    let text = serde_json::to_string_pretty(&config_json).expect("serialisable") + "\n";
    let path = run.output.join(PM_CONFIG_FILE);
    cai_model::write_atomic(&path, text.as_bytes())?;
    divergence::start(&mut state, &optimizer)?;

    let save = |model: &RewardModel, optimizer: &AdamW, state: &TrainerState| -> Result<PathBuf> {
        let weights = model.tensors(dtype)?;
        let extra = [(
            "config.json".to_string(),
            serde_json::to_vec_pretty(&model.hf_config(dtype)).expect("json"),
        )];
        let checkpoint = Checkpoint {
            weights: &weights,
            optimizer,
            state,
            config: &config_json,
            extra_files: &extra,
        };
        // With the tokenizer beside the weights, a checkpoint loads as a preference model.
        save_checkpoint_with(
            &checkpoints,
            &checkpoint,
            &CheckpointOptions {
                weights_file: cai_model::checkpoint::SINGLE_FILE.into(),
                keep_last: cfg.keep_last,
            },
            &|dir| Ok(tokenizer.save(dir)?),
        )
    };
    // A step's checkpoint is written once the next step's loss (computed with its weights)
    // has passed the divergence check, so every checkpoint on disk is one that trained well.
    let mut save_pending = false;
    let eval_step = |model: &RewardModel, state: &mut TrainerState| -> Result<MetricRecord> {
        let eval = evaluate(
            model,
            &eval_pairs,
            cfg.batch_size,
            cfg.calibration_bins,
            "eval",
            &run.device,
        )?;
        state.record_eval(eval.loss);
        Ok(eval_record(state.step, &eval))
    };

    let mut grads = GradAccumulator::new();
    let mut order = epoch_order(pairs.len(), cfg.seed, state.epoch);
    while state.step < total_steps {
        if stop.load(Ordering::SeqCst) {
            return Ok(PmOutcome::Interrupted {
                checkpoint: save(&model, &optimizer, &state)?,
            });
        }
        let started = Instant::now();
        let before = save_pending.then(|| state.clone());
        // Batch: the step's micro-batches, in the epoch's seeded order.
        let mut micro: Vec<Vec<&PreferencePair>> = Vec::with_capacity(cfg.grad_accum);
        for _ in 0..cfg.grad_accum {
            if state.data_position as usize >= pairs.len() {
                state.epoch += 1;
                state.data_position = 0;
                order = epoch_order(pairs.len(), cfg.seed, state.epoch);
            }
            let start = state.data_position as usize;
            let end = (start + cfg.batch_size).min(pairs.len());
            micro.push(order[start..end].iter().map(|&i| &pairs[i]).collect());
            state.data_position = end as u64;
        }
        let total: usize = micro.iter().map(Vec::len).sum();
        // Forward, loss and backward per micro-batch, each weighted by its share of the
        // step's pairs, so the step's loss is the mean over all of them.
        let (mut step_loss, mut hits, mut decided, mut tokens) = (0.0, 0.0, 0usize, 0usize);
        for batch in &micro {
            let (ids, rows, labels) = collate_pairs(batch, &run.device)?;
            tokens += rows.valid.iter().flatten().filter(|&&v| v).count();
            let m = margins(&model.rewards(&ids, &rows, Mode::Train)?)?;
            let loss = soft_preference_loss(&m, &labels)?;
            let value = f64::from(loss.to_scalar::<f32>()?);
            if !value.is_finite() {
                let step = state.step + 1;
                divergence::check_loss(&mut state, step, "loss", value, true, &checkpoints)?;
            }
            let share = batch.len() as f64 / total as f64;
            step_loss += value * share;
            grads.add(&(loss * share)?.backward()?, &params)?;
            let values: Vec<f32> = m.to_vec1()?;
            for (pair, &d) in batch.iter().zip(&values) {
                if pair.p_a != 0.5 {
                    decided += 1;
                    hits += f64::from(u8::from((d > 0.0) == (pair.p_a > 0.5)));
                }
            }
        }
        let step = state.step + 1;
        divergence::check_loss(&mut state, step, "loss", step_loss, true, &checkpoints)?;
        if let Some(before) = before {
            save(&model, &optimizer, &before)?;
            save_pending = false;
        }
        // Clip, check, step, schedule.
        let lr = schedule.lr_at(state.step, cfg.learning_rate);
        let grad_norm = optimizer
            .clip_and_step(&mut grads, cfg.max_grad_norm, lr, step)
            .map_err(|e| divergence::locate(e, &checkpoints))?;
        divergence::check_weights(&state, step, &optimizer, &checkpoints)?;
        state.step += 1;
        state.tokens_seen += tokens as u64;
        state.last_train_loss = Some(step_loss);
        // Log.
        let mut record = MetricRecord::new(state.step, Split::Train, step_loss);
        record.lr = Some(lr);
        record.grad_norm = Some(grad_norm);
        record.tokens_per_s = Some(tokens as f64 / started.elapsed().as_secs_f64());
        record.epoch = Some(state.epoch as f64 + state.data_position as f64 / pairs.len() as f64);
        if decided > 0 {
            record
                .extra
                .insert("accuracy".into(), json!(hits / decided as f64));
        }
        metrics.write(&record)?;
        progress(&record, total_steps);
        // Evaluate and checkpoint.
        if !eval_pairs.is_empty() && cfg.eval_every > 0 && state.step.is_multiple_of(cfg.eval_every)
        {
            let record = eval_step(&model, &mut state)?;
            metrics.write(&record)?;
            progress(&record, total_steps);
        }
        if cfg.save_every > 0 && state.step.is_multiple_of(cfg.save_every) {
            save_pending = true;
        }
    }
    if save_pending {
        save(&model, &optimizer, &state)?;
    }
    // The final report: on the eval data, else on the training pairs.
    let eval = if eval_pairs.is_empty() {
        evaluate(
            &model,
            &pairs,
            cfg.batch_size,
            cfg.calibration_bins,
            "train",
            &run.device,
        )?
    } else {
        let eval = evaluate(
            &model,
            &eval_pairs,
            cfg.batch_size,
            cfg.calibration_bins,
            "eval",
            &run.device,
        )?;
        let evaluated_last_step = cfg.eval_every > 0 && state.step.is_multiple_of(cfg.eval_every);
        if !evaluated_last_step {
            let record = eval_record(state.step, &eval);
            metrics.write(&record)?;
            progress(&record, total_steps);
        }
        eval
    };
    // The weights last: their presence marks a finished run, so a crash before them leaves
    // a run to resume, never a "finished" one without its tokenizer or report.
    tokenizer.save(&run.output)?;
    write_report(&run.output, &eval)?;
    model.save(&run.output, dtype)?;
    Ok(PmOutcome::Finished {
        steps: state.step,
        pairs: pairs.len(),
        too_long,
        train_loss: state.last_train_loss,
        eval,
    })
}

/// The metrics line of an evaluation.
fn eval_record(step: u64, eval: &PmEval) -> MetricRecord {
    let mut record = MetricRecord::new(step, Split::Eval, eval.loss);
    if let Some(accuracy) = eval.accuracy {
        record.extra.insert("accuracy".into(), json!(accuracy));
    }
    record
        .extra
        .insert("ece".into(), json!(eval.calibration.ece));
    record
}

/// Put a checkpoint's tensors (file layout) back into the trained variables.
fn restore_weights(
    params: &[TrainParam],
    weights: &BTreeMap<String, Tensor>,
    model: &RewardModel,
    dir: &Path,
) -> Result<()> {
    let conv1d: Vec<String> = model
        .decoder()
        .params()
        .into_iter()
        .filter(|(s, _)| s.conv1d)
        .map(|(s, _)| s.name)
        .collect();
    for p in params {
        let t = weights
            .get(&p.name)
            .ok_or_else(|| TrainError::checkpoint(dir, format!("missing tensor '{}'", p.name)))?;
        let t = if conv1d.contains(&p.name) {
            t.t()?.contiguous()?
        } else {
            t.clone()
        };
        p.var
            .set(&t.to_dtype(p.var.dtype())?.to_device(p.var.device())?)?;
    }
    Ok(())
}
