//! Safety of model snapshots, reported as two numbers together (as practitioners judge open
//! models): the attack success rate (ASR) — the share of answers to red-team prompts a judge
//! calls harmful — and the over-refusal rate — the share of safe prompts that look unsafe
//! that the model refuses — each with a bootstrap 95 % interval, per category, and the
//! agreement (Cohen's κ) of two judges.
//!
//! - [`sets`]: prompt sets with categories and labels, and the over-refusal set cai ships;
//! - [`stats`]: bootstrap intervals of a rate, Cohen's κ;
//! - [`run`]: the whole evaluation in one resumable directory (samples, per-item verdicts);
//! - [`summary`]: the figures, the table and the JSON;

pub mod run;
pub mod sets;
pub mod stats;
pub mod summary;
