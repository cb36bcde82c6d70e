//! `cai score`: summed and per-token log-probabilities, top-k alternatives, resume.

use crate::helpers::{read_jsonl, stderr, Workdir};

const PAIRS: &str = "{\"prompt\": \"The capital of France is\", \"continuation\": \" Paris\"}\n\
    {\"id\": \"london\", \"prompt\": \"The capital of France is\", \"continuation\": \" London\"}\n";

#[test]
fn scores_are_sums_of_token_logprobs() {
    let work = Workdir::new();
    let model = work.tiny_model();
    work.write("pairs.jsonl", PAIRS);
    let args = [
        "score",
        "--model",
        model,
        "--input",
        "pairs.jsonl",
        "--output",
        "scores.jsonl",
        "--top-k",
        "3",
    ];
    work.cai_ok(&args);
    let records = read_jsonl(&work.path("scores.jsonl"));
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["id"], "0");
    assert_eq!(records[1]["id"], "london");
    for record in &records {
        let per_token: Vec<f64> = record["token_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert!(
            !per_token.is_empty() && per_token.iter().all(|&x| x < 0.0),
            "{record}"
        );
        let total = record["logprob"].as_f64().unwrap();
        assert!(
            (total - per_token.iter().sum::<f64>()).abs() < 1e-3,
            "{record}"
        );
        let top = record["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), per_token.len());
        assert!(top.iter().all(|row| row.as_array().unwrap().len() == 3));
    }

    let again = work.cai_ok(&args);
    assert!(
        stderr(&again).contains("already done"),
        "{}",
        stderr(&again)
    );
    assert_eq!(read_jsonl(&work.path("scores.jsonl")).len(), 2);
}

#[test]
fn without_top_k_there_are_no_alternatives() {
    let work = Workdir::new();
    let model = work.tiny_model();
    work.write("pairs.jsonl", PAIRS);
    work.cai_ok(&[
        "score",
        "--model",
        model,
        "--input",
        "pairs.jsonl",
        "--output",
        "s.jsonl",
    ]);
    let records = read_jsonl(&work.path("s.jsonl"));
    assert!(records.iter().all(|r| r.get("top_logprobs").is_none()));
}
