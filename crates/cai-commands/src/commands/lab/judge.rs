//! `cai lab judge`: the oracle's verdict on responses to lab prompts — each response's kind
//! and scores, or the preference between two responses — with a summary of rates.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use cai_core::jsonl::{read_jsonl_values, write_jsonl_atomic};
use cai_lab::{Judgement, Oracle, ResponseKind, World};
use clap::Args;
use serde_json::{json, Value};

/// Raw `cai lab judge` arguments.
#[derive(Debug, Args)]
pub struct JudgeArgs {
    /// JSONL of {"prompt", "response"} records, or {"prompt", "response_a", "response_b"}
    /// pairs; the prompt is a lab request or a transcript ending in one
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// JSONL to write: each record plus "task", "harmful_prompt" and its verdict ("kind",
    /// "harmlessness", "helpfulness"; for pairs "judgement_a", "judgement_b", "a_better")
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the summary as one JSON object
    #[arg(long)]
    pub json: bool,
    /// For pairs, also write the oracle's verdict as the label "p_a" (1, 0, or 0.5 for a tie),
    /// replacing any there: preference data for `cai train-pm` as a human labeller would give
    /// it (the paper's PM mixes human helpfulness comparisons with AI harmlessness labels)
    #[arg(long, requires = "output")]
    pub labels: bool,
}

/// Tallies over every judged response.
#[derive(Default)]
struct Summary {
    records: usize,
    pairs: usize,
    kinds: BTreeMap<&'static str, usize>,
    harmful_prompt_responses: usize,
    benign_prompt_responses: usize,
    harmful_prompt_kinds: BTreeMap<&'static str, usize>,
    benign_prompt_kinds: BTreeMap<&'static str, usize>,
    harmlessness: f64,
    helpfulness: f64,
    a_better: f64,
}

impl Summary {
    fn add(&mut self, harmful_prompt: bool, j: &Judgement) {
        *self.kinds.entry(j.kind.name()).or_default() += 1;
        let (n, kinds) = if harmful_prompt {
            (
                &mut self.harmful_prompt_responses,
                &mut self.harmful_prompt_kinds,
            )
        } else {
            (
                &mut self.benign_prompt_responses,
                &mut self.benign_prompt_kinds,
            )
        };
        *n += 1;
        *kinds.entry(j.kind.name()).or_default() += 1;
        self.harmlessness += j.harmlessness;
        self.helpfulness += j.helpfulness;
    }

    fn to_json(&self) -> Value {
        let responses = self.harmful_prompt_responses + self.benign_prompt_responses;
        let rate = |kinds: &BTreeMap<&str, usize>, kind: ResponseKind, n: usize| {
            (n > 0).then(|| kinds.get(kind.name()).copied().unwrap_or(0) as f64 / n as f64)
        };
        let h = self.harmful_prompt_responses;
        let mean = |total: f64, n: usize| (n > 0).then(|| total / n as f64);
        let kinds: BTreeMap<&str, usize> = ResponseKind::ALL
            .iter()
            .map(|k| (k.name(), self.kinds.get(k.name()).copied().unwrap_or(0)))
            .collect();
        json!({
            "records": self.records,
            "pairs": self.pairs,
            "responses": responses,
            "harmful_prompt_responses": h,
            "benign_prompt_responses": self.benign_prompt_responses,
            "kinds": kinds,
            "harmful_rate": rate(&self.harmful_prompt_kinds, ResponseKind::Harmful, h),
            "harmless_helpful_rate":
                rate(&self.harmful_prompt_kinds, ResponseKind::HarmlessHelpful, h),
            "evasive_rate": rate(&self.harmful_prompt_kinds, ResponseKind::Evasive, h),
            "helpful_rate": rate(
                &self.benign_prompt_kinds,
                ResponseKind::Helpful,
                self.benign_prompt_responses
            ),
            "off_topic_rate": rate(&self.kinds, ResponseKind::OffTopic, responses),
            "mean_harmlessness": mean(self.harmlessness, responses),
            "mean_helpfulness": mean(self.helpfulness, responses),
            "mean_a_better": mean(self.a_better, self.pairs),
        })
    }
}

fn text_field<'a>(record: &'a Value, field: &str) -> Option<&'a str> {
    record.get(field).and_then(Value::as_str)
}

/// Run `cai lab judge`.
pub fn run(args: JudgeArgs) -> anyhow::Result<()> {
    let _claim = args
        .output
        .as_deref()
        .map(|output| crate::resume::claim(output, &[&args.input]))
        .transpose()?;
    let oracle = Oracle::new(&World::new(0));
    let records = read_jsonl_values(&args.input)?;
    let mut summary = Summary::default();
    let mut judged = Vec::with_capacity(records.len());
    for (line, mut record) in records {
        let at = || format!("{}:{line}", args.input.display());
        let Some(prompt) = text_field(&record, "prompt").map(str::to_owned) else {
            bail!("{}: expected a \"prompt\" string field", at());
        };
        let request = oracle.parse_prompt(&prompt).with_context(at)?;
        let harmful = request.harmful();
        let verdict = if let Some(response) = text_field(&record, "response") {
            let j = oracle.judge(&request, response);
            summary.add(harmful, &j);
            json!({"kind": j.kind, "harmlessness": j.harmlessness, "helpfulness": j.helpfulness})
        } else if let (Some(a), Some(b)) = (
            text_field(&record, "response_a"),
            text_field(&record, "response_b"),
        ) {
            let p = oracle.prefer(&prompt, a, b).with_context(at)?;
            summary.add(harmful, &p.a);
            summary.add(harmful, &p.b);
            summary.pairs += 1;
            summary.a_better += p.a_better;
            let mut verdict =
                json!({"judgement_a": p.a, "judgement_b": p.b, "a_better": p.a_better});
            if args.labels {
                verdict["p_a"] = json!(p.a_better);
            }
            verdict
        } else {
            bail!(
                "{}: expected a \"response\" string, or \"response_a\" and \"response_b\"",
                at()
            );
        };
        summary.records += 1;
        let fields = record
            .as_object_mut()
            .expect("a record with a prompt is an object");
        fields.insert("task".into(), json!(request.task_id()));
        fields.insert("harmful_prompt".into(), json!(harmful));
        fields.extend(verdict.as_object().expect("an object").clone());
        judged.push(record);
    }
    if let Some(output) = &args.output {
        write_jsonl_atomic(output, &judged)
            .with_context(|| format!("writing {}", output.display()))?;
    }
    let summary = summary.to_json();
    if args.json {
        println!("{summary}");
    } else {
        print_table(&summary);
    }
    Ok(())
}

fn print_table(summary: &Value) {
    println!(
        "{} records ({} pairs): {} responses to harmful prompts, {} to benign prompts",
        summary["records"],
        summary["pairs"],
        summary["harmful_prompt_responses"],
        summary["benign_prompt_responses"]
    );
    if let Some(kinds) = summary["kinds"].as_object() {
        for (kind, n) in kinds {
            println!("  {kind:<18} {n:>6}");
        }
    }
    for rate in [
        "harmful_rate",
        "harmless_helpful_rate",
        "evasive_rate",
        "helpful_rate",
        "off_topic_rate",
        "mean_harmlessness",
        "mean_helpfulness",
        "mean_a_better",
    ] {
        if let Some(x) = summary[rate].as_f64() {
            println!("  {rate:<22} {x:.3}");
        }
    }
}
