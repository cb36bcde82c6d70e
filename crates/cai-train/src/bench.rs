//! The train workload of docs/BENCH.md: batch 8 × 256 tokens, forward, backward, gradient
//! clipping and an AdamW step, timed on a random model of a shape or on a loaded model; every
//! weight trains, or LoRA adapters, with or without activation checkpointing. And a PPO step:
//! a sampled rollout, the policy's and the reference's log-probs, one clipped-surrogate update.

use std::time::Instant;

use cai_model::bench::Throughput;
use cai_model::config::ModelConfig;
use cai_model::decoder::{Batch, Decoder};
use cai_model::weights::random_decoder;
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

use cai_model::lora::{default_target_modules, LoraConfig};

use crate::core::loss::hidden_cross_entropy;
use crate::core::recompute::TrainPass;
use crate::{AdamW, AdamWConfig, GradAccumulator, Result, TrainParam};

/// How the train workload trains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrainBenchOptions {
    /// LoRA adapters (PEFT's defaults for the architecture) instead of every weight.
    pub lora: bool,
    /// Activation checkpointing (see [`crate::core::recompute`]).
    pub gradient_checkpointing: bool,
}

/// One optimiser step per run on `batch` random sequences of `len` tokens of a random model
/// of `config` (docs/BENCH.md: `bench-6m`, 8 × 256); best of `runs` after one warm-up step.
pub fn bench_train(
    config: ModelConfig,
    batch: usize,
    len: usize,
    runs: usize,
    dtype: DType,
    device: &Device,
    options: TrainBenchOptions,
) -> Result<Throughput> {
    let decoder = random_decoder(config, 0, dtype, device)?;
    bench_train_decoder(decoder, batch, len, runs, options)
}

/// As [`bench_train`], on the weights of `decoder` (a loaded model).
pub fn bench_train_decoder(
    mut decoder: Decoder,
    batch: usize,
    len: usize,
    runs: usize,
    options: TrainBenchOptions,
) -> Result<Throughput> {
    let vocab = decoder.config().vocab_size;
    let device = &decoder.device().clone();
    let params: Vec<TrainParam> = if options.lora {
        let lora = LoraConfig {
            target_modules: default_target_modules(decoder.config().architecture),
            ..LoraConfig::default()
        };
        decoder
            .add_lora(&lora)?
            .into_iter()
            .map(|(name, var)| TrainParam {
                name,
                var,
                decay: true,
                lr_scale: 1.0,
            })
            .collect()
    } else {
        decoder
            .make_trainable()?
            .into_iter()
            .map(|(spec, var)| TrainParam::from_spec(&spec, var))
            .collect()
    };
    let mut optimizer = AdamW::new(
        params.clone(),
        AdamWConfig {
            lr: 1e-4,
            ..AdamWConfig::default()
        },
    )?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let tokens: Vec<u32> = (0..batch * (len + 1))
        .map(|_| rng.random_range(1..vocab as u32))
        .collect();
    let rows: Vec<&[u32]> = tokens.chunks_exact(len + 1).collect();
    let ids = Tensor::from_vec(
        rows.iter()
            .flat_map(|r| r[..len].to_vec())
            .collect::<Vec<_>>(),
        (batch, len),
        device,
    )?;
    let targets = Tensor::from_vec(
        rows.iter()
            .flat_map(|r| r[1..].to_vec())
            .collect::<Vec<_>>(),
        (batch, len),
        device,
    )?;
    let mask = Tensor::ones((batch, len), DType::F32, device)?;
    let positions = Batch::from_valid(vec![vec![true; len]; batch]);
    let mut grads = GradAccumulator::new();
    let mut step = || -> Result<()> {
        let pass = TrainPass::forward(&decoder, &ids, &positions, options.gradient_checkpointing)?;
        let (loss, _) = hidden_cross_entropy(&decoder, pass.hidden(), &targets, &mask)?;
        pass.backward(&loss, &params, &mut grads)?;
        grads.clip_to(1.0)?;
        optimizer.step(&grads, 1e-4)?;
        grads.clear();
        Ok(())
    };
    step()?;
    let mut best = f64::INFINITY;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        step()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(Throughput {
        tokens: batch * len,
        seconds: best,
    })
}

/// The shape of the PPO-step workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PpoStepWorkload {
    /// Prompts per rollout.
    pub batch: usize,
    /// Tokens per prompt.
    pub prompt: usize,
    /// New tokens per response, sampled at temperature 1 (end-of-sequence ignored).
    pub new_tokens: usize,
}

/// One PPO step per run: `policy` (every weight trains) against `reference` (frozen; the same
/// weights at the start): sample `batch` responses, compute the policy's and the reference's
/// log-probs of them, then one update — forward, the clipped surrogate with the per-token KL
/// as advantage stand-in, backward, clipping and AdamW. Tokens are the generated ones; best
/// of `runs` after one warm-up step. With `bf16_rollouts` the sampling and the reference run
/// on bf16 weights, as `cai rl --dtype bf16` does on the CPU.
pub fn bench_ppo_step(
    mut policy: Decoder,
    mut reference: Decoder,
    w: PpoStepWorkload,
    runs: usize,
    (gradient_checkpointing, bf16_rollouts): (bool, bool),
) -> Result<Throughput> {
    use crate::rl::loss::ppo_policy_loss;
    use crate::rl::policy::{response_outputs, train_outputs, Sequence};
    use cai_model::generate::{generate_batch, GenJob, Stopping};
    use cai_model::layers::Mode;

    if bf16_rollouts {
        reference.prepare_for_inference_as(candle_core::DType::BF16)?;
    }
    let params: Vec<TrainParam> = policy
        .make_trainable()?
        .into_iter()
        .map(|(spec, var)| TrainParam::from_spec(&spec, var))
        .collect();
    let mut optimizer = AdamW::new(
        params.clone(),
        AdamWConfig {
            lr: 1e-6,
            ..AdamWConfig::default()
        },
    )?;
    let vocab = policy.config().vocab_size as u32;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
    let prompts: Vec<Vec<u32>> = (0..w.batch)
        .map(|_| (0..w.prompt).map(|_| rng.random_range(1..vocab)).collect())
        .collect();
    let mut grads = GradAccumulator::new();
    let mut seed = 0u64;
    let mut step = || -> Result<usize> {
        seed += 1;
        let jobs: Vec<GenJob> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| GenJob {
                prompt: p.clone(),
                max_new_tokens: w.new_tokens,
                sampling: cai_core::Sampling::default(),
                stop: Vec::new(),
                seed: seed * 1000 + i as u64,
                top_logprobs: 0,
                ignore_eos: true,
                format: cai_core::OutputFormat::Text,
            })
            .collect();
        let stopping = Stopping {
            tokenizer: None,
            eos: &[],
        };
        // As `cai rl` samples: a view of the current weights (bf16 copies with bf16 rollouts).
        let sampler = policy.inference_view(bf16_rollouts)?;
        let outs = generate_batch(&sampler, None, &jobs, stopping)?;
        let sequences: Vec<Sequence> = prompts
            .iter()
            .zip(&outs)
            .map(|(p, o)| Sequence {
                ids: p.iter().chain(&o.tokens).copied().collect(),
                response_start: p.len(),
            })
            .collect();
        let seqs: Vec<&Sequence> = sequences.iter().collect();
        let old = response_outputs(&sampler, None, &seqs, Mode::Infer, true)?.log_probs;
        let reference = response_outputs(&reference, None, &seqs, Mode::Infer, false)?.log_probs;
        let advantages = (&reference - &old)?;
        let train = train_outputs(&policy, None, &seqs, false, gradient_checkpointing)?;
        let (loss, _) = ppo_policy_loss(&train.outputs.log_probs, &old, &advantages, 0.2)?;
        train.backward(&loss, &params, &mut grads)?;
        grads.clip_to(1.0)?;
        optimizer.step(&grads, 1e-6)?;
        grads.clear();
        Ok(outs.iter().map(|o| o.tokens.len()).sum())
    };
    step()?;
    let mut best: Option<Throughput> = None;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let tokens = step()?;
        let seconds = start.elapsed().as_secs_f64();
        if best.is_none_or(|b| seconds < b.seconds) {
            best = Some(Throughput { tokens, seconds });
        }
    }
    Ok(best.expect("at least one run"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cai_model::init::ModelShape;

    #[test]
    fn a_ppo_step_generates_every_token_and_updates_the_policy() {
        let shape = ModelShape {
            hidden_size: 32,
            num_layers: 2,
            num_heads: 4,
            intermediate_size: 64,
            vocab_size: 100,
            max_position_embeddings: 64,
            ..ModelShape::default()
        };
        let w = PpoStepWorkload {
            batch: 3,
            prompt: 4,
            new_tokens: 5,
        };
        for modes in [(false, false), (true, false), (false, true)] {
            let model = || random_decoder(shape.config().unwrap(), 0, DType::F32, &Device::Cpu);
            let t = bench_ppo_step(model().unwrap(), model().unwrap(), w, 1, modes).unwrap();
            assert_eq!(t.tokens, 3 * 5);
            assert!(t.seconds > 0.0);
        }
    }
}
