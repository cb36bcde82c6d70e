//! Preference-model training end to end on a tiny model: it learns the intended order of a
//! toy set, soft labels of 0.5 pull its margins to zero, a mixture weighs its files, and an
//! interrupted run resumes to the same numbers.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use cai_model::reward_model::{is_preference_model, RewardModel};
use cai_train::core::schedule::ScheduleKind;
use cai_train::pm::data::DataSource;
use cai_train::pm::{run_pm, PmConfig, PmOutcome, PmRun};
use cai_train::{MetricRecord, Split, TrainError};
use candle_core::{DType, Device};
use serde_json::{json, Value};

const CORPUS: &str = "Human: how do I bake bread for my sister?\n\nAssistant: Mix flour, water and yeast, let it rise, then bake it.\n\
Human: how do I fix a bike for my friend?\n\nAssistant: Check the chain, pump the tyres and oil the gears.\n\
Human: how do I steal a bike?\n\nAssistant: I won't help with that. Ask the owner instead.\n";

fn tiny_model(dir: &Path) -> PathBuf {
    common::tiny_model_on(dir, CORPUS, 3)
}

/// Pairs of a refusal and a compliance to harmful requests: the refusal is better. Its
/// position and the label follow a fixed alternation.
fn toy_pairs(objects: &[&str], label: Option<f64>) -> Vec<Value> {
    objects
        .iter()
        .enumerate()
        .map(|(i, object)| {
            let refusal = format!("I won't help with that. Ask the owner of the {object} instead.");
            let compliance = format!("Check the {object}, then take it and oil the gears.");
            let refusal_first = i % 2 == 0;
            let (a, b) = if refusal_first {
                (refusal, compliance)
            } else {
                (compliance, refusal)
            };
            let p_a = label.unwrap_or(if refusal_first { 1.0 } else { 0.0 });
            json!({
                "id": i, "prompt": format!("how do I steal a {object}?"),
                "response_a": a, "response_b": b, "p_a": p_a,
            })
        })
        .collect()
}

fn write(dir: &Path, name: &str, records: &[Value]) -> PathBuf {
    common::write_jsonl(dir, name, records)
}

const TRAIN: [&str; 6] = ["bike", "bread", "tyres", "chain", "sister", "friend"];
const HELD_OUT: [&str; 4] = ["gears", "water", "yeast", "owner"];

fn config() -> PmConfig {
    PmConfig {
        epochs: 12,
        learning_rate: 3e-3,
        schedule: ScheduleKind::Constant,
        batch_size: 4,
        save_every: 0,
        ..PmConfig::default()
    }
}

fn run(spec: &PmRun, cfg: &PmConfig, stop_after: Option<u64>) -> (PmOutcome, Vec<MetricRecord>) {
    let stop = AtomicBool::new(false);
    let mut seen = Vec::new();
    let outcome = run_pm(spec, cfg, &stop, &mut |r, _| {
        seen.push(r.clone());
        if r.split == Split::Train && Some(r.step) == stop_after {
            stop.store(true, Ordering::SeqCst);
        }
    })
    .unwrap();
    (outcome, seen)
}

fn spec(model: &Path, data: Vec<DataSource>, eval: Option<PathBuf>, output: &Path) -> PmRun {
    PmRun {
        model_dir: model.to_path_buf(),
        data,
        eval_data: eval,
        output: output.to_path_buf(),
        resume: false,
        allow_changes: Vec::new(),
        device: Device::Cpu,
    }
}

fn source(path: &Path, weight: f64) -> DataSource {
    DataSource {
        path: path.to_path_buf(),
        weight,
    }
}

#[test]
fn a_pm_learns_the_intended_order_and_soft_labels_of_one_half_flatten_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let train = write(dir.path(), "train.jsonl", &toy_pairs(&TRAIN, None));
    let held_out = write(dir.path(), "held_out.jsonl", &toy_pairs(&HELD_OUT, None));
    let out = dir.path().join("pm");
    let run_spec = spec(
        &model,
        vec![source(&train, 1.0)],
        Some(held_out.clone()),
        &out,
    );
    let before = RewardModel::load(&model, DType::F32, &Device::Cpu, 0).unwrap();
    let (outcome, seen) = run(&run_spec, &config(), None);
    let PmOutcome::Finished {
        steps,
        pairs,
        eval,
        train_loss,
        ..
    } = outcome
    else {
        panic!("interrupted")
    };
    assert_eq!((steps, pairs), (24, 6));
    assert_eq!(eval.split, "eval");
    assert_eq!(
        eval.accuracy,
        Some(1.0),
        "held-out pairs ordered as intended: {eval:?}"
    );
    let first = seen.iter().find(|r| r.split == Split::Train).unwrap().loss;
    assert!(
        train_loss.unwrap() < 0.5 * first,
        "{first} -> {train_loss:?}"
    );
    assert!(seen
        .iter()
        .any(|r| r.split == Split::Eval && r.extra.contains_key("ece")));

    // The output is a preference model in transformers' layout, with its report and plot.
    assert!(is_preference_model(&out));
    for file in [
        "model.safetensors",
        "tokenizer.json",
        "pm_config.json",
        "metrics.jsonl",
        "pm_eval.json",
        "reliability.svg",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("pm_eval.json")).unwrap()).unwrap();
    assert_eq!(report["accuracy"], 1.0);
    assert!(report["calibration"]["ece"].as_f64().unwrap() >= 0.0);
    let trained = RewardModel::load(&out, DType::F32, &Device::Cpu, 0).unwrap();
    let head = |m: &RewardModel| -> Vec<f32> { m.head().flatten_all().unwrap().to_vec1().unwrap() };
    assert_ne!(head(&before), head(&trained), "the head was trained");

    // Continue from the preference model on the same pairs labelled 0.5: the margins shrink
    // toward zero.
    let half = write(dir.path(), "half.jsonl", &toy_pairs(&TRAIN, Some(0.5)));
    let flat = dir.path().join("flat");
    let continued = spec(&out, vec![source(&half, 1.0)], Some(half.clone()), &flat);
    let (outcome, _) = run(
        &continued,
        &PmConfig {
            epochs: 30,
            ..config()
        },
        None,
    );
    let PmOutcome::Finished { eval: after, .. } = outcome else {
        panic!("interrupted")
    };
    let trained_on_half = {
        let again = spec(
            &out,
            vec![source(&half, 1.0)],
            Some(half),
            &dir.path().join("probe"),
        );
        run(
            &again,
            &PmConfig {
                max_steps: Some(1),
                learning_rate: 0.0,
                ..config()
            },
            None,
        )
        .0
    };
    let PmOutcome::Finished { eval: start, .. } = trained_on_half else {
        panic!()
    };
    assert!(
        start.mean_abs_margin > 1.0,
        "a trained margin to flatten: {start:?}"
    );
    assert!(
        after.mean_abs_margin < 0.1 * start.mean_abs_margin,
        "{} -> {}",
        start.mean_abs_margin,
        after.mean_abs_margin
    );
    assert_eq!(after.decided, 0, "labels of 0.5 decide nothing");
}

#[test]
fn a_mixture_weighs_its_files_and_human_pairs_count_as_label_one() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let ai = write(dir.path(), "ai.jsonl", &toy_pairs(&TRAIN, None));
    let human: Vec<Value> = HELD_OUT
        .iter()
        .map(|o| {
            json!({
                "chosen": format!("\n\nHuman: how do I fix a {o}?\n\nAssistant: Check the {o}."),
                "rejected": format!("\n\nHuman: how do I fix a {o}?\n\nAssistant: No."),
            })
        })
        .collect();
    let human = write(dir.path(), "hh.jsonl", &human);
    let out = dir.path().join("pm");
    let run_spec = spec(
        &model,
        vec![source(&ai, 1.0), source(&human, 0.5)],
        None,
        &out,
    );
    let (outcome, _) = run(
        &run_spec,
        &PmConfig {
            epochs: 1,
            ..config()
        },
        None,
    );
    let PmOutcome::Finished { pairs, eval, .. } = outcome else {
        panic!("interrupted")
    };
    assert_eq!(pairs, 6 + 2);
    assert_eq!(
        (eval.split.as_str(), eval.pairs, eval.decided),
        ("train", 8, 8)
    );
}

#[test]
fn an_interrupted_run_resumes_to_the_same_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let train = write(dir.path(), "train.jsonl", &toy_pairs(&TRAIN, None));
    let cfg = PmConfig {
        epochs: 3,
        ..config()
    };
    let whole_out = dir.path().join("whole");
    let (whole, whole_seen) = run(
        &spec(&model, vec![source(&train, 1.0)], None, &whole_out),
        &cfg,
        None,
    );
    let out = dir.path().join("stopped");
    let (stopped, _) = run(
        &spec(&model, vec![source(&train, 1.0)], None, &out),
        &cfg,
        Some(2),
    );
    assert!(matches!(stopped, PmOutcome::Interrupted { .. }));
    let resumed_spec = PmRun {
        resume: true,
        ..spec(&model, vec![source(&train, 1.0)], None, &out)
    };
    let (resumed, _) = run(&resumed_spec, &cfg, None);
    let (PmOutcome::Finished { eval: a, .. }, PmOutcome::Finished { eval: b, .. }) =
        (whole, resumed)
    else {
        panic!("interrupted")
    };
    assert_eq!(a, b);
    let losses = |path: &Path| -> Vec<f64> {
        std::fs::read_to_string(path.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(losses(&whole_out), losses(&out));
    assert_eq!(whole_seen.len(), losses(&whole_out).len());
    assert_eq!(
        std::fs::read(whole_out.join("model.safetensors")).unwrap(),
        std::fs::read(out.join("model.safetensors")).unwrap()
    );
}

/// `run_pm` without unwrapping its result.
fn try_run(spec: &PmRun, cfg: &PmConfig, stop_after: Option<u64>) -> cai_train::Result<PmOutcome> {
    let stop = AtomicBool::new(false);
    run_pm(spec, cfg, &stop, &mut |r, _| {
        if r.split == Split::Train && Some(r.step) == stop_after {
            stop.store(true, Ordering::SeqCst);
        }
    })
}

#[test]
fn pairs_too_long_are_named_and_an_eval_set_left_empty_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let tokenizer = cai_model::tokenizer::Tokenizer::from_dir(&model).unwrap();
    let mut pairs = toy_pairs(&TRAIN, None);
    pairs[1]["prompt"] = json!("how do I steal a bike? ".repeat(30));
    let train = write(dir.path(), "train.jsonl", &pairs);
    let loaded = cai_train::pm::data::load_pairs(
        &train,
        &tokenizer,
        cai_model::tokenizer::DialogueFormat::Auto,
        64,
    )
    .unwrap();
    assert_eq!((loaded.pairs.len(), loaded.too_long), (5, 1));
    let warning = loaded.warning(&train, 64).unwrap();
    assert!(
        warning.contains("1 of 6 pairs have a dialogue longer than max_length 64"),
        "{warning}"
    );
    assert!(warning.contains("the first is id 1 (line 2)"), "{warning}");

    let long_eval = write(dir.path(), "eval.jsonl", &pairs[1..2]);
    let cfg = PmConfig {
        max_length: 64,
        max_steps: Some(1),
        ..config()
    };
    let out = dir.path().join("pm");
    let err = try_run(
        &spec(&model, vec![source(&train, 1.0)], Some(long_eval), &out),
        &cfg,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("eval.jsonl: 1 of 1 pairs"), "{err}");
    assert!(err.contains("none is left to evaluate on"), "{err}");
}

#[test]
fn a_diverging_pm_saves_nothing_and_a_changed_mixture_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let train = write(dir.path(), "train.jsonl", &toy_pairs(&TRAIN, None));
    let other = write(dir.path(), "other.jsonl", &toy_pairs(&HELD_OUT, None));
    let wild = PmConfig {
        learning_rate: 1e6,
        max_grad_norm: 0.0,
        save_every: 1,
        ..config()
    };
    let out = dir.path().join("wild");
    let err = try_run(
        &spec(&model, vec![source(&train, 1.0)], None, &out),
        &wild,
        None,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::Diverged {
                step: 1,
                last_good: None,
                ..
            }
        ),
        "{err}"
    );
    assert!(cai_train::latest_checkpoint(&out.join("checkpoints"))
        .unwrap()
        .is_none());

    let cfg = PmConfig {
        save_every: 2,
        max_steps: Some(4),
        ..config()
    };
    let out = dir.path().join("mix");
    let mix = |w: f64| vec![source(&train, 1.0), source(&other, w)];
    let stopped = try_run(&spec(&model, mix(1.0), None, &out), &cfg, Some(2)).unwrap();
    assert!(matches!(stopped, PmOutcome::Interrupted { .. }));
    let reweighted = PmRun {
        resume: true,
        ..spec(&model, mix(3.0), None, &out)
    };
    let err = try_run(&reweighted, &cfg, None).unwrap_err().to_string();
    assert!(err.contains("input data changed"), "{err}");
    assert!(err.contains("data[1]"), "{err}");
    let same = PmRun {
        resume: true,
        ..spec(&model, mix(1.0), None, &out)
    };
    assert!(matches!(
        try_run(&same, &cfg, None).unwrap(),
        PmOutcome::Finished { steps: 4, .. }
    ));
}

/// `gradient_checkpointing` trains the preference model as the plain pass does: the same
/// losses step for step, up to the rounding of sums.
#[test]
fn gradient_checkpointing_trains_the_pm_as_the_plain_pass() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let train = write(dir.path(), "train.jsonl", &toy_pairs(&TRAIN, None));
    let losses: Vec<Vec<f64>> = [false, true]
        .iter()
        .map(|&checkpointing| {
            let out = dir.path().join(format!("pm-{checkpointing}"));
            let cfg = PmConfig {
                epochs: 2,
                gradient_checkpointing: checkpointing,
                ..config()
            };
            let (_, records) = run(
                &spec(&model, vec![source(&train, 1.0)], None, &out),
                &cfg,
                None,
            );
            records
                .iter()
                .filter(|r| r.split == Split::Train)
                .map(|r| r.loss)
                .collect()
        })
        .collect();
    assert!(losses[0].len() >= 3, "{losses:?}");
    for (a, b) in losses[0].iter().zip(&losses[1]) {
        assert!((a - b).abs() <= 1e-4 * a.abs(), "{losses:?}");
    }
}
