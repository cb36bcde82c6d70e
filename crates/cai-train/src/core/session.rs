//! One training session, shared by every trainer (SFT, distillation, the preference model, RL
//! and DPO): the optimiser and its schedule, the newest checkpoint found, checked and restored
//! on a resume, `metrics.jsonl` begun or continued, the resolved config written beside the
//! outputs, the divergence checks around each update, and checkpoints written only once they
//! are known to be good.
//!
//! A trainer opens a session, then loops — batch, forward, loss
//! ([`check_loss`](TrainSession::check_loss)), backward, [`step`](TrainSession::step) (clip,
//! optimiser step, schedule), [`log`](TrainSession::log), [`step_done`](TrainSession::step_done)
//! — and ends with [`finish`](TrainSession::finish).

use std::path::{Path, PathBuf};
use std::time::Instant;

use cai_model::tokenizer::Tokenizer;
use candle_core::Device;
use serde_json::Value;

use crate::core::checkpoint::LoadedCheckpoint;
use crate::core::divergence;
use crate::core::resume;
use crate::core::trainee::write_json;
use crate::{
    latest_checkpoint, load_checkpoint, AdamW, AdamWConfig, GradAccumulator, MetricRecord,
    MetricsWriter, Result, Schedule, TrainError, TrainParam, TrainerState,
};

/// The log of every step, in the output directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// A model whose training can be checkpointed and resumed.
pub trait Checkpointed {
    /// The weights file inside its checkpoints.
    fn weights_file(&self) -> &str;
    /// Put a checkpoint's weights (and any files of its own in `loaded.dir`) back.
    fn restore(&self, loaded: &LoadedCheckpoint) -> Result<()>;
    /// Write a resumable checkpoint under `checkpoints`; returns its directory.
    fn save_checkpoint(&self, checkpoints: &Path, parts: &CheckpointParts<'_>) -> Result<PathBuf>;
}

/// What a checkpoint holds besides the model.
pub struct CheckpointParts<'a> {
    /// The optimiser's moments and master weights.
    pub optimizer: &'a AdamW,
    /// The trainer's counters.
    pub state: &'a TrainerState,
    /// The resolved training config.
    pub config: &'a Value,
    /// Checkpoints kept.
    pub keep_last: Option<usize>,
    /// Saved beside the weights, so a checkpoint loads as a model.
    pub tokenizer: &'a Tokenizer,
}

/// How to open a session: where it writes, what it resumes from, and its optimiser.
pub struct SessionSpec<'a> {
    /// The method's key in the training config (`"sft"`, `"pm"`, …): the settings a resume
    /// compares (see [`resume::check`]).
    pub method: &'static str,
    /// The resolved training config: saved in every checkpoint and as `config_file`.
    pub config: Value,
    /// The name of the resolved config beside the outputs.
    pub config_file: &'static str,
    /// Output directory (checkpoints go to its `checkpoints/`).
    pub output: &'a Path,
    /// Continue from the newest checkpoint if there is one.
    pub resume: bool,
    /// Settings (and `"data"`) a resume may change.
    pub allow_changes: &'a [String],
    /// The run seed (a fresh run's [`TrainerState`]).
    pub seed: u64,
    /// Checkpoints kept.
    pub keep_last: Option<usize>,
    /// The optimiser's settings.
    pub optimizer: AdamWConfig,
    /// The learning-rate schedule (its `total_steps` is the run's length).
    pub schedule: Schedule,
    /// Where checkpoints are loaded to.
    pub device: &'a Device,
}

/// The [`SessionSpec`] of an epoch-based trainer (SFT, distillation, the PM): its config
/// `$cfg` has the shared epoch settings (`seed`, `keep_last`, `learning_rate`,
/// `weight_decay`, `schedule`, `warmup_steps`, `batch_size`, `grad_accum`, `epochs`,
/// `max_steps`) and its run `$run` has `output`, `resume`, `allow_changes` and `device`; the
/// optimiser is AdamW at the config's rate and decay, the schedule runs over `$examples`
/// examples. A macro because the three configs share these field names but no type.
/// Evaluates to `Result<SessionSpec>`.
macro_rules! epoch_session_spec {
    (
        method: $method:expr,
        config: $config:expr,
        config_file: $config_file:expr,
        run: $run:expr,
        cfg: $cfg:expr,
        examples: $examples:expr $(,)?
    ) => {{
        let config = $config;
        let (run, cfg) = ($run, $cfg);
        $crate::core::schedule::Schedule::for_run(
            cfg.schedule,
            cfg.warmup_steps,
            $examples,
            cfg.batch_size * cfg.grad_accum,
            cfg.epochs,
            cfg.max_steps,
        )
        .map(|schedule| $crate::core::session::SessionSpec {
            method: $method,
            config,
            config_file: $config_file,
            output: &run.output,
            resume: run.resume,
            allow_changes: &run.allow_changes,
            seed: cfg.seed,
            keep_last: cfg.keep_last,
            optimizer: $crate::core::optim::AdamWConfig {
                lr: cfg.learning_rate,
                weight_decay: cfg.weight_decay,
                ..$crate::core::optim::AdamWConfig::default()
            },
            schedule,
            device: &run.device,
        })
    }};
}
pub(crate) use epoch_session_spec;

/// A training run in progress over the model `M`.
pub struct TrainSession<'m, M: Checkpointed> {
    /// The model being trained.
    pub model: &'m M,
    /// Its tokenizer.
    pub tokenizer: &'m Tokenizer,
    /// Where the run is; a trainer moves `step` (and its data position) on.
    pub state: TrainerState,
    /// The optimiser.
    pub optimizer: AdamW,
    /// The learning-rate schedule.
    pub schedule: Schedule,
    metrics: MetricsWriter,
    config: Value,
    output: PathBuf,
    checkpoints: PathBuf,
    keep_last: Option<usize>,
    /// Whether the run continued from a checkpoint (side logs continue too).
    resumed: bool,
    /// The state of a step whose checkpoint is due. It is written by the next
    /// [`step`](Self::step), once that step's loss (computed with its weights) has passed the
    /// divergence check, so every checkpoint on disk is one that trained well.
    pending: Option<TrainerState>,
    /// A checkpoint of the step just done is due.
    save_due: bool,
}

impl<'m, M: Checkpointed> TrainSession<'m, M> {
    /// Build the optimiser over `params`, resume from the newest checkpoint when asked (after
    /// checking that its settings and data match), begin or continue `metrics.jsonl`, and
    /// write the resolved config.
    pub fn open(
        model: &'m M,
        tokenizer: &'m Tokenizer,
        params: Vec<TrainParam>,
        spec: SessionSpec<'_>,
    ) -> Result<Self> {
        let mut optimizer = AdamW::new(params, spec.optimizer)?;
        let output = spec.output;
        std::fs::create_dir_all(output).map_err(|e| TrainError::io(output, e))?;
        let checkpoints = output.join("checkpoints");
        let metrics_path = output.join(METRICS_FILE);
        let mut state = TrainerState::new(spec.seed);
        let resumed = match latest_checkpoint(&checkpoints)?.filter(|_| spec.resume) {
            Some(dir) => {
                let loaded = load_checkpoint(&dir, model.weights_file(), spec.device)?;
                resume::check(
                    &dir,
                    spec.method,
                    &loaded.config,
                    &spec.config,
                    spec.allow_changes,
                )?;
                model.restore(&loaded)?;
                loaded.restore_optimizer(&mut optimizer)?;
                state = loaded.state;
                tracing::info!("resuming from {} at step {}", dir.display(), state.step);
                true
            }
            None => false,
        };
        let metrics = open_log(&metrics_path, resumed.then_some(state.step))?;
        write_json(&output.join(spec.config_file), &spec.config)?;
        divergence::start(&mut state, &optimizer)?;
        Ok(Self {
            model,
            tokenizer,
            state,
            optimizer,
            schedule: spec.schedule,
            metrics,
            config: spec.config,
            output: output.to_path_buf(),
            checkpoints,
            keep_last: spec.keep_last,
            resumed,
            pending: None,
            save_due: false,
        })
    }

    /// Optimiser steps of the whole run.
    pub fn total_steps(&self) -> u64 {
        self.schedule.total_steps
    }

    /// Another JSONL log in the output directory (e.g. RL's samples): continued up to the
    /// resumed step, or begun afresh.
    pub fn open_log(&self, name: &str) -> Result<MetricsWriter> {
        open_log(
            &self.output.join(name),
            self.resumed.then_some(self.state.step),
        )
    }

    /// Begin a step: when the last one's checkpoint is due, keep its state for the next
    /// [`step`](Self::step) to write. Returns the step's start time.
    pub fn begin_step(&mut self) -> Instant {
        if std::mem::take(&mut self.save_due) {
            self.pending = Some(self.state.clone());
        }
        Instant::now()
    }

    /// Check a loss of the step being taken (see [`divergence::check_loss`]): finite and,
    /// with `relative`, not far above the run's first.
    pub fn check_loss(&mut self, what: &str, value: f64, relative: bool) -> Result<()> {
        let step = self.state.step + 1;
        divergence::check_loss(
            &mut self.state,
            step,
            what,
            value,
            relative,
            &self.checkpoints,
        )
    }

    /// One optimiser update: write a due checkpoint (the step's losses have passed the
    /// divergence check), clip the gradients, take a step at the schedule's rate for update
    /// `lr_index` and check the weights it made. Returns (gradient norm before clipping,
    /// learning rate).
    pub fn step(
        &mut self,
        grads: &mut GradAccumulator,
        max_grad_norm: f64,
        base_lr: f64,
        lr_index: u64,
    ) -> Result<(f64, f64)> {
        self.save_pending()?;
        let lr = self.schedule.lr_at(lr_index, base_lr);
        let step = self.state.step + 1;
        let norm = self
            .optimizer
            .clip_and_step(grads, max_grad_norm, lr, step)
            .map_err(|e| divergence::locate(e, &self.checkpoints))?;
        divergence::check_weights(&self.state, step, &self.optimizer, &self.checkpoints)?;
        Ok((norm, lr))
    }

    /// Write a line of `metrics.jsonl`.
    pub fn log(&mut self, record: &MetricRecord) -> Result<()> {
        self.metrics.write(record)
    }

    /// After a step: a checkpoint is due every `save_every` steps (0: never).
    pub fn step_done(&mut self, save_every: u64) {
        if save_every > 0 && self.state.step.is_multiple_of(save_every) {
            self.save_due = true;
        }
    }

    /// Save a resumable checkpoint of the current state (an interrupted run's).
    pub fn save(&self) -> Result<PathBuf> {
        self.save_state(&self.state)
    }

    /// End the run: write a checkpoint still due. The trainer writes the finished model.
    pub fn finish(&mut self) -> Result<()> {
        self.save_pending()?;
        if std::mem::take(&mut self.save_due) {
            self.save()?;
        }
        Ok(())
    }

    fn save_pending(&mut self) -> Result<()> {
        if let Some(state) = self.pending.take() {
            self.save_state(&state)?;
        }
        Ok(())
    }

    fn save_state(&self, state: &TrainerState) -> Result<PathBuf> {
        self.model.save_checkpoint(
            &self.checkpoints,
            &CheckpointParts {
                optimizer: &self.optimizer,
                state,
                config: &self.config,
                keep_last: self.keep_last,
                tokenizer: self.tokenizer,
            },
        )
    }
}

/// A JSONL log continued up to `resumed_at` (dropping lines of later steps), or begun afresh
/// (a fresh run starts a fresh log: the CLI refuses to reuse an output directory without
/// `--resume` or `--overwrite`).
fn open_log(path: &Path, resumed_at: Option<u64>) -> Result<MetricsWriter> {
    match resumed_at {
        Some(step) => MetricsWriter::resume(path, step),
        None => {
            if path.exists() {
                std::fs::remove_file(path).map_err(|e| TrainError::io(path, e))?;
            }
            MetricsWriter::open(path)
        }
    }
}
