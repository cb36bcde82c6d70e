//! LoRA on tiny random models: adapters switched off give the base model exactly, fresh
//! adapters change nothing, merged weights reproduce the adapted model, PEFT files round-trip
//! with PEFT's names and shapes, gradients reach only the adapters, dropout is reproducible,
//! and mistakes are reported clearly.

#[allow(dead_code)]
#[path = "model/common.rs"]
mod common;

use std::collections::BTreeSet;
use std::path::Path;

use cai_model::checkpoint::Checkpoint;
use cai_model::config::Architecture;
use cai_model::decoder::{Batch, Decoder};
use cai_model::lora::{
    adapter_tensors, load_adapter, merge_lora, save_adapter, AdapterUse, LoraConfig,
    ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE,
};
use cai_model::weights::{load_decoder, save_decoder};
use cai_model::ModelError;
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use serde_json::Value;

use common::{full_logits, lm_loss, max_abs_diff, noisy_decoder, tiny_config, token_rows};

const TOKENS: [u32; 9] = [5, 17, 230, 99, 4, 310, 42, 7, 150];

/// Every linear of each architecture, by PEFT target name.
fn all_targets(arch: Architecture) -> Vec<String> {
    let names: &[&str] = match arch {
        Architecture::Gpt2 => &["c_attn", "c_proj", "c_fc"],
        _ => &[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
            "lm_head",
        ],
    };
    names.iter().map(|s| s.to_string()).collect()
}

fn config(targets: Vec<String>, dropout: f64) -> LoraConfig {
    LoraConfig {
        r: 4,
        alpha: 8.0,
        dropout,
        target_modules: targets,
        seed: 9,
    }
}

/// The tiny base model of an architecture (untied, except GPT-2 which always ties).
fn base(arch: Architecture, seed: u64) -> Decoder {
    noisy_decoder(tiny_config(arch, false), seed, DType::F32)
}

/// Give every `lora_B` seeded values in ±0.1, so the adapters change the output.
fn randomise_b(vars: &[(String, Var)], seed: u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for (name, var) in vars.iter().filter(|(n, _)| n.contains(".lora_B.")) {
        let t = var.as_tensor();
        let values: Vec<f32> = (0..t.elem_count())
            .map(|_| rng.random_range(-0.1..0.1))
            .collect();
        var.set(&Tensor::from_vec(values, t.shape(), t.device()).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Full-sequence logits of [`TOKENS`] in training mode (dropout applies).
fn train_logits(decoder: &Decoder) -> Tensor {
    let ids = Tensor::from_vec(TOKENS.to_vec(), (1, TOKENS.len()), &Device::Cpu).unwrap();
    let batch = Batch::from_valid(vec![vec![true; TOKENS.len()]]);
    decoder.forward_train(&ids, &batch).unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn adapters_switched_off_or_fresh_give_the_base_model() {
    for arch in [Architecture::Llama, Architecture::Qwen3, Architecture::Gpt2] {
        let base = base(arch, 1);
        let mut adapted = base.clone();
        let vars = adapted.add_lora(&config(all_targets(arch), 0.1)).unwrap();
        let base_logits = full_logits(&base, &TOKENS);
        // Trainable adapters keep inference off the autograd graph (and on the fast kernels).
        assert!(!full_logits(&adapted, &TOKENS).track_op(), "{arch:?}");
        // B = 0: the update is exactly zero.
        assert_eq!(
            max_abs_diff(&full_logits(&adapted, &TOKENS), &base_logits),
            0.0,
            "{arch:?}"
        );
        randomise_b(&vars, 2);
        assert!(
            max_abs_diff(&full_logits(&adapted, &TOKENS), &base_logits) > 1e-3,
            "{arch:?}: trained adapters must change the output"
        );
        adapted.set_adapters_enabled(false);
        assert!(!adapted.adapters_enabled());
        assert_eq!(
            max_abs_diff(&full_logits(&adapted, &TOKENS), &base_logits),
            0.0,
            "{arch:?}: adapters off, inference"
        );
        assert_eq!(
            max_abs_diff(&train_logits(&adapted), &train_logits(&base)),
            0.0,
            "{arch:?}: adapters off, training mode"
        );
        adapted.set_adapters_enabled(true);
        assert!(max_abs_diff(&full_logits(&adapted, &TOKENS), &base_logits) > 1e-3);
    }
}

#[test]
fn merged_weights_reproduce_the_adapted_model() {
    for arch in [Architecture::Llama, Architecture::Gpt2] {
        let mut adapted = base(arch, 3);
        let vars = adapted.add_lora(&config(all_targets(arch), 0.0)).unwrap();
        randomise_b(&vars, 4);
        let expected = full_logits(&adapted, &TOKENS);
        let merged = merge_lora(&adapted).unwrap();
        assert!(!merged.has_lora());
        assert!(adapted.has_lora(), "merging leaves the original alone");
        assert!(max_abs_diff(&full_logits(&merged, &TOKENS), &expected) < 1e-5);

        // Saved as a plain HF model (Conv1D layout for GPT-2) and loaded back.
        let tmp = tempfile::tempdir().unwrap();
        save_decoder(&merged, tmp.path(), DType::F32).unwrap();
        let ckpt = Checkpoint::open_dir(tmp.path()).unwrap();
        assert!(ckpt.names().iter().all(|n| !n.contains("lora")));
        let reloaded =
            load_decoder(merged.config().clone(), &ckpt, DType::F32, &Device::Cpu).unwrap();
        assert!(
            max_abs_diff(&full_logits(&reloaded, &TOKENS), &expected) < 1e-5,
            "{arch:?}"
        );
    }
}

#[test]
fn merged_weights_reproduce_the_adapted_model_after_prepare_for_inference() {
    let mut adapted = base(Architecture::Llama, 5);
    adapted.prepare_for_inference().unwrap();
    let vars = adapted
        .add_lora(&config(all_targets(Architecture::Llama), 0.0))
        .unwrap();
    randomise_b(&vars, 6);
    let merged = merge_lora(&adapted).unwrap();
    let diff = max_abs_diff(
        &full_logits(&merged, &TOKENS),
        &full_logits(&adapted, &TOKENS),
    );
    assert!(diff < 1e-5, "{diff}");
}

#[test]
fn peft_files_have_peft_names_shapes_and_config_fields() {
    let cases = [
        (
            Architecture::Llama,
            vec!["q_proj".to_string(), "v_proj".to_string()],
            vec![
                ("model.layers.{i}.self_attn.q_proj", 32, 32),
                ("model.layers.{i}.self_attn.v_proj", 32, 16),
            ],
            false,
        ),
        (
            Architecture::Gpt2,
            vec!["c_attn".to_string()],
            vec![("transformer.h.{i}.attn.c_attn", 32, 96)],
            true,
        ),
    ];
    for (arch, targets, modules, fan_in_fan_out) in cases {
        let mut decoder = base(arch, 7);
        let cfg = LoraConfig {
            target_modules: targets.clone(),
            ..LoraConfig::default()
        };
        let vars = decoder.add_lora(&cfg).unwrap();
        let mut expected = Vec::new();
        for i in 0..2 {
            for (module, inp, out) in &modules {
                let path = module.replace("{i}", &i.to_string());
                expected.push((
                    format!("base_model.model.{path}.lora_A.weight"),
                    vec![8, *inp],
                ));
                expected.push((
                    format!("base_model.model.{path}.lora_B.weight"),
                    vec![*out, 8],
                ));
            }
        }
        let returned: Vec<(String, Vec<usize>)> = vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().dims().to_vec()))
            .collect();
        assert_eq!(returned, expected, "{arch:?}");
        for (_, var) in vars.iter().filter(|(n, _)| n.contains("lora_B")) {
            assert_eq!(
                var.as_tensor()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap(),
                0.0
            );
        }

        let tmp = tempfile::tempdir().unwrap();
        save_adapter(&decoder, tmp.path(), &cfg, "org/base-model").unwrap();
        let file = tmp.path().join(ADAPTER_WEIGHTS_FILE);
        let ckpt = Checkpoint::open_files(tmp.path(), std::slice::from_ref(&file)).unwrap();
        let on_disk: BTreeSet<(String, Vec<usize>)> = ckpt
            .names()
            .into_iter()
            .map(|n| (n.to_string(), ckpt.shape(n).unwrap()))
            .collect();
        assert_eq!(on_disk, expected.into_iter().collect(), "{arch:?}");
        let bytes = std::fs::read(&file).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        assert_eq!(header["__metadata__"], serde_json::json!({"format": "pt"}));

        let json = read_json(&tmp.path().join(ADAPTER_CONFIG_FILE));
        assert_eq!(json["peft_type"], "LORA");
        assert_eq!(json["task_type"], "CAUSAL_LM");
        assert_eq!(json["r"], 8);
        assert_eq!(json["lora_alpha"], 16);
        assert_eq!(json["lora_dropout"], 0.05);
        assert_eq!(json["target_modules"], serde_json::json!(targets));
        assert_eq!(json["bias"], "none");
        assert_eq!(json["fan_in_fan_out"], fan_in_fan_out);
        assert_eq!(json["base_model_name_or_path"], "org/base-model");
        assert_eq!(json["inference_mode"], true);
        assert_eq!(json["modules_to_save"], Value::Null);
    }
}

#[test]
fn saved_adapters_load_back_exactly() {
    for arch in [Architecture::Llama, Architecture::Gpt2] {
        let base = base(arch, 8);
        let mut adapted = base.clone();
        let cfg = config(all_targets(arch), 0.1);
        let vars = adapted.add_lora(&cfg).unwrap();
        randomise_b(&vars, 9);
        let tmp = tempfile::tempdir().unwrap();
        save_adapter(&adapted, tmp.path(), &cfg, "base").unwrap();

        let mut inference = base.clone();
        let loaded = load_adapter(&mut inference, tmp.path(), AdapterUse::Inference).unwrap();
        assert!(loaded.vars.is_empty());
        assert_eq!(loaded.config.r, cfg.r);
        assert_eq!(loaded.config.alpha, cfg.alpha);
        assert_eq!(loaded.config.dropout, cfg.dropout);
        assert_eq!(loaded.config.target_modules, cfg.target_modules);
        assert_eq!(loaded.base_model_name_or_path.as_deref(), Some("base"));
        let saved = adapter_tensors(&adapted).unwrap();
        let reread = adapter_tensors(&inference).unwrap();
        assert_eq!(
            saved.keys().collect::<Vec<_>>(),
            reread.keys().collect::<Vec<_>>()
        );
        for (name, t) in &saved {
            assert_eq!(max_abs_diff(t, &reread[name]), 0.0, "{name}");
            assert!(!reread[name].is_variable(), "{name}");
        }
        assert_eq!(
            max_abs_diff(
                &full_logits(&inference, &TOKENS),
                &full_logits(&adapted, &TOKENS)
            ),
            0.0,
            "{arch:?}"
        );

        let mut training = base.clone();
        let loaded = load_adapter(&mut training, tmp.path(), AdapterUse::Training).unwrap();
        let names: Vec<&String> = loaded.vars.iter().map(|(n, _)| n).collect();
        let expected: Vec<&String> = vars.iter().map(|(n, _)| n).collect();
        assert_eq!(names, expected);
        assert!(loaded.vars.iter().all(|(_, v)| v.as_tensor().is_variable()));
        // Same dropout seed, same masks: a resumed run sees the same training forward.
        adapted.set_dropout_seed(5);
        training.set_dropout_seed(5);
        assert_eq!(
            max_abs_diff(&train_logits(&training), &train_logits(&adapted)),
            0.0
        );
    }
}

#[test]
fn gradients_reach_the_adapters_and_never_the_frozen_base() {
    for arch in [Architecture::Llama, Architecture::Gpt2] {
        let mut decoder = base(arch, 10);
        let vars = decoder.add_lora(&config(all_targets(arch), 0.1)).unwrap();
        let grad_max = |grads: &candle_core::backprop::GradStore, var: &Var| -> f32 {
            grads
                .get(var.as_tensor())
                .map(|g| g.abs().unwrap().max_all().unwrap().to_scalar().unwrap())
                .unwrap_or(f32::NAN)
        };
        // Fresh adapters: B = 0, so B gets a gradient and A exactly none (as in PEFT).
        let grads = lm_loss(&decoder, &token_rows()).backward().unwrap();
        for (name, var) in &vars {
            let g = grad_max(&grads, var);
            if name.contains("lora_B") {
                assert!(g > 0.0 && g.is_finite(), "{arch:?} {name}: {g}");
            } else {
                assert_eq!(g, 0.0, "{arch:?} {name}");
            }
        }
        randomise_b(&vars, 11);
        let grads = lm_loss(&decoder, &token_rows()).backward().unwrap();
        for (name, var) in &vars {
            let g = grad_max(&grads, var);
            assert!(g > 0.0 && g.is_finite(), "{arch:?} {name}: {g}");
        }
        for (spec, t) in decoder.params() {
            assert!(!t.is_variable(), "{} became trainable", spec.name);
            assert!(grads.get(&t).is_none(), "{} got a gradient", spec.name);
        }
    }
}

#[test]
fn dropout_masks_follow_the_dropout_seed() {
    let mut decoder = base(Architecture::Llama, 12);
    let vars = decoder
        .add_lora(&config(all_targets(Architecture::Llama), 0.5))
        .unwrap();
    randomise_b(&vars, 13);
    decoder.set_dropout_seed(100);
    let first = train_logits(&decoder);
    assert_eq!(max_abs_diff(&first, &train_logits(&decoder)), 0.0);
    decoder.set_dropout_seed(101);
    let other = train_logits(&decoder);
    assert!(max_abs_diff(&first, &other) > 1e-4);
    decoder.set_dropout_seed(100);
    assert_eq!(max_abs_diff(&first, &train_logits(&decoder)), 0.0);
    // Inference never drops.
    let infer = full_logits(&decoder, &TOKENS);
    decoder.set_dropout_seed(101);
    assert_eq!(max_abs_diff(&infer, &full_logits(&decoder, &TOKENS)), 0.0);
}

fn request_message(result: cai_model::Result<Vec<(String, Var)>>) -> String {
    match result {
        Err(ModelError::Request(m)) => m,
        other => panic!("expected a request error, got {other:?}"),
    }
}

#[test]
fn unknown_or_impossible_targets_are_errors_that_say_what_exists() {
    let mut llama = base(Architecture::Llama, 14);
    let message = request_message(llama.add_lora(&config(vec!["c_attn".into()], 0.0)));
    assert!(message.contains("'c_attn'"), "{message}");
    assert!(
        message.contains("q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head"),
        "{message}"
    );
    assert!(!llama.has_lora());

    let mut gpt2 = base(Architecture::Gpt2, 15);
    let message = request_message(gpt2.add_lora(&config(vec!["q_proj".into()], 0.0)));
    assert!(message.contains("c_attn, c_proj, c_fc"), "{message}");
    let message = request_message(gpt2.add_lora(&config(vec!["lm_head".into()], 0.0)));
    assert!(message.contains("tie_word_embeddings"), "{message}");

    llama.add_lora(&config(vec!["q_proj".into()], 0.0)).unwrap();
    let message = request_message(llama.add_lora(&config(vec!["v_proj".into()], 0.0)));
    assert!(message.contains("already has LoRA adapters"), "{message}");
}

#[test]
fn adapter_files_that_do_not_fit_the_model_are_errors_naming_file_and_tensor() {
    let mut llama = base(Architecture::Llama, 16);
    let cfg = config(vec!["q_proj".into()], 0.0);
    llama.add_lora(&cfg).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    save_adapter(&llama, tmp.path(), &cfg, "base").unwrap();
    let weights = tmp.path().join(ADAPTER_WEIGHTS_FILE);

    // Another architecture's modules.
    let err = load_adapter(
        &mut base(Architecture::Gpt2, 17),
        tmp.path(),
        AdapterUse::Inference,
    )
    .unwrap_err();
    assert!(
        matches!(&err, ModelError::Config { path, message }
            if path == &weights && message.contains("model.layers.0.self_attn.q_proj.lora_A.weight")),
        "{err}"
    );

    // A rank that disagrees with adapter_config.json.
    let config_path = tmp.path().join(ADAPTER_CONFIG_FILE);
    let mut json = read_json(&config_path);
    json["r"] = 2.into();
    std::fs::write(&config_path, json.to_string()).unwrap();
    let err = load_adapter(
        &mut base(Architecture::Llama, 16),
        tmp.path(),
        AdapterUse::Inference,
    )
    .unwrap_err();
    assert!(
        matches!(&err, ModelError::ShapeMismatch { path, name, expected, found }
            if path == &weights && name.ends_with("q_proj.lora_A.weight")
                && expected == &[2, 32] && found == &[4, 32]),
        "{err}"
    );

    // lora_A without its lora_B.
    json["r"] = 4.into();
    std::fs::write(&config_path, json.to_string()).unwrap();
    let tensors: std::collections::BTreeMap<String, Tensor> = adapter_tensors(&llama)
        .unwrap()
        .into_iter()
        .filter(|(n, _)| !n.contains("layers.1.self_attn.q_proj.lora_B"))
        .collect();
    cai_model::checkpoint::save_safetensors(&tensors, &weights).unwrap();
    let mut target = base(Architecture::Llama, 16);
    let err = load_adapter(&mut target, tmp.path(), AdapterUse::Inference).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingTensor { path, name }
            if path == &weights
                && name == "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"),
        "{err}"
    );
    assert!(!target.has_lora(), "a failed load installs nothing");
    assert!(adapter_tensors(&target).unwrap().is_empty());

    // A PEFT feature cai does not implement.
    json["use_dora"] = true.into();
    std::fs::write(&config_path, json.to_string()).unwrap();
    let err = load_adapter(
        &mut base(Architecture::Llama, 16),
        tmp.path(),
        AdapterUse::Inference,
    )
    .unwrap_err();
    assert!(
        matches!(&err, ModelError::Config { path, message }
            if path == &config_path && message.contains("use_dora")),
        "{err}"
    );
}
