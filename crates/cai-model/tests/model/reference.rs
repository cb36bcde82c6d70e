//! cai's decoder against candle-transformers' own Llama, Qwen2 and Mistral on the same
//! checkpoint: the last-position logits agree.

use std::path::Path;

use cai_model::checkpoint::SINGLE_FILE;
use cai_model::config::{Architecture, ModelConfig};
use cai_model::init::ModelShape;
use cai_model::weights::save_decoder;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{llama, mistral, qwen2};
use serde_json::Value;

use crate::common::{last_logits, max_abs_diff, noisy_decoder, tiny_shape};

/// A token sequence longer than Mistral's window, within the 64-position context.
const TOKENS: [u32; 12] = [0, 17, 230, 99, 4, 310, 42, 7, 150, 61, 383, 2];

/// Save a noisy decoder of `shape` to a temp dir; returns the dir, our last-position logits
/// `[vocab]` and the `config.json` written.
fn saved(shape: &ModelShape, seed: u64) -> (tempfile::TempDir, Tensor, Value) {
    let tmp = tempfile::tempdir().unwrap();
    let decoder = noisy_decoder(shape.config().unwrap(), seed, DType::F32);
    save_decoder(&decoder, tmp.path(), DType::F32).unwrap();
    let ours = last_logits(&decoder, &TOKENS);
    let config =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("config.json")).unwrap())
            .unwrap();
    (tmp, ours, config)
}

fn var_builder(dir: &Path) -> VarBuilder<'static> {
    // SAFETY: the file was just written by this test and nothing modifies it while mapped.
    unsafe {
        VarBuilder::from_mmaped_safetensors(&[dir.join(SINGLE_FILE)], DType::F32, &Device::Cpu)
            .unwrap()
    }
}

fn ids() -> Tensor {
    Tensor::new(&TOKENS, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

fn assert_close(arch: &str, ours: &Tensor, theirs: &Tensor) {
    let theirs = theirs.flatten_all().unwrap();
    let diff = max_abs_diff(ours, &theirs);
    let scale = max_abs_diff(ours, &ours.zeros_like().unwrap());
    assert!(
        scale > 0.1,
        "{arch}: logits are not trivially small ({scale})"
    );
    assert!(
        diff < 1e-4,
        "{arch}: cai and candle-transformers logits differ by {diff}"
    );
}

#[test]
fn llama_matches_candle_transformers() {
    for tied in [false, true] {
        let shape = ModelShape {
            tie_word_embeddings: tied,
            ..tiny_shape(Architecture::Llama)
        };
        let (tmp, ours, config) = saved(&shape, 30);
        let cfg: llama::LlamaConfig = serde_json::from_value(config).unwrap();
        let cfg = cfg.into_config(false);
        assert_eq!(cfg.tie_word_embeddings, tied);
        let model = llama::Llama::load(var_builder(tmp.path()), &cfg).unwrap();
        let mut cache = llama::Cache::new(false, DType::F32, &cfg, &Device::Cpu).unwrap();
        let theirs = model.forward(&ids(), 0, &mut cache).unwrap();
        assert_close(&format!("llama tied={tied}"), &ours, &theirs);
    }
}

#[test]
fn qwen2_matches_candle_transformers() {
    for tied in [false, true] {
        let shape = ModelShape {
            tie_word_embeddings: tied,
            ..tiny_shape(Architecture::Qwen2)
        };
        let (tmp, ours, mut config) = saved(&shape, 31);
        // candle's Qwen2 needs a numeric window and applies it even when `use_sliding_window`
        // is false; ours has none, so give it one longer than the context.
        assert_eq!(config["use_sliding_window"], false);
        config["sliding_window"] = config["max_position_embeddings"].clone();
        let cfg: qwen2::Config = serde_json::from_value(config).unwrap();
        let mut model = qwen2::ModelForCausalLM::new(&cfg, var_builder(tmp.path())).unwrap();
        let theirs = model.forward(&ids(), 0).unwrap();
        assert_close(&format!("qwen2 tied={tied}"), &ours, &theirs);
    }
}

/// Mistral's window: transformers (and cai) let a query see keys with `q - k < window`;
/// candle-transformers masks only `q - k > window`, so its window `w - 1` is our `w`.
#[test]
fn mistral_with_a_binding_sliding_window_matches_candle_transformers() {
    let window = 3;
    let shape = ModelShape {
        sliding_window: Some(window),
        ..tiny_shape(Architecture::Mistral)
    };
    let (tmp, ours, mut config) = saved(&shape, 32);
    assert_eq!(config["sliding_window"], window);
    config["sliding_window"] = (window - 1).into();
    let cfg: mistral::Config = serde_json::from_value(config.clone()).unwrap();
    let mut model = mistral::Model::new(&cfg, var_builder(tmp.path())).unwrap();
    let theirs = model.forward(&ids(), 0).unwrap();
    assert_close("mistral", &ours, &theirs);

    // The window binds: without it the logits differ.
    config["sliding_window"] = Value::Null;
    let cfg: mistral::Config = serde_json::from_value(config.clone()).unwrap();
    let mut full = mistral::Model::new(&cfg, var_builder(tmp.path())).unwrap();
    let unwindowed = full.forward(&ids(), 0).unwrap().flatten_all().unwrap();
    assert!(
        max_abs_diff(&ours, &unwindowed) > 1e-3,
        "the window changes the output"
    );
    let ours_config = ModelConfig::from_json(&config, Path::new("config.json")).unwrap();
    assert_eq!(ours_config.sliding_window, None);
    let ours_full = noisy_decoder(ours_config, 32, DType::F32);
    assert_close(
        "mistral without window",
        &last_logits(&ours_full, &TOKENS),
        &unwindowed,
    );
}
