//! Preference models: the reward is the head applied to the last real token's final hidden
//! state, right padding changes nothing, and a model saved in transformers'
//! `*ForSequenceClassification` layout loads back to the same rewards.

use cai_model::checkpoint::Checkpoint;
use cai_model::config::{Architecture, ModelConfig};
use cai_model::decoder::Batch;
use cai_model::layers::Mode;
use cai_model::reward_model::{is_preference_model, RewardModel, SCORE_WEIGHT};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::common::{model_dir, tiny_shape, token_rows};

/// Right-pad rows. Returns ids `[b, l]` and the batch.
fn right_padded(rows: &[Vec<u32>]) -> (Tensor, Batch) {
    let l = rows.iter().map(Vec::len).max().unwrap();
    let mut ids = Vec::new();
    let mut valid = Vec::new();
    for row in rows {
        ids.extend(
            row.iter()
                .copied()
                .chain(std::iter::repeat_n(0, l - row.len())),
        );
        valid.push((0..l).map(|i| i < row.len()).collect());
    }
    let ids = Tensor::from_vec(ids, (rows.len(), l), &Device::Cpu).unwrap();
    (ids, Batch::from_valid(valid))
}

fn rewards(model: &RewardModel, rows: &[Vec<u32>]) -> Vec<f32> {
    let (ids, batch) = right_padded(rows);
    model
        .rewards(&ids, &batch, Mode::Infer)
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn the_reward_is_the_head_on_the_last_real_tokens_hidden_state() {
    for arch in [Architecture::Llama, Architecture::Gpt2] {
        let dir = model_dir(&tiny_shape(arch), 21);
        let model = RewardModel::load(&dir.path, DType::F32, &Device::Cpu, 3).unwrap();
        assert!(!is_preference_model(&dir.path));
        let rows = token_rows();
        let together = rewards(&model, &rows);
        for (row, &r) in rows.iter().zip(&together) {
            let alone = rewards(&model, std::slice::from_ref(row))[0];
            assert!(
                (r - alone).abs() < 1e-4,
                "{arch:?}: padding changed {alone} to {r}"
            );
            // By hand: the final hidden state of the row's last token, dotted with the head.
            let (ids, batch) = right_padded(std::slice::from_ref(row));
            let hidden = model
                .decoder()
                .forward_hidden(&ids, &batch, None, Mode::Infer)
                .unwrap();
            let last: Vec<f32> = hidden
                .get(0)
                .unwrap()
                .get(row.len() - 1)
                .unwrap()
                .to_vec1()
                .unwrap();
            let head: Vec<f32> = model.head().flatten_all().unwrap().to_vec1().unwrap();
            let dot: f32 = last.iter().zip(&head).map(|(x, w)| x * w).sum();
            assert!((dot - alone).abs() < 1e-4, "{dot} vs {alone}");
        }
        // Batched by length, sequences score what they score alone.
        let limits = cai_model::batching::EngineLimits {
            max_batch: 2,
            max_batch_tokens: 64,
            ..Default::default()
        };
        let batched = model.score_sequences(&rows, limits).unwrap();
        for (a, b) in batched.iter().zip(&together) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        // The same seed draws the same head; another seed another one.
        let again = RewardModel::load(&dir.path, DType::F32, &Device::Cpu, 3).unwrap();
        let other = RewardModel::load(&dir.path, DType::F32, &Device::Cpu, 4).unwrap();
        let head =
            |m: &RewardModel| -> Vec<f32> { m.head().flatten_all().unwrap().to_vec1().unwrap() };
        assert_eq!(head(&model), head(&again));
        assert_ne!(head(&model), head(&other));
    }
}

#[test]
fn a_saved_preference_model_has_transformers_layout_and_loads_back() {
    for (arch, class) in [
        (Architecture::Llama, "LlamaForSequenceClassification"),
        (Architecture::Qwen2, "Qwen2ForSequenceClassification"),
        (Architecture::Gpt2, "GPT2ForSequenceClassification"),
    ] {
        let dir = model_dir(&tiny_shape(arch), 22);
        let mut model = RewardModel::load(&dir.path, DType::F32, &Device::Cpu, 5).unwrap();
        model.set_pad_token_id(Some(0));
        let out = dir.path.parent().unwrap().join("pm");
        model.save(&out, DType::F32).unwrap();
        assert!(is_preference_model(&out));

        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["architectures"][0], class);
        assert_eq!(config["num_labels"], 1);
        assert_eq!(config["id2label"]["0"], "LABEL_0");
        assert_eq!(config["pad_token_id"], 0);
        let original = ModelConfig::from_file(&dir.path.join("config.json")).unwrap();
        assert_eq!(
            config["tie_word_embeddings"], original.tie_word_embeddings,
            "the config keeps its own tying"
        );
        let ckpt = Checkpoint::open_dir(&out).unwrap();
        let hidden = original.hidden_size;
        assert_eq!(ckpt.shape(SCORE_WEIGHT).unwrap(), [1, hidden]);
        assert!(
            !ckpt.contains("lm_head.weight"),
            "a preference model has no lm_head"
        );

        let back = RewardModel::load(&out, DType::F32, &Device::Cpu, 99).unwrap();
        let rows = token_rows();
        for (a, b) in rewards(&model, &rows).iter().zip(rewards(&back, &rows)) {
            assert!((a - b).abs() < 1e-5, "{arch:?}: {a} vs {b}");
        }
        // Saving the reloaded model writes the same tensors and config.
        let again = out.with_file_name("pm2");
        back.save(&again, DType::F32).unwrap();
        assert_eq!(
            std::fs::read(out.join("model.safetensors")).unwrap(),
            std::fs::read(again.join("model.safetensors")).unwrap()
        );
        assert_eq!(
            std::fs::read_to_string(out.join("config.json")).unwrap(),
            std::fs::read_to_string(again.join("config.json")).unwrap()
        );
    }
}

#[test]
fn a_preference_checkpoint_without_its_head_is_an_error() {
    let dir = model_dir(&tiny_shape(Architecture::Llama), 23);
    let model = RewardModel::load(&dir.path, DType::F32, &Device::Cpu, 5).unwrap();
    let out = dir.path.parent().unwrap().join("pm");
    model.save(&out, DType::F32).unwrap();
    let tensors: std::collections::BTreeMap<String, Tensor> = model
        .tensors(DType::F32)
        .unwrap()
        .into_iter()
        .filter(|(name, _)| name != SCORE_WEIGHT)
        .collect();
    cai_model::checkpoint::save_safetensors(&tensors, &out.join("model.safetensors")).unwrap();
    let err = RewardModel::load(&out, DType::F32, &Device::Cpu, 5)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing tensor 'score.weight'"), "{err}");
}
