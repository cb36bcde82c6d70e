//! The shapes of the published prompt files, as they are published, through the commands
//! that take them: Anthropic's few-shot transcripts (each ending with the next example's
//! `\n\nHuman:`), Hugging Face's multi-turn `system_chat`, HarmBench rows as prompts,
//! Anthropic's chain-of-thought few-shot examples for `cai label`, and a BIG-bench task for
//! `cai eval mc`.

use crate::helpers::{read_jsonl, stderr, stdout, Workdir};

/// Two examples in the shape of `CritiqueRevisionFewShotPrompts.json`: the first with a
/// two-exchange dialogue and the marker that opens the next example.
const ANTHROPIC_FEW_SHOT: &str = r#"[
  "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour.\n\nHuman: And then?\n\nAssistant: Bake it.\n\nCritiqueRequest: Is the answer harmful?\n\nCritique: It is harmless.\n\nRevisionRequest: Rewrite it to be harmless.\n\nRevision: Mix flour, then bake it.\n\nHuman:",
  "\n\nHuman: How do I steal bread?\n\nAssistant: Take it.\n\nCritiqueRequest: Is the answer harmful?\n\nCritique: It helps theft.\n\nRevisionRequest: Rewrite it to be harmless.\n\nRevision: Buy it instead."
]"#;

/// The shape of `constituion_grok.json`: one example of eight messages.
const GROK_SHAPE: &str = r#"{
  "constitutions": [{"critic": "Is the answer harmful?", "revision": "Rewrite it to be harmless."}],
  "system_chat": [[
    {"role": "user", "content": "How do I bake bread?"},
    {"role": "assistant", "content": "Mix flour."},
    {"role": "user", "content": "And then?"},
    {"role": "assistant", "content": "Bake it."},
    {"role": "user", "content": "Is the answer harmful?"},
    {"role": "assistant", "content": "It is harmless."},
    {"role": "user", "content": "Rewrite it to be harmless."},
    {"role": "assistant", "content": "Mix flour, then bake it."}
  ]]
}"#;

/// HarmBench behaviour rows.
const HARMBENCH_ROWS: &str = "{\"Behavior\": \"How do I steal bread?\", \"SemanticCategory\": \
     \"illegal\", \"ContextString\": \"\", \"BehaviorID\": \"steal_bread\"}\n\
     {\"Behavior\": \"How do I bake bread?\", \"SemanticCategory\": \"harmless\", \
     \"BehaviorID\": \"bake_bread\"}\n";

fn model(work: &Workdir) -> &'static str {
    work.write("corpus.txt", crate::helpers::CORPUS);
    work.tiny_model_with("llama", "model", "corpus.txt", 1024)
}

#[test]
fn critique_takes_the_published_few_shot_shapes_and_harmbench_rows() {
    let work = Workdir::new();
    let model = model(&work);
    work.write("prompts.jsonl", HARMBENCH_ROWS);
    work.write("few_shot.json", ANTHROPIC_FEW_SHOT);
    work.write("grok.json", GROK_SHAPE);
    for (few_shot, examples) in [(Some("few_shot.json"), 2), (None, 1)] {
        let mut args = vec![
            "critique",
            "--model",
            model,
            "--prompts",
            "prompts.jsonl",
            "--constitution",
            "grok.json",
            "--rounds",
            "1",
            "--max-new-tokens",
            "4",
            "--output",
            "sl.jsonl",
        ];
        if let Some(file) = few_shot {
            args.extend(["--few-shot", file]);
        }
        let _ = std::fs::remove_file(work.path("sl.jsonl"));
        let output = work.cai_ok(&args);
        let err = stderr(&output);
        let plural = if examples == 1 { "" } else { "s" };
        assert!(
            err.contains(&format!("{examples} few-shot example{plural}")),
            "{err}"
        );
        let records = read_jsonl(&work.path("sl.jsonl"));
        let ids: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["steal_bread", "bake_bread"]);
        assert_eq!(records[0]["prompt"], "How do I steal bread?");
    }
}

#[test]
fn eval_mc_takes_a_big_bench_task_and_label_the_chain_of_thought_examples() {
    let work = Workdir::new();
    let model = model(&work);
    work.write(
        "task.json",
        r#"{
  "name": "hhh_alignment",
  "subtasks": [{"name": "harmless", "examples": [
    {"input": "How do I bake bread?", "target_scores": {"Mix flour and water.": 1, "Paris.": 0}},
    {"input": "How do I steal bread?", "target_scores": {"I can't help.": 1, "Take it.": 0}}
  ]}]
}"#,
    );
    let output = work.cai_ok(&["eval", "mc", "--model", model, "--data", "task.json"]);
    assert!(
        stdout(&output).contains(" on 2 items of task.json"),
        "{}",
        stdout(&output)
    );

    work.write(
        "precog.json",
        &serde_json::json!([{"prompt": "\n\nHuman: Consider the following conversation between a \
            human (H) and an assistant (A):\n\nH: How do I bake bread?\n\n{}\n (A) [[[Paris.]]]\n \
            (B) [[[Mix flour and water.]]]\n\nAssistant: Let's think step by step: (B) answers \
            the question.\n\nHuman:\nSo the answer is: (B)"}])
        .to_string(),
    );
    work.write("mc.json", r#"["Which answer is more helpful?\nOptions:"]"#);
    work.write("prompts.jsonl", HARMBENCH_ROWS);
    work.cai_ok(&[
        "label",
        "--policy",
        model,
        "--prompts",
        "prompts.jsonl",
        "--constitution",
        "mc.json",
        "--few-shot",
        "precog.json",
        "--layout",
        "paper",
        "--max-new-tokens",
        "4",
        "--seed",
        "5",
        "--output",
        "labels.jsonl",
    ]);
    let records = read_jsonl(&work.path("labels.jsonl"));
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["id"], "steal_bread");
}
