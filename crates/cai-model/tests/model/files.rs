//! The files cai-model writes: each gets the mode any new file gets (the umask's), is
//! replaced whole (a temporary file renamed over it), and a failed write of a model
//! directory leaves the model already there as it was.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cai_model::config::Architecture;
use cai_model::init::{init_model, ModelShape, TokenizerSource};
use cai_model::lora::{save_adapter, LoraConfig};
use cai_model::reward_model::RewardModel;
use cai_model::ModelError;
use candle_core::{DType, Device, Tensor};

use crate::common::{noisy_decoder, tiny_config, tiny_shape, write_corpus};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every entry of `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Assert that every file in `dir` has the mode a plain `File::create` gives (0644 under
/// the usual umask 022), and that no temporary file is left.
fn assert_plain_modes(dir: &Path, expected: &[&str]) {
    let probe = dir.join("probe");
    std::fs::File::create(&probe).unwrap();
    let want = mode(&probe);
    std::fs::remove_file(&probe).unwrap();
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(entries(dir), expected, "{}", dir.display());
    for name in &expected {
        let got = mode(&dir.join(name));
        assert_eq!(got, want, "{name}: mode {got:o}, a new file gets {want:o}");
    }
}

#[test]
fn every_written_file_gets_the_umask_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write_corpus(tmp.path());
    let model = tmp.path().join("model");
    let shape = tiny_shape(Architecture::Llama);
    init_model(
        &shape,
        TokenizerSource::Train(corpus),
        3,
        DType::F32,
        &model,
    )
    .unwrap();
    assert_plain_modes(
        &model,
        &[
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
        ],
    );

    let mut decoder = noisy_decoder(tiny_config(Architecture::Llama, false), 3, DType::F32);
    let head = Tensor::zeros((1, 32), DType::F32, &Device::Cpu).unwrap();
    let pm = tmp.path().join("pm");
    RewardModel::from_parts(decoder.clone(), head, None)
        .unwrap()
        .save(&pm, DType::F32)
        .unwrap();
    assert_plain_modes(&pm, &["config.json", "model.safetensors"]);

    let cfg = LoraConfig {
        target_modules: vec!["q_proj".into()],
        ..LoraConfig::default()
    };
    decoder.add_lora(&cfg).unwrap();
    let adapter = tmp.path().join("adapter");
    save_adapter(&decoder, &adapter, &cfg, "base").unwrap();
    assert_plain_modes(
        &adapter,
        &["adapter_config.json", "adapter_model.safetensors"],
    );
}

#[test]
fn a_failed_init_leaves_the_model_already_there() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write_corpus(tmp.path());
    let model = tmp.path().join("model");
    let shape = tiny_shape(Architecture::Llama);
    init_model(
        &shape,
        TokenizerSource::Train(corpus.clone()),
        3,
        DType::F32,
        &model,
    )
    .unwrap();
    let before: Vec<(String, Vec<u8>)> = entries(&model)
        .into_iter()
        .map(|n| (n.clone(), std::fs::read(model.join(&n)).unwrap()))
        .collect();
    // A new model of another shape whose last file cannot be written: generation_config.json
    // is taken by a folder. Nothing of the old model may be replaced.
    std::fs::remove_file(model.join("generation_config.json")).unwrap();
    std::fs::create_dir(model.join("generation_config.json")).unwrap();
    std::fs::write(model.join("generation_config.json/keep"), "mine").unwrap();
    let other = ModelShape {
        hidden_size: 16,
        num_heads: 2,
        num_kv_heads: None,
        ..shape
    };
    let err = init_model(
        &other,
        TokenizerSource::Train(corpus),
        4,
        DType::F32,
        &model,
    )
    .unwrap_err();
    assert!(err.to_string().contains("generation_config.json"), "{err}");
    assert!(matches!(err, ModelError::Io { .. }), "{err:?}");
    for (name, bytes) in before {
        if name == "generation_config.json" {
            continue;
        }
        assert!(
            std::fs::read(model.join(&name)).unwrap() == bytes,
            "{name} changed"
        );
    }
    assert_eq!(
        std::fs::read_to_string(model.join("generation_config.json/keep")).unwrap(),
        "mine"
    );
    let mut left = entries(&model);
    left.retain(|n| n.starts_with('.'));
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[test]
fn a_killed_init_leaves_nothing_a_later_init_keeps() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write_corpus(tmp.path());
    let model = tmp.path().join("model");
    // What a SIGKILL during init leaves (its process id above Linux's largest, so never
    // running), and a folder of the same form that holds a file init never writes.
    let killed = model.join(".cai-init.tmp.99999999");
    std::fs::create_dir_all(&killed).unwrap();
    std::fs::write(killed.join("config.json"), "{}").unwrap();
    std::fs::write(killed.join(".model.safetensors.tmp.99999999"), "half").unwrap();
    let lookalike = model.join(".cai-init.tmp.99999998");
    std::fs::create_dir_all(&lookalike).unwrap();
    std::fs::write(lookalike.join("notes.txt"), "mine").unwrap();
    let shape = tiny_shape(Architecture::Llama);
    init_model(
        &shape,
        TokenizerSource::Train(corpus),
        3,
        DType::F32,
        &model,
    )
    .unwrap();
    assert!(!killed.exists(), "the killed init's folder is removed");
    assert_eq!(
        std::fs::read_to_string(lookalike.join("notes.txt")).unwrap(),
        "mine"
    );
}
