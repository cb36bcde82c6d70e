//! How well preference labels on lab prompts agree with the lab's oracle: agreement, the
//! calibration of the labels (ECE and a reliability table), and the position picks the label
//! records hold. It measures AI labels (`cai label` output, field `p_a`) and preference-model
//! predictions (`cai score --reward-model` output on pairs, field `reward_p_a`) alike.
//!
//! ```text
//! cargo run --release -p cai-cli --example label_agreement -- LABELS.jsonl \
//!     [--p-field p_a] [--oracle-pairs OUT.jsonl]
//! ```
//!
//! Prints one JSON object. Pairs the oracle calls a tie are left out of agreement and
//! calibration; a label of exactly 0.5 counts as half right. With `--oracle-pairs`, every
//! pair the oracle decides is written with the oracle's preference as `p_a`: data a
//! preference model can be evaluated on (`cai train-pm --eval-data`).

use std::path::PathBuf;

use anyhow::{bail, Context};
use cai_core::jsonl::{read_jsonl_values, write_jsonl_atomic};
use cai_lab::{Oracle, World};
use cai_pipeline::label::record::{LabelRecord, LabelSummary};
use cai_train::pm::calibration::calibration;
use serde_json::{json, Value};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut input: Option<PathBuf> = None;
    let mut field = "p_a".to_owned();
    let mut oracle_pairs: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--p-field" => field = args.next().context("--p-field needs a field name")?,
            "--oracle-pairs" => {
                oracle_pairs = Some(args.next().context("--oracle-pairs needs a path")?.into())
            }
            _ if input.is_none() => input = Some(arg.into()),
            _ => bail!("unexpected argument {arg:?}"),
        }
    }
    let input = input.context("usage: label_agreement LABELS.jsonl [--p-field F]")?;
    let oracle = Oracle::new(&World::new(0));
    let records = read_jsonl_values(&input)?;

    let mut decided = Vec::new();
    let mut pairs_out = Vec::new();
    let (mut ties, mut hits, mut harmful, mut harmful_hits, mut a_better) = (0, 0.0, 0, 0.0, 0);
    for (line, record) in &records {
        let text = |key: &str| {
            record[key]
                .as_str()
                .with_context(|| format!("{}:{line}: no string \"{key}\"", input.display()))
        };
        let (prompt, a, b) = (text("prompt")?, text("response_a")?, text("response_b")?);
        let p = record[field.as_str()]
            .as_f64()
            .with_context(|| format!("{}:{line}: no number \"{field}\"", input.display()))?;
        let truth = oracle.prefer(prompt, a, b)?.a_better;
        if truth == 0.5 {
            ties += 1;
            continue;
        }
        let hit = match (p > 0.5, p < 0.5) {
            (false, false) => 0.5,
            (model_a, _) => f64::from(u8::from(model_a == (truth == 1.0))),
        };
        hits += hit;
        if oracle.parse_prompt(prompt)?.harmful() {
            harmful += 1;
            harmful_hits += hit;
        }
        a_better += usize::from(truth == 1.0);
        decided.push((p, truth));
        if oracle_pairs.is_some() {
            let mut pair = json!({
                "id": record["id"], "prompt": prompt, "response_a": a, "response_b": b,
                "p_a": truth,
            });
            if let Some(conversation) = record.get("conversation") {
                pair["conversation"] = conversation.clone();
            }
            pairs_out.push(pair);
        }
    }
    let n = decided.len();
    let rate = |x: f64, n: usize| (n > 0).then(|| x / n as f64);
    let c = calibration(&decided, 10);
    let labels: Vec<LabelRecord> = records
        .iter()
        .filter_map(|(_, r)| serde_json::from_value(r.clone()).ok())
        .collect();
    let positions = (labels.len() == records.len())
        .then(|| LabelSummary::of(&labels))
        .flatten();
    let report = json!({
        "file": input,
        "field": field,
        "pairs": records.len(),
        "oracle_ties": ties,
        "decided": n,
        "agreement": rate(hits, n),
        "agreement_harmful_prompts": rate(harmful_hits, harmful),
        "agreement_benign_prompts": rate(hits - harmful_hits, n - harmful),
        "harmful_decided": harmful,
        "oracle_prefers_a": rate(a_better as f64, n),
        "ece": c.ece,
        "reliability": c.bins.iter().filter(|b| b.count > 0).map(|b| json!({
            "bin": [b.lo, b.hi], "n": b.count, "predicted": b.mean_predicted,
            "observed": b.observed,
        })).collect::<Vec<Value>>(),
        "positions": positions,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(path) = oracle_pairs {
        write_jsonl_atomic(&path, &pairs_out)?;
        eprintln!(
            "wrote {} oracle-labelled pairs to {}",
            pairs_out.len(),
            path.display()
        );
    }
    Ok(())
}
