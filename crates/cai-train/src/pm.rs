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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use cai_model::reward_model::RewardModel;
use cai_model::tokenizer::Tokenizer;
use candle_core::{DType, Device};
use serde_json::json;

use crate::core::checkpoint::{save_checkpoint_with, LoadedCheckpoint};
use crate::core::data_order::EpochWalk;
use crate::core::precision::Precision;
use crate::core::recompute::TrainPass;
use crate::core::resume::{fingerprint, FINGERPRINT_KEY};
use crate::core::session::{epoch_session_spec, CheckpointParts, Checkpointed, TrainSession};
use crate::core::trainee::restore_params;
pub use crate::pm::config::PmConfig;
use crate::pm::data::{load_pairs, mix, DataSource, PreferencePair};
use crate::pm::eval::{collate_pairs, evaluate, margins, write_report, PmEval};
use crate::pm::loss::soft_preference_loss;
use crate::{
    Checkpoint, CheckpointOptions, GradAccumulator, MetricRecord, Result, Split, TrainError,
    TrainParam,
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
    let precision = Precision::of(&cfg.dtype, &run.device)?;
    let _bf16_products = precision.scope();
    let dtype = precision.build;
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
    let trainee = PmTrainee {
        model,
        params,
        dtype,
    };
    let mut session = TrainSession::open(
        &trainee,
        &tokenizer,
        trainee.params.clone(),
        epoch_session_spec!(
            method: "pm",
            config: config_json(run, cfg)?,
            config_file: PM_CONFIG_FILE,
            run: run,
            cfg: cfg,
            examples: pairs.len(),
        )?,
    )?;
    let (model, params, total_steps) = (&trainee.model, &trainee.params, session.total_steps());
    let evaluate_on = |pairs: &[PreferencePair], split: &str| {
        evaluate(
            model,
            pairs,
            cfg.batch_size,
            cfg.calibration_bins,
            split,
            &run.device,
        )
    };

    let mut walk = EpochWalk::new(pairs.len(), cfg.seed);
    let mut grads = GradAccumulator::new();
    while session.state.step < total_steps {
        if stop.load(Ordering::SeqCst) {
            let checkpoint = session.save()?;
            return Ok(PmOutcome::Interrupted { checkpoint });
        }
        let started = session.begin_step();
        // Batch: the step's micro-batches, in the epoch's seeded order.
        let micro = walk.next_step(&mut session.state, cfg.batch_size, cfg.grad_accum);
        let total: usize = micro.iter().map(Vec::len).sum();
        // Forward, loss and backward per micro-batch, each weighted by its share of the
        // step's pairs, so the step's loss is the mean over all of them.
        let (mut step_loss, mut hits, mut decided, mut tokens) = (0.0, 0.0, 0usize, 0usize);
        for indices in &micro {
            let batch: Vec<&PreferencePair> = indices.iter().map(|&i| &pairs[i]).collect();
            let (ids, rows, labels) = collate_pairs(&batch, &run.device)?;
            tokens += rows.valid.iter().flatten().filter(|&&v| v).count();
            let pass =
                TrainPass::forward(model.decoder(), &ids, &rows, cfg.gradient_checkpointing)?;
            let m = margins(&model.rewards_from_hidden(pass.hidden(), &rows)?)?;
            let loss = soft_preference_loss(&m, &labels)?;
            let value = f64::from(loss.to_scalar::<f32>()?);
            session.check_loss("loss", value, false)?;
            let share = batch.len() as f64 / total as f64;
            step_loss += value * share;
            pass.backward(&(loss * share)?, params, &mut grads)?;
            let values: Vec<f32> = m.to_vec1()?;
            for (pair, &d) in batch.iter().zip(&values) {
                if pair.p_a != 0.5 {
                    decided += 1;
                    hits += f64::from(u8::from((d > 0.0) == (pair.p_a > 0.5)));
                }
            }
        }
        session.check_loss("loss", step_loss, true)?;
        // Clip, step, schedule.
        let (grad_norm, lr) = session.step(
            &mut grads,
            cfg.max_grad_norm,
            cfg.learning_rate,
            session.state.step,
        )?;
        session.state.step += 1;
        session.state.tokens_seen += tokens as u64;
        session.state.last_train_loss = Some(step_loss);
        // Log, evaluate, checkpoint.
        let mut record = MetricRecord::new(session.state.step, Split::Train, step_loss);
        record.lr = Some(lr);
        record.grad_norm = Some(grad_norm);
        record.tokens_per_s = Some(tokens as f64 / started.elapsed().as_secs_f64());
        record.epoch = Some(walk.epochs(&session.state));
        if decided > 0 {
            record
                .extra
                .insert("accuracy".into(), json!(hits / decided as f64));
        }
        session.log(&record)?;
        progress(&record, total_steps);
        if !eval_pairs.is_empty() && is_multiple(session.state.step, cfg.eval_every) {
            let eval = evaluate_on(&eval_pairs, "eval")?;
            session.state.record_eval(eval.loss);
            let record = eval_record(session.state.step, &eval);
            session.log(&record)?;
            progress(&record, total_steps);
        }
        session.step_done(cfg.save_every);
    }
    session.finish()?;
    // The final report: on the eval data, else on the training pairs.
    let eval = if eval_pairs.is_empty() {
        evaluate_on(&pairs, "train")?
    } else {
        let eval = evaluate_on(&eval_pairs, "eval")?;
        if !is_multiple(session.state.step, cfg.eval_every) {
            let record = eval_record(session.state.step, &eval);
            session.log(&record)?;
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
        steps: session.state.step,
        pairs: pairs.len(),
        too_long,
        train_loss: session.state.last_train_loss,
        eval,
    })
}

/// Whether `step` is one of every `every` (0: never).
fn is_multiple(step: u64, every: u64) -> bool {
    every > 0 && step.is_multiple_of(every)
}

/// The resolved config of a run: its settings, inputs and their fingerprint (a file's
/// mixture weight is part of what it contributes).
fn config_json(run: &PmRun, cfg: &PmConfig) -> Result<serde_json::Value> {
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
    for (i, source) in run.data.iter().enumerate() {
        data_fingerprint[format!("data[{i}]")]["weight"] = json!(source.weight);
    }
    Ok(json!({
        "pm": cfg,
        "model": run.model_dir,
        "data": run.data,
        "eval_data": run.eval_data,
        FINGERPRINT_KEY: data_fingerprint,
    }))
}

/// The preference model being trained, with the variables the optimiser updates.
struct PmTrainee {
    model: RewardModel,
    params: Vec<TrainParam>,
    /// The dtype its checkpoints and output are written in.
    dtype: DType,
}

impl Checkpointed for PmTrainee {
    fn weights_file(&self) -> &str {
        cai_model::checkpoint::SINGLE_FILE
    }

    fn restore(&self, loaded: &LoadedCheckpoint) -> Result<()> {
        restore_params(
            &self.params,
            &loaded.weights,
            self.model.decoder(),
            &loaded.dir,
        )
    }

    /// A checkpoint with the model's config and tokenizer beside the weights, so it loads as
    /// a preference model.
    fn save_checkpoint(&self, checkpoints: &Path, parts: &CheckpointParts<'_>) -> Result<PathBuf> {
        let weights = self.model.tensors(self.dtype)?;
        let extra = [(
            "config.json".to_string(),
            serde_json::to_vec_pretty(&self.model.hf_config(self.dtype)).expect("json"),
        )];
        let checkpoint = Checkpoint {
            weights: &weights,
            optimizer: parts.optimizer,
            state: parts.state,
            config: parts.config,
            extra_files: &extra,
        };
        save_checkpoint_with(
            checkpoints,
            &checkpoint,
            &CheckpointOptions {
                weights_file: cai_model::checkpoint::SINGLE_FILE.into(),
                keep_last: parts.keep_last,
            },
            &|dir| Ok(parts.tokenizer.save(dir)?),
        )
    }
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
