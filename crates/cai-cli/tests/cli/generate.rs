//! `cai generate`: output records, resume after a crash, seeds independent of batching,
//! dialogue contexts.

use std::collections::HashSet;

use crate::helpers::{assert_exit, read_jsonl, stderr, Workdir};

const PROMPTS: &str = "{\"prompt\": \"The capital of France\"}\n\
    {\"id\": \"bread\", \"messages\": [{\"role\": \"user\", \"content\": \"How do I bake bread?\"}]}\n\
    \n\
    {\"id\": 7, \"prompt\": \"Human: hi\", \"extra\": [1, 2]}\n\
    {\"prompt\": \"Mix flour, water\"}\n";

fn greedy(model: &str, output: &str) -> Vec<String> {
    [
        "generate",
        "--model",
        model,
        "--input",
        "in.jsonl",
        "--output",
        output,
        "--temperature",
        "0",
        "--max-new-tokens",
        "6",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn run(work: &Workdir, args: &[String]) -> std::process::Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    work.cai_ok(&args)
}

#[test]
fn greedy_generation_writes_one_record_per_prompt() {
    let work = Workdir::new();
    let model = work.tiny_model();
    work.write("in.jsonl", PROMPTS);
    run(&work, &greedy(model, "out.jsonl"));
    let records = read_jsonl(&work.path("out.jsonl"));
    let ids: Vec<&str> = records
        .iter()
        .map(|r| r["id"].as_str().unwrap_or("7"))
        .collect();
    // Ids default to the 0-based line index; given ids (string or number) are kept.
    assert_eq!(ids, ["0", "bread", "7", "4"]);
    assert_eq!(records[2]["id"], 7);
    assert_eq!(records[2]["extra"], serde_json::json!([1, 2]));
    for record in &records {
        assert!(record["completion"].is_string(), "{record}");
        let tokens = record["token_ids"].as_array().unwrap();
        assert!(!tokens.is_empty() && tokens.len() <= 6, "{record}");
        let reason = record["finish_reason"].as_str().unwrap();
        assert!(["eos", "stop", "length"].contains(&reason), "{record}");
    }
    assert!(work.path("out.config.json").is_file());
}

#[test]
fn rerun_resumes_without_duplicating_and_repairs_a_cut_line() {
    let work = Workdir::new();
    let model = work.tiny_model();
    work.write("in.jsonl", PROMPTS);
    run(&work, &greedy(model, "full.jsonl"));
    let full = work.read("full.jsonl");

    // A rerun finds everything done.
    let again = run(&work, &greedy(model, "full.jsonl"));
    assert!(
        stderr(&again).contains("already done"),
        "{}",
        stderr(&again)
    );
    assert_eq!(work.read("full.jsonl"), full);

    // A crash after one record and part of the next: the cut line is dropped and redone.
    let first_line_end = full.find('\n').unwrap() + 1;
    let crashed = format!(
        "{}{}",
        &full[..first_line_end],
        &full[first_line_end..first_line_end + 20]
    );
    work.write("part.jsonl", &crashed);
    // A crashed run leaves its settings beside its output.
    work.write("part.config.json", &work.read("full.config.json"));
    let mut args = greedy(model, "part.jsonl");
    args.extend(["--batch-size".into(), "1".into()]);
    let resumed = run(&work, &args);
    assert!(
        stderr(&resumed).contains("resuming after 1 done"),
        "{}",
        stderr(&resumed)
    );
    assert_eq!(work.read("part.jsonl"), full);
    let records = read_jsonl(&work.path("part.jsonl"));
    let ids: HashSet<String> = records.iter().map(|r| r["id"].to_string()).collect();
    assert_eq!(ids.len(), records.len());
}

#[test]
fn changed_settings_do_not_resume_silently() {
    let work = Workdir::new();
    let model = work.tiny_model();
    work.write("in.jsonl", PROMPTS);
    run(&work, &greedy(model, "out.jsonl"));
    let mut changed = greedy(model, "out.jsonl");
    let temperature = changed.iter().position(|a| a == "--temperature").unwrap();
    changed[temperature + 1] = "0.5".into();
    let args: Vec<&str> = changed.iter().map(String::as_str).collect();
    let err = assert_exit(&work.cai(&args), 1);
    assert!(err.contains("sampling was"), "{err}");
    assert!(err.contains("--overwrite"), "{err}");
    changed.push("--overwrite".into());
    run(&work, &changed);
}

#[test]
fn sampled_tokens_do_not_depend_on_the_batch_size() {
    let work = Workdir::new();
    let model = work.tiny_model();
    work.write("in.jsonl", PROMPTS);
    for (output, batch) in [("b1.jsonl", "1"), ("b32.jsonl", "32")] {
        work.cai_ok(&[
            "generate",
            "--model",
            model,
            "--input",
            "in.jsonl",
            "--output",
            output,
            "--temperature",
            "1",
            "--top-k",
            "50",
            "--seed",
            "5",
            "--max-new-tokens",
            "6",
            "--batch-size",
            batch,
        ]);
    }
    assert_eq!(work.read("b1.jsonl"), work.read("b32.jsonl"));
}

#[test]
fn context_is_prefilled_and_reported() {
    let work = Workdir::new();
    let model = work.tiny_model();
    work.write("in.jsonl", PROMPTS);
    work.write(
        "hhh.txt",
        "\n\nHuman: What is the capital of France?\n\nAssistant: The capital of France is Paris.",
    );
    let base = greedy(model, "plain.jsonl");
    run(&work, &base);
    let mut args = greedy(model, "context.jsonl");
    args.extend(["--context".into(), "hhh.txt".into()]);
    let output = run(&work, &args);
    let err = stderr(&output);
    assert!(err.contains("hhh.txt") && err.contains("tokens"), "{err}");
    let plain = read_jsonl(&work.path("plain.jsonl"));
    let with_context = read_jsonl(&work.path("context.jsonl"));
    assert_eq!(plain.len(), with_context.len());
    assert_ne!(
        plain, with_context,
        "the context should change the greedy completions"
    );
}
