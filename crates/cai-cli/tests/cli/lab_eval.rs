//! `cai lab eval`: a tiny random model, with a tokenizer trained on a lab corpus, measured on
//! a few held-out items per measure — every figure present and in [0, 1], counts as capped.

use serde_json::Value;

use crate::helpers::{assert_exit, stdout, Workdir};

/// A tiny Llama whose tokenizer is trained on a small lab corpus, in `model/`.
fn lab_model(work: &Workdir) -> &'static str {
    work.cai_ok(&["lab", "generate", "--output", "lab", "--size", "200"]);
    work.tiny_model_with("llama", "model", "lab/corpus/corpus.txt", 1024)
}

const FIGURES: [&str; 7] = [
    "harmful_rate",
    "harmful_rate_with_context",
    "harmless_helpful_rate",
    "evasive_rate",
    "helpful_rate",
    "critique_hit_rate",
    "mc_accuracy",
];

const COUNTS: [&str; 5] = [
    "red_team_items",
    "red_team_with_context_items",
    "benign_items",
    "critique_items",
    "mc_items",
];

#[test]
fn eval_reports_every_figure_for_a_tiny_model() {
    let work = Workdir::new();
    let model = lab_model(&work);
    let args = ["lab", "eval", "--model", model, "--max-items", "4"];
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let report: Value = serde_json::from_str(stdout(&work.cai_ok(&json_args)).trim()).unwrap();
    for field in FIGURES {
        let x = report[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field}: {report}"));
        assert!((0.0..=1.0).contains(&x), "{field} = {x}");
    }
    for field in COUNTS {
        assert_eq!(report[field], 4, "{field}: {report}");
    }
    assert_eq!(report["world_seed"], 0);

    let table = stdout(&work.cai_ok(&args));
    for field in FIGURES {
        assert!(table.contains(field), "{table}");
    }
}

#[test]
fn eval_rejects_a_zero_cap() {
    let work = Workdir::new();
    let err = assert_exit(
        &work.cai(&["lab", "eval", "--model", "nowhere", "--max-items", "0"]),
        2,
    );
    assert!(err.contains("--max-items 0"), "{err}");
}
