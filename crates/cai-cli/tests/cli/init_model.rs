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

#[test]
fn zero_and_inconsistent_sizes_are_usage_errors() {
    let work = Workdir::new();
    work.write("corpus.txt", crate::helpers::CORPUS);
    for (extra, named) in [
        (&["--max-positions", "0"][..], "--max-positions 0"),
        (&["--layers", "0"][..], "--layers 0"),
        (&["--hidden-size", "0"][..], "--hidden-size 0"),
        (&["--intermediate-size", "0"][..], "--intermediate-size 0"),
        (&["--vocab-size", "0"][..], "--vocab-size 0"),
        (&["--heads", "0"][..], "--heads 0"),
        (&["--heads", "3"][..], "--heads 3"),
        (&["--kv-heads", "3"][..], "--kv-heads 3"),
        (&["--hidden-size", "36", "--heads", "4"][..], "even"),
        (
            &["--arch", "mistral", "--sliding-window", "0"][..],
            "--sliding-window 0",
        ),
    ] {
        let mut args = vec![
            "init-model",
            "--output",
            "m",
            "--train-tokenizer",
            "corpus.txt",
        ];
        args.extend(extra);
        let err = assert_exit(&work.cai(&args), 2);
        assert!(err.contains(named), "{extra:?}: {err}");
        assert!(!work.path("m").exists(), "{extra:?} wrote a model");
    }
}

#[test]
fn a_model_larger_than_memory_is_refused_before_anything_is_written() {
    let work = Workdir::new();
    work.write("corpus.txt", crate::helpers::CORPUS);
    let started = std::time::Instant::now();
    let output = work.cai(&[
        "init-model",
        "--output",
        "m",
        "--hidden-size",
        "100000",
        "--layers",
        "100",
        "--train-tokenizer",
        "corpus.txt",
    ]);
    let err = assert_exit(&output, 1);
    for part in ["hidden_size 100000", "GB", "available", "--hidden-size"] {
        assert!(err.contains(part), "{part:?} in {err}");
    }
    assert!(!err.contains("memory allocation"), "{err}");
    assert!(!work.path("m").exists(), "nothing is written");
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
}

#[test]
fn written_files_get_the_mode_of_any_new_file() {
    use std::os::unix::fs::PermissionsExt;
    let work = Workdir::new();
    let model = work.tiny_model();
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let probe = work.write("probe", "");
    let want = mode(&probe);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(work.path(model)).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "left behind: {name}");
        assert_eq!(mode(&entry.path()), want, "{name}");
        names.push(name);
    }
    assert!(names.iter().any(|n| n == "model.safetensors"), "{names:?}");
    assert!(names.iter().any(|n| n == "init_config.json"), "{names:?}");
}

#[test]
fn a_second_writer_of_one_model_folder_is_refused() {
    let work = Workdir::new();
    work.write("corpus.txt", crate::helpers::CORPUS);
    let args = [
        "init-model",
        "--output",
        "m",
        "--hidden-size",
        "16",
        "--heads",
        "2",
        "--vocab-size",
        "300",
        "--train-tokenizer",
        "corpus.txt",
    ];
    let held = cai_core::lock::WriterLock::acquire(&work.path("m")).unwrap();
    let err = assert_exit(&work.cai(&args), 1);
    assert!(
        err.contains(&format!("PID {}", std::process::id())),
        "{err}"
    );
    assert!(!work.path("m").join("config.json").exists());
    drop(held);
    work.cai_ok(&args);
}
