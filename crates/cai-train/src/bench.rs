//! The train workload of docs/BENCH.md: batch 8 × 256 tokens, forward, backward, gradient
//! clipping and an AdamW step, timed on a random model of a shape or on a loaded model; every
//! weight trains, or LoRA adapters, with or without activation checkpointing.

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
