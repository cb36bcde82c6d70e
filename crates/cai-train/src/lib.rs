//! cai-train: the training core every cai stage shares — AdamW with f32 master weights and
//! moments, gradient accumulation and global-norm clipping, learning-rate schedules, masked
//! cross-entropy, atomic checkpoints and `metrics.jsonl`.
//!
//! One optimiser step, top to bottom:
//!
//! ```text
//! for micro-batch: logits = model.forward_train(ids, batch)
//!                  (loss, n) = masked_cross_entropy(logits, targets, mask)
//!                  accumulator.add(&(loss * n/total).backward()?, &params)
//! accumulator.clip_to(max_grad_norm); if !accumulator.is_finite() -> stop (diverged)
//! optimizer.step(&accumulator, schedule.lr_at(step, base_lr)); accumulator.clear()
//! ```
#![deny(missing_docs)]

pub mod bench;
pub mod calibration;
pub mod checkpoint;
pub mod distill;
pub mod distill_batch;
pub mod distill_config;
pub mod distill_data;
pub mod distill_teacher;
pub mod divergence;
mod error;
pub mod grads;
pub mod kl;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod pm;
pub mod pm_config;
pub mod pm_data;
pub mod pm_eval;
pub mod preference_loss;
pub mod reliability_plot;
pub mod resume;
pub mod rl;
pub mod rl_config;
mod rl_dpo;
pub mod rl_loss;
pub mod rl_math;
pub mod rl_plot;
pub mod rl_policy;
pub mod rl_rollout;
pub mod schedule;
pub mod sft;
pub mod sft_data;
pub mod state;
pub mod trainee;

pub use checkpoint::{
    latest_checkpoint, load_checkpoint, save_checkpoint, Checkpoint, CheckpointOptions,
    LoadedCheckpoint,
};
pub use error::{Result, TrainError};
pub use grads::GradAccumulator;
pub use loss::masked_cross_entropy;
pub use metrics::{MetricRecord, MetricsWriter, Split};
pub use optim::{AdamW, AdamWConfig, TrainParam};
pub use schedule::{Schedule, ScheduleKind};
pub use state::TrainerState;
