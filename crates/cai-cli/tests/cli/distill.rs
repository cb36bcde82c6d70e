//! `cai distill`: a full-weight run on text with held-out data, the teacher answering prompts
//! with top-k targets and LoRA, and what the output directory allows afterwards.

use serde_json::Value;

use crate::helpers::{assert_exit, read_jsonl, stdout, Workdir};

const CONTEXT: &str = "Human: What is the capital of France?\n\nAssistant: The capital of \
    France is Paris.\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour, water, salt and \
    yeast, then bake it.";

fn texts(work: &Workdir, name: &str, lines: &[&str]) {
    let records: Vec<String> = lines
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string())
        .collect();
    work.write(name, &(records.join("\n") + "\n"));
}

fn setup(work: &Workdir) -> &'static str {
    let model = work.tiny_model();
    work.write("context.txt", CONTEXT);
    texts(
        work,
        "train.jsonl",
        &[
            "Human: How do I bake bread?\n\nAssistant: Mix flour and water.",
            "The assistant should be helpful, honest and harmless.",
            "Human: What is the capital of France?\n\nAssistant: Paris.",
            "Critique: the answer could say how long to bake.",
        ],
    );
    texts(
        work,
        "eval.jsonl",
        &[
            "Human: How do I bake bread?\n\nAssistant: Bake it.",
            "Revision: Mix flour, water, salt and yeast.",
        ],
    );
    model
}

#[test]
fn distillation_lowers_held_out_kl_and_writes_a_model() {
    let work = Workdir::new();
    let model = setup(&work);
    let args = [
        "distill",
        "--model",
        model,
        "--context",
        "context.txt",
        "--data",
        "train.jsonl",
        "--eval-data",
        "eval.jsonl",
        "--output",
        "out",
        "--epochs",
        "20",
        "--batch-size",
        "2",
        "--learning-rate",
        "1e-3",
    ];
    let text = stdout(&work.cai_ok(&args));
    assert!(text.contains("distilled 40 steps"), "{text}");
    assert!(text.contains("held-out KL to the teacher"), "{text}");
    let metrics = read_jsonl(&work.path("out/metrics.jsonl"));
    let evals: Vec<&Value> = metrics.iter().filter(|r| r["split"] == "eval").collect();
    assert_eq!(evals.len(), 2, "before the first step and after the last");
    let (start, end) = (
        evals[0]["loss"].as_f64().unwrap(),
        evals[1]["loss"].as_f64().unwrap(),
    );
    assert!(end < 0.5 * start, "held-out KL {start} -> {end}");
    assert!(metrics.iter().all(|r| r["agreement"].is_number()));
    for file in ["model.safetensors", "tokenizer.json", "distill_config.json"] {
        assert!(work.path("out").join(file).exists(), "{file}");
    }
    let saved: Value = serde_json::from_str(&work.read("out/distill_config.json")).unwrap();
    assert_eq!(saved["distill"]["learning_rate"], 1e-3);

    // The finished run is kept: a new run needs --overwrite, --resume has nothing to do.
    let err = assert_exit(&work.cai(&args), 2);
    assert!(err.contains("--overwrite"), "{err}");
    let mut resume = args.to_vec();
    resume.push("--resume");
    work.cai_ok(&resume);
}

#[test]
fn the_teacher_answers_prompts_and_top_k_lora_runs_write_an_adapter() {
    let work = Workdir::new();
    let model = setup(&work);
    let prompts: Vec<String> = ["How do I bake bread?", "What is the capital of France?"]
        .iter()
        .map(|p| serde_json::json!({ "prompt": p }).to_string())
        .collect();
    work.write("prompts.jsonl", &(prompts.join("\n") + "\n"));
    work.cai_ok(&[
        "distill",
        "--model",
        model,
        "--context",
        "context.txt",
        "--data",
        "prompts.jsonl",
        "--output",
        "lora",
        "--sample",
        "--sample-max-new-tokens",
        "12",
        "--top-k",
        "5",
        "--lora",
        "--max-steps",
        "3",
        "--batch-size",
        "1",
    ]);
    let samples = read_jsonl(&work.path("lora/teacher_samples.jsonl"));
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0]["messages"][1]["role"], "assistant");
    for file in [
        "teacher_topk.safetensors",
        "adapter_model.safetensors",
        "adapter_config.json",
    ] {
        assert!(work.path("lora").join(file).exists(), "{file}");
    }
    assert!(!work.path("lora/model.safetensors").exists());
}

#[test]
fn sampling_flags_need_sample_and_an_empty_context_is_refused() {
    let work = Workdir::new();
    let model = setup(&work);
    let base = [
        "distill",
        "--model",
        model,
        "--data",
        "train.jsonl",
        "--output",
        "x",
    ];
    let mut args = base.to_vec();
    args.extend(["--context", "context.txt", "--sample-temperature", "0.5"]);
    let err = assert_exit(&work.cai(&args), 2);
    assert!(err.contains("need --sample"), "{err}");
    work.write("empty.txt", "\n");
    let mut args = base.to_vec();
    args.extend(["--context", "empty.txt"]);
    let err = assert_exit(&work.cai(&args), 1);
    assert!(err.contains("empty.txt is empty"), "{err}");
}

#[test]
fn a_context_longer_than_the_window_is_named_with_its_size() {
    let work = Workdir::new();
    let model = setup(&work);
    // The tiny model has 256 positions.
    work.write("long.txt", &CONTEXT.repeat(20));
    let output = work.cai(&[
        "distill",
        "--model",
        model,
        "--context",
        "long.txt",
        "--data",
        "train.jsonl",
        "--output",
        "out",
    ]);
    let err = assert_exit(&output, 1);
    assert!(err.contains("the context file long.txt"), "{err}");
    assert!(err.contains("the model's window is 256 positions"), "{err}");
    let tokens: usize = err
        .split("the context is ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no token count in:\n{err}"));
    assert!(tokens > 256, "{err}");
}

#[test]
fn records_with_nothing_to_compare_are_counted() {
    let work = Workdir::new();
    let model = setup(&work);
    texts(
        &work,
        "short.jsonl",
        &["", "The assistant should be helpful, honest and harmless."],
    );
    let output = work.cai_ok(&[
        "distill",
        "--model",
        model,
        "--context",
        "context.txt",
        "--data",
        "short.jsonl",
        "--output",
        "out",
        "--max-steps",
        "1",
    ]);
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        err.contains("short.jsonl: 1 of 2 records have fewer than 2 tokens to compare"),
        "{err}"
    );
}
