//! Generation features through `LanguageModel::generate`: stop strings, token budgets,
//! end-of-sequence, per-request seeds independent of the batch, and context-length errors.

use cai_core::{FinishReason, GenerateRequest, LanguageModel, Sampling, ScoreRequest};
use cai_model::config::Architecture;
use cai_model::decoder::Decoder;
use cai_model::local::{LoadOptions, LocalModel};
use cai_model::weights::save_decoder;
use candle_core::DType;

use crate::common::{model_dir, noisy_decoder, tiny_shape};

const PROMPT: &str =
    "The assistant should be helpful, honest and harmless. Human: What is the capital of France?";

fn load(arch: Architecture, seed: u64) -> (crate::common::ModelDir, LocalModel) {
    let dir = model_dir(&tiny_shape(arch), seed);
    let model = LocalModel::load(dir.spec(), &LoadOptions::default()).unwrap();
    (dir, model)
}

#[test]
fn stop_strings_cut_the_text_before_the_stop() {
    let (_dir, model) = load(Architecture::Llama, 50);
    let free = model
        .generate(&[GenerateRequest::new(PROMPT, 12, Sampling::greedy())])
        .unwrap()
        .remove(0);
    assert_eq!(free.finish_reason, FinishReason::Length);
    assert_eq!(free.token_ids.len(), 12);
    // A stop string the model is known to produce: a later generated token's text that
    // first occurs after the start of the text.
    let stop = free.token_ids[2..]
        .iter()
        .filter_map(|&t| model.tokenizer().decode(&[t]).ok())
        .find(|s| {
            !s.trim().is_empty()
                && s.is_ascii()
                && free.text.find(s.as_str()).is_some_and(|i| i > 0)
        })
        .expect("an ASCII token to stop on");
    let request = GenerateRequest {
        stop: vec!["@@never@@".into(), stop.clone()],
        ..GenerateRequest::new(PROMPT, 12, Sampling::greedy())
    };
    let stopped = model.generate(&[request]).unwrap().remove(0);
    assert_eq!(
        stopped.finish_reason,
        FinishReason::Stop,
        "stop {stop:?} in {:?}",
        free.text
    );
    assert_eq!(
        stopped.text,
        &free.text[..free.text.find(stop.as_str()).unwrap()]
    );
    assert!(!stopped.text.contains(stop.as_str()));
    assert!(stopped.token_ids.len() < free.token_ids.len());
    assert_eq!(stopped.token_ids, free.token_ids[..stopped.token_ids.len()]);
    assert_eq!(stopped.token_logprobs.len(), stopped.token_ids.len());
}

#[test]
fn max_new_tokens_ends_with_length() {
    let (_dir, model) = load(Architecture::Qwen2, 51);
    for (n, sampling) in [
        (1, Sampling::greedy()),
        (9, Sampling::greedy()),
        (9, Sampling::default()),
    ] {
        let out = model
            .generate(&[GenerateRequest::new(PROMPT, n, sampling)])
            .unwrap()
            .remove(0);
        assert_eq!(
            (out.token_ids.len(), out.finish_reason),
            (n, FinishReason::Length),
            "{sampling:?}"
        );
        assert_eq!(out.token_logprobs.len(), n);
        assert!(out
            .token_logprobs
            .iter()
            .all(|&lp| lp < 0.0 && lp.is_finite()));
        assert_eq!(out.text, model.tokenizer().decode(&out.token_ids).unwrap());
    }
    let none = model
        .generate(&[GenerateRequest::new(PROMPT, 0, Sampling::greedy())])
        .unwrap()
        .remove(0);
    assert_eq!(
        (none.token_ids.len(), none.finish_reason, none.text.as_str()),
        (0, FinishReason::Length, "")
    );
}

#[test]
fn end_of_sequence_ends_with_eos_and_is_left_out_of_the_text() {
    // A zero output matrix makes every logit equal; greedy takes the first maximum, id 0,
    // which is the trained tokenizer's `<|endoftext|>`.
    let dir = model_dir(&tiny_shape(Architecture::Llama), 52);
    let mut decoder: Decoder = noisy_decoder(dir.config.clone(), 52, DType::F32);
    decoder
        .visit_params(&mut |spec, t| {
            if spec.name == "lm_head.weight" {
                *t = t.zeros_like()?;
            }
            Ok(())
        })
        .unwrap();
    save_decoder(&decoder, &dir.path, DType::F32).unwrap();
    let model = LocalModel::load(dir.spec(), &LoadOptions::default()).unwrap();
    assert_eq!(model.tokenizer().eos_ids(), &[0]);
    let out = model
        .generate(&[GenerateRequest::new(PROMPT, 5, Sampling::greedy())])
        .unwrap()
        .remove(0);
    assert_eq!(out.finish_reason, FinishReason::Eos);
    assert_eq!(out.token_ids, vec![0]);
    assert_eq!(out.text, "");
}

#[test]
fn a_seed_gives_the_same_sample_whatever_the_batch() {
    for arch in [Architecture::Llama, Architecture::Gpt2] {
        let (_dir, model) = load(arch, 53);
        let request = |prompt: &str, seed: u64| GenerateRequest {
            seed,
            ..GenerateRequest::new(prompt, 10, Sampling::default())
        };
        let target = request("Human: How do I bake bread?", 7);
        let alone = model
            .generate(std::slice::from_ref(&target))
            .unwrap()
            .remove(0);
        // Other prompts of other lengths, with other seeds, around it; and itself twice.
        let batch = [
            request("Paris", 1),
            target.clone(),
            request(PROMPT, 3),
            target.clone(),
        ];
        let together = model.generate(&batch).unwrap();
        assert_eq!(together[1].token_ids, alone.token_ids, "{arch:?}");
        assert_eq!(together[3].token_ids, alone.token_ids, "{arch:?}");
        // Sampling is random: other seeds give other samples.
        let others: Vec<Vec<u32>> = (100..104)
            .map(|seed| {
                model
                    .generate(&[request(&target.prompt, seed)])
                    .unwrap()
                    .remove(0)
                    .token_ids
            })
            .collect();
        assert!(
            others.iter().any(|o| *o != alone.token_ids),
            "{arch:?}: seeds change the sample"
        );
        // And it is not greedy decoding in disguise.
        let greedy = model
            .generate(&[GenerateRequest::new(
                target.prompt.clone(),
                10,
                Sampling::greedy(),
            )])
            .unwrap();
        assert!(others
            .iter()
            .chain([&alone.token_ids])
            .any(|o| *o != greedy[0].token_ids));
    }
}

#[test]
fn a_budget_beyond_the_context_is_cut_to_the_room_left_and_a_full_prompt_is_an_error() {
    let (dir, model) = load(Architecture::Mistral, 54);
    let context = dir.config.max_position_embeddings;
    let tk = model.tokenizer();
    let long = PROMPT.to_string() + " The capital of France is Paris.";
    let len = |p: &str| tk.encode(p, tk.add_bos_token()).unwrap().len();
    let fits = |p: &str| GenerateRequest::new(p, context - len(p), Sampling::greedy());

    // Asking for more than the room left generates at most the room left.
    let too_long = GenerateRequest::new(long.clone(), context, Sampling::greedy());
    let out = model.generate(&[too_long]).unwrap().remove(0);
    let room = context - len(&long);
    assert!(
        out.token_ids.len() <= room,
        "{} > {room}",
        out.token_ids.len()
    );
    if out.finish_reason == cai_core::FinishReason::Length {
        assert_eq!(out.token_ids.len(), room);
    }
    // A prompt that fills the context leaves nothing to generate: an error.
    let full = "Paris ".repeat(context);
    let err = model
        .generate(&[GenerateRequest::new(full, 4, Sampling::greedy())])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no room to generate") && err.contains(&format!("context of {context}")),
        "{err}"
    );

    // Each request that fits alone also fits in a batch with others.
    let (a, b) = (fits(&long), fits("Paris"));
    let alone: Vec<_> = [&a, &b]
        .iter()
        .map(|r| model.generate(std::slice::from_ref(*r)).unwrap().remove(0))
        .collect();
    let together = model.generate(&[a, b]).unwrap();
    for (t, a) in together.iter().zip(&alone) {
        assert_eq!(t.token_ids, a.token_ids);
    }

    let continuation = "x".repeat(context);
    let err = model
        .score(&[ScoreRequest::new("Paris", continuation)])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exceed") && err.contains(&format!("context of {context}")),
        "{err}"
    );
}

/// `OutputFormat::JsonObject`: whatever the model would say, every row's text is a valid
/// start of one JSON object; a row that stops (finish `Stop`) holds a whole object that
/// parses, and nothing after it; the same seed gives the same text.
#[test]
fn json_output_is_always_a_json_object_or_its_start() {
    let (_dir, model) = load(Architecture::Llama, 51);
    let requests: Vec<GenerateRequest> = (0..24)
        .map(|seed| GenerateRequest {
            seed,
            format: cai_core::OutputFormat::JsonObject,
            ..GenerateRequest::new(PROMPT, 96, Sampling::default())
        })
        .collect();
    let outputs = model.generate(&requests).unwrap();
    let mut whole = 0;
    for (request, out) in requests.iter().zip(&outputs) {
        let verdict = cai_model::json_prefix::check(&out.text);
        assert_ne!(
            verdict,
            cai_model::json_prefix::JsonPrefix::Invalid,
            "seed {}: {:?}",
            request.seed,
            out.text
        );
        match out.finish_reason {
            FinishReason::Stop => {
                let value: serde_json::Value = serde_json::from_str(&out.text)
                    .unwrap_or_else(|e| panic!("{e}: {:?}", out.text));
                assert!(value.is_object(), "{:?}", out.text);
                assert!(out.text.trim_end().ends_with('}'), "{:?}", out.text);
                whole += 1;
            }
            reason => assert_eq!(reason, FinishReason::Length, "{:?}", out.text),
        }
    }
    eprintln!("{whole} of {} rows made a whole object", outputs.len());
    assert!(whole > 0, "no row finished an object in 96 tokens");
    let again = model.generate(&requests[..3]).unwrap();
    for (a, b) in again.iter().zip(&outputs) {
        assert_eq!(a.text, b.text);
    }
}
