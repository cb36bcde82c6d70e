//! Save → load round trips: exact in f32, exact after the same conversion in f16/bf16, the
//! Hugging Face layout on disk (Conv1D, tied embeddings, `{"format": "pt"}`), and sharded
//! checkpoints.

use std::collections::BTreeMap;
use std::path::Path;

use cai_core::{GenerateRequest, LanguageModel, Sampling};
use cai_model::checkpoint::{save_safetensors, Checkpoint, INDEX_FILE, SINGLE_FILE};
use cai_model::config::{Architecture, ModelConfig};
use cai_model::decoder::Decoder;
use cai_model::local::{LoadOptions, LocalModel};
use cai_model::weights::{hf_tensors, load_decoder, save_decoder};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::common::{
    last_logits, max_abs_diff, model_dir, noisy_decoder, tiny_config, tiny_shape, ARCHS,
};

fn load(dir: &Path, dtype: DType) -> Decoder {
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    load_decoder(
        config,
        &Checkpoint::open_dir(dir).unwrap(),
        dtype,
        &Device::Cpu,
    )
    .unwrap()
}

/// Every parameter's f32 bit pattern, by name.
fn bits(decoder: &Decoder) -> BTreeMap<String, Vec<u32>> {
    decoder
        .params()
        .into_iter()
        .map(|(spec, t)| {
            let v: Vec<f32> = t
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            (spec.name, v.into_iter().map(f32::to_bits).collect())
        })
        .collect()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The JSON header of a safetensors file: an 8-byte little-endian length, then JSON.
fn safetensors_header(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[8..8 + n]).unwrap()
}

#[test]
fn f32_round_trip_is_bitwise_exact_for_every_architecture() {
    for arch in ARCHS {
        for tied in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let decoder = noisy_decoder(tiny_config(arch, tied), 20, DType::F32);
            save_decoder(&decoder, tmp.path(), DType::F32).unwrap();
            let loaded = load(tmp.path(), DType::F32);
            let mut expected_config = decoder.config().clone();
            expected_config.torch_dtype = Some("float32".into());
            assert_eq!(loaded.config(), &expected_config, "{arch:?}");
            assert_eq!(bits(&loaded), bits(&decoder), "{arch:?} tied={tied}");
        }
    }
}

#[test]
fn half_precision_on_disk_equals_the_same_conversion_in_memory() {
    for (dtype, name) in [(DType::F16, "float16"), (DType::BF16, "bfloat16")] {
        for arch in [Architecture::Llama, Architecture::Gpt2] {
            let tmp = tempfile::tempdir().unwrap();
            let decoder = noisy_decoder(tiny_config(arch, false), 21, DType::F32);
            save_decoder(&decoder, tmp.path(), dtype).unwrap();
            assert_eq!(
                read_json(&tmp.path().join("config.json"))["torch_dtype"],
                name
            );
            let header = safetensors_header(&tmp.path().join(SINGLE_FILE));
            let on_disk = if dtype == DType::F16 { "F16" } else { "BF16" };
            let embed = if arch == Architecture::Gpt2 {
                "transformer.wte.weight"
            } else {
                "model.embed_tokens.weight"
            };
            assert_eq!(header[embed]["dtype"], on_disk);
            let converted = decoder
                .params()
                .into_iter()
                .map(|(spec, t)| {
                    (
                        spec.name,
                        t.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap(),
                    )
                })
                .collect::<BTreeMap<_, _>>();
            let loaded = bits(&load(tmp.path(), DType::F32));
            for (name, t) in converted {
                let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
                assert_eq!(
                    loaded[&name],
                    v.into_iter().map(f32::to_bits).collect::<Vec<_>>(),
                    "{arch:?} {name}"
                );
            }
            // Loaded in its own dtype, the model computes in that dtype.
            assert_eq!(load(tmp.path(), dtype).dtype(), dtype);
        }
    }
}

#[test]
fn gpt2_is_saved_in_conv1d_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let decoder = noisy_decoder(tiny_config(Architecture::Gpt2, true), 22, DType::F32);
    save_decoder(&decoder, tmp.path(), DType::F32).unwrap();
    let ckpt = Checkpoint::open_dir(tmp.path()).unwrap();
    let h = decoder.config().hidden_size;
    let inner = decoder.config().intermediate_size;
    assert_eq!(
        ckpt.shape("transformer.h.0.attn.c_attn.weight").unwrap(),
        vec![h, 3 * h]
    );
    assert_eq!(
        ckpt.shape("transformer.h.0.attn.c_attn.bias").unwrap(),
        vec![3 * h]
    );
    assert_eq!(
        ckpt.shape("transformer.h.1.mlp.c_fc.weight").unwrap(),
        vec![h, inner]
    );
    assert_eq!(
        ckpt.shape("transformer.h.1.mlp.c_proj.weight").unwrap(),
        vec![inner, h]
    );
    assert!(!ckpt.contains("lm_head.weight"));
    // In memory the weight is [out, in]: the file holds its transpose.
    let (_, in_memory) = decoder
        .params()
        .into_iter()
        .find(|(s, _)| s.name == "transformer.h.0.attn.c_attn.weight")
        .unwrap();
    assert_eq!(in_memory.dims(), &[3 * h, h]);
    let on_disk = ckpt
        .load(
            "transformer.h.0.attn.c_attn.weight",
            &[h, 3 * h],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
    assert_eq!(max_abs_diff(&on_disk, &in_memory.t().unwrap()), 0.0);
    assert_eq!(
        read_json(&tmp.path().join("config.json"))["tie_word_embeddings"],
        true
    );
}

#[test]
fn tied_models_omit_lm_head_and_say_so_in_config_json() {
    for tied in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let decoder = noisy_decoder(tiny_config(Architecture::Qwen2, tied), 23, DType::F32);
        save_decoder(&decoder, tmp.path(), DType::F32).unwrap();
        let config = read_json(&tmp.path().join("config.json"));
        assert_eq!(
            config["tie_word_embeddings"],
            Value::Bool(tied),
            "written explicitly"
        );
        let header = safetensors_header(&tmp.path().join(SINGLE_FILE));
        assert_eq!(header.get("lm_head.weight").is_some(), !tied);
        let names: Vec<String> = hf_tensors(&decoder, DType::F32)
            .unwrap()
            .into_keys()
            .collect();
        assert_eq!(names.contains(&"lm_head.weight".to_string()), !tied);
    }
}

#[test]
fn safetensors_files_carry_format_pt_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let decoder = noisy_decoder(tiny_config(Architecture::Llama, false), 24, DType::F32);
    save_decoder(&decoder, tmp.path(), DType::BF16).unwrap();
    let header = safetensors_header(&tmp.path().join(SINGLE_FILE));
    assert_eq!(header["__metadata__"], serde_json::json!({"format": "pt"}));
    let tensors = header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .count();
    assert_eq!(tensors, decoder.params().len());
    let mut names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["config.json", SINGLE_FILE],
        "no temporary file is left behind"
    );
}

#[test]
fn init_model_writes_a_loadable_model_directory() {
    let dir = model_dir(&tiny_shape(Architecture::Mistral), 25);
    for file in [
        "config.json",
        SINGLE_FILE,
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(dir.path.join(file).is_file(), "{file} is written");
    }
    let config = read_json(&dir.path.join("config.json"));
    assert_eq!(config["model_type"], "mistral");
    assert_eq!(config["sliding_window"], 3);
    assert_eq!(config["eos_token_id"], 0);
    let model = LocalModel::load(dir.spec(), &LoadOptions::default()).unwrap();
    assert_eq!(model.decoder().config(), &dir.config);
}

/// Split a model directory's single file into two shards with an index.
fn shard(dir: &Path) {
    let tensors = candle_core::safetensors::load(dir.join(SINGLE_FILE), &Device::Cpu).unwrap();
    let names: Vec<String> = {
        let mut v: Vec<String> = tensors.keys().cloned().collect();
        v.sort();
        v
    };
    let half = names.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [&names[..half], &names[half..]].into_iter().enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", i + 1);
        let shard: BTreeMap<String, Tensor> = part
            .iter()
            .map(|n| (n.clone(), tensors[n].clone()))
            .collect();
        save_safetensors(&shard, &dir.join(&file)).unwrap();
        for n in part {
            weight_map.insert(n.clone(), Value::String(file.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(dir.join(INDEX_FILE), index.to_string()).unwrap();
    std::fs::remove_file(dir.join(SINGLE_FILE)).unwrap();
}

#[test]
fn sharded_checkpoints_load_to_the_same_model() {
    let dir = model_dir(&tiny_shape(Architecture::Llama), 26);
    let single = load(&dir.path, DType::F32);
    let request = GenerateRequest::new("Human: How do I bake bread?", 8, Sampling::greedy());
    let before = LocalModel::load(dir.spec(), &LoadOptions::default())
        .unwrap()
        .generate(std::slice::from_ref(&request))
        .unwrap();
    shard(&dir.path);
    let ckpt = Checkpoint::open_dir(&dir.path).unwrap();
    assert_eq!(ckpt.names().len(), single.params().len());
    let sharded = load(&dir.path, DType::F32);
    assert_eq!(bits(&sharded), bits(&single));
    let tokens = [0, 5, 77, 300, 12, 9];
    assert_eq!(
        max_abs_diff(
            &last_logits(&sharded, &tokens),
            &last_logits(&single, &tokens)
        ),
        0.0
    );
    let after = LocalModel::load(dir.spec(), &LoadOptions::default())
        .unwrap()
        .generate(&[request])
        .unwrap();
    assert_eq!(after, before);
}
