//! The training session every trainer shares, on a tiny model: checkpoints written only once
//! the next step's loss passed the divergence check, exact resume of state, optimiser and
//! logs, and a resume refused when a setting changed.

mod common;

use std::path::Path;

use cai_model::checkpoint::Checkpoint as ModelFiles;
use cai_model::tokenizer::Tokenizer;
use cai_model::weights::load_decoder;
use cai_train::core::checkpoint::list_checkpoints;
use cai_train::core::session::{SessionSpec, TrainSession, METRICS_FILE};
use cai_train::core::trainee::Trainee;
use cai_train::{
    AdamWConfig, GradAccumulator, MetricRecord, Schedule, ScheduleKind, Split, TrainError,
};
use candle_core::{DType, Device};
use serde_json::json;

const CORPUS: &str = "Human: hello there\n\nAssistant: hello, how can I help?\n";

fn trainee(model: &Path) -> (Trainee, Tokenizer) {
    let config = cai_model::config::ModelConfig::from_file(&model.join("config.json")).unwrap();
    let files = ModelFiles::open_dir(model).unwrap();
    let decoder = load_decoder(config, &files, DType::F32, &Device::Cpu).unwrap();
    (
        Trainee::new(decoder, None, model).unwrap(),
        Tokenizer::from_dir(model).unwrap(),
    )
}

fn spec<'a>(output: &'a Path, resume: bool, lr: f64, allow: &'a [String]) -> SessionSpec<'a> {
    SessionSpec {
        method: "toy",
        config: json!({"toy": {"learning_rate": lr}, "model": "tiny"}),
        config_file: "toy_config.json",
        output,
        resume,
        allow_changes: allow,
        seed: 5,
        keep_last: None,
        optimizer: AdamWConfig {
            lr,
            ..AdamWConfig::default()
        },
        schedule: Schedule {
            kind: ScheduleKind::Constant,
            warmup_steps: 0,
            total_steps: 4,
            min_lr_ratio: 0.0,
        },
        device: &Device::Cpu,
    }
}

/// One step of the session loop on a toy loss (the squared first weight, times `scale`):
/// check, update, count, log, mark a checkpoint due every step. Returns the loss.
fn toy_step(
    session: &mut TrainSession<'_, Trainee>,
    grads: &mut GradAccumulator,
    scale: f64,
) -> Result<f64, TrainError> {
    session.begin_step();
    let params = &session.model.params;
    let loss = (params[0].var.as_tensor().sqr()?.sum_all()? * scale)?;
    let value = f64::from(loss.to_scalar::<f32>()?);
    session.check_loss("loss", value, true)?;
    grads.add(&loss.backward()?, params)?;
    let (_, lr) = session.step(grads, 1.0, 1e-2, session.state.step)?;
    session.state.step += 1;
    let mut record = MetricRecord::new(session.state.step, Split::Train, value);
    record.lr = Some(lr);
    session.log(&record)?;
    session.step_done(1);
    Ok(value)
}

fn steps(dir: &Path) -> Vec<u64> {
    list_checkpoints(&dir.join("checkpoints"))
        .unwrap()
        .into_iter()
        .map(|(step, _)| step)
        .collect()
}

fn logged_steps(dir: &Path, name: &str) -> Vec<u64> {
    std::fs::read_to_string(dir.join(name))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn a_checkpoint_is_written_once_the_next_step_passed_its_checks_and_finish_writes_the_last() {
    let tmp = tempfile::tempdir().unwrap();
    let (trainee, tokenizer) = trainee(&common::tiny_model_on(tmp.path(), CORPUS, 1));
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join(METRICS_FILE), "{\"step\": 9}\n").unwrap();
    let mut session = TrainSession::open(
        &trainee,
        &tokenizer,
        trainee.params.clone(),
        spec(&out, false, 1e-2, &[]),
    )
    .unwrap();
    // A fresh run starts a fresh log and writes its config.
    assert_eq!(std::fs::read_to_string(out.join(METRICS_FILE)).unwrap(), "");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("toy_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["toy"]["learning_rate"], 1e-2);
    assert_eq!(session.total_steps(), 4);

    let mut grads = GradAccumulator::new();
    toy_step(&mut session, &mut grads, 1.0).unwrap();
    assert!(
        steps(&out).is_empty(),
        "step 1 is saved only after step 2's loss is checked"
    );
    toy_step(&mut session, &mut grads, 1.0).unwrap();
    assert_eq!(steps(&out), [1]);
    // Step 3's loss blows up: step 2's checkpoint is never written, and the error names the
    // last good one.
    let err = toy_step(&mut session, &mut grads, 1e6).unwrap_err();
    match err {
        TrainError::Diverged {
            step: 3,
            last_good: Some(dir),
            ..
        } => assert!(dir.ends_with("checkpoint-1"), "{}", dir.display()),
        other => panic!("expected divergence at step 3, got {other}"),
    }
    assert_eq!(steps(&out), [1]);

    // A clean run to the end: finish writes the last step's due checkpoint.
    let out = tmp.path().join("clean");
    let mut session = TrainSession::open(
        &trainee,
        &tokenizer,
        trainee.params.clone(),
        spec(&out, false, 1e-2, &[]),
    )
    .unwrap();
    while session.state.step < session.total_steps() {
        toy_step(&mut session, &mut grads, 1.0).unwrap();
    }
    assert_eq!(steps(&out), [1, 2, 3]);
    session.finish().unwrap();
    assert_eq!(steps(&out), [1, 2, 3, 4]);
    assert_eq!(logged_steps(&out, METRICS_FILE), [1, 2, 3, 4]);
}

#[test]
fn a_resume_restores_state_and_logs_and_refuses_a_changed_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::tiny_model_on(tmp.path(), CORPUS, 2);
    let out = tmp.path().join("out");
    let mut grads = GradAccumulator::new();

    // Straight through: four steps.
    let (straight, tokenizer) = trainee(&model);
    let mut session = TrainSession::open(
        &straight,
        &tokenizer,
        straight.params.clone(),
        spec(&tmp.path().join("straight"), false, 1e-2, &[]),
    )
    .unwrap();
    let mut expected = Vec::new();
    for _ in 0..4 {
        expected.push(toy_step(&mut session, &mut grads, 1.0).unwrap());
    }

    // Two steps, an interruption, a side log written past the checkpoint, then a resume.
    let (first, tokenizer) = trainee(&model);
    let mut session = TrainSession::open(
        &first,
        &tokenizer,
        first.params.clone(),
        spec(&out, false, 1e-2, &[]),
    )
    .unwrap();
    let mut side = session.open_log("side.jsonl").unwrap();
    let mut losses = Vec::new();
    for _ in 0..2 {
        losses.push(toy_step(&mut session, &mut grads, 1.0).unwrap());
        side.write(&MetricRecord::new(session.state.step, Split::Train, 0.0))
            .unwrap();
    }
    assert!(session.save().unwrap().ends_with("checkpoint-2"));
    toy_step(&mut session, &mut grads, 1.0).unwrap();
    side.write(&MetricRecord::new(3, Split::Train, 0.0))
        .unwrap();
    drop((session, side));

    let (second, tokenizer) = trainee(&model);
    let err = TrainSession::open(
        &second,
        &tokenizer,
        second.params.clone(),
        spec(&out, true, 1e-3, &[]),
    )
    .err()
    .expect("a changed learning rate is refused")
    .to_string();
    assert!(err.contains("learning_rate was 0.01, now 0.001"), "{err}");
    assert!(err.contains("--allow-config-change learning_rate"), "{err}");

    let mut session = TrainSession::open(
        &second,
        &tokenizer,
        second.params.clone(),
        spec(&out, true, 1e-2, &[]),
    )
    .unwrap();
    assert_eq!(session.state.step, 2);
    assert_eq!(session.state.seed, 5);
    // The logs are cut back to the checkpoint's step.
    assert_eq!(logged_steps(&out, METRICS_FILE), [1, 2]);
    drop(session.open_log("side.jsonl").unwrap());
    assert_eq!(logged_steps(&out, "side.jsonl"), [1, 2]);
    while session.state.step < session.total_steps() {
        losses.push(toy_step(&mut session, &mut grads, 1.0).unwrap());
    }
    // Restored weights and optimiser moments: the same losses as the run straight through.
    assert_eq!(losses, expected);
    assert_eq!(logged_steps(&out, METRICS_FILE), [1, 2, 3, 4]);
}
