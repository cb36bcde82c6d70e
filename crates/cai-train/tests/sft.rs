//! SFT end to end on tiny models: learning, LoRA, exact resume, non-finite stop, bad data.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use cai_model::lora::LoraConfig;
use cai_model::tokenizer::{DialogueFormat, Tokenizer};
use cai_train::sft::data::tokenize_dialogue;
use cai_train::sft::{run_sft, SftConfig, SftOutcome, SftRun};
use cai_train::{MetricRecord, Split, TrainError};
use candle_core::Device;

const CORPUS: &str = "Human: how do I bake bread for my sister?\n\nAssistant: Mix flour, water and yeast, let it rise, then bake it.\n\
Human: how do I fix a bike for my friend?\n\nAssistant: Check the chain, pump the tyres and oil the gears.\n";

fn tiny_model(dir: &Path) -> PathBuf {
    common::tiny_model_on(dir, CORPUS, 3)
}

fn write_data(dir: &Path, lines: &[String]) -> PathBuf {
    let path = dir.join("data.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn toy_data(dir: &Path) -> PathBuf {
    let lines: Vec<String> = (0..8)
        .map(|i| {
            serde_json::json!({
                "id": i,
                "messages": [
                    {"role": "user", "content": if i % 2 == 0 { "how do I bake bread?" } else { "how do I fix a bike?" }},
                    {"role": "assistant", "content": if i % 2 == 0 { "Mix flour and water, then bake it." } else { "Check the chain and pump the tyres." }},
                ]
            })
            .to_string()
        })
        .collect();
    write_data(dir, &lines)
}

fn run(
    model: &Path,
    data: &Path,
    output: &Path,
    cfg: &SftConfig,
    resume: bool,
    stop_after: Option<u64>,
) -> (Result<SftOutcome, TrainError>, Vec<MetricRecord>) {
    run_allowing(model, data, output, cfg, resume, &[], stop_after)
}

/// [`run`], resuming with the changes `allow` names.
fn run_allowing(
    model: &Path,
    data: &Path,
    output: &Path,
    cfg: &SftConfig,
    resume: bool,
    allow: &[&str],
    stop_after: Option<u64>,
) -> (Result<SftOutcome, TrainError>, Vec<MetricRecord>) {
    let stop = AtomicBool::new(false);
    let mut seen = Vec::new();
    let spec = SftRun {
        model_dir: model.to_path_buf(),
        data: data.to_path_buf(),
        eval_data: None,
        output: output.to_path_buf(),
        resume,
        allow_changes: allow.iter().map(|a| a.to_string()).collect(),
        device: Device::Cpu,
    };
    let outcome = run_sft(&spec, cfg, &stop, &mut |r, _| {
        seen.push(r.clone());
        if r.split == Split::Train && Some(r.step) == stop_after {
            stop.store(true, Ordering::SeqCst);
        }
    });
    (outcome, seen)
}

/// The checkpoint steps in `out/checkpoints`.
fn checkpoint_steps(out: &Path) -> Vec<u64> {
    cai_train::core::checkpoint::list_checkpoints(&out.join("checkpoints"))
        .unwrap()
        .into_iter()
        .map(|(step, _)| step)
        .collect()
}

/// The largest absolute weight of a checkpoint.
fn max_weight(dir: &Path) -> f32 {
    let loaded = cai_train::load_checkpoint(dir, "model.safetensors", &Device::Cpu).unwrap();
    loaded
        .weights
        .values()
        .map(|t| {
            t.abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        })
        .fold(0.0, f32::max)
}

fn train_losses(path: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<MetricRecord>(l).unwrap())
        .filter(|r| r.split == Split::Train)
        .map(|r| (r.step, r.loss))
        .collect()
}

fn quick() -> SftConfig {
    SftConfig {
        epochs: 10,
        learning_rate: 3e-3,
        batch_size: 4,
        save_every: 0,
        ..SftConfig::default()
    }
}

#[test]
fn full_fine_tuning_learns_and_writes_an_hf_model() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let data = toy_data(tmp.path());
    let out = tmp.path().join("sft");
    let cfg = SftConfig {
        epochs: 20,
        learning_rate: 1e-2,
        ..quick()
    };
    let (outcome, records) = run(&model, &data, &out, &cfg, false, None);
    let SftOutcome::Finished { steps, .. } = outcome.unwrap() else {
        panic!("not finished")
    };
    assert_eq!(steps, 40);
    let first = records.first().unwrap().loss;
    let last = records.last().unwrap().loss;
    assert!(last < first * 0.25, "loss {first} -> {last}");
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "sft_config.json",
        "metrics.jsonl",
    ] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    // The written model loads and differs from the base.
    let base =
        cai_model::local::LocalModel::load(model.to_str().unwrap(), &Default::default()).unwrap();
    let tuned =
        cai_model::local::LocalModel::load(out.to_str().unwrap(), &Default::default()).unwrap();
    let (b, t) = (base.decoder().params(), tuned.decoder().params());
    let changed = b.iter().zip(&t).filter(|((_, x), (_, y))| {
        let d: f32 = (x - y)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        d > 0.0
    });
    assert_eq!(
        changed.count(),
        b.len(),
        "every parameter should change under full fine-tuning"
    );
}

#[test]
fn lora_trains_only_the_adapters() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let data = toy_data(tmp.path());
    let out = tmp.path().join("lora");
    let cfg = SftConfig {
        lora: Some(LoraConfig {
            dropout: 0.0,
            ..LoraConfig::default()
        }),
        learning_rate: 1e-2,
        ..quick()
    };
    let (outcome, records) = run(&model, &data, &out, &cfg, false, None);
    assert!(matches!(outcome.unwrap(), SftOutcome::Finished { .. }));
    assert!(records.last().unwrap().loss < records.first().unwrap().loss);
    assert!(
        out.join("adapter_config.json").exists() && out.join("adapter_model.safetensors").exists()
    );
    assert!(
        !out.join("model.safetensors").exists(),
        "a LoRA run writes only the adapter"
    );
    let adapter =
        candle_core::safetensors::load(out.join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    assert!(adapter
        .keys()
        .all(|k| k.contains(".lora_A.") || k.contains(".lora_B.")));
    let moved = adapter.iter().filter(|(k, t)| {
        k.contains("lora_B")
            && t.abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
    });
    assert!(
        moved.count() > 0,
        "lora_B starts at zero and must have moved"
    );
}

#[test]
fn a_resumed_run_reproduces_the_uninterrupted_losses_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let data = toy_data(tmp.path());
    let cfg = SftConfig {
        epochs: 3,
        batch_size: 3,
        grad_accum: 2,
        save_every: 0,
        ..quick()
    };
    let straight = tmp.path().join("straight");
    run(&model, &data, &straight, &cfg, false, None).0.unwrap();
    let resumed = tmp.path().join("resumed");
    let (first, _) = run(&model, &data, &resumed, &cfg, false, Some(2));
    assert!(matches!(first.unwrap(), SftOutcome::Interrupted { .. }));
    let (second, _) = run(&model, &data, &resumed, &cfg, true, None);
    assert!(matches!(second.unwrap(), SftOutcome::Finished { .. }));
    let a = train_losses(&straight.join("metrics.jsonl"));
    let b = train_losses(&resumed.join("metrics.jsonl"));
    assert_eq!(a.len(), 6);
    assert_eq!(a, b, "losses differ after resume");
}

#[test]
fn an_absurd_learning_rate_stops_at_the_first_step_and_saves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let data = toy_data(tmp.path());
    // 1e30 makes the weights huge at once; 1e6 kept them finite (5e6) with zero gradients
    // and ran to the end.
    for lr in [1e30, 1e6] {
        let out = tmp.path().join(format!("lr{lr}"));
        let cfg = SftConfig {
            learning_rate: lr,
            max_grad_norm: 0.0,
            save_every: 1,
            ..quick()
        };
        let (outcome, records) = run(&model, &data, &out, &cfg, false, None);
        let err = outcome.unwrap_err();
        let TrainError::Diverged {
            step, last_good, ..
        } = &err
        else {
            panic!("lr {lr}: {err}")
        };
        assert_eq!((*step, last_good), (1, &None), "lr {lr}: {err}");
        let text = err.to_string();
        assert!(text.contains("training diverged at step 1"), "{text}");
        assert!(text.contains("no checkpoint was saved before it"), "{text}");
        assert!(records.is_empty(), "a diverged step is not logged");
        assert_eq!(checkpoint_steps(&out), Vec::<u64>::new(), "lr {lr}");
        assert!(
            !out.join("model.safetensors").exists(),
            "no final model after a failed run"
        );
    }
}

#[test]
fn divergence_names_a_good_checkpoint_and_resuming_with_a_lower_rate_works() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let data = toy_data(tmp.path());
    let out = tmp.path().join("out");
    let good = SftConfig {
        max_steps: Some(6),
        save_every: 1,
        keep_last: None,
        max_grad_norm: 0.0,
        ..quick()
    };
    // Two good steps, then a learning rate that blows the run up at step 3.
    let (first, _) = run(&model, &data, &out, &good, false, Some(2));
    assert!(matches!(first.unwrap(), SftOutcome::Interrupted { .. }));
    assert_eq!(checkpoint_steps(&out), [1, 2]);
    let bad = SftConfig {
        learning_rate: 1e6,
        ..good.clone()
    };
    let (diverged, _) = run_allowing(&model, &data, &out, &bad, true, &["learning_rate"], None);
    let err = diverged.unwrap_err();
    let good_dir = out.join("checkpoints/checkpoint-2");
    assert!(
        matches!(&err, TrainError::Diverged { step: 3, last_good: Some(d), .. } if *d == good_dir),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("--allow-config-change learning_rate"),
        "{text}"
    );
    assert_eq!(checkpoint_steps(&out), [1, 2], "nothing saved after step 2");
    assert!(
        max_weight(&good_dir) < 10.0,
        "checkpoint-2 holds good weights"
    );

    // The advice works: a lower rate, allowed explicitly (without it, the change is refused).
    let lower = SftConfig {
        learning_rate: 1e-3,
        ..good.clone()
    };
    let (refused, _) = run(&model, &data, &out, &lower, true, None);
    let text = refused.unwrap_err().to_string();
    assert!(
        text.contains("learning_rate was 0.003, now 0.001"),
        "{text}"
    );
    assert!(
        text.contains("--allow-config-change learning_rate"),
        "{text}"
    );
    let (resumed, records) =
        run_allowing(&model, &data, &out, &lower, true, &["learning_rate"], None);
    let SftOutcome::Finished { steps, .. } = resumed.unwrap() else {
        panic!("not finished")
    };
    assert_eq!(steps, 6);
    assert_eq!(
        records.first().map(|r| (r.step, r.lr)),
        Some((3, Some(1e-3)))
    );
    assert!(max_weight(&out.join("checkpoints/checkpoint-6")) < 10.0);
}

#[test]
fn resuming_on_changed_data_is_refused_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let data = toy_data(tmp.path());
    let out = tmp.path().join("out");
    let cfg = SftConfig {
        max_steps: Some(4),
        save_every: 2,
        ..quick()
    };
    let (first, _) = run(&model, &data, &out, &cfg, false, Some(2));
    assert!(matches!(first.unwrap(), SftOutcome::Interrupted { .. }));
    // The data file shrinks from 8 records to 5.
    let text = std::fs::read_to_string(&data).unwrap();
    let kept: Vec<&str> = text.lines().take(5).collect();
    std::fs::write(&data, kept.join("\n") + "\n").unwrap();
    let (refused, _) = run(&model, &data, &out, &cfg, true, None);
    let text = refused.unwrap_err().to_string();
    assert!(text.contains("checkpoint-2"), "{text}");
    assert!(text.contains("input data changed"), "{text}");
    assert!(text.contains("(8 records), now"), "{text}");
    assert!(text.contains("(5 records)"), "{text}");
    assert!(text.contains("--allow-config-change data"), "{text}");
    let (resumed, _) = run_allowing(&model, &data, &out, &cfg, true, &["data"], None);
    assert!(matches!(
        resumed.unwrap(),
        SftOutcome::Finished { steps: 4, .. }
    ));
}

#[test]
fn examples_cut_to_no_target_are_counted_and_none_left_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let tok = Tokenizer::from_dir(&model).unwrap();
    let long_prompt = "how do I bake bread for my sister? ".repeat(8);
    let record = |id: &str, prompt: &str| {
        serde_json::json!({"id": id, "prompt": prompt, "completion": " Mix flour."}).to_string()
    };
    let data = write_data(
        tmp.path(),
        &[
            record("short", "bake?"),
            record("long-1", &long_prompt),
            record("long-2", &long_prompt),
        ],
    );
    let loaded =
        cai_train::sft::data::load_examples(&data, &tok, DialogueFormat::Auto, 16, None).unwrap();
    assert_eq!((loaded.examples.len(), loaded.without_targets), (1, 2));
    let warning = loaded.warning(&data, 16).unwrap();
    assert!(
        warning.contains("2 of 3 examples lose every target token to max_length 16"),
        "{warning}"
    );
    assert!(warning.contains("id 'long-1' (line 2)"), "{warning}");

    // Only long ones: nothing to train on is an error, not a run on zero tokens.
    let data = write_data(tmp.path(), &[record("long-1", &long_prompt)]);
    let cfg = SftConfig {
        max_length: 16,
        ..quick()
    };
    let (outcome, records) = run(&model, &data, &tmp.path().join("cut"), &cfg, false, None);
    let text = outcome.unwrap_err().to_string();
    assert!(
        text.contains("every example loses all its target tokens to max_length 16"),
        "{text}"
    );
    assert!(text.contains("id 'long-1'"), "{text}");
    assert!(records.is_empty());
}

#[test]
fn a_bad_data_line_is_reported_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let good = serde_json::json!({"prompt": "hi", "completion": " there"}).to_string();
    let data = write_data(
        tmp.path(),
        &[good.clone(), r#"{"prompt": "no completion"}"#.into(), good],
    );
    let (outcome, _) = run(
        &model,
        &data,
        &tmp.path().join("bad"),
        &quick(),
        false,
        None,
    );
    let msg = outcome.unwrap_err().to_string();
    assert!(msg.contains("data.jsonl:2"), "{msg}");
    assert!(msg.contains("completion"), "{msg}");
}

#[test]
fn the_loss_mask_covers_exactly_the_assistant_turns() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let tok = Tokenizer::from_dir(&model).unwrap();
    let messages: Vec<cai_core::dialogue::Message> = serde_json::from_value(serde_json::json!([
        {"role": "user", "content": "how do I bake bread?"},
        {"role": "assistant", "content": "Mix flour."},
        {"role": "user", "content": "and then?"},
        {"role": "assistant", "content": "Bake it."},
    ]))
    .unwrap();
    let ex = tokenize_dialogue(&messages, &tok, DialogueFormat::Transcript).unwrap();
    let eos = tok.eos_ids()[0];
    let targets: Vec<u32> = ex
        .ids
        .iter()
        .zip(&ex.loss_mask)
        .filter(|(_, &m)| m > 0.0)
        .map(|(&t, _)| t)
        .collect();
    // Both answers (with their leading space) and an eos after each.
    assert_eq!(targets.iter().filter(|&&t| t == eos).count(), 2);
    let text = tok
        .decode(
            &targets
                .iter()
                .copied()
                .filter(|&t| t != eos)
                .collect::<Vec<_>>(),
        )
        .unwrap();
    assert_eq!(text, " Mix flour. Bake it.");
    // The whole sequence is the transcript followed by eos tokens.
    let context: Vec<u32> = ex.ids.iter().copied().filter(|&t| t != eos).collect();
    assert_eq!(
        tok.decode(&context).unwrap(),
        cai_core::dialogue::render_transcript(&messages, false)
    );
}

#[test]
fn the_final_evaluation_is_logged_once_and_checkpoints_load_as_models() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let data = toy_data(tmp.path());
    let out = tmp.path().join("eval");
    let cfg = SftConfig {
        epochs: 2,
        eval_every: 2,
        save_every: 4,
        ..quick()
    };
    let spec = SftRun {
        model_dir: model.clone(),
        data: data.clone(),
        eval_data: Some(data.clone()),
        output: out.clone(),
        resume: false,
        allow_changes: Vec::new(),
        device: Device::Cpu,
    };
    let outcome = run_sft(&spec, &cfg, &AtomicBool::new(false), &mut |_, _| {}).unwrap();
    assert!(matches!(
        outcome,
        SftOutcome::Finished {
            steps: 4,
            eval_loss: Some(_),
            ..
        }
    ));
    let evals: Vec<u64> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<MetricRecord>(l).unwrap())
        .filter(|r| r.split == Split::Eval)
        .map(|r| r.step)
        .collect();
    assert_eq!(evals, vec![2, 4]);
    let checkpoint = cai_train::latest_checkpoint(&out.join("checkpoints"))
        .unwrap()
        .unwrap();
    cai_model::local::LocalModel::load(checkpoint.to_str().unwrap(), &Default::default()).unwrap();
}

#[test]
fn zero_epochs_is_a_configuration_error() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let data = toy_data(tmp.path());
    let cfg = SftConfig {
        epochs: 0,
        max_steps: Some(5),
        ..quick()
    };
    let (outcome, _) = run(&model, &data, &tmp.path().join("zero"), &cfg, false, None);
    assert!(matches!(outcome, Err(TrainError::Config(_))));
}

#[test]
fn text_records_train_on_every_token() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let tok = Tokenizer::from_dir(&model).unwrap();
    let line = serde_json::json!({"text": "Mix flour and water."}).to_string();
    let data = write_data(tmp.path(), &[line]);
    let examples = cai_train::sft::data::load_examples(&data, &tok, DialogueFormat::Auto, 64, None)
        .unwrap()
        .examples;
    let ex = &examples[0];
    // bos + text + eos, and every token after bos is a target.
    assert_eq!(ex.ids.first(), tok.bos_id().as_ref());
    assert_eq!(ex.ids.last(), tok.eos_ids().first());
    assert_eq!(ex.target_tokens(), ex.ids.len() - 1);
    assert_eq!(tok.decode(&ex.ids).unwrap(), "Mix flour and water.");
}

#[test]
fn critique_records_give_one_example_per_selected_revision() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let tok = Tokenizer::from_dir(&model).unwrap();
    let round = |n: u32, revision: &str| {
        serde_json::json!({"principle_id": format!("p{n}"), "critique_request": "Harmful?",
                           "critique": "Yes.", "revision_request": "Fix it.", "revision": revision})
    };
    let record = serde_json::json!({
        "id": "a",
        "prompt": "how do I fix a bike?",
        "initial_response": "Steal one.",
        "rounds": [round(1, "Check the chain."), round(2, "Pump the tyres.")],
        "messages": [
            {"role": "user", "content": "how do I fix a bike?"},
            {"role": "assistant", "content": "Pump the tyres."}
        ],
        "chosen": [], "rejected": []
    });
    let data = write_data(tmp.path(), &[record.to_string()]);
    let load = |rounds| {
        cai_train::sft::data::load_examples(&data, &tok, DialogueFormat::Transcript, 128, rounds)
            .unwrap()
            .examples
    };
    let targets = |ex: &cai_train::sft::data::Example| {
        let ids: Vec<u32> = ex
            .ids
            .iter()
            .zip(&ex.loss_mask)
            .filter(|(_, &m)| m > 0.0)
            .map(|(&id, _)| id)
            .collect();
        tok.decode(&ids).unwrap()
    };
    let all = load(None);
    assert_eq!(all.len(), 2);
    assert_eq!(targets(&all[0]).trim(), "Check the chain.");
    assert_eq!(targets(&all[1]).trim(), "Pump the tyres.");
    let first = load(Some(1));
    assert_eq!(first, all[..1]);

    let bad = serde_json::json!({"rounds": [{"revision": "x"}], "prompt": "q"});
    let data = write_data(tmp.path(), &[record.to_string(), bad.to_string()]);
    let err = cai_train::sft::data::load_examples(&data, &tok, DialogueFormat::Auto, 128, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("data.jsonl:2: a critique record"), "{err}");
}

/// A loss that explodes is computed with the weights of the step before: that step's
/// checkpoint is never written (it is written only once the next loss passed the check).
#[test]
fn the_checkpoint_of_weights_whose_loss_exploded_is_never_written() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let data = toy_data(tmp.path());
    let mut by_loss = 0;
    for lr in [3.0, 10.0, 30.0] {
        let out = tmp.path().join(format!("lr{lr}"));
        let cfg = SftConfig {
            learning_rate: lr,
            max_grad_norm: 0.0,
            save_every: 1,
            keep_last: None,
            ..quick()
        };
        let err = run(&model, &data, &out, &cfg, false, None).0.unwrap_err();
        let TrainError::Diverged {
            step,
            what,
            last_good,
        } = &err
        else {
            panic!("lr {lr}: {err}")
        };
        // The loss of step t is that of the weights after step t - 1.
        let first_bad = if what.contains("loss rose") {
            by_loss += 1;
            step - 1
        } else {
            *step
        };
        let kept = checkpoint_steps(&out);
        assert!(
            kept.iter().all(|&k| k < first_bad),
            "lr {lr}: {kept:?} kept, {err}"
        );
        assert_eq!(
            last_good
                .as_ref()
                .map(|d| d.file_name().unwrap().to_owned()),
            kept.last().map(|k| format!("checkpoint-{k}").into()),
            "{err}"
        );
    }
    assert!(by_loss > 0, "no run diverged by its loss");
}

/// `gradient_checkpointing` trains as the plain pass does (full fine-tuning and LoRA: the same
/// losses step for step, up to the rounding of sums), and is written to `sft_config.json` only
/// when on, so runs without it keep their files.
#[test]
fn gradient_checkpointing_trains_as_the_plain_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let data = toy_data(tmp.path());
    for lora in [false, true] {
        let base = SftConfig {
            epochs: 3,
            learning_rate: 1e-2,
            lora: lora.then(LoraConfig::default),
            ..quick()
        };
        let mut losses = Vec::new();
        for checkpointing in [false, true] {
            let out = tmp.path().join(format!("sft-{lora}-{checkpointing}"));
            let cfg = SftConfig {
                gradient_checkpointing: checkpointing,
                ..base.clone()
            };
            let (outcome, _) = run(&model, &data, &out, &cfg, false, None);
            outcome.unwrap();
            losses.push(train_losses(&out.join("metrics.jsonl")));
            let written = std::fs::read_to_string(out.join("sft_config.json")).unwrap();
            assert_eq!(
                written.contains("gradient_checkpointing"),
                checkpointing,
                "{written}"
            );
        }
        assert_eq!(losses[0].len(), 6);
        for ((step, plain), (_, checkpointed)) in losses[0].iter().zip(&losses[1]) {
            assert!(
                (plain - checkpointed).abs() <= 1e-4 * plain.abs(),
                "lora {lora}, step {step}: {plain} vs {checkpointed}"
            );
        }
    }
}
