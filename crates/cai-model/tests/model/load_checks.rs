//! What loading and creating a model checks before it trusts the files: config.json's
//! numbers (every field named), memory before any large allocation (tables sized to what a
//! run uses, not the declared maximum), and each tensor's dtype and finiteness.

use std::path::Path;

use cai_core::{GenerateRequest, LanguageModel, Sampling};
use cai_model::checkpoint::SINGLE_FILE;
use cai_model::config::{Architecture, ModelConfig};
use cai_model::init::{init_model, ModelShape, TokenizerSource};
use cai_model::local::{LoadOptions, LocalModel};
use cai_model::ModelError;
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};

use crate::common::{model_dir, tiny_shape, write_corpus};
use crate::errors::{edit_config, edit_tensors};

fn load(dir: &Path, dtype: Option<DType>) -> cai_model::Result<LocalModel> {
    LocalModel::load(
        dir.to_str().unwrap(),
        &LoadOptions {
            device: Device::Cpu,
            dtype,
        },
    )
}

/// A small valid llama `config.json` with `edit` applied.
fn llama_json(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut v = json!({
        "model_type": "llama", "vocab_size": 300, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 64,
    });
    edit(v.as_object_mut().unwrap());
    v
}

/// The message of reading `value` as a config at `path`, which must fail with a config error.
fn config_error(value: &Value, path: &str) -> String {
    let err = ModelConfig::from_json(value, Path::new(path)).unwrap_err();
    assert!(matches!(err, ModelError::Config { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with(path), "{msg}");
    msg
}

#[test]
fn a_huge_declared_context_loads_and_generates() {
    // The RoPE table was built for every declared position: 1e12 positions aborted the
    // process on a 32 TB allocation. Tables now cover the positions a run reaches.
    let dir = model_dir(&tiny_shape(Architecture::Llama), 60);
    edit_config(&dir, |c| {
        c.insert(
            "max_position_embeddings".into(),
            json!(1_000_000_000_000u64),
        );
    });
    let model = load(&dir.path, None).unwrap();
    assert_eq!(
        model.decoder().config().max_position_embeddings,
        1_000_000_000_000
    );
    let out = model
        .generate(&[GenerateRequest::new(
            "Human: What is the capital of France?",
            6,
            Sampling::greedy(),
        )])
        .unwrap();
    assert_eq!(out[0].token_ids.len(), 6);
}

#[test]
fn a_model_larger_than_memory_is_refused_before_allocating() {
    // hidden 100000 × 100 layers: 4e12 parameters. Refused with the sizes, not an abort.
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write_corpus(tmp.path());
    let shape = ModelShape {
        hidden_size: 100_000,
        num_layers: 100,
        ..tiny_shape(Architecture::Llama)
    };
    let out = tmp.path().join("big");
    let err = init_model(&shape, TokenizerSource::Train(corpus), 1, DType::F32, &out).unwrap_err();
    assert!(matches!(err, ModelError::Memory { .. }), "{err:?}");
    let msg = err.to_string();
    for part in [
        "hidden_size 100000",
        "num_hidden_layers 100",
        "GB",
        "available",
    ] {
        assert!(msg.contains(part), "{part:?} in {msg}");
    }
    assert!(!out.exists(), "nothing is written");

    // The same check when a config.json asks for more than memory holds.
    let dir = model_dir(&tiny_shape(Architecture::Llama), 61);
    edit_config(&dir, |c| {
        c.insert("vocab_size".into(), json!(4_000_000_000u64));
    });
    let err = load(&dir.path, None).err().expect("too large");
    assert!(matches!(err, ModelError::Memory { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("config.json") && msg.contains("vocab_size 4000000000"),
        "{msg}"
    );
}

#[test]
fn zero_and_out_of_range_config_fields_are_named() {
    for (field, value, expect) in [
        (
            "max_position_embeddings",
            json!(0),
            "`max_position_embeddings`",
        ),
        ("vocab_size", json!(1e12), "`vocab_size`"),
        ("vocab_size", json!(-5), "`vocab_size`"),
        ("vocab_size", json!(5_000_000_000u64), "`vocab_size`"),
        ("hidden_size", json!("32"), "`hidden_size`"),
        ("rms_norm_eps", json!(-1.0), "`rms_norm_eps`"),
        ("rope_theta", json!(0.0), "`rope_theta`"),
        (
            "rope_scaling",
            json!({"rope_type": "linear", "factor": 0.0}),
            "rope_scaling.factor",
        ),
        (
            "rope_scaling",
            json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
            "high_freq_factor",
        ),
    ] {
        let msg = config_error(
            &llama_json(|c| {
                c.insert(field.into(), value.clone());
            }),
            "m/config.json",
        );
        assert!(msg.contains(expect), "{field} = {value}: {msg}");
    }
    let msg = config_error(
        &llama_json(|c| {
            c.insert("model_type".into(), json!("mistral"));
            c.insert("sliding_window".into(), json!(0));
        }),
        "m/config.json",
    );
    assert!(msg.contains("`sliding_window`"), "{msg}");

    // GPT-2's fields under their own names.
    let gpt2 = |edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut v = json!({"model_type": "gpt2", "vocab_size": 300, "n_embd": 32, "n_layer": 1,
                           "n_head": 4, "n_positions": 64});
        edit(v.as_object_mut().unwrap());
        v
    };
    for (field, expect) in [("n_positions", "`n_positions`"), ("n_layer", "`n_layer`")] {
        let msg = config_error(
            &gpt2(&|c| {
                c.insert(field.into(), json!(0));
            }),
            "g/config.json",
        );
        assert!(msg.contains(expect), "{field}: {msg}");
    }

    // A new model's shape is checked the same way.
    for shape in [
        ModelShape {
            max_position_embeddings: 0,
            ..tiny_shape(Architecture::Llama)
        },
        ModelShape {
            sliding_window: Some(0),
            ..tiny_shape(Architecture::Mistral)
        },
    ] {
        assert!(shape.config().is_err(), "{shape:?}");
    }
}

#[test]
fn a_tensor_of_the_wrong_dtype_is_named() {
    let dir = model_dir(&tiny_shape(Architecture::Llama), 62);
    let name = "model.layers.0.mlp.down_proj.weight";
    edit_tensors(&dir, |t| {
        let ints = t[name].to_dtype(DType::I32).unwrap();
        t.insert(name.into(), ints);
    });
    let err = load(&dir.path, None).err().expect("an I32 weight");
    assert!(matches!(err, ModelError::Dtype { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(name)
            && msg.contains("I32")
            && msg.contains("F32")
            && msg.contains(SINGLE_FILE),
        "{msg}"
    );
}

#[test]
fn nan_and_infinite_weights_are_named() {
    for (what, bad) in [("NaN", f32::NAN), ("inf", f32::INFINITY)] {
        let dir = model_dir(&tiny_shape(Architecture::Qwen2), 63);
        let name = "model.layers.1.self_attn.q_proj.bias";
        edit_tensors(&dir, |t| {
            let mut values: Vec<f32> = t[name].to_vec1().unwrap();
            values[3] = bad;
            t.insert(
                name.into(),
                Tensor::from_vec(values, t[name].shape(), &Device::Cpu).unwrap(),
            );
        });
        for dtype in [None, Some(DType::BF16)] {
            let err = load(&dir.path, dtype).err().expect("a non-finite weight");
            assert!(
                matches!(err, ModelError::NonFinite { .. }),
                "{what}: {err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains(name) && msg.contains("element 3"),
                "{what}: {msg}"
            );
        }
    }

    // Finite in the file but beyond the range of the dtype asked for: f16 would make it inf.
    let dir = model_dir(&tiny_shape(Architecture::Llama), 64);
    let name = "model.norm.weight";
    edit_tensors(&dir, |t| {
        let big = (t[name].ones_like().unwrap() * 1e6).unwrap();
        t.insert(name.into(), big);
    });
    let err = load(&dir.path, Some(DType::F16)).err().expect("beyond f16");
    assert!(matches!(err, ModelError::NonFinite { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(name) && msg.contains("f16"), "{msg}");
    load(&dir.path, Some(DType::BF16)).expect("bf16 holds 1e6");
}

#[test]
fn generation_defaults_out_of_range_are_named() {
    let dir = model_dir(&tiny_shape(Architecture::Llama), 65);
    for (field, value) in [
        ("temperature", json!(-1.0)),
        ("top_p", json!(0.0)),
        ("top_p", json!(1.5)),
        ("max_new_tokens", json!(0)),
    ] {
        std::fs::write(
            dir.path.join("generation_config.json"),
            json!({ field: value }).to_string(),
        )
        .unwrap();
        let err = load(&dir.path, None).err().expect("out of range");
        assert!(matches!(err, ModelError::Config { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("generation_config.json") && msg.contains(&format!("`{field}`")),
            "{field} = {value}: {msg}"
        );
    }
    std::fs::write(
        dir.path.join("generation_config.json"),
        json!({"temperature": 0.7, "top_p": 1.0, "top_k": 0, "max_new_tokens": 5}).to_string(),
    )
    .unwrap();
    load(&dir.path, None).expect("in range");
}

#[test]
fn a_billion_tiny_layers_are_refused_before_allocating() {
    // Few weights per layer but 10⁸ layers: the blocks themselves (each a struct of tensor
    // handles) need hundreds of gigabytes, counted with the weights.
    let dir = model_dir(&tiny_shape(Architecture::Llama), 66);
    edit_config(&dir, |c| {
        for (field, value) in [
            ("hidden_size", 2),
            ("num_attention_heads", 1),
            ("num_key_value_heads", 1),
            ("head_dim", 2),
            ("intermediate_size", 1),
            ("num_hidden_layers", 100_000_000),
        ] {
            c.insert(field.into(), json!(value));
        }
    });
    let err = load(&dir.path, None).err().expect("too many layers");
    assert!(matches!(err, ModelError::Memory { .. }), "{err:?}");
    assert!(
        err.to_string().contains("num_hidden_layers 100000000"),
        "{err}"
    );
}

#[test]
fn an_oversized_config_file_is_refused_before_reading_it() {
    // 17 MiB named config.json (a wrong file; real configs are kilobytes): refused by its
    // size, before it is read into memory.
    let dir = model_dir(&tiny_shape(Architecture::Llama), 67);
    let text = std::fs::read_to_string(dir.path.join("config.json")).unwrap();
    let padded = " ".repeat(17 << 20) + &text;
    std::fs::write(dir.path.join("config.json"), padded).unwrap();
    let err = load(&dir.path, None).err().expect("oversized");
    let msg = err.to_string();
    assert!(
        msg.contains("config.json") && msg.contains("at most") && msg.contains("MB"),
        "{msg}"
    );
}
