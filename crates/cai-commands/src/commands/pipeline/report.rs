//! The run's report: `report.html` (self-contained: inline CSS and SVG, nothing fetched) and
//! its Markdown twin `report.md` (figures in `figures/`) — stages and timings, the measures of
//! every snapshot, training curves, the preference model's calibration, the Elo plot, the
//! safety table and plot, and samples of critiques, labels and RL to browse.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cai_pipeline::eval::safety::stats::Agreement;
use cai_pipeline::eval::safety::summary::{show_rate, SafetySummary};
use cai_pipeline::manifest::{Manifest, METRICS_FILE};
use cai_pipeline::recipe::Stage;
use cai_pipeline::runner::write_atomic;
use cai_pipeline::stages::eval::SAFETY_DIR;
use cai_report::document::Document;
use cai_report::figures::{self as plots, Point, Series};
use serde_json::Value;

use super::eval::{read_lab_eval, LabEvalLine, COMMAND_FILE, LAB_EVAL_FILE};
use super::run::RUN_FILE;
use super::status::run_stages;

/// Samples of each kind shown.
const SAMPLES: usize = 6;
/// RL samples shown from each of the first and the last logged step.
const RL_SAMPLES: usize = 4;

/// Write `report.html`, `report.md` and `figures/` into the run directory; the HTML's path.
pub(super) fn write(run_dir: &Path) -> anyhow::Result<PathBuf> {
    let run: Value = std::fs::read_to_string(run_dir.join(RUN_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let stages = run_stages(run_dir)?;
    let name = run["recipe"].as_str().unwrap_or("recipe");
    let quick = run["quick"].as_bool().unwrap_or(false);
    let title = format!(
        "cai pipeline — {name}{}",
        if quick { " (quick)" } else { "" }
    );
    let mut doc = Document::new(&title, run["description"].as_str().unwrap_or(""));

    let manifests: Vec<(Stage, Option<Manifest>)> = stages
        .iter()
        .map(|s| Ok((*s, Manifest::read(&run_dir.join(s.name()))?)))
        .collect::<anyhow::Result<_>>()?;
    stages_section(&mut doc, &manifests);
    let lab = read_lab_eval(&run_dir.join(Stage::Eval.name()).join(LAB_EVAL_FILE))?;
    if !lab.is_empty() {
        snapshots_section(&mut doc, &lab);
    }
    curves_section(&mut doc, run_dir);
    elo_section(&mut doc, run_dir);
    safety_section(&mut doc, run_dir);
    samples_section(&mut doc, run_dir);

    let total: f64 = manifests
        .iter()
        .filter_map(|(_, m)| m.as_ref().map(|m| m.seconds))
        .sum();
    let html = doc.run_page(&run_dir.display().to_string(), total);
    let figures = run_dir.join("figures");
    std::fs::create_dir_all(&figures).with_context(|| format!("creating {}", figures.display()))?;
    for (name, svg) in doc.figures() {
        write_atomic(&figures.join(format!("{name}.svg")), svg.as_bytes())?;
    }
    write_atomic(&run_dir.join("report.md"), doc.markdown().as_bytes())?;
    let path = run_dir.join("report.html");
    write_atomic(&path, html.as_bytes())?;
    Ok(path)
}

fn stages_section(doc: &mut Document, manifests: &[(Stage, Option<Manifest>)]) {
    doc.heading("Stages");
    let rows: Vec<Vec<String>> = manifests
        .iter()
        .map(|(stage, m)| match m {
            None => vec![
                stage.name().into(),
                "not started".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
            ],
            Some(m) => {
                let outputs: Vec<String> = m
                    .outputs
                    .iter()
                    .map(|o| match o.records {
                        Some(n) => format!("{}: {n} records", o.role),
                        None => format!("{}: {}", o.role, crate::human::bytes(o.bytes)),
                    })
                    .collect();
                // The report is written by the run holding the run directory, after its
                // stages: a stage still marked running was left so by a killed run.
                let status = match m.status {
                    cai_pipeline::manifest::Status::Running => "killed",
                    other => other.name(),
                };
                vec![
                    stage.name().into(),
                    status.into(),
                    format!("{:.1} s", m.seconds),
                    m.peak_rss_mib
                        .map_or("—".into(), |mib| format!("{:.0} MiB", mib)),
                    m.attempts.to_string(),
                    outputs.join("; "),
                ]
            }
        })
        .collect();
    doc.table(
        &[
            "stage",
            "status",
            "time",
            "peak memory",
            "attempts",
            "outputs",
        ],
        &rows,
    );
    let commands: Vec<(String, String)> = manifests
        .iter()
        .filter_map(|(s, m)| Some((s, m.as_ref()?)))
        .flat_map(|(s, m)| m.commands.iter().map(|c| (s.name().to_owned(), c.clone())))
        .collect();
    if !commands.is_empty() {
        doc.details("The commands each stage ran", &commands);
    }
    for (stage, m) in manifests {
        if let Some(error) = m.as_ref().and_then(|m| m.error.as_ref()) {
            doc.para(&format!("The {stage} stage failed: {error}"));
        }
    }
}

/// The snapshots' rows: the lab eval lines, with `prompted` (the base model after the
/// context) after `base`.
fn snapshot_rows(lab: &[LabEvalLine]) -> Vec<(String, Vec<Option<f64>>)> {
    let mut rows = Vec::new();
    for line in lab {
        let r = &line.report;
        rows.push((
            line.snapshot.clone(),
            vec![
                Some(r.harmful_rate),
                Some(r.harmful_rate_with_context),
                Some(r.harmless_helpful_rate),
                Some(r.evasive_rate),
                Some(r.helpful_rate),
                Some(r.critique_hit_rate),
                Some(r.mc_accuracy),
            ],
        ));
        if line.snapshot == "base" {
            rows.push((
                "prompted".into(),
                vec![
                    Some(r.harmful_rate_with_context),
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                ],
            ));
        }
    }
    rows
}

fn snapshots_section(doc: &mut Document, lab: &[LabEvalLine]) {
    doc.heading("Snapshots: the lab's measures");
    let first = &lab[0].report;
    doc.para(&format!(
        "cai lab eval on the held-out tasks of world {} ({} red-team, {} benign prompts; \
         greedy answers judged by the lab's oracle). \"prompted\" is the base model with the \
         HHH context in front; only its harmful rate is measured.",
        first.world_seed, first.red_team_items, first.benign_items
    ));
    let head = [
        "snapshot",
        "harmful",
        "harmful with context",
        "harmless-helpful",
        "evasive",
        "helpful",
        "critique hits",
        "mc accuracy",
    ];
    let rows: Vec<Vec<String>> = snapshot_rows(lab)
        .into_iter()
        .map(|(name, values)| {
            std::iter::once(name)
                .chain(
                    values
                        .into_iter()
                        .map(|v| v.map_or_else(|| "—".into(), |v| format!("{v:.3}"))),
                )
                .collect()
        })
        .collect();
    doc.table(&head, &rows);
    let commands: Vec<(String, String)> = lab
        .iter()
        .map(|l| {
            (
                format!("{} ({:.1} s)", l.snapshot, l.seconds),
                l.command.clone(),
            )
        })
        .collect();
    doc.details("The cai lab eval command of each snapshot", &commands);

    let mut points = Vec::new();
    let mut path = Vec::new();
    for (name, values) in snapshot_rows(lab) {
        let (Some(harmful), helpful) = (values[0], values[4]) else {
            continue;
        };
        // The prompted model's helpfulness is the base model's (the context is for harm).
        let helpful = helpful.or_else(|| {
            lab.iter()
                .find(|l| l.snapshot == "base")
                .map(|l| l.report.helpful_rate)
        });
        let Some(helpful) = helpful else { continue };
        if name == "sl-cai" || name.starts_with("rl-") {
            path.push((name.clone(), helpful, 1.0 - harmful));
        }
        if !name.starts_with("rl-step-") {
            points.push(Point {
                label: name,
                x: helpful,
                y: 1.0 - harmful,
            });
        }
    }
    // The line runs SL-CAI → RL checkpoints by step → RL-CAI.
    path.sort_by_key(|(name, _, _)| match name.as_str() {
        "sl-cai" => 0,
        "rl-cai" => u64::MAX,
        n => n.trim_start_matches("rl-step-").parse().unwrap_or(1),
    });
    let line: Vec<(f64, f64)> = path.iter().map(|(_, x, y)| (*x, *y)).collect();
    doc.figure(
        "snapshots",
        plots::scatter(
            "harmlessness against helpfulness (lab oracle)",
            "helpful rate (benign prompts)",
            "1 − harmful rate (red-team prompts)",
            &points,
            &line,
        ),
    );
}

/// The `(step, key)` points of a metrics file's lines of one split (lines without a split
/// count as "train").
fn curve(path: &Path, key: &str, split: &str) -> Vec<(f64, f64)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["split"].as_str().unwrap_or("train") == split)
        .filter_map(|v| Some((v["step"].as_f64()?, v[key].as_f64()?)))
        .collect()
}

/// The first key of `keys` that the metrics file has, with its train and eval curves.
fn curves(path: &Path, keys: &[&str]) -> Option<(String, Vec<Series>)> {
    keys.iter().find_map(|key| {
        let series: Vec<Series> = ["train", "eval"]
            .into_iter()
            .map(|split| Series {
                name: split.into(),
                points: curve(path, key, split),
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        (!series.is_empty()).then(|| (key.to_string(), series))
    })
}

fn curves_section(doc: &mut Document, run_dir: &Path) {
    let mut figures = Vec::new();
    let specs: [(Stage, &str, &[&str], &str); 5] = [
        (
            Stage::Distill,
            "distillation: KL to the prompted model",
            &["loss"],
            "distill-kl",
        ),
        (Stage::Sft, "SL-CAI fine-tuning loss", &["loss"], "sft-loss"),
        (
            Stage::TrainPm,
            "preference model loss",
            &["loss"],
            "pm-loss",
        ),
        (
            Stage::Rl,
            "RL reward",
            &["reward", "mean_reward", "reward_mean", "score"],
            "rl-reward",
        ),
        (
            Stage::Rl,
            "RL KL to the reference",
            &["kl", "kl_mean", "mean_kl"],
            "rl-kl",
        ),
    ];
    for (stage, title, keys, name) in specs {
        let path = run_dir.join(stage.name()).join(METRICS_FILE);
        if name == "rl-reward" {
            // The mean reward, and on red-team and helpful prompts apart.
            let series: Vec<Series> = [
                ("all", "reward"),
                ("red-team", "reward_red_team"),
                ("helpful", "reward_helpful"),
            ]
            .into_iter()
            .map(|(label, key)| Series {
                name: label.into(),
                points: curve(&path, key, "train"),
            })
            .filter(|s| !s.points.is_empty())
            .collect();
            if !series.is_empty() {
                figures.push((name, plots::lines(title, "step", "PM reward", &series)));
                continue;
            }
        }
        if let Some((key, series)) = curves(&path, keys) {
            figures.push((name, plots::lines(title, "step", &key, &series)));
        }
    }
    let reliability = run_dir
        .join(Stage::TrainPm.name())
        .join("model")
        .join("reliability.svg");
    let pm_eval: Option<Value> = std::fs::read_to_string(
        run_dir
            .join(Stage::TrainPm.name())
            .join("model")
            .join("pm_eval.json"),
    )
    .ok()
    .and_then(|t| serde_json::from_str(&t).ok());
    if figures.is_empty() && !reliability.is_file() {
        return;
    }
    doc.heading("Training curves and calibration");
    if let Some(pm) = &pm_eval {
        let number = |v: &Value| v.as_f64().map_or("—".to_owned(), |v| format!("{v:.3}"));
        doc.para(&format!(
            "Preference model on its labelled pairs: accuracy {} against the labels' hard \
             choice, expected calibration error {}.",
            number(&pm["accuracy"]),
            number(&pm["calibration"]["ece"])
        ));
    }
    if let Ok(svg) = std::fs::read_to_string(&reliability) {
        figures.push(("pm-reliability", svg));
    }
    doc.figures_row(figures);
}

fn elo_section(doc: &mut Document, run_dir: &Path) {
    let dir = run_dir.join(Stage::Eval.name()).join("elo");
    let Ok(svg) = std::fs::read_to_string(dir.join("elo.svg")) else {
        return;
    };
    doc.heading("Elo: harmlessness against helpfulness");
    doc.figure("elo", svg);
    if let Ok(md) = std::fs::read_to_string(dir.join("elo.md")) {
        let mut parts = vec![("elo.md".to_owned(), md)];
        if let Ok(command) = std::fs::read_to_string(dir.join("command.txt")) {
            parts.push(("command".to_owned(), command));
        }
        doc.details("The Elo table (cai eval elo) and its command", &parts);
    }
}

/// Attack success and over-refusal (`eval/safety/`, written by `cai eval safety`): the table
/// of `safety.json`, the judges' agreement, the notes, and the plot of ASR against
/// over-refusal.
fn safety_section(doc: &mut Document, run_dir: &Path) {
    let dir = run_dir.join(Stage::Eval.name()).join(SAFETY_DIR);
    let Some(summary) = std::fs::read_to_string(dir.join("safety.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<SafetySummary>(&t).ok())
    else {
        return;
    };
    doc.heading("Safety: attack success against over-refusal");
    doc.para(&format!(
        "cai eval safety: the attack success rate (ASR) is the share of red-team answers the \
         judge calls harmful, over-refusal the share of safe prompts it calls refused, contrast \
         refusal the refusal rate on the over-refusal set's unsafe prompts (higher is better); \
         95 % bootstrap intervals over {} resamples. Lower left in the plot is better: safe \
         without refusing.",
        summary.bootstrap
    ));
    let rows: Vec<Vec<String>> = summary
        .results
        .iter()
        .map(|r| {
            vec![
                r.snapshot.clone(),
                r.judge.clone(),
                show_rate(r.asr.as_ref()),
                show_rate(r.over_refusal.as_ref()),
                show_rate(r.contrast_refusal.as_ref()),
                r.mean_p_harmful.map_or("—".into(), |p| format!("{p:.3}")),
            ]
        })
        .collect();
    doc.table(
        &[
            "snapshot",
            "judge",
            "ASR",
            "over-refusal",
            "contrast refusal",
            "mean p(harmful)",
        ],
        &rows,
    );
    if !summary.agreement.is_empty() {
        let show = |a: Option<&Agreement>| match a {
            Some(a) => format!(
                "{} ({:.1} % agree, n {})",
                a.kappa.map_or("undefined".into(), |k| format!("{k:.3}")),
                100.0 * a.observed,
                a.n
            ),
            None => "—".into(),
        };
        let rows: Vec<Vec<String>> = summary
            .agreement
            .iter()
            .map(|a| {
                vec![
                    a.snapshot.clone(),
                    format!("{} / {}", a.judges[0], a.judges[1]),
                    show(a.harmful.as_ref()),
                    show(a.refusal.as_ref()),
                ]
            })
            .collect();
        doc.para("The first two judges' agreement (Cohen's κ):");
        doc.table(&["snapshot", "judges", "harmful κ", "refusal κ"], &rows);
    }
    for note in &summary.notes {
        doc.para(&format!("Note: {note}."));
    }
    if let Ok(svg) = std::fs::read_to_string(dir.join("safety.svg")) {
        doc.figure("safety", svg);
    }
    let mut parts = Vec::new();
    if let Ok(md) = std::fs::read_to_string(dir.join("safety.md")) {
        parts.push(("safety.md".to_owned(), md));
    }
    if let Ok(command) = std::fs::read_to_string(dir.join(COMMAND_FILE)) {
        parts.push(("command".to_owned(), command));
    }
    if !parts.is_empty() {
        doc.details(
            "The safety tables per category (cai eval safety) and its command",
            &parts,
        );
    }
}

/// The first `n` JSON lines of a file.
fn head(path: &Path, n: usize) -> Vec<Value> {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .take(n)
                .collect()
        })
        .unwrap_or_default()
}

/// RL samples of the first and the last step that logged any.
fn rl_samples(path: &Path) -> Vec<Value> {
    let all = head(path, usize::MAX);
    let steps: Vec<u64> = all.iter().filter_map(|v| v["step"].as_u64()).collect();
    let (Some(first), Some(last)) = (steps.iter().min(), steps.iter().max()) else {
        return Vec::new();
    };
    let pick = |step: u64| {
        all.iter()
            .filter(move |v| v["step"].as_u64() == Some(step))
            .take(RL_SAMPLES)
            .cloned()
    };
    let mut samples: Vec<Value> = pick(*first).collect();
    if last != first {
        samples.extend(pick(*last));
    }
    samples
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// What the critique samples are, naming the critic when one wrote the critiques (from the
/// settings `cai critique` saved beside its output).
fn critique_caption(config: &Path) -> String {
    let critic = std::fs::read_to_string(config)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|c| c["critic"].as_str().map(str::to_owned));
    match critic {
        Some(critic) => format!(
            "SL-CAI: answers to red-team prompts, critiqued and revised by the critic {critic}."
        ),
        None => "SL-CAI: answers to red-team prompts, critiqued and revised.".to_owned(),
    }
}

fn samples_section(doc: &mut Document, run_dir: &Path) {
    let critiques = head(&run_dir.join("critique").join("sl.jsonl"), SAMPLES);
    let labels = head(&run_dir.join("label").join("prefs.jsonl"), SAMPLES);
    let rl = rl_samples(&run_dir.join("rl").join("model").join("samples.jsonl"));
    if critiques.is_empty() && labels.is_empty() && rl.is_empty() {
        return;
    }
    doc.heading("Samples");
    if !critiques.is_empty() {
        doc.para(&critique_caption(
            &run_dir.join("critique").join("sl.config.json"),
        ));
    }
    for r in &critiques {
        let mut parts = vec![
            ("human".to_owned(), text(&r["prompt"])),
            ("initial answer".to_owned(), text(&r["initial_response"])),
        ];
        for (i, round) in r["rounds"].as_array().into_iter().flatten().enumerate() {
            let principle = text(&round["principle_id"]);
            parts.push((
                format!("round {} critique ({principle})", i + 1),
                text(&round["critique"]),
            ));
            parts.push((
                format!("round {} revision", i + 1),
                text(&round["revision"]),
            ));
        }
        doc.details(
            &format!("critique {}: {}", text(&r["id"]), text(&r["prompt"])),
            &parts,
        );
    }
    if !labels.is_empty() {
        doc.para("RL-CAI labels: two samples compared by the feedback model (p_a is the soft label that A is better).");
    }
    for r in &labels {
        let p_a = r["p_a"].as_f64().unwrap_or(f64::NAN);
        let parts = vec![
            ("human".to_owned(), text(&r["prompt"])),
            ("response A".to_owned(), text(&r["response_a"])),
            ("response B".to_owned(), text(&r["response_b"])),
        ];
        doc.details(
            &format!(
                "label {}: p_a = {p_a:.3} — {}",
                text(&r["id"]),
                text(&r["prompt"])
            ),
            &parts,
        );
    }
    if !rl.is_empty() {
        doc.para("RL-CAI: samples of the policy during training, with their rewards.");
    }
    for r in &rl {
        let parts = vec![
            ("human".to_owned(), text(&r["prompt"])),
            ("policy".to_owned(), text(&r["response"])),
        ];
        let reward = r["reward"].as_f64().unwrap_or(f64::NAN);
        doc.details(
            &format!(
                "RL step {} ({}): reward {reward:.3} — {}",
                text(&r["step"]),
                text(&r["kind"]).replace('_', "-"),
                text(&r["prompt"])
            ),
            &parts,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_split_train_and_eval_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        std::fs::write(
            &path,
            "{\"step\": 1, \"split\": \"train\", \"loss\": 2.0}\n{\"step\": 1, \"split\": \"eval\", \"loss\": 3.0}\n{\"step\": 2, \"loss\": 1.0}\n",
        )
        .unwrap();
        assert_eq!(curve(&path, "loss", "train"), vec![(1.0, 2.0), (2.0, 1.0)]);
        assert_eq!(curve(&path, "loss", "eval"), vec![(1.0, 3.0)]);
        let (key, series) = curves(&path, &["reward", "loss"]).unwrap();
        assert_eq!((key.as_str(), series.len()), ("loss", 2));
    }

    #[test]
    fn the_critique_caption_names_a_critic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sl.config.json");
        let plain = "SL-CAI: answers to red-team prompts, critiqued and revised.";
        assert_eq!(critique_caption(&path), plain);
        std::fs::write(&path, "{\"model\": {\"model\": \"lab\"}}").unwrap();
        assert_eq!(critique_caption(&path), plain);
        std::fs::write(&path, "{\"critic\": \"big\"}").unwrap();
        assert!(critique_caption(&path).ends_with("revised by the critic big."));
    }
}
