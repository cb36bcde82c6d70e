//! Batched generation: the job and result types, [`generate_batch`], which runs a fixed set
//! of jobs to the end, and [`generate_continuous`], which runs any number of jobs through a
//! batch of bounded size that waiting jobs join as rows finish; rows stop on end-of-sequence,
//! stop strings or their token budget, and finished rows leave the batch.

use cai_core::{FinishReason, OutputFormat, Sampling};

use std::collections::VecDeque;

use crate::batching::EngineLimits;
use crate::decode_batch::{DecodeBatch, Pending};
use crate::decoder::Decoder;
use crate::prefix::Prefix;
use crate::prefix_cache::PrefixCache;
use crate::tokenizer::Tokenizer;
use crate::Result;

/// One tokenized generation job.
#[derive(Debug, Clone)]
pub struct GenJob {
    /// Prompt tokens after the prefix (may be empty when there is a prefix).
    pub prompt: Vec<u32>,
    /// Token budget.
    pub max_new_tokens: usize,
    /// Sampling settings.
    pub sampling: Sampling,
    /// Stop strings (need a tokenizer to be checked).
    pub stop: Vec<String>,
    /// Seed of this job's sampler.
    pub seed: u64,
    /// Also return this many most likely tokens at each generated position (0: none).
    pub top_logprobs: usize,
    /// Keep going past end-of-sequence tokens, to the budget or a stop string (benchmarks,
    /// vLLM's `ignore_eos`).
    pub ignore_eos: bool,
    /// What the output must be: with [`OutputFormat::JsonObject`] only tokens that keep the
    /// text a valid start of one JSON object are sampled (this needs the tokenizer of
    /// [`Stopping`]), and the row stops when the object is whole (a stop string still ends
    /// it where it occurs).
    pub format: OutputFormat,
}

/// The result of one [`GenJob`].
#[derive(Debug, Clone, PartialEq)]
pub struct GenOutput {
    /// Generated tokens (with the end-of-sequence token if one was sampled).
    pub tokens: Vec<u32>,
    /// Log-probability of each generated token at temperature 1.
    pub logprobs: Vec<f32>,
    /// Per generated position, the job's `top_logprobs` most likely tokens, best first.
    pub top_logprobs: Vec<Vec<(u32, f32)>>,
    /// Decoded text, cut before a stop string (empty without a tokenizer).
    pub text: String,
    /// Why the job ended.
    pub finish: FinishReason,
}

/// What ends a row besides its budget.
#[derive(Debug, Clone, Copy)]
pub struct Stopping<'a> {
    /// Tokenizer for stop strings and the returned text; `None` skips both (benchmarks).
    pub tokenizer: Option<&'a Tokenizer>,
    /// End-of-sequence ids; empty never stops on a token (benchmarks).
    pub eos: &'a [u32],
}

/// Generate for a batch of jobs that share `prefix` (if any): the prompts are left-padded to
/// one length and prefilled together, then every unfinished row takes one decode step per
/// token ([`DecodeBatch`] with no rows joining later).
pub fn generate_batch(
    decoder: &Decoder,
    prefix: Option<&Prefix>,
    jobs: &[GenJob],
    stopping: Stopping<'_>,
) -> Result<Vec<GenOutput>> {
    generate_batch_reusing(decoder, prefix, jobs, stopping, None)
}

/// [`generate_batch`] with prefix reuse: rows start from the longest kept row of `reuse` that
/// their tokens continue, and leave their own keys and values there when they finish
/// ([`DecodeBatch::with_reuse`]).
pub fn generate_batch_reusing(
    decoder: &Decoder,
    prefix: Option<&Prefix>,
    jobs: &[GenJob],
    stopping: Stopping<'_>,
    reuse: Option<&PrefixCache>,
) -> Result<Vec<GenOutput>> {
    // One batch of every job, prefilled in one pass: continuous batching without limits.
    let unbounded = EngineLimits {
        max_batch: usize::MAX,
        max_batch_tokens: usize::MAX,
        ..EngineLimits::default()
    };
    generate_continuous(decoder, prefix, jobs, stopping, reuse, unbounded)
}

/// Generate for any number of jobs that share `prefix` (if any) with continuous batching: at
/// most `limits.max_batch` rows decode together, and as rows finish, waiting jobs join in
/// prefill passes of at most `limits.max_batch_tokens` padded tokens. Every job is looked up in
/// `reuse` when the call starts, so the rows that finish meanwhile (and keep their own keys and
/// values there) cannot evict what a waiting job continues. Results do not depend on the
/// limits beyond float rounding: each row samples from its own seed.
pub fn generate_continuous(
    decoder: &Decoder,
    prefix: Option<&Prefix>,
    jobs: &[GenJob],
    stopping: Stopping<'_>,
    reuse: Option<&PrefixCache>,
    limits: EngineLimits,
) -> Result<Vec<GenOutput>> {
    let mut batch = DecodeBatch::new(decoder).with_reuse(reuse);
    let mut waiting: Vec<Pending> = jobs
        .iter()
        .cloned()
        .zip(0u64..)
        .map(|(job, id)| batch.prepare(prefix, id, job))
        .collect();
    // Longest prefill first, so that rows of similar lengths share a pass.
    waiting.sort_by_key(|p| std::cmp::Reverse(p.prefill_tokens()));
    let mut waiting = VecDeque::from(waiting);
    let max_rows = limits.max_batch.max(1);
    let mut outputs: Vec<Option<GenOutput>> = vec![None; jobs.len()];
    while !(batch.is_empty() && waiting.is_empty()) {
        let free = max_rows.saturating_sub(batch.len());
        // Each join copies the running batch's cache, so rows join a quarter batch at a time
        // (or all that are left).
        let worth = batch.is_empty() || free >= (max_rows / 4).max(1) || free >= waiting.len();
        if free > 0 && worth && !waiting.is_empty() {
            let group: Vec<Pending> = waiting.drain(..free.min(waiting.len())).collect();
            batch.join(prefix, group, limits.max_batch_tokens)?;
        }
        for (id, out) in batch.step(stopping)?.finished {
            outputs[id as usize] = Some(out);
        }
    }
    Ok(outputs
        .into_iter()
        .map(|o| o.expect("every row finishes"))
        .collect())
}
