//! The dialogue-prompting workload of `cai bench`: greedy generation after a long context that
//! every request shares, with the context's KV cache computed once and reused by every batch
//! (what [`crate::local::LocalModel`] does), or recomputed as part of every prompt. The ratio
//! of the two is the saving of prefix reuse.

use cai_core::Sampling;
use rand::{Rng, SeedableRng};

use crate::bench::{best_of, Throughput};
use crate::decoder::Decoder;
use crate::generate::{generate_batch, GenJob, Stopping};
use crate::prefix::Prefix;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::ModelShape;
    use crate::weights::random_decoder;
    use candle_core::{DType, Device};

    #[test]
    fn both_ways_generate_the_same_number_of_tokens() {
        let shape = ModelShape {
            hidden_size: 32,
            num_layers: 2,
            num_heads: 4,
            intermediate_size: 64,
            vocab_size: 100,
            max_position_embeddings: 256,
            ..ModelShape::default()
        };
        let decoder = random_decoder(shape.config().unwrap(), 0, DType::F32, &Device::Cpu).unwrap();
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
}
