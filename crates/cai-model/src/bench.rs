//! The workloads of docs/BENCH.md: batched greedy generation with a KV cache and log-prob
//! scoring, timed on any decoder (`bench-6m`, the SmolLM2-135M shape, or a loaded model).

use std::time::Instant;

use cai_core::{FinishReason, Sampling};
use candle_core::{DType, Device};
use rand::{Rng, SeedableRng};

use crate::batching::{plan_batches, EngineLimits};
use crate::decoder::Decoder;
use crate::generate::{generate_batch, GenJob, Stopping};
use crate::init::ModelShape;
use crate::score::{score_batch, ScoreJob};
use crate::weights::random_decoder;
use crate::Result;

/// The reference model: Llama, hidden 256, 4 layers, 4 heads, intermediate 1024, vocab 4096,
/// untied, θ = 10 000, ε = 1e-5, random weights (~6.3M parameters).
pub fn bench_6m(dtype: DType, device: &Device) -> Result<Decoder> {
    bench_shape(&ModelShape::default(), dtype, device)
}

/// A random model of `shape` (seed 0), laid out for inference: `bench-6m`, or the SmolLM2-135M
/// shape of [`ModelShape::smollm2_135m`].
pub fn bench_shape(shape: &ModelShape, dtype: DType, device: &Device) -> Result<Decoder> {
    let build = Decoder::inference_build_dtype(dtype, device);
    let mut decoder = random_decoder(shape.config()?, 0, build, device)?;
    decoder.prepare_for_inference_as(dtype)?;
    Ok(decoder)
}

fn random_tokens(rng: &mut impl Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| rng.random_range(1..vocab as u32)).collect()
}

/// One timed run's outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Tokens processed (new tokens for generation, scored tokens for scoring).
    pub tokens: usize,
    /// Wall-clock seconds of the best run.
    pub seconds: f64,
}

impl Throughput {
    /// Tokens per second.
    pub fn tok_s(&self) -> f64 {
        self.tokens as f64 / self.seconds
    }
}

/// Generation: `batch` prompts of `prompt_len` random tokens, `new_tokens` greedy tokens each
/// (end-of-sequence ignored, so every row runs to the end). Best of `runs` after one warm-up.
pub fn bench_generate(
    decoder: &Decoder,
    batch: usize,
    prompt_len: usize,
    new_tokens: usize,
    runs: usize,
) -> Result<Throughput> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let vocab = decoder.config().vocab_size;
    let jobs: Vec<GenJob> = (0..batch)
        .map(|i| GenJob {
            prompt: random_tokens(&mut rng, prompt_len, vocab),
            max_new_tokens: new_tokens,
            sampling: Sampling::greedy(),
            stop: Vec::new(),
            seed: i as u64,
            top_logprobs: 0,
            ignore_eos: false,
            format: cai_core::OutputFormat::Text,
        })
        .collect();
    let stopping = Stopping {
        tokenizer: None,
        eos: &[],
    };
    best_of(runs, || {
        let outs = generate_batch(decoder, None, &jobs, stopping)?;
        debug_assert!(outs.iter().all(|o| o.finish == FinishReason::Length));
        Ok(outs.iter().map(|o| o.tokens.len()).sum())
    })
}

/// Scoring: log-probs of `n` sequences of `len` random tokens (one prompt token, the rest
/// scored), split into passes as the local engine splits them. Best of `runs` after one warm-up.
pub fn bench_score(
    decoder: &Decoder,
    n: usize,
    len: usize,
    runs: usize,
    limits: EngineLimits,
) -> Result<Throughput> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let vocab = decoder.config().vocab_size;
    let jobs: Vec<ScoreJob> = (0..n)
        .map(|_| {
            let t = random_tokens(&mut rng, len, vocab);
            ScoreJob {
                prompt: t[..1].to_vec(),
                continuation: t[1..].to_vec(),
                top_k: 0,
            }
        })
        .collect();
    let plan = plan_batches(
        jobs.len(),
        |i| jobs[i].prompt.len() + jobs[i].continuation.len(),
        limits,
    );
    best_of(runs, || {
        for batch in &plan {
            let part: Vec<ScoreJob> = batch.iter().map(|&i| jobs[i].clone()).collect();
            score_batch(decoder, None, &part)?;
        }
        Ok(n * len)
    })
}

pub(crate) fn best_of(runs: usize, mut work: impl FnMut() -> Result<usize>) -> Result<Throughput> {
    work()?;
    let mut best: Option<Throughput> = None;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let tokens = work()?;
        let seconds = start.elapsed().as_secs_f64();
        if best.is_none_or(|b| seconds < b.seconds) {
            best = Some(Throughput { tokens, seconds });
        }
    }
    Ok(best.expect("at least one run"))
}

/// Peak resident memory of this process so far, in MiB (Linux `VmHWM`; `None` elsewhere).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Restart the peak that [`peak_rss_mib`] reports from the current resident size (Linux: writes
/// `5` to `/proc/self/clear_refs`; does nothing elsewhere or where that is not allowed).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
