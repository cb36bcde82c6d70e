//! Integration tests of the `cai` binary: one test binary that runs the built executable on
//! tiny models made in a temporary directory per test. Each module under `tests/cli/` owns
//! one command; `helpers` holds the shared setup.

#[path = "cli/helpers.rs"]
mod helpers;

#[path = "cli/init_model.rs"]
mod init_model;

#[path = "cli/generate.rs"]
mod generate;

#[path = "cli/score.rs"]
mod score;

#[path = "cli/chat.rs"]
mod chat;

#[path = "cli/critique.rs"]
mod critique;

#[path = "cli/label.rs"]
mod label;

#[path = "cli/preference.rs"]
mod preference;

#[path = "cli/errors.rs"]
mod errors;

#[path = "cli/output_safety.rs"]
mod output_safety;

#[path = "cli/serve.rs"]
mod serve;

#[path = "cli/bench.rs"]
mod bench;

#[path = "cli/sft.rs"]
mod sft;

#[path = "cli/distill.rs"]
mod distill;

#[path = "cli/lab.rs"]
mod lab;

#[path = "cli/pipeline.rs"]
mod pipeline;

#[path = "cli/pipeline_safety.rs"]
mod pipeline_safety;

#[path = "cli/lab_eval.rs"]
mod lab_eval;

#[path = "cli/lab_counting.rs"]
mod lab_counting;

#[path = "cli/lab_model.rs"]
mod lab_model;

#[path = "cli/rl.rs"]
mod rl;

#[path = "cli/eval_elo.rs"]
mod eval_elo;

#[path = "cli/convert.rs"]
mod convert;

#[path = "cli/hub.rs"]
mod hub;

#[path = "cli/eval_safety.rs"]
mod eval_safety;

#[path = "cli/published.rs"]
mod published;
