//! Qwen2/3 sliding windows are per layer: `use_sliding_window` with `max_window_layers`
//! (layers with index ≥ it use the window) or an explicit `layer_types` list, as transformers
//! reads them. Found by comparing with transformers: cai used to window every layer.

use std::path::Path;

use cai_model::config::{Architecture, ModelConfig};
use candle_core::DType;

use crate::common::{full_logits, max_abs_diff, noisy_decoder, tiny_config};

fn qwen2_json(extra: serde_json::Value) -> serde_json::Value {
    let mut v = serde_json::json!({
        "model_type": "qwen2", "vocab_size": 384, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 64,
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

fn parse(v: serde_json::Value) -> ModelConfig {
    ModelConfig::from_json(&v, Path::new("config.json")).unwrap()
}

#[test]
fn max_window_layers_and_layer_types_choose_the_windowed_layers() {
    let none = parse(qwen2_json(
        serde_json::json!({"sliding_window": 3, "use_sliding_window": false}),
    ));
    assert_eq!(
        (0..2).map(|l| none.layer_window(l)).collect::<Vec<_>>(),
        vec![None, None]
    );
    let upper = parse(qwen2_json(
        serde_json::json!({"sliding_window": 3, "use_sliding_window": true, "max_window_layers": 1}),
    ));
    assert_eq!(
        (0..2).map(|l| upper.layer_window(l)).collect::<Vec<_>>(),
        vec![None, Some(3)]
    );
    let all_full = parse(qwen2_json(
        serde_json::json!({"sliding_window": 3, "use_sliding_window": true, "max_window_layers": 2}),
    ));
    assert_eq!(
        (0..2).map(|l| all_full.layer_window(l)).collect::<Vec<_>>(),
        vec![None, None]
    );
    let typed = parse(qwen2_json(serde_json::json!({
        "sliding_window": 3, "use_sliding_window": true, "max_window_layers": 2,
        "layer_types": ["sliding_attention", "full_attention"],
    })));
    assert_eq!(
        (0..2).map(|l| typed.layer_window(l)).collect::<Vec<_>>(),
        vec![Some(3), None]
    );
}

#[test]
fn a_written_qwen_config_reads_back_with_the_same_windowed_layers() {
    for arch in [
        Architecture::Qwen2,
        Architecture::Qwen3,
        Architecture::Mistral,
    ] {
        let mut cfg = tiny_config(arch, false);
        cfg.sliding_window = Some(3);
        let written = cfg.to_hf_json();
        let back = parse(written.clone());
        for l in 0..cfg.num_layers {
            assert_eq!(
                back.layer_window(l),
                Some(3),
                "{arch:?} layer {l}: {written}"
            );
        }
    }
}

#[test]
fn only_the_windowed_layers_apply_the_window() {
    let tokens: Vec<u32> = (1..20).collect();
    let base = tiny_config(Architecture::Qwen2, false);
    let with = |extra: serde_json::Value| {
        let mut v = base.to_hf_json();
        // Let max_window_layers decide (an explicit layer_types would take precedence).
        v.as_object_mut().unwrap().remove("layer_types");
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        full_logits(&noisy_decoder(parse(v), 5, DType::F32), &tokens)
    };
    let full = with(serde_json::json!({"use_sliding_window": false, "sliding_window": 3}));
    let no_layer = with(
        serde_json::json!({"use_sliding_window": true, "sliding_window": 3, "max_window_layers": 2}),
    );
    let upper = with(
        serde_json::json!({"use_sliding_window": true, "sliding_window": 3, "max_window_layers": 1}),
    );
    let all = with(
        serde_json::json!({"use_sliding_window": true, "sliding_window": 3, "max_window_layers": 0}),
    );
    assert_eq!(max_abs_diff(&full, &no_layer), 0.0);
    assert!(max_abs_diff(&full, &upper) > 1e-4);
    assert!(max_abs_diff(&upper, &all) > 1e-4);
}
