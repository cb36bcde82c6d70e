//! `cai bench --json` on the hidden tiny model: one JSON object with a throughput per
//! workload, each workload's peak memory from its own child process, and the thread count.

use serde_json::Value;

use crate::helpers::{stdout, Workdir};

#[test]
fn json_summary_has_throughput_and_peak_memory_per_workload() {
    let work = Workdir::new();
    let output = work.cai_ok(&[
        "bench",
        "--json",
        "--runs",
        "1",
        "--tiny",
        "--workloads",
        "generate_b1,generate_b8,critique,ppo_step",
    ]);
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    let summary: Value = serde_json::from_str(&text).unwrap();
    for workload in ["generate_b1", "generate_b8", "critique", "ppo_step"] {
        assert!(
            summary[format!("{workload}_tok_s")].as_f64().unwrap() > 0.0,
            "{summary}"
        );
        assert!(
            summary["peak_rss_mib"][workload].as_f64().unwrap() > 0.0,
            "{summary}"
        );
    }
    assert!(summary.get("score_tok_s").is_none(), "{summary}");
    assert!(summary["threads"].as_u64().unwrap() >= 1, "{summary}");
}

#[test]
fn every_workload_runs_on_a_loaded_model() {
    let work = Workdir::new();
    let model = work.tiny_model();
    let output = work.cai_ok(&[
        "bench",
        "--json",
        "--runs",
        "1",
        "--model",
        model,
        "--workloads",
        "generate_b1,score,train",
    ]);
    let summary: Value = serde_json::from_str(&stdout(&output)).unwrap();
    for workload in ["generate_b1", "score", "train"] {
        assert!(
            summary[format!("{workload}_tok_s")].as_f64().unwrap() > 0.0,
            "{summary}"
        );
    }
    // The table names the model and leaves bench-6m's anchors out.
    let table = stdout(&work.cai_ok(&[
        "bench",
        "--runs",
        "1",
        "--model",
        model,
        "--workloads",
        "generate_b1",
    ]));
    assert!(table.starts_with(model), "{table}");
    assert!(table.contains("scripts/bench_compare.sh"), "{table}");
}

#[test]
fn a_shape_and_a_model_exclude_each_other() {
    let work = Workdir::new();
    let output = work.cai(&[
        "bench",
        "--shape",
        "smollm2-135m",
        "--model",
        work.tiny_model(),
    ]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

/// `--lora` and `--gradient-checkpointing` reach the train workload's child process (an
/// unknown flag there would fail it), and the table says how it trained.
#[test]
fn the_train_workload_takes_lora_and_gradient_checkpointing() {
    let work = Workdir::new();
    let model = work.tiny_model();
    let table = stdout(&work.cai_ok(&[
        "bench",
        "--runs",
        "1",
        "--model",
        model,
        "--workloads",
        "train",
        "--lora",
        "--gradient-checkpointing",
    ]));
    assert!(
        table.contains("train: LoRA adapters, gradient checkpointing"),
        "{table}"
    );
    let plain = stdout(&work.cai_ok(&[
        "bench",
        "--runs",
        "1",
        "--model",
        model,
        "--workloads",
        "train",
    ]));
    assert!(!plain.contains("train: "), "{plain}");
}
