//! Parity of cai's GGUF loading with transformers on a real model (opt-in: set
//! `CAI_REAL_DIR` to the folder holding `SmolLM2-135M-Instruct.Q4_1.gguf` and the reference
//! the `gguf_reference*.json` files that `scripts/gguf_parity.py` writes; skipped without them).
//! Checks the tokenizer on a varied text set, the chat template, greedy generations of
//! chat prompts token for token, their log-probabilities, and a ~2k-token prompt's.

use std::path::{Path, PathBuf};

use cai_core::dialogue::Message;
use cai_core::Sampling;
use cai_model::generate::{generate_batch, GenJob, Stopping};
use cai_model::score::{score_batch, ScoreJob};
use cai_model::tokenizer::DialogueFormat;
use candle_core::{DType, Device};
use serde_json::Value;

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const REFERENCE_STEM: &str = "gguf_reference";
/// Largest allowed |log p(cai) − log p(transformers)| per token.
const LOGPROB_TOLERANCE: f64 = 1e-4;

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The model and its reference files (`gguf_reference*.json`: the script's default run and
/// any longer one), or `None` (with a note) when the test is not opted into.
fn real_files() -> Option<(PathBuf, Vec<PathBuf>)> {
    let dir = PathBuf::from(std::env::var_os("CAI_REAL_DIR")?);
    let model = dir.join(MODEL);
    let mut references: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(REFERENCE_STEM) && n.ends_with(".json"))
        })
        .collect();
    references.sort();
    if !model.is_file() || references.is_empty() {
        eprintln!(
            "skipped: {} or {}/{REFERENCE_STEM}*.json is missing (run \
             ../shared/real/get-smollm2.sh and scripts/gguf_parity.py)",
            model.display(),
            dir.display()
        );
        return None;
    }
    Some((model, references))
}

#[test]
fn smollm2_gguf_matches_transformers() {
    let Some((model_path, references)) = real_files() else {
        return;
    };
    for reference in references {
        println!("reference {}", reference.display());
        check(&model_path, &reference);
    }
}

/// Compare cai on `model_path` with one reference file of `scripts/gguf_parity.py`.
fn check(model_path: &Path, reference: &Path) {
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(reference).unwrap()).unwrap();
    let started = std::time::Instant::now();
    let model = cai_model::gguf::load(model_path, DType::F32, &Device::Cpu).unwrap();
    let (mut decoder, tok) = (model.decoder, model.tokenizer);
    decoder.prepare_for_inference().unwrap();
    println!(
        "loaded {} in {:.1?}",
        model_path.display(),
        started.elapsed()
    );
    assert_eq!(decoder.config().max_position_embeddings, 8192);

    // Tokenizer: llama.cpp's pre-tokenizer for the file's type, text by text.
    let texts = reference["texts"].as_array().unwrap();
    let mut same_as_transformers = 0;
    for t in texts {
        let text = t["text"].as_str().unwrap();
        let ours = tok.encode(text, false).unwrap();
        assert_eq!(ours, ids(&t["llama_cpp_pre"]), "ids of {text:?}");
        assert_eq!(
            tok.decode(&ours).unwrap(),
            text.replace("<|im_start|>", "").replace("<|im_end|>", "")
        );
        if ours == ids(&t["transformers"]) {
            same_as_transformers += 1;
        } else {
            println!("differs from transformers' GGUF tokenizer (digits): {text:?}");
        }
    }
    println!(
        "tokenizer: {}/{} texts equal to llama.cpp's pre-tokenizer, {same_as_transformers}/{} \
         to transformers' GGUF tokenizer",
        texts.len(),
        texts.len(),
        texts.len()
    );

    // Chat prompts: template, then greedy generation from transformers' prompt ids.
    let chats = reference["chats"].as_array().unwrap();
    let mut jobs = Vec::new();
    for chat in chats {
        let user = chat["messages"][0]["content"].as_str().unwrap();
        let rendered = tok
            .render_dialogue(&[Message::user(user)], true, DialogueFormat::ChatTemplate)
            .unwrap();
        assert_eq!(rendered, chat["rendered"].as_str().unwrap());
        let prompt = ids(&chat["prompt_ids"]);
        let ours = tok.encode(&rendered, tok.add_bos_token()).unwrap();
        if ours != prompt {
            println!("prompt ids differ from transformers' (digits) for {user:?}");
        }
        jobs.push(GenJob {
            prompt,
            max_new_tokens: 64,
            sampling: Sampling::greedy(),
            stop: Vec::new(),
            seed: 0,
            top_logprobs: 0,
            ignore_eos: false,
            format: cai_core::OutputFormat::Text,
        });
    }
    let started = std::time::Instant::now();
    let stopping = Stopping {
        tokenizer: Some(&tok),
        eos: tok.eos_ids(),
    };
    let outs = generate_batch(&decoder, None, &jobs, stopping).unwrap();
    println!(
        "generated {} chats × ≤64 tokens in {:.1?}",
        jobs.len(),
        started.elapsed()
    );
    let mut worst: f64 = 0.0;
    let mut identical = 0;
    for ((chat, job), out) in chats.iter().zip(&jobs).zip(&outs) {
        let want = ids(&chat["generated"]);
        assert_eq!(
            out.tokens, want,
            "greedy tokens of {:?}",
            chat["messages"][0]["content"]
        );
        identical += 1;
        let scored = score_batch(
            &decoder,
            None,
            &[ScoreJob {
                prompt: job.prompt.clone(),
                continuation: want,
                top_k: 0,
            }],
        )
        .unwrap();
        for (a, b) in scored[0].logprobs.iter().zip(floats(&chat["logprobs"])) {
            worst = worst.max((*a as f64 - b).abs());
        }
        for (a, b) in out.logprobs.iter().zip(floats(&chat["logprobs"])) {
            worst = worst.max((*a as f64 - b).abs());
        }
    }
    println!(
        "chats: {identical}/{} greedy generations identical; max |Δ log p| = {worst:.2e}",
        chats.len()
    );
    assert!(worst < LOGPROB_TOLERANCE, "max |Δ log p| {worst}");

    // A long real prompt: every token's log-probability.
    let long = &reference["long"];
    let long_ids = ids(&long["ids"]);
    assert_eq!(
        tok.encode(long["text"].as_str().unwrap(), false).unwrap(),
        long_ids
    );
    let started = std::time::Instant::now();
    let scored = score_batch(
        &decoder,
        None,
        &[ScoreJob {
            prompt: long_ids[..1].to_vec(),
            continuation: long_ids[1..].to_vec(),
            top_k: 0,
        }],
    )
    .unwrap();
    // transformers rounds each rotary angle (position × frequency) to f32, cai does not:
    // past a few hundred positions that rounding alone moves log-probs by up to ~5e-4, so
    // the strict comparison is with transformers run on f64 angles (the script's second run).
    let ours = &scored[0].logprobs;
    let worst_over = |key: &str, positions: std::ops::Range<usize>| {
        let want = floats(&long[key]);
        assert_eq!(ours.len(), want.len());
        ours[positions.clone()]
            .iter()
            .zip(&want[positions])
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max)
    };
    let n = ours.len();
    let exact_rope = worst_over("logprobs_f64_rope", 0..n);
    let early = worst_over("logprobs", 0..512);
    let all = worst_over("logprobs", 0..n);
    println!(
        "long prompt: {} tokens scored in {:.1?}; max |Δ log p| vs transformers with f64 \
         rotary angles = {exact_rope:.2e}; vs transformers as is: {early:.2e} over the first \
         512 positions, {all:.2e} over all",
        long_ids.len(),
        started.elapsed()
    );
    assert!(
        exact_rope < LOGPROB_TOLERANCE,
        "long prompt: max |Δ log p| {exact_rope}"
    );
    assert!(
        early < LOGPROB_TOLERANCE,
        "long prompt, first 512: max |Δ log p| {early}"
    );

    // Greedy tokens after the long prompt: prefill, then the KV cache's decode steps.
    let job = GenJob {
        prompt: long_ids.clone(),
        max_new_tokens: 16,
        ignore_eos: true,
        ..jobs[0].clone()
    };
    let started = std::time::Instant::now();
    let out = generate_batch(&decoder, None, &[job], stopping)
        .unwrap()
        .remove(0);
    let want = ids(&long["generated_f64_rope"]);
    assert_eq!(
        out.tokens[..want.len()],
        want[..],
        "tokens after the long prompt"
    );
    let worst = out
        .logprobs
        .iter()
        .zip(floats(&long["generated_logprobs_f64_rope"]))
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    println!(
        "after the long prompt: {} greedy tokens identical ({} transformers' as is), \
         generated in {:.1?}; max |Δ log p| vs f64 rotary angles = {worst:.2e}",
        want.len(),
        if ids(&long["generated"]) == want {
            "equal to"
        } else {
            "unlike"
        },
        started.elapsed()
    );
    assert!(
        worst < LOGPROB_TOLERANCE,
        "after the long prompt: max |Δ log p| {worst}"
    );
}
