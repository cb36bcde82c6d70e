//! cai-train: the training core every cai stage shares — AdamW with f32 master weights and
//! moments, gradient accumulation and global-norm clipping, learning-rate schedules, masked
//! cross-entropy, atomic checkpoints and `metrics.jsonl`.
//!
//! The folders show the method: [`sft`], [`pm`] (the preference model), [`distill`] (context
//! distillation) and [`rl`], each built on the shared machinery in [`core`]. Each trainer is
//! its data plus one loop over a [`core::session::TrainSession`], which owns the optimiser,
//! the schedule, checkpoints, resume, `metrics.jsonl` and the divergence checks; the data
//! order of every method is [`core::data_order`]'s.
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
pub mod core;
pub mod distill;
mod error;
pub mod pm;
pub mod rl;
pub mod sft;

pub use crate::core::checkpoint::{
    latest_checkpoint, load_checkpoint, save_checkpoint, Checkpoint, CheckpointOptions,
    LoadedCheckpoint,
};
pub use crate::core::grads::GradAccumulator;
pub use crate::core::loss::masked_cross_entropy;
pub use crate::core::metrics::{MetricRecord, MetricsWriter, Split};
pub use crate::core::optim::{AdamW, AdamWConfig, TrainParam};
pub use crate::core::schedule::{Schedule, ScheduleKind};
pub use crate::core::state::TrainerState;
pub use error::{Result, TrainError};
