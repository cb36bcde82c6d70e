//! What the trainers' integration tests share: a tiny Llama with a tokenizer trained on a
//! given corpus, and JSONL files written from records.

#![allow(dead_code)] // each test binary uses part of it

use std::path::{Path, PathBuf};

use cai_model::init::{init_model, ModelShape, TokenizerSource};
use candle_core::DType;
use serde_json::Value;

/// A tiny Llama (hidden 32, 2 layers, 300-token vocabulary, 128 positions) in `dir/base`,
/// its weights drawn from `seed` and its byte-level BPE trained on `corpus` repeated 20 times.
pub fn tiny_model_on(dir: &Path, corpus: &str, seed: u64) -> PathBuf {
    let corpus_path = dir.join("corpus.txt");
    std::fs::write(&corpus_path, corpus.repeat(20)).unwrap();
    let model = dir.join("base");
    let shape = ModelShape {
        hidden_size: 32,
        num_layers: 2,
        num_heads: 4,
        intermediate_size: 64,
        vocab_size: 300,
        max_position_embeddings: 128,
        ..ModelShape::default()
    };
    init_model(
        &shape,
        TokenizerSource::Train(corpus_path),
        seed,
        DType::F32,
        &model,
    )
    .unwrap();
    model
}

/// `records` as JSONL in `dir/name`.
pub fn write_jsonl(dir: &Path, name: &str, records: &[Value]) -> PathBuf {
    let path = dir.join(name);
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}
