//! `cai init-model`: Hugging Face layout, the shape asked for, every architecture.

use serde_json::Value;

use crate::helpers::{assert_exit, read_jsonl, stdout, Workdir};

#[test]
fn writes_a_hugging_face_model_directory() {
    let work = Workdir::new();
    work.write("corpus.txt", crate::helpers::CORPUS);
    let output = work.cai_ok(&[
        "init-model",
        "--arch",
        "qwen3",
        "--output",
        "m",
        "--hidden-size",
        "32",
        "--layers",
        "2",
        "--heads",
        "4",
        "--kv-heads",
        "2",
        "--intermediate-size",
        "64",
        "--vocab-size",
        "300",
        "--max-positions",
        "64",
        "--tie-embeddings",
        "--train-tokenizer",
        "corpus.txt",
    ]);
    let printed = stdout(&output);
    assert!(printed.contains("qwen3 model"), "{printed}");
    assert!(printed.contains("parameters"), "{printed}");
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "init_config.json",
    ] {
        assert!(work.path("m").join(file).is_file(), "missing {file}");
        assert!(printed.contains(file), "{file} not listed in {printed}");
    }
    let config: Value = serde_json::from_str(&work.read("m/config.json")).unwrap();
    assert_eq!(config["model_type"], "qwen3");
    assert_eq!(config["hidden_size"], 32);
    assert_eq!(config["num_hidden_layers"], 2);
    assert_eq!(config["num_key_value_heads"], 2);
    assert_eq!(config["vocab_size"], 300);
    assert_eq!(config["tie_word_embeddings"], true);
}

#[test]
fn refuses_to_replace_a_model_without_force() {
    let work = Workdir::new();
    let model = work.tiny_model();
    let args = [
        "init-model",
        "--output",
        model,
        "--train-tokenizer",
        "corpus.txt",
    ];
    let err = assert_exit(&work.cai(&args), 1);
    assert!(err.contains("--force"), "{err}");
    let mut forced = args.to_vec();
    forced.extend([
        "--force",
        "--hidden-size",
        "16",
        "--heads",
        "2",
        "--vocab-size",
        "300",
    ]);
    work.cai_ok(&forced);
}

#[test]
fn every_architecture_initialises_and_generates() {
    let work = Workdir::new();
    work.write("in.jsonl", "{\"prompt\": \"The capital of France\"}\n");
    for (arch, dir) in [
        ("llama", "llama"),
        ("mistral", "mistral"),
        ("qwen2", "qwen2"),
        ("qwen3", "qwen3"),
        ("gpt2", "gpt2"),
    ] {
        work.tiny_model_of(arch, dir);
        let out = format!("{arch}.jsonl");
        work.cai_ok(&[
            "generate",
            "--model",
            dir,
            "--input",
            "in.jsonl",
            "--output",
            &out,
            "--temperature",
            "0",
            "--max-new-tokens",
            "3",
        ]);
        let records = read_jsonl(&work.path(&out));
        assert_eq!(records.len(), 1, "{arch}");
        assert!(
            !records[0]["token_ids"].as_array().unwrap().is_empty(),
            "{arch}"
        );
    }
}
