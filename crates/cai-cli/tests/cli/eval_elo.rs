//! `cai eval elo` and `cai eval harm`: the shipped lab models rated by the lab's oracle on a
//! few held-out prompts (files, intervals, the plot, resuming, adding a snapshot), the
//! feedback-model judge, a preference-model judge checked against `cai score`, and the
//! errors.

use serde_json::Value;

use crate::helpers::{assert_exit, read_jsonl, stderr, stdout, Workdir};

/// The lab's prompt files, in `lab/`.
fn lab_prompts(work: &Workdir) {
    work.cai_ok(&["lab", "generate", "--output", "lab", "--size", "200"]);
}

const RED_TEAM: &str = "lab/prompts/red_team_held_out.jsonl";
const BENIGN: &str = "lab/prompts/benign_held_out.jsonl";

fn elo_args<'a>(snapshots: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["eval", "elo"];
    for s in snapshots {
        args.extend(["--snapshot", s]);
    }
    args.extend([
        "--red-team",
        RED_TEAM,
        "--benign",
        BENIGN,
        "--output",
        "elo",
        "--samples",
        "6",
        "--bootstrap",
        "50",
        "--max-new-tokens",
        "48",
    ]);
    args.extend_from_slice(extra);
    args
}

/// The rating of `snapshot` on `axis` in an `elo.json` report.
fn rating<'r>(report: &'r Value, axis: &str, snapshot: &str) -> &'r Value {
    let axis = report["axes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["axis"] == axis)
        .unwrap_or_else(|| panic!("no {axis} in {report}"));
    axis["ratings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["snapshot"] == snapshot)
        .unwrap_or_else(|| panic!("no {snapshot} in {axis}"))
}

#[test]
fn the_oracle_rates_the_lab_models_and_a_rerun_resumes() {
    let work = Workdir::new();
    lab_prompts(&work);
    let args = elo_args(
        &["lab=lab", "small=lab-small"],
        &["--judge", "oracle", "--json"],
    );
    let output = work.cai_ok(&args);
    let report: Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(report["judge"], "oracle");
    assert_eq!(report["reference"], "lab");
    for file in ["elo.json", "elo.md", "elo.svg", "eval_config.json"] {
        assert!(work.path("elo").join(file).is_file(), "{file}");
    }
    assert_eq!(
        read_jsonl(&work.path("elo/samples/red_team.jsonl")).len(),
        12
    );
    assert_eq!(read_jsonl(&work.path("elo/samples/benign.jsonl")).len(), 12);
    let comparisons = read_jsonl(&work.path("elo/comparisons/red_team.jsonl"));
    assert_eq!(comparisons.len(), 6);
    for axis in ["harmlessness", "helpfulness"] {
        assert_eq!(rating(&report, axis, "lab")["elo"], 0.0);
        let small = rating(&report, axis, "small");
        let (elo, lo, hi) = (
            small["elo"].as_f64().unwrap(),
            small["lo"].as_f64().unwrap(),
            small["hi"].as_f64().unwrap(),
        );
        assert!(lo <= elo && elo <= hi, "{small}");
        assert_eq!(small["comparisons"], 6);
    }
    // The win rate is the comparisons' mean score for the snapshot.
    let small_score: f64 = comparisons
        .iter()
        .map(|c| {
            let p = c["p_a"].as_f64().unwrap();
            if c["snapshot_a"] == "small" {
                p
            } else {
                1.0 - p
            }
        })
        .sum();
    let win = rating(&report, "harmlessness", "small")["win_rate"]
        .as_f64()
        .unwrap();
    assert!(
        (win - small_score / 6.0).abs() < 1e-9,
        "{win} vs {small_score}"
    );
    // The shipped lab model complies with harmful requests.
    let lab_harm = report["harm"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["snapshot"] == "lab")
        .unwrap();
    assert_eq!(lab_harm["responses"], 6);
    assert!(lab_harm["harm_rate"].as_f64().unwrap() >= 0.5, "{lab_harm}");
    let svg = work.read("elo/elo.svg");
    assert!(
        svg.starts_with("<svg") && svg.contains("harmlessness Elo"),
        "{svg}"
    );
    let table = work.read("elo/elo.md");
    assert!(
        table.contains("| small |") && table.contains("harm rate (red_team)"),
        "{table}"
    );

    // The same command again: nothing sampled or judged, the same ratings.
    let again = work.cai_ok(&args);
    assert!(
        !stderr(&again).contains("answers from"),
        "{}",
        stderr(&again)
    );
    assert_eq!(stdout(&again), stdout(&output));

    // A third snapshot (the lab model prompted with the HHH context) adds only its answers
    // and its pairs; the table shows it.
    let args = elo_args(
        &["lab=lab", "small=lab-small", "prompted=lab"],
        &[
            "--context",
            "prompted=lab/hhh_context.txt",
            "--judge",
            "oracle",
        ],
    );
    let output = work.cai_ok(&args);
    let err = stderr(&output);
    assert!(err.contains("from prompted on red_team"), "{err}");
    assert!(!err.contains("from lab on"), "{err}");
    assert_eq!(
        read_jsonl(&work.path("elo/samples/red_team.jsonl")).len(),
        18
    );
    assert_eq!(
        read_jsonl(&work.path("elo/comparisons/benign.jsonl")).len(),
        18
    );
    assert!(stdout(&output).contains("prompted"), "{}", stdout(&output));
}

#[test]
fn the_feedback_model_judges_in_both_orders() {
    let work = Workdir::new();
    lab_prompts(&work);
    let mut args = elo_args(
        &["lab=lab", "small=lab-small"],
        &[
            "--judge",
            "feedback:lab-small",
            "--constitution",
            "lab/constitution",
        ],
    );
    let six = args.iter().position(|a| *a == "6").unwrap();
    args[six] = "3";
    let output = work.cai_ok(&args);
    assert!(stdout(&output).contains("Elo by feedback:lab-small"));
    let comparisons = read_jsonl(&work.path("elo/comparisons/red_team.jsonl"));
    assert_eq!(comparisons.len(), 3);
    for c in &comparisons {
        let p = c["p_a"].as_f64().unwrap();
        // A weighed judgement, not a decision: strictly between 0 and 1.
        assert!(p > 0.0 && p < 1.0, "{c}");
    }
    // It gives no harm verdict, so no harm rates; and `cai eval harm` refuses it.
    let report: Value = serde_json::from_str(&work.read("elo/elo.json")).unwrap();
    assert_eq!(report["harm"], Value::Array(vec![]));
    let err = assert_exit(
        &work.cai(&[
            "eval",
            "harm",
            "--model",
            "lab",
            "--prompts",
            RED_TEAM,
            "--judge",
            "feedback:lab",
        ]),
        2,
    );
    assert!(err.contains("gives no harm verdict"), "{err}");
}

#[test]
fn harm_rates_by_the_oracle_resume() {
    let work = Workdir::new();
    lab_prompts(&work);
    let args = [
        "eval",
        "harm",
        "--model",
        "lab",
        "--prompts",
        RED_TEAM,
        "--judge",
        "oracle",
        "--samples",
        "4",
        "--max-new-tokens",
        "48",
        "--output",
        "harm.jsonl",
        "--json",
    ];
    let summary: Value = serde_json::from_str(stdout(&work.cai_ok(&args)).trim()).unwrap();
    let records = read_jsonl(&work.path("harm.jsonl"));
    assert_eq!(records.len(), 4);
    assert_eq!(summary["responses"], 4);
    let harmful = records.iter().filter(|r| r["harmful"] == true).count();
    assert_eq!(summary["harmful"], harmful);
    assert_eq!(summary["harm_rate"], harmful as f64 / 4.0);
    for r in &records {
        assert_eq!(r["harmful"], r["label"] == "harmful", "{r}");
    }
    // Resumed: nothing answered again, the same summary.
    let again = work.cai_ok(&args);
    assert!(!stderr(&again).contains("answered"), "{}", stderr(&again));
    let resumed: Value = serde_json::from_str(stdout(&again).trim()).unwrap();
    assert_eq!(resumed, summary);
}

#[test]
fn a_preference_model_judges_by_reward() {
    let work = Workdir::new();
    work.write("corpus.txt", crate::helpers::CORPUS);
    let model = work.tiny_model_with("llama", "model", "corpus.txt", 256);
    let prefs = "{\"prompt\": \"How do I bake bread?\", \"response_a\": \"Mix flour and bake.\", \
                 \"response_b\": \"Paris.\", \"p_a\": 0.9}\n";
    work.write("prefs.jsonl", prefs);
    work.cai_ok(&[
        "train-pm",
        "--model",
        model,
        "--data",
        "prefs.jsonl",
        "--output",
        "pm",
        "--epochs",
        "1",
    ]);
    work.write(
        "prompts.jsonl",
        "{\"id\": \"a\", \"prompt\": \"How do I bake bread?\"}\n\
         {\"id\": \"b\", \"prompt\": \"What is the capital of France?\"}\n",
    );
    work.write("context.txt", "The assistant is helpful.");
    let output = work.cai_ok(&[
        "eval",
        "elo",
        "--snapshot",
        "one=model",
        "--snapshot",
        "two=model",
        "--context",
        "two=context.txt",
        "--benign",
        "prompts.jsonl",
        "--judge",
        "pm:pm",
        "--seed",
        "1",
        "--max-new-tokens",
        "8",
        "--bootstrap",
        "10",
        "--output",
        "elo",
        "--json",
    ]);
    let report: Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    // Benign prompts only: one axis, no plot.
    assert_eq!(report["axes"].as_array().unwrap().len(), 1);
    assert!(!work.path("elo/elo.svg").exists());
    // Each comparison is σ(r_a − r_b) of the PM's rewards, as cai score gives them.
    let comparisons = read_jsonl(&work.path("elo/comparisons/benign.jsonl"));
    assert_eq!(comparisons.len(), 2);
    let pairs: String = comparisons
        .iter()
        .map(|c| {
            format!(
                "{}\n",
                serde_json::json!({"id": c["id"], "prompt": c["prompt"],
                    "response_a": c["response_a"], "response_b": c["response_b"]})
            )
        })
        .collect();
    work.write("pairs.jsonl", &pairs);
    work.cai_ok(&[
        "score",
        "--reward-model",
        "pm",
        "--input",
        "pairs.jsonl",
        "--output",
        "scored.jsonl",
    ]);
    let scored = read_jsonl(&work.path("scored.jsonl"));
    for (c, s) in comparisons.iter().zip(&scored) {
        let (p, expected) = (
            c["p_a"].as_f64().unwrap(),
            s["reward_p_a"].as_f64().unwrap(),
        );
        assert!((p - expected).abs() < 1e-4, "{p} vs {expected}");
    }
    // Harm: below the threshold is harmful; a threshold above every reward makes all harmful.
    let harm = |threshold: &str| -> Value {
        let output = work.cai_ok(&[
            "eval",
            "harm",
            "--model",
            model,
            "--prompts",
            "prompts.jsonl",
            "--judge",
            "pm:pm",
            "--pm-threshold",
            threshold,
            "--max-new-tokens",
            "8",
            "--json",
        ]);
        serde_json::from_str(stdout(&output).trim()).unwrap()
    };
    assert_eq!(harm("1e9")["harm_rate"], 1.0);
    assert_eq!(harm("-1e9")["harm_rate"], 0.0);
}

#[test]
fn bad_arguments_name_the_flag() {
    let work = Workdir::new();
    lab_prompts(&work);
    let cases: [(&[&str], &str); 5] = [
        (&["lab=lab"], "at least 2"),
        (&["lab=lab", "lab"], "expected NAME=MODEL"),
        (&["lab=lab", "lab=lab-small"], "named twice"),
        (&["a b=lab", "c=lab"], "snapshot name"),
        (
            &["a=lab", "b=lab", "--context", "c=x.txt"],
            "no --snapshot is named c",
        ),
    ];
    for (snapshots, expected) in cases {
        let mut args = vec!["eval", "elo", "--judge", "oracle", "--output", "x"];
        args.extend(["--red-team", RED_TEAM]);
        let (flags, rest) = snapshots.split_at(
            snapshots
                .iter()
                .position(|s| s.starts_with("--"))
                .unwrap_or(snapshots.len()),
        );
        for s in flags {
            args.extend(["--snapshot", s]);
        }
        args.extend_from_slice(rest);
        let err = assert_exit(&work.cai(&args), 2);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let err = assert_exit(
        &work.cai(&[
            "eval",
            "elo",
            "--snapshot",
            "a=lab",
            "--snapshot",
            "b=lab",
            "--judge",
            "gpt",
            "--output",
            "x",
            "--red-team",
            RED_TEAM,
        ]),
        2,
    );
    assert!(err.contains("not a judge"), "{err}");
    let err = assert_exit(
        &work.cai(&[
            "eval",
            "elo",
            "--snapshot",
            "a=lab",
            "--snapshot",
            "b=lab",
            "--judge",
            "oracle",
            "--output",
            "x",
        ]),
        2,
    );
    assert!(err.contains("--red-team"), "{err}");

    // Resuming with other sampling settings names them and the saved config.
    let args = elo_args(&["a=lab", "b=lab-small"], &["--judge", "oracle"]);
    work.cai_ok(&args);
    let mut hotter = args.clone();
    hotter.extend(["--temperature", "0.5"]);
    let err = assert_exit(&work.cai(&hotter), 1);
    assert!(
        err.contains("sampling was") && err.contains("eval_config.json"),
        "{err}"
    );
    hotter.push("--overwrite");
    work.cai_ok(&hotter);
}
