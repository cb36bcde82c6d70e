//! Bad input gives typed errors whose messages name the file, field or tensor at fault and
//! what was expected.

use std::collections::BTreeMap;
use std::path::Path;

use cai_model::checkpoint::{save_safetensors, Checkpoint, SINGLE_FILE};
use cai_model::config::{Architecture, ModelConfig, SUPPORTED_MODEL_TYPES};
use cai_model::init::{init_model, ModelShape, TokenizerSource};
use cai_model::local::{LoadOptions, LocalModel};
use cai_model::tokenizer::Tokenizer;
use cai_model::ModelError;
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::common::{model_dir, tiny_shape, write_corpus, ModelDir};

fn load_err(dir: &Path) -> ModelError {
    LocalModel::load(dir.to_str().unwrap(), &LoadOptions::default())
        .err()
        .expect("loading should fail")
}

/// Rewrite the model's `config.json` after `edit`ing it.
pub fn edit_config(dir: &ModelDir, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let path = dir.path.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(config.as_object_mut().unwrap());
    std::fs::write(&path, config.to_string()).unwrap();
}

/// Rewrite the model's safetensors file after `edit`ing its tensors.
pub fn edit_tensors(dir: &ModelDir, edit: impl FnOnce(&mut BTreeMap<String, Tensor>)) {
    let path = dir.path.join(SINGLE_FILE);
    let mut tensors: BTreeMap<String, Tensor> = candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .collect();
    edit(&mut tensors);
    save_safetensors(&tensors, &path).unwrap();
}

#[test]
fn unknown_model_type_lists_the_supported_ones() {
    let dir = model_dir(&tiny_shape(Architecture::Llama), 40);
    edit_config(&dir, |c| {
        c.insert("model_type".into(), "bert".into());
    });
    let err = load_err(&dir.path);
    assert!(
        matches!(err, ModelError::UnsupportedArchitecture { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("config.json") && msg.contains("'bert'"),
        "{msg}"
    );
    for supported in SUPPORTED_MODEL_TYPES {
        assert!(msg.contains(supported), "{msg} lists {supported}");
    }
}

#[test]
fn a_missing_config_field_is_named() {
    let dir = model_dir(&tiny_shape(Architecture::Qwen3), 41);
    edit_config(&dir, |c| {
        c.remove("num_hidden_layers");
    });
    let err = load_err(&dir.path);
    assert!(matches!(err, ModelError::Config { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("config.json") && msg.contains("num_hidden_layers"),
        "{msg}"
    );

    let err = ModelConfig::from_json(&serde_json::json!({"vocab_size": 10}), Path::new("c.json"))
        .unwrap_err();
    assert!(err.to_string().contains("model_type"), "{err}");
}

#[test]
fn heads_that_do_not_divide_the_width_are_rejected() {
    let gpt2 = serde_json::json!({"model_type": "gpt2", "vocab_size": 300, "n_embd": 30, "n_layer": 1, "n_head": 4});
    let err = ModelConfig::from_json(&gpt2, Path::new("gpt2/config.json")).unwrap_err();
    assert!(matches!(err, ModelError::Config { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("gpt2/config.json")
            && msg.contains("n_embd (30)")
            && msg.contains("n_head (4)"),
        "{msg}"
    );

    let llama = serde_json::json!({
        "model_type": "llama", "vocab_size": 300, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 3,
    });
    let msg = ModelConfig::from_json(&llama, Path::new("config.json"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("num_attention_heads (4)") && msg.contains("num_key_value_heads (3)"),
        "{msg}"
    );

    let shape = ModelShape {
        hidden_size: 30,
        num_heads: 4,
        ..tiny_shape(Architecture::Llama)
    };
    let msg = shape.config().unwrap_err().to_string();
    assert!(msg.contains("30") && msg.contains("4 heads"), "{msg}");
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = model_dir(&tiny_shape(Architecture::Llama), 42);
    let name = "model.layers.1.mlp.up_proj.weight";
    edit_tensors(&dir, |t| {
        t.remove(name).expect("present");
    });
    let err = load_err(&dir.path);
    assert!(
        matches!(&err, ModelError::MissingTensor { name: n, .. } if n == name),
        "{err:?}"
    );
    assert!(err.to_string().contains(name), "{err}");
}

#[test]
fn a_wrong_shape_names_tensor_expected_and_found() {
    let dir = model_dir(&tiny_shape(Architecture::Mistral), 43);
    let name = "model.layers.0.self_attn.k_proj.weight";
    edit_tensors(&dir, |t| {
        t.insert(
            name.into(),
            Tensor::zeros((8, 32), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let err = load_err(&dir.path);
    assert!(matches!(err, ModelError::ShapeMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(name) && msg.contains("[16, 32]") && msg.contains("[8, 32]"),
        "{msg}"
    );
    assert!(msg.contains(SINGLE_FILE), "{msg}");
}

#[test]
fn truncated_and_corrupt_safetensors_name_the_file() {
    let dir = model_dir(&tiny_shape(Architecture::Gpt2), 44);
    let path = dir.path.join(SINGLE_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let garbage = b"this is not a safetensors file, only some text".repeat(20);
    for (what, content) in [
        ("truncated", &bytes[..bytes.len() / 2]),
        ("garbage", &garbage[..]),
        ("empty", &[][..]),
    ] {
        std::fs::write(&path, content).unwrap();
        let err = load_err(&dir.path);
        assert!(
            matches!(&err, ModelError::Safetensors { path: p, .. } if p == &path),
            "{what}: {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains("not a valid safetensors"),
            "{what}: {msg}"
        );
        let direct = Checkpoint::open_dir(&dir.path).unwrap_err();
        assert!(
            matches!(direct, ModelError::Safetensors { .. }),
            "{what}: {direct:?}"
        );
    }
}

#[test]
fn a_tokenizer_larger_than_the_vocabulary_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write_corpus(tmp.path());
    let big = Tokenizer::train_bpe(&corpus, 384).unwrap();
    assert!(big.vocab_size() > 260, "{}", big.vocab_size());
    let small = ModelShape {
        vocab_size: 260,
        ..tiny_shape(Architecture::Llama)
    };
    let err = init_model(
        &small,
        TokenizerSource::Loaded(Box::new(big.clone())),
        1,
        DType::F32,
        &tmp.path().join("x"),
    )
    .unwrap_err();
    assert!(matches!(err, ModelError::Tokenizer { .. }), "{err:?}");
    assert!(err.to_string().contains("vocab_size is 260"), "{err}");

    // A model directory whose tokenizer.json was swapped for a larger one.
    let dir = tmp.path().join("model");
    init_model(&small, TokenizerSource::Train(corpus), 1, DType::F32, &dir).unwrap();
    big.save(&dir).unwrap();
    let err = load_err(&dir);
    assert!(matches!(err, ModelError::Tokenizer { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("tokenizer has {} tokens", big.vocab_size()))
            && msg.contains("vocab_size is 260"),
        "{msg}"
    );
}

#[test]
fn a_missing_model_is_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    let absent = tmp.path().join("no-such-model");
    let err = load_err(&absent);
    assert!(matches!(err, ModelError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-model"), "{err}");
    // A bare name is looked up in the cache only; its message reads as one sentence.
    let err = load_err(std::path::Path::new("no-such-model-anywhere"));
    assert!(matches!(err, ModelError::NotFound { .. }), "{err:?}");
    assert!(!err.to_string().contains("  "), "a run of spaces: {err}");

    // A directory without weights.
    let err = Checkpoint::open_dir(tmp.path()).unwrap_err();
    assert!(matches!(err, ModelError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains(SINGLE_FILE), "{err}");

    // A directory without config.json names the file.
    let err = load_err(tmp.path());
    assert!(err.to_string().contains("config.json"), "{err}");
}
