//! The dialogue-prompting workloads of `cai bench`: greedy generation after a long context that
//! every request shares, with the context's KV cache computed once and reused by every batch
//! (what [`crate::local::LocalModel`] does), or recomputed as part of every prompt (the ratio
//! of the two is the saving of prefix reuse); and the critique stage's waves, each a batch
//! whose transcripts grow by the last wave's answers and a request, run through the engine's
//! prefix reuse ([`PrefixCache`]) as [`crate::local::LocalModel`] runs them.

use cai_core::Sampling;
use rand::{Rng, SeedableRng};

use crate::batching::EngineLimits;
use crate::bench::{best_of, Throughput};
use crate::decoder::Decoder;
use crate::generate::{generate_batch, generate_continuous, GenJob, Stopping};
use crate::prefix::Prefix;
use crate::prefix_cache::PrefixCache;
use crate::Result;

/// The shape of the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextWorkload {
    /// Tokens of the shared context.
    pub context: usize,
    /// Generation calls, each a batch of requests after the same context.
    pub batches: usize,
    /// Requests per call.
    pub batch: usize,
    /// Tokens of each request's own prompt, after the context.
    pub prompt: usize,
    /// Greedy new tokens per request (end-of-sequence ignored).
    pub new_tokens: usize,
}

impl Default for ContextWorkload {
    /// A 1,000-token context before four calls of docs/BENCH.md's generate workload (batch 8,
    /// prompt 32, 64 new tokens).
    fn default() -> Self {
        Self {
            context: 1000,
            batches: 4,
            batch: 8,
            prompt: 32,
            new_tokens: 64,
        }
    }
}

/// New tokens per second of the workload: with `reuse`, the context is prefilled once per run
/// (inside the timing) and each call continues copies of its cache; without, every prompt is
/// the context followed by the request. Best of `runs` after one warm-up.
pub fn bench_context_generate(
    decoder: &Decoder,
    w: ContextWorkload,
    reuse: bool,
    runs: usize,
) -> Result<Throughput> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    let vocab = decoder.config().vocab_size as u32;
    let mut tokens =
        |n: usize| -> Vec<u32> { (0..n).map(|_| rng.random_range(1..vocab)).collect() };
    let context = tokens(w.context);
    let calls: Vec<Vec<GenJob>> = (0..w.batches)
        .map(|c| {
            (0..w.batch)
                .map(|i| {
                    let own = tokens(w.prompt);
                    GenJob {
                        prompt: if reuse {
                            own
                        } else {
                            context.iter().copied().chain(own).collect()
                        },
                        max_new_tokens: w.new_tokens,
                        sampling: Sampling::greedy(),
                        stop: Vec::new(),
                        seed: (c * w.batch + i) as u64,
                        top_logprobs: 0,
                        ignore_eos: false,
                        format: cai_core::OutputFormat::Text,
                    }
                })
                .collect()
        })
        .collect();
    let stopping = Stopping {
        tokenizer: None,
        eos: &[],
    };
    best_of(runs, || {
        let prefix = match reuse {
            true => Some(Prefix::compute(decoder, context.clone())?),
            false => None,
        };
        let mut generated = 0;
        for jobs in &calls {
            let outs = generate_batch(decoder, prefix.as_ref(), jobs, stopping)?;
            generated += outs.iter().map(|o| o.tokens.len()).sum::<usize>();
        }
        Ok(generated)
    })
}

/// The shape of the critique workload: what one round of `cai critique` asks of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CritiqueWorkload {
    /// Tokens of the shared few-shot context (its KV cache computed once per run).
    pub context: usize,
    /// Rows (transcripts) per wave.
    pub batch: usize,
    /// Tokens of each red-team prompt.
    pub prompt: usize,
    /// Tokens of the request appended before each later wave (the critique or revision
    /// request).
    pub request: usize,
    /// Greedy new tokens per row and wave (end-of-sequence ignored).
    pub new_tokens: usize,
    /// Waves: answer, critique, revision.
    pub waves: usize,
}

impl Default for CritiqueWorkload {
    /// A 256-token context, 8 rows, prompts of 32 tokens, requests of 16, 64 new tokens in each
    /// of 3 waves (docs/BENCH.md).
    fn default() -> Self {
        Self {
            context: 256,
            batch: 8,
            prompt: 32,
            request: 16,
            new_tokens: 64,
            waves: 3,
        }
    }
}

/// New tokens per second over the critique workload's waves: each wave is one batched
/// generation after the shared context, whose prompts are the previous wave's prompts, its
/// answers and a request — the transcript grows, as the critique stage's does, and each row
/// continues the keys and values its last wave left in a [`PrefixCache`] (made afresh for
/// each run, inside the timing) of the budget a model gets: the default, or
/// [`crate::batching::KV_REUSE_ENV`]'s. Best of `runs` after one warm-up.
pub fn bench_critique_waves(
    decoder: &Decoder,
    w: CritiqueWorkload,
    runs: usize,
) -> Result<Throughput> {
    bench_critique_waves_with(decoder, w, EngineLimits::default().with_env()?, runs)
}

/// [`bench_critique_waves`] under the given limits (`kv_reuse_bytes` 0: every wave prefills
/// its whole transcript again).
pub fn bench_critique_waves_with(
    decoder: &Decoder,
    w: CritiqueWorkload,
    limits: EngineLimits,
    runs: usize,
) -> Result<Throughput> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let vocab = decoder.config().vocab_size as u32;
    let mut tokens =
        |n: usize| -> Vec<u32> { (0..n).map(|_| rng.random_range(1..vocab)).collect() };
    let context = tokens(w.context);
    let prompts: Vec<Vec<u32>> = (0..w.batch).map(|_| tokens(w.prompt)).collect();
    let requests: Vec<Vec<u32>> = (0..w.waves).map(|_| tokens(w.request)).collect();
    let stopping = Stopping {
        tokenizer: None,
        eos: &[],
    };
    best_of(runs, || {
        let prefix = Prefix::compute(decoder, context.clone())?;
        let reuse = PrefixCache::new(limits.kv_reuse_bytes, limits.kv_reuse_min_tokens);
        let mut transcripts = prompts.clone();
        let mut generated = 0;
        for (wave, request) in requests.iter().enumerate() {
            if wave > 0 {
                transcripts.iter_mut().for_each(|t| t.extend(request));
            }
            let jobs: Vec<GenJob> = transcripts
                .iter()
                .enumerate()
                .map(|(i, t)| GenJob {
                    prompt: t.clone(),
                    max_new_tokens: w.new_tokens,
                    sampling: Sampling::greedy(),
                    stop: Vec::new(),
                    seed: (wave * w.batch + i) as u64,
                    top_logprobs: 0,
                    ignore_eos: true,
                    format: cai_core::OutputFormat::Text,
                })
                .collect();
            let outs = generate_continuous(
                decoder,
                Some(&prefix),
                &jobs,
                stopping,
                Some(&reuse),
                limits,
            )?;
            for (t, o) in transcripts.iter_mut().zip(&outs) {
                t.extend(&o.tokens);
                generated += o.tokens.len();
            }
        }
        Ok(generated)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ways_generate_the_same_number_of_tokens() {
        let decoder = crate::test_util::tiny_decoder(256);
        let w = ContextWorkload {
            context: 40,
            batches: 2,
            batch: 3,
            prompt: 4,
            new_tokens: 5,
        };
        for reuse in [true, false] {
            let t = bench_context_generate(&decoder, w, reuse, 1).unwrap();
            assert_eq!(t.tokens, 2 * 3 * 5);
            assert!(t.seconds > 0.0);
        }
    }

    #[test]
    fn the_critique_waves_generate_every_token_of_every_wave() {
        let decoder = crate::test_util::tiny_decoder(256);
        let w = CritiqueWorkload {
            context: 20,
            batch: 3,
            prompt: 4,
            request: 2,
            new_tokens: 5,
            waves: 3,
        };
        let t = bench_critique_waves(&decoder, w, 1).unwrap();
        assert_eq!(t.tokens, 3 * 3 * 5);
        let off = EngineLimits {
            kv_reuse_bytes: 0,
            ..EngineLimits::default()
        };
        let t = bench_critique_waves_with(&decoder, w, off, 1).unwrap();
        assert_eq!(t.tokens, 3 * 3 * 5);
    }
}
