//! Integration tests of cai-model: one test binary over tiny random models made in temp
//! directories. Each module under `tests/model/` owns one concern; `common` holds the shared
//! helpers.

#[path = "model/common.rs"]
mod common;

#[path = "model/gradients.rs"]
mod gradients;

#[path = "model/inference.rs"]
mod inference;

#[path = "model/scoring.rs"]
mod scoring;

#[path = "model/checkpoint.rs"]
mod checkpoint;

#[path = "model/reference.rs"]
mod reference;

#[path = "model/errors.rs"]
mod errors;

#[path = "model/generation.rs"]
mod generation;

#[path = "model/continuous.rs"]
mod continuous;

#[path = "model/qwen_window.rs"]
mod qwen_window;

#[path = "model/bpe_styles.rs"]
mod bpe_styles;

#[path = "model/preference.rs"]
mod preference;

#[path = "model/load_checks.rs"]
mod load_checks;

#[path = "model/files.rs"]
mod files;

#[path = "model/device.rs"]
mod device;

#[path = "model/reuse.rs"]
mod reuse;
