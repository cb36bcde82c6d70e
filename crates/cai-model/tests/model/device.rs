//! Device parity: every architecture on the test device (`CAI_TEST_DEVICE`: `cpu`, `cuda`,
//! `cuda:N`; default `cpu`) in the test dtype (`CAI_TEST_DTYPE`: `f32`, `bf16`, `f16`; default
//! `bf16`) against the f32 CPU reference — greedy tokens, their log-probs, the training loss
//! and every parameter's gradient.
//!
//! cai's hand-written CPU kernels serve f32 only, so on the CPU in bf16 this runs the composed
//! candle ops that a GPU runs: CI checks the GPU's code path, gradients included, without a
//! GPU. `scripts/gpu-check.sh` runs the same tests with `CAI_TEST_DEVICE=cuda`.

use std::collections::HashMap;

use cai_core::Sampling;
use cai_model::config::ModelConfig;
use cai_model::decoder::Decoder;
use cai_model::device::device_from_name;
use cai_model::generate::{generate_batch, GenJob, GenOutput, Stopping};
use cai_model::weights::{parse_dtype, random_decoder};
use candle_core::{DType, Device, Tensor, Var};

use crate::common::{lm_loss, noisy_decoder, tiny_config, token_rows, ARCHS};

/// The device named by `CAI_TEST_DEVICE` (default `cpu`).
fn test_device() -> Device {
    let name = std::env::var("CAI_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    device_from_name(&name).unwrap_or_else(|e| panic!("CAI_TEST_DEVICE={name}: {e}"))
}

/// The dtype named by `CAI_TEST_DTYPE` (default `bf16`).
fn test_dtype() -> DType {
    let name = std::env::var("CAI_TEST_DTYPE").unwrap_or_else(|_| "bf16".into());
    parse_dtype(&name).unwrap_or_else(|| panic!("CAI_TEST_DTYPE={name}: expected f32, bf16 or f16"))
}

/// Largest log-prob (and loss) difference allowed from the f32 CPU reference. bf16 keeps 8
/// mantissa bits (relative error ~0.4 % per rounding), f16 11, f32 24 (GPU reductions sum in
/// another order, so not bit-equal).
fn logprob_tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::BF16 => 0.3,
        DType::F16 => 0.05,
        _ => 2e-3,
    }
}

/// Largest gradient difference allowed, relative to the reference gradient's norm. A gradient
/// that stopped or went wrong is off by ~1; bf16 rounding alone moves a norm weight's gradient
/// (a sum of many terms of both signs) by up to ~25 %.
fn gradient_tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::BF16 => 0.4,
        DType::F16 => 0.1,
        _ => 1e-3,
    }
}

/// The reference: a noisy tiny model whose final norm is scaled up so next-token
/// distributions are peaked (a random tiny model's are nearly flat, and greedy picks would
/// hang on rounding). The norm, not the head: GPT-2's head is its tied embedding.
fn reference(config: ModelConfig) -> Decoder {
    let mut decoder = noisy_decoder(config, 7, DType::F32);
    decoder
        .visit_params(&mut |spec, t| {
            if spec.name.starts_with("model.norm.") || spec.name.starts_with("transformer.ln_f.") {
                *t = (&*t * 100.0)?;
            }
            Ok(())
        })
        .expect("scaling the final norm");
    decoder
}

/// The same weights on `device` in `dtype`.
fn moved(reference: &Decoder, device: &Device, dtype: DType) -> Decoder {
    let weights: HashMap<String, Tensor> = reference
        .params()
        .into_iter()
        .map(|(spec, t)| (spec.name, t))
        .collect();
    let mut decoder =
        random_decoder(reference.config().clone(), 0, dtype, device).expect("decoder on device");
    decoder
        .visit_params(&mut |spec, t| {
            *t = weights[&spec.name].to_dtype(dtype)?.to_device(device)?;
            Ok(())
        })
        .expect("copying weights");
    decoder
}

/// Greedy generation of 24 tokens after each of [`token_rows`] and three more prompts, with
/// the top two log-probs.
fn greedy(decoder: &Decoder) -> Vec<GenOutput> {
    let mut prompts = token_rows();
    prompts.extend([
        vec![1, 2, 3, 4],
        vec![200, 100, 50, 25, 12],
        vec![383, 0, 77],
    ]);
    let jobs: Vec<GenJob> = prompts
        .into_iter()
        .map(|prompt| GenJob {
            prompt,
            max_new_tokens: 24,
            sampling: Sampling::greedy(),
            stop: Vec::new(),
            seed: 0,
            top_logprobs: 2,
            ignore_eos: true,
            format: cai_core::OutputFormat::Text,
        })
        .collect();
    let stopping = Stopping {
        tokenizer: None,
        eos: &[],
    };
    generate_batch(decoder, None, &jobs, stopping).expect("greedy generation")
}

#[test]
fn greedy_tokens_and_logprobs_on_the_test_device_follow_the_f32_cpu_reference() {
    let (device, dtype) = (test_device(), test_dtype());
    let tol = logprob_tolerance(dtype);
    for arch in ARCHS {
        let cpu = reference(tiny_config(arch, false));
        let mut on_device = moved(&cpu, &device, dtype);
        on_device
            .prepare_for_inference()
            .expect("prepare for inference");
        let (want, got) = (greedy(&cpu), greedy(&on_device));
        let mut compared = 0;
        for (row, (w, g)) in want.iter().zip(&got).enumerate() {
            for step in 0..w.tokens.len() {
                // Past a near-tie in the reference, a rounding difference may pick the other
                // token, and the rows rightly part.
                let top = &w.top_logprobs[step];
                if top[0].1 - top[1].1 < 2.0 * tol {
                    break;
                }
                assert_eq!(
                    g.tokens[step], w.tokens[step],
                    "{arch:?} row {row} step {step}: greedy token on {device:?} {dtype:?}"
                );
                let diff = (g.logprobs[step] - w.logprobs[step]).abs();
                assert!(
                    diff <= tol,
                    "{arch:?} row {row} step {step}: log-prob {} on {device:?} {dtype:?}, {} on the CPU in f32",
                    g.logprobs[step],
                    w.logprobs[step]
                );
                compared += 1;
            }
        }
        assert!(
            compared >= 12,
            "{arch:?}: only {compared} greedy steps were unambiguous enough to compare"
        );
    }
}

/// Every parameter as a `Var` (sharing the decoder's storage), by name.
fn vars_of(decoder: &mut Decoder) -> Vec<(String, Var)> {
    let mut vars = Vec::new();
    decoder
        .visit_params(&mut |spec, t| {
            let var = Var::from_tensor(t)?;
            *t = var.as_tensor().clone();
            vars.push((spec.name.clone(), var));
            Ok(())
        })
        .expect("making vars");
    vars
}

/// A gradient as f32 values on the host.
fn host(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("gradient to host")
}

#[test]
fn training_on_the_test_device_gives_every_parameter_the_reference_gradient() {
    let (device, dtype) = (test_device(), test_dtype());
    let tol = logprob_tolerance(dtype);
    for arch in ARCHS {
        let mut cpu = noisy_decoder(tiny_config(arch, false), 3, DType::F32);
        let mut on_device = moved(&cpu, &device, dtype);
        let cpu_vars = vars_of(&mut cpu);
        let device_vars = vars_of(&mut on_device);
        let cpu_loss = lm_loss(&cpu, &token_rows());
        let device_loss = lm_loss(&on_device, &token_rows());
        let (a, b): (f32, f32) = (
            cpu_loss.to_scalar().expect("cpu loss"),
            device_loss
                .to_dtype(DType::F32)
                .and_then(|t| t.to_scalar())
                .expect("device loss"),
        );
        assert!(
            (a - b).abs() <= tol,
            "{arch:?}: loss {b} on {device:?} {dtype:?}, {a} on the CPU in f32"
        );
        let cpu_grads = cpu_loss.backward().expect("cpu backward");
        let device_grads = device_loss.backward().expect("device backward");
        for ((name, cpu_var), (_, device_var)) in cpu_vars.iter().zip(&device_vars) {
            let want = host(cpu_grads.get(cpu_var.as_tensor()).expect("cpu gradient"));
            let got = host(
                device_grads
                    .get(device_var.as_tensor())
                    .unwrap_or_else(|| panic!("{arch:?}: no gradient for {name} on {device:?}")),
            );
            let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            let diff: Vec<f32> = want.iter().zip(&got).map(|(w, g)| w - g).collect();
            let (want_norm, got_norm) = (norm(&want), norm(&got));
            assert!(
                got_norm > 0.0 && got_norm.is_finite(),
                "{arch:?}: gradient of {name} on {device:?} {dtype:?} is {got_norm}"
            );
            // Relative to the gradient's size: bf16's rounding shows in every entry.
            let relative = norm(&diff) / want_norm;
            assert!(
                relative <= gradient_tolerance(dtype),
                "{arch:?}: gradient of {name} on {device:?} {dtype:?} is {relative:.4} away from the CPU's (relative)"
            );
        }
    }
}
