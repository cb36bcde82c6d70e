//! The training machinery every method shares: AdamW and its state, gradient accumulation and
//! clipping, learning-rate schedules, masked cross-entropy, activation checkpointing, training
//! precision, the trainee and its checkpoints, progress counters, `metrics.jsonl`, the
//! divergence checks, the checks before a resume, the seeded data order, and the training
//! session that ties them together.

pub mod checkpoint;
pub mod data_order;
pub mod divergence;
pub mod grads;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod precision;
pub mod recompute;
pub mod resume;
pub mod schedule;
pub mod session;
pub mod state;
pub mod trainee;
