//! The inference path agrees with the training path and with itself: fused kernels vs
//! differentiable ops, KV-cache decoding vs full recomputation, batched left-padded generation
//! vs one prompt at a time, and a shared prefix vs the same tokens in the prompt.

use cai_core::{GenerateRequest, LanguageModel, Sampling};
use cai_model::config::Architecture;
use cai_model::decoder::{Batch, Decoder};
use cai_model::generate::{generate_batch, GenJob, Stopping};
use cai_model::kv_cache::KvCache;
use cai_model::layers::Mode;
use cai_model::local::{LoadOptions, LocalModel};
use cai_model::prefix::Prefix;
use candle_core::{DType, Device, IndexOp, Tensor};

use crate::common::{
    full_logits, last_logits, left_padded, log_softmax_f64, max_abs_diff, model_dir, noisy_decoder,
    tiny_config, tiny_shape, token_rows, ARCHS,
};

#[test]
fn fused_inference_path_equals_training_path() {
    for arch in ARCHS {
        let decoder = noisy_decoder(tiny_config(arch, false), 3, DType::F32);
        let (ids, batch) = left_padded(&token_rows(), decoder.device());
        let fused = decoder
            .logits(
                &decoder
                    .forward_hidden(&ids, &batch, None, Mode::Infer)
                    .unwrap(),
            )
            .unwrap();
        let train = decoder.forward_train(&ids, &batch).unwrap();
        let diff = max_abs_diff(&fused, &train);
        assert!(
            diff < 1e-4,
            "{arch:?}: fused and differentiable logits differ by {diff}"
        );
    }
}

#[test]
fn kv_cache_decoding_equals_full_recomputation() {
    for arch in ARCHS {
        let decoder = noisy_decoder(tiny_config(arch, false), 4, DType::F32);
        let device = decoder.device();
        let mut rows = token_rows();
        let (ids, batch) = left_padded(&rows, device);
        let b = rows.len();
        let mut cache = KvCache::new(decoder.config(), b, 4, DType::F32, device).unwrap();
        let hidden = decoder
            .forward_hidden(&ids, &batch, Some(&mut cache), Mode::Infer)
            .unwrap();
        let l = ids.dim(1).unwrap();
        let mut logits = decoder
            .logits(&hidden.narrow(1, l - 1, 1).unwrap().squeeze(1).unwrap())
            .unwrap();
        for step in 0..8 {
            // Each row's step logits equal a fresh, unpadded, cache-free pass over its sequence.
            for (r, row) in rows.iter().enumerate() {
                let diff = max_abs_diff(&logits.i(r).unwrap(), &last_logits(&decoder, row));
                assert!(
                    diff < 1e-4,
                    "{arch:?} step {step} row {r}: cached logits differ by {diff}"
                );
            }
            let next: Vec<u32> = logits.argmax(1).unwrap().to_vec1().unwrap();
            let positions = cache.next_positions();
            for (row, &tok) in rows.iter_mut().zip(&next) {
                row.push(tok);
            }
            assert_eq!(
                positions,
                rows.iter().map(|r| r.len() as u32 - 1).collect::<Vec<_>>()
            );
            let ids = Tensor::from_vec(next, (b, 1), device).unwrap();
            let batch = Batch {
                valid: vec![vec![true]; b],
                positions: positions.iter().map(|&p| vec![p]).collect(),
            };
            let hidden = decoder
                .forward_hidden(&ids, &batch, Some(&mut cache), Mode::Infer)
                .unwrap();
            logits = decoder.logits(&hidden.squeeze(1).unwrap()).unwrap();
        }
    }
}

fn greedy_job(prompt: Vec<u32>, max_new_tokens: usize) -> GenJob {
    GenJob {
        prompt,
        max_new_tokens,
        sampling: Sampling::greedy(),
        stop: Vec::new(),
        seed: 0,
        top_logprobs: 0,
        ignore_eos: false,
        format: cai_core::OutputFormat::Text,
    }
}

#[test]
fn generated_logprobs_equal_a_full_forward_pass() {
    for arch in ARCHS {
        let decoder = noisy_decoder(tiny_config(arch, true), 5, DType::F32);
        let jobs: Vec<GenJob> = token_rows().into_iter().map(|p| greedy_job(p, 7)).collect();
        let outs = generate_batch(
            &decoder,
            None,
            &jobs,
            Stopping {
                tokenizer: None,
                eos: &[],
            },
        )
        .unwrap();
        for (job, out) in jobs.iter().zip(&outs) {
            assert_eq!(out.tokens.len(), 7);
            let seq: Vec<u32> = job.prompt.iter().chain(&out.tokens).copied().collect();
            let logits: Vec<Vec<f32>> = full_logits(&decoder, &seq).to_vec2().unwrap();
            for (k, (&tok, &lp)) in out.tokens.iter().zip(&out.logprobs).enumerate() {
                let row = &logits[job.prompt.len() + k - 1];
                let expected = log_softmax_f64(row);
                assert!(
                    (lp as f64 - expected[tok as usize]).abs() < 1e-4,
                    "{arch:?} token {k}: logprob {lp} vs {}",
                    expected[tok as usize]
                );
                let best = expected.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                assert!(
                    expected[tok as usize] >= best - 1e-5,
                    "{arch:?} token {k} is not the argmax"
                );
            }
        }
    }
}

#[test]
fn batched_greedy_generation_equals_one_prompt_at_a_time() {
    let prompts = [
        "Human: How do I bake bread?\n\nAssistant:",
        "Paris",
        "The assistant should be helpful, honest and harmless. Human: What is the capital of France?",
        "Critique: the answer",
    ];
    for arch in ARCHS {
        let dir = model_dir(&tiny_shape(arch), 6);
        let model = LocalModel::load(dir.spec(), &LoadOptions::default()).unwrap();
        // Different budgets, so rows leave the batch at different steps.
        let requests: Vec<GenerateRequest> = prompts
            .iter()
            .zip([10, 3, 7, 5])
            .map(|(p, n)| GenerateRequest::new(*p, n, Sampling::greedy()))
            .collect();
        let batched = model.generate(&requests).unwrap();
        let lens: Vec<usize> = batched.iter().map(|g| g.prompt_tokens).collect();
        assert!(
            lens.iter().min() < lens.iter().max(),
            "prompts of different lengths: {lens:?}"
        );
        for (request, together) in requests.iter().zip(&batched) {
            let alone = model
                .generate(std::slice::from_ref(request))
                .unwrap()
                .remove(0);
            assert_eq!(
                together.token_ids, alone.token_ids,
                "{arch:?} {:?}",
                request.prompt
            );
            assert_eq!(together.text, alone.text);
            assert_eq!(
                together.token_ids.len(),
                request.max_new_tokens,
                "ran to its budget"
            );
            for (a, b) in together.token_logprobs.iter().zip(&alone.token_logprobs) {
                assert!((a - b).abs() < 1e-4, "{arch:?}: logprobs {a} vs {b}");
            }
        }
    }
}

#[test]
fn a_shared_prefix_generates_what_the_same_tokens_in_the_prompt_generate() {
    for arch in ARCHS {
        let decoder = noisy_decoder(tiny_config(arch, false), 7, DType::F32);
        let prefix_tokens = vec![1, 44, 250, 9, 17, 120];
        let prompts = [vec![], vec![77], vec![3, 300, 56, 12, 8]];
        let prefix = Prefix::compute(&decoder, prefix_tokens.clone()).unwrap();
        let stopping = Stopping {
            tokenizer: None,
            eos: &[],
        };
        let with_prefix: Vec<GenJob> = prompts.iter().map(|p| greedy_job(p.clone(), 6)).collect();
        let in_prompt: Vec<GenJob> = prompts
            .iter()
            .map(|p| greedy_job(prefix_tokens.iter().chain(p).copied().collect(), 6))
            .collect();
        let a = generate_batch(&decoder, Some(&prefix), &with_prefix, stopping).unwrap();
        let b = generate_batch(&decoder, None, &in_prompt, stopping).unwrap();
        for (k, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x.tokens, y.tokens, "{arch:?} prompt {k}");
            for (p, q) in x.logprobs.iter().zip(&y.logprobs) {
                assert!(
                    (p - q).abs() < 1e-4,
                    "{arch:?} prompt {k}: logprobs {p} vs {q}"
                );
            }
        }
    }
}

#[test]
fn local_model_prefix_requests_equal_token_level_generation_without_prefix() {
    let dir = model_dir(&tiny_shape(Architecture::Qwen2), 8);
    let model = LocalModel::load(dir.spec(), &LoadOptions::default()).unwrap();
    let tk = model.tokenizer();
    let prefix = "Human: How do I bake bread?\n\nAssistant:";
    let prompts = ["", " Mix flour", " The capital of France is"];
    let requests: Vec<GenerateRequest> = prompts
        .iter()
        .map(|p| GenerateRequest {
            prefix: prefix.into(),
            ..GenerateRequest::new(*p, 8, Sampling::greedy())
        })
        .collect();
    let got = model.generate(&requests).unwrap();
    let prefix_tokens = tk.encode(prefix, tk.add_bos_token()).unwrap();
    let jobs: Vec<GenJob> = prompts
        .iter()
        .map(|p| {
            let prompt = tk.encode(p, false).unwrap();
            greedy_job(prefix_tokens.iter().chain(&prompt).copied().collect(), 8)
        })
        .collect();
    let stopping = Stopping {
        tokenizer: Some(tk),
        eos: tk.eos_ids(),
    };
    let expected = generate_batch(model.decoder(), None, &jobs, stopping).unwrap();
    for ((g, e), job) in got.iter().zip(&expected).zip(&jobs) {
        assert_eq!(g.token_ids, e.tokens);
        for (a, b) in g.token_logprobs.iter().zip(&e.logprobs) {
            assert!((a - b).abs() < 1e-4, "logprobs {a} vs {b}");
        }
        assert_eq!(g.text, e.text);
        assert_eq!(g.finish_reason, e.finish);
        assert_eq!(g.prompt_tokens, job.prompt.len());
    }
}

#[test]
fn positions_beyond_the_context_are_an_error() {
    let decoder = noisy_decoder(tiny_config(Architecture::Llama, false), 9, DType::F32);
    let n = decoder.config().max_position_embeddings + 1;
    let ids = Tensor::zeros((1, n), DType::U32, &Device::Cpu).unwrap();
    let err = decoder
        .forward_hidden(
            &ids,
            &Batch::from_valid(vec![vec![true; n]]),
            None,
            Mode::Infer,
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("position 64") && msg.contains("max_position_embeddings (64)"),
        "{msg}"
    );
}

#[test]
fn half_precision_inference_tracks_f32() {
    for arch in ARCHS {
        let full = noisy_decoder(tiny_config(arch, false), 14, DType::F32);
        let (ids, batch) = left_padded(&token_rows(), full.device());
        let reference = full
            .logits(
                &full
                    .forward_hidden(&ids, &batch, None, Mode::Infer)
                    .unwrap(),
            )
            .unwrap();
        for (dtype, tol) in [(DType::F16, 0.02), (DType::BF16, 0.1)] {
            let half = Decoder::build(full.config().clone(), dtype, full.device(), &mut |spec| {
                let (_, t) = full
                    .params()
                    .into_iter()
                    .find(|(s, _)| s.name == spec.name)
                    .expect("same names");
                Ok(t.to_dtype(dtype)?)
            })
            .unwrap();
            let logits = half
                .logits(
                    &half
                        .forward_hidden(&ids, &batch, None, Mode::Infer)
                        .unwrap(),
                )
                .unwrap();
            assert_eq!(logits.dtype(), dtype);
            let diff = max_abs_diff(&logits, &reference);
            assert!(
                diff < tol,
                "{arch:?} {dtype:?}: logits differ from f32 by {diff}"
            );
        }
    }
}
