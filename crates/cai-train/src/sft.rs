//! Supervised fine-tuning (`cai sft`): the config, and the training loop that reads top to
//! bottom — batch → forward → loss → backward → clip → step → schedule → log → eval →
//! checkpoint — with exact resume, a stop flag for Ctrl-C and a stop on divergence.

pub mod data;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use cai_model::config::ModelConfig;
use cai_model::decoder::{Batch, Decoder};
use cai_model::layers::Mode;
use cai_model::lora::LoraConfig;
use cai_model::tokenizer::{DialogueFormat, Tokenizer};
use cai_model::weights::load_decoder;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::core::data_order::EpochWalk;
use crate::core::loss::hidden_cross_entropy;
use crate::core::precision::Precision;
use crate::core::recompute::TrainPass;
use crate::core::resume::{fingerprint, FINGERPRINT_KEY};
use crate::core::session::{epoch_session_spec, TrainSession};
use crate::core::trainee::Trainee;
use crate::sft::data::{load_examples, mix_helpful, pack, Example, LoadedExamples};
use crate::{
    masked_cross_entropy, GradAccumulator, MetricRecord, Result, ScheduleKind, Split, TrainError,
};

/// Settings of an SFT run. Defaults follow the CAI paper where it gives one (one epoch, a
/// constant learning rate) and TRL's `SFTConfig` elsewhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftConfig {
    /// Passes over the data (CAI paper: 1).
    pub epochs: u64,
    /// Stop after this many optimiser steps even if epochs remain.
    pub max_steps: Option<u64>,
    /// Peak learning rate (TRL's default 2e-5; the paper uses 0.5× the pre-training LR).
    pub learning_rate: f64,
    /// Learning-rate shape (CAI paper: constant).
    pub schedule: ScheduleKind,
    /// Linear warm-up steps (0: none).
    pub warmup_steps: u64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub grad_accum: usize,
    /// Longest sequence in tokens; longer examples are cut.
    pub max_length: usize,
    /// Concatenate short examples into full-length rows.
    pub packing: bool,
    /// Decoupled weight decay of matrices and embeddings (norms and biases never decay).
    pub weight_decay: f64,
    /// Global gradient-norm clipping (TRL: 1.0; 0 disables).
    pub max_grad_norm: f64,
    /// Evaluate every N steps when eval data is given (0: only at the end).
    pub eval_every: u64,
    /// Save a resumable checkpoint every N steps (0: only when interrupted).
    pub save_every: u64,
    /// Checkpoints kept (older ones are deleted; the newest is always kept).
    pub keep_last: Option<usize>,
    /// Seed of shuffling and dropout.
    pub seed: u64,
    /// How `messages` become text.
    pub format: DialogueFormat,
    /// Train LoRA adapters instead of every weight.
    pub lora: Option<LoraConfig>,
    /// Compute dtype (`f32`, `bf16`, `f16`); master weights and moments stay f32.
    pub dtype: String,
    /// SL-CAI: train on the revisions of rounds ≤ n of `cai critique` records (`None`: every
    /// round's revision, as in the CAI paper).
    pub revision_rounds: Option<usize>,
    /// SL-CAI: helpfulness samples mixed into the training data.
    pub helpful: Option<HelpfulMix>,
    /// Activation checkpointing (transformers' `gradient_checkpointing`): keep only each
    /// layer's input in the forward pass and recompute the layer in the backward pass — much
    /// less memory for about one more forward pass (see [`crate::core::recompute`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub gradient_checkpointing: bool,
}

/// Helpful samples mixed into SL-CAI training so that the model stays helpful (CAI paper §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelpfulMix {
    /// SFT records (`cai critique --helpful-prompts` writes them).
    pub data: PathBuf,
    /// Helpful examples per training example, drawn in a seeded order and repeated if there
    /// are too few (`None`: each helpful example once).
    #[serde(default)]
    pub ratio: Option<f64>,
}

impl Default for SftConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            max_steps: None,
            learning_rate: 2e-5,
            schedule: ScheduleKind::Constant,
            warmup_steps: 0,
            batch_size: 8,
            grad_accum: 1,
            max_length: 1024,
            packing: false,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            eval_every: 0,
            save_every: 500,
            keep_last: Some(2),
            seed: 0,
            format: DialogueFormat::Auto,
            lora: None,
            dtype: "f32".into(),
            revision_rounds: None,
            helpful: None,
            gradient_checkpointing: false,
        }
    }
}

/// What to train on and where to write.
#[derive(Debug, Clone)]
pub struct SftRun {
    /// Model directory (HF layout).
    pub model_dir: PathBuf,
    /// Training JSONL.
    pub data: PathBuf,
    /// Optional evaluation JSONL.
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
pub enum SftOutcome {
    /// Every step ran and the model was written to the output directory.
    Finished {
        /// Optimiser steps.
        steps: u64,
        /// Last training loss.
        train_loss: Option<f64>,
        /// Final evaluation loss, if eval data was given.
        eval_loss: Option<f64>,
    },
    /// The stop flag was raised; a checkpoint was saved to resume from.
    Interrupted {
        /// The checkpoint written.
        checkpoint: PathBuf,
    },
}

/// Name of the resolved config written beside the outputs.
pub const SFT_CONFIG_FILE: &str = "sft_config.json";

/// Train. `progress` sees every metric record as it is written; `stop` is polled between
/// steps (Ctrl-C).
pub fn run_sft(
    run: &SftRun,
    cfg: &SftConfig,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&MetricRecord, u64),
) -> Result<SftOutcome> {
    validate(cfg)?;
    let precision = Precision::of(&cfg.dtype, &run.device)?;
    let _bf16_products = precision.scope();
    let dtype = precision.build;
    let model_config = ModelConfig::from_file(&run.model_dir.join("config.json"))?;
    let tokenizer = Tokenizer::from_dir(&run.model_dir)?;
    tokenizer.check_fits(model_config.vocab_size, &run.model_dir)?;
    let ckpt = cai_model::checkpoint::Checkpoint::open_dir(&run.model_dir)?;
    let decoder = load_decoder(model_config, &ckpt, dtype, &run.device)?;

    let mut examples = usable_examples(
        &run.data,
        load_examples(
            &run.data,
            &tokenizer,
            cfg.format,
            cfg.max_length,
            cfg.revision_rounds,
        )?,
        cfg.max_length,
    )?;
    if let Some(helpful) = &cfg.helpful {
        let samples = usable_examples(
            &helpful.data,
            load_examples(&helpful.data, &tokenizer, cfg.format, cfg.max_length, None)?,
            cfg.max_length,
        )?;
        examples.extend(mix_helpful(
            examples.len(),
            samples,
            helpful.ratio,
            cfg.seed,
        ));
    }
    let rows = pack_if_asked(examples, cfg);
    let eval_rows = match &run.eval_data {
        Some(p) => pack_if_asked(
            usable_examples(
                p,
                load_examples(
                    p,
                    &tokenizer,
                    cfg.format,
                    cfg.max_length,
                    cfg.revision_rounds,
                )?,
                cfg.max_length,
            )?,
            cfg,
        ),
        None => Vec::new(),
    };
    let trainee = Trainee::new(decoder, cfg.lora.as_ref(), &run.model_dir)?;
    let config_json = serde_json::json!({
        "sft": cfg,
        "model": run.model_dir,
        "data": run.data,
        "eval_data": run.eval_data,
        FINGERPRINT_KEY: fingerprint(&[
            ("data", Some(run.data.as_path())),
            ("eval_data", run.eval_data.as_deref()),
            ("helpful", cfg.helpful.as_ref().map(|h| h.data.as_path())),
        ])?,
    });
    let mut session = TrainSession::open(
        &trainee,
        &tokenizer,
        trainee.params.clone(),
        epoch_session_spec!(
            method: "sft",
            config: config_json,
            config_file: SFT_CONFIG_FILE,
            run: run,
            cfg: cfg,
            examples: rows.len(),
        )?,
    )?;
    let (decoder, params, total_steps) = (&trainee.decoder, &trainee.params, session.total_steps());
    let eval_now = |session: &mut TrainSession<'_, Trainee>,
                    progress: &mut dyn FnMut(&MetricRecord, u64)|
     -> Result<f64> {
        let loss = evaluate(decoder, &eval_rows, cfg.batch_size, &run.device)?;
        session.state.record_eval(loss);
        let record = MetricRecord::new(session.state.step, Split::Eval, loss);
        session.log(&record)?;
        progress(&record, total_steps);
        Ok(loss)
    };

    let mut walk = EpochWalk::new(rows.len(), cfg.seed);
    let mut grads = GradAccumulator::new();
    while session.state.step < total_steps {
        if stop.load(Ordering::SeqCst) {
            let checkpoint = session.save()?;
            return Ok(SftOutcome::Interrupted { checkpoint });
        }
        let started = session.begin_step();
        // Batch: the step's micro-batches, in the epoch's seeded order.
        let micro = walk.next_step(&mut session.state, cfg.batch_size, cfg.grad_accum);
        let total: usize = micro
            .iter()
            .flatten()
            .map(|&i| rows[i].target_tokens())
            .sum();
        // Forward, loss and backward per micro-batch; the loss is the mean over every target
        // token of the step, so each micro-batch is weighted by its share of them.
        let (mut step_loss, mut step_tokens) = (0.0, 0);
        for (m, indices) in micro.iter().enumerate() {
            let seed = cai_core::rng::derive_seed_u64(cfg.seed, &[session.state.step, m as u64]);
            decoder.set_dropout_seed(seed);
            let examples: Vec<&Example> = indices.iter().map(|&i| &rows[i]).collect();
            let (ids, batch, targets, mask) = collate(&examples, &run.device)?;
            step_tokens += batch.valid.iter().flatten().filter(|&&v| v).count();
            let pass = TrainPass::forward(decoder, &ids, &batch, cfg.gradient_checkpointing)?;
            let (loss, count) = hidden_cross_entropy(decoder, pass.hidden(), &targets, &mask)?;
            if count == 0 {
                continue;
            }
            let loss_value = f64::from(loss.to_scalar::<f32>()?);
            session.check_loss("loss", loss_value, false)?;
            step_loss += loss_value * count as f64 / total.max(1) as f64;
            pass.backward(
                &(loss * (count as f64 / total.max(1) as f64))?,
                params,
                &mut grads,
            )?;
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
        session.state.tokens_seen += total as u64;
        session.state.last_train_loss = Some(step_loss);
        // Log, evaluate, checkpoint.
        let mut record = MetricRecord::new(session.state.step, Split::Train, step_loss);
        record.lr = Some(lr);
        record.grad_norm = Some(grad_norm);
        record.tokens_per_s = Some(step_tokens as f64 / started.elapsed().as_secs_f64());
        record.epoch = Some(walk.epochs(&session.state));
        session.log(&record)?;
        progress(&record, total_steps);
        if !eval_rows.is_empty() && is_multiple(session.state.step, cfg.eval_every) {
            eval_now(&mut session, progress)?;
        }
        session.step_done(cfg.save_every);
    }
    session.finish()?;
    let eval_loss = if eval_rows.is_empty() {
        None
    } else if is_multiple(session.state.step, cfg.eval_every) {
        session.state.last_eval_loss
    } else {
        Some(eval_now(&mut session, progress)?)
    };
    trainee.write(&run.output, &tokenizer)?;
    Ok(SftOutcome::Finished {
        steps: session.state.step,
        train_loss: session.state.last_train_loss,
        eval_loss,
    })
}

/// Whether `step` is one of every `every` (0: never).
fn is_multiple(step: u64, every: u64) -> bool {
    every > 0 && step.is_multiple_of(every)
}

fn validate(cfg: &SftConfig) -> Result<()> {
    let bad = |m: &str| Err(TrainError::Config(m.to_string()));
    if cfg.batch_size == 0 || cfg.grad_accum == 0 {
        return bad("batch_size and grad_accum must be at least 1");
    }
    if cfg.max_length < 2 {
        return bad("max_length must be at least 2 tokens");
    }
    if cfg.epochs == 0 || cfg.max_steps == Some(0) {
        return bad("epochs and max_steps must be at least 1");
    }
    if !(cfg.learning_rate.is_finite() && cfg.learning_rate >= 0.0) {
        return bad("learning_rate must be a non-negative number");
    }
    if cfg.revision_rounds == Some(0) {
        return bad("revision_rounds must be at least 1 (or unset: every round)");
    }
    if let Some(ratio) = cfg.helpful.as_ref().and_then(|h| h.ratio) {
        if !(ratio.is_finite() && ratio >= 0.0) {
            return bad("helpful ratio must be a number ≥ 0");
        }
    }
    if let Some(lora) = &cfg.lora {
        lora.validate()?;
    }
    Ok(())
}

fn pack_if_asked(examples: Vec<Example>, cfg: &SftConfig) -> Vec<Example> {
    if cfg.packing {
        // A packed row holding only prompt tokens has nothing to learn.
        pack(&examples, cfg.max_length)
            .into_iter()
            .filter(|row| row.target_tokens() > 0)
            .collect()
    } else {
        examples
    }
}

/// The examples of `path` that keep a target token: warn about those `max_length` left
/// without one, and fail when that was every example.
fn usable_examples(path: &Path, loaded: LoadedExamples, max_length: usize) -> Result<Vec<Example>> {
    if let Some(warning) = loaded.warning(path, max_length) {
        if loaded.examples.is_empty() {
            return Err(TrainError::Config(format!(
                "{}: every example loses all its target tokens to max_length {max_length} \
                 (the first is {}), so there is nothing to train on; raise max_length \
                 (--max-length) or shorten the prompts",
                path.display(),
                loaded.first_without.as_deref().unwrap_or("?"),
            )));
        }
        tracing::warn!("{warning}");
    }
    Ok(loaded.examples)
}

/// Right-pad a micro-batch. Shapes: ids `[b, L]`, targets `[b, L]` (position t predicts
/// token t + 1), mask `[b, L]` (the target's loss weight; 0 past the end of a row).
fn collate(examples: &[&Example], device: &Device) -> Result<(Tensor, Batch, Tensor, Tensor)> {
    let b = examples.len();
    let l = examples.iter().map(|e| e.ids.len()).max().unwrap_or(1);
    let mut ids = Vec::with_capacity(b * l);
    let mut targets = Vec::with_capacity(b * l);
    let mut mask = Vec::with_capacity(b * l);
    let mut valid = Vec::with_capacity(b);
    for e in examples {
        let n = e.ids.len();
        for t in 0..l {
            ids.push(if t < n { e.ids[t] } else { 0 });
            targets.push(if t + 1 < n { e.ids[t + 1] } else { 0 });
            mask.push(if t + 1 < n { e.loss_mask[t + 1] } else { 0.0 });
        }
        valid.push((0..l).map(|t| t < n).collect());
    }
    Ok((
        Tensor::from_vec(ids, (b, l), device)?,
        Batch::from_valid(valid),
        Tensor::from_vec(targets, (b, l), device)?,
        Tensor::from_vec(mask, (b, l), device)?,
    ))
}

/// Mean loss per target token over `rows`, without gradients or dropout.
pub fn evaluate(
    decoder: &Decoder,
    rows: &[Example],
    batch_size: usize,
    device: &Device,
) -> Result<f64> {
    let (mut sum, mut count) = (0.0, 0usize);
    for chunk in rows.chunks(batch_size.max(1)) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let (ids, batch, targets, mask) = collate(&refs, device)?;
        let hidden = decoder.forward_hidden(&ids, &batch, None, Mode::Infer)?;
        let (loss, n) = masked_cross_entropy(&decoder.logits(&hidden)?, &targets, &mask)?;
        sum += f64::from(loss.to_scalar::<f32>()?) * n as f64;
        count += n;
    }
    Ok(if count == 0 { 0.0 } else { sum / count as f64 })
}
