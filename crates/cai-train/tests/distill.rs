//! Context distillation end to end on tiny models: the student learns the prompted behaviour
//! (held-out KL falls), only the student's parameters get gradients and change, the teacher
//! stays as it was, top-k targets are kept on disk and reused, the teacher's answers are
//! sampled once, and a resumed run reproduces an uninterrupted one.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use cai_model::checkpoint::Checkpoint;
use cai_model::config::ModelConfig;
use cai_model::lora::LoraConfig;
use cai_model::tokenizer::{DialogueFormat, Tokenizer};
use cai_model::weights::load_decoder;
use cai_train::core::trainee::Trainee;
use cai_train::distill::batch::collate;
use cai_train::distill::data::{read_records, tokenize, TeacherSampling};
use cai_train::distill::loss::{distill_kl, TeacherTargets};
use cai_train::distill::teacher::Teacher;
use cai_train::distill::{
    run_distill, DistillConfig, DistillEvent, DistillOutcome, DistillRun, TEACHER_SAMPLES_FILE,
    TEACHER_TOPK_FILE,
};
use cai_train::{AdamW, AdamWConfig, GradAccumulator, MetricRecord, Split};
use candle_core::{DType, Device, Tensor};

const CORPUS: &str = "the cat sat on the mat. the dog ran to the park. a bird sang in the tree.\n\
    Human: how do I bake bread?\n\nAssistant: mix flour and water, then bake it.\n";

/// The context: it makes "the" very likely to be followed by "dog".
const CONTEXT: &str = "the dog. the dog. the dog. the dog. the dog. the dog. the dog.";

fn tiny_model(dir: &Path) -> PathBuf {
    common::tiny_model_on(dir, CORPUS, 5)
}

fn write_lines(dir: &Path, name: &str, lines: &[serde_json::Value]) -> PathBuf {
    common::write_jsonl(dir, name, lines)
}

fn texts(dir: &Path, name: &str, sentences: &[&str]) -> PathBuf {
    let lines: Vec<serde_json::Value> = sentences
        .iter()
        .map(|s| serde_json::json!({ "text": s }))
        .collect();
    write_lines(dir, name, &lines)
}

const TRAIN: [&str; 6] = [
    "the cat sat on the mat.",
    "the dog ran to the park.",
    "a bird sang in the tree.",
    "the bird sat on the dog.",
    "the park is by the tree.",
    "a cat ran to the mat.",
];
const HELD_OUT: [&str; 3] = [
    "the tree is in the park.",
    "a dog sat on the mat.",
    "the cat sang to the bird.",
];

fn run(
    model: &Path,
    data: &Path,
    eval: Option<&Path>,
    out: &Path,
    cfg: &DistillConfig,
    resume: bool,
    stop_after: Option<u64>,
) -> (DistillOutcome, Vec<MetricRecord>) {
    let stop = AtomicBool::new(false);
    let mut seen = Vec::new();
    let spec = DistillRun {
        model_dir: model.to_path_buf(),
        context: CONTEXT.into(),
        data: data.to_path_buf(),
        eval_data: eval.map(Path::to_path_buf),
        output: out.to_path_buf(),
        resume,
        allow_changes: Vec::new(),
        device: Device::Cpu,
    };
    let outcome = run_distill(&spec, cfg, &stop, &mut |event| {
        if let DistillEvent::Metric { record, .. } = event {
            seen.push(record.clone());
            if record.split == Split::Train && Some(record.step) == stop_after {
                stop.store(true, Ordering::SeqCst);
            }
        }
    })
    .unwrap();
    (outcome, seen)
}

fn quick() -> DistillConfig {
    DistillConfig {
        epochs: 30,
        learning_rate: 1e-3,
        batch_size: 3,
        save_every: 0,
        ..DistillConfig::default()
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn held_out_kl_falls_and_the_student_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let data = texts(tmp.path(), "train.jsonl", &TRAIN);
    let eval = texts(tmp.path(), "eval.jsonl", &HELD_OUT);
    let out = tmp.path().join("distilled");
    let (outcome, records) = run(&model, &data, Some(&eval), &out, &quick(), false, None);
    let DistillOutcome::Finished {
        steps,
        eval: Some([(start, start_agree), (end, end_agree)]),
        ..
    } = outcome
    else {
        panic!("expected a finished run with eval: {outcome:?}")
    };
    assert_eq!(steps, 60);
    assert!(start > 0.0, "the context should matter: KL {start}");
    assert!(end < 0.2 * start, "held-out KL {start} -> {end}");
    assert!(
        end_agree > start_agree,
        "agreement {start_agree} -> {end_agree}"
    );
    // Eval before the first step and after the last, train records carry agreement.
    let evals: Vec<u64> = records
        .iter()
        .filter(|r| r.split == Split::Eval)
        .map(|r| r.step)
        .collect();
    assert_eq!(evals, [0, 60]);
    assert!(records.iter().all(|r| r.extra.contains_key("agreement")));
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "distill_config.json",
        "metrics.jsonl",
    ] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("distill_config.json")).unwrap())
            .unwrap();
    assert!(saved["context_tokens"].as_u64().unwrap() > 10, "{saved}");
}

/// One step of the loop by hand: the teacher's targets carry no gradient, every student
/// parameter gets one, the update changes the student and leaves the teacher as it was.
fn one_step(lora: Option<&LoraConfig>) {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let tokenizer = Tokenizer::from_dir(&model).unwrap();
    let config = ModelConfig::from_file(&model.join("config.json")).unwrap();
    let ckpt = Checkpoint::open_dir(&model).unwrap();
    let decoder = load_decoder(config, &ckpt, DType::F32, &Device::Cpu).unwrap();
    let context = tokenizer.encode(CONTEXT, true).unwrap();
    let teacher = Teacher::new(decoder.clone(), context).unwrap();
    let frozen_before = decoder.params();

    let records = read_records(&texts(tmp.path(), "d.jsonl", &TRAIN)).unwrap();
    let examples = tokenize(&records, &[], &tokenizer, DialogueFormat::Auto, 64).unwrap();
    let batch: Vec<_> = examples.iter().collect();
    let before = teacher.log_probs(&batch).unwrap();

    let trainee = Trainee::new(decoder, lora, &model).unwrap();
    let student_before: Vec<Tensor> = trainee
        .params
        .iter()
        .map(|p| p.var.as_tensor().copy().unwrap())
        .collect();
    let (ids, positions, rows) = collate(&batch, &Device::Cpu).unwrap();
    let logits = trainee.decoder.forward_train(&ids, &positions).unwrap();
    let vocab = logits.dim(2).unwrap();
    let logits = logits
        .reshape((logits.elem_count() / vocab, vocab))
        .unwrap()
        .index_select(&rows, 0)
        .unwrap();
    let targets = TeacherTargets::Full(before.clone());
    let kl = distill_kl(&logits, &targets).unwrap();
    let store = kl.backward().unwrap();
    // Nothing the teacher holds is a variable, so the optimiser cannot reach it.
    assert!(!before.is_variable());
    let teacher_ids: Vec<_> = frozen_before.iter().map(|(_, t)| t.id()).collect();
    assert!(trainee
        .params
        .iter()
        .all(|p| !teacher_ids.contains(&p.var.as_tensor().id())));
    let mut grads = GradAccumulator::new();
    grads.add(&store, &trainee.params).unwrap();
    assert_eq!(
        grads.len(),
        trainee.params.len(),
        "every student parameter gets a gradient"
    );
    for p in &trainee.params {
        let g = grads.get(&p.var).unwrap();
        let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
        // A fresh LoRA A matrix multiplies B = 0, so only B's gradient is non-zero at first.
        if !p.name.contains("lora_A") {
            assert!(norm > 0.0, "{} got a zero gradient", p.name);
        }
    }
    let mut optimizer = AdamW::new(
        trainee.params.clone(),
        AdamWConfig {
            lr: 1e-2,
            ..AdamWConfig::default()
        },
    )
    .unwrap();
    optimizer.step(&grads, 1e-2).unwrap();

    for (p, old) in trainee.params.iter().zip(&student_before) {
        if !p.name.contains("lora_A") {
            assert!(
                max_abs_diff(p.var.as_tensor(), old) > 0.0,
                "{} did not move",
                p.name
            );
        }
    }
    let after = teacher.log_probs(&batch).unwrap();
    assert_eq!(max_abs_diff(&before, &after), 0.0, "the teacher changed");
    if lora.is_some() {
        // The student's base weights are the teacher's, untouched.
        for ((spec, a), (_, b)) in frozen_before.iter().zip(trainee.decoder.params()) {
            assert_eq!(
                max_abs_diff(a, &b),
                0.0,
                "base weight {} changed",
                spec.name
            );
        }
    }
}

/// `dtype = "bf16"` on the CPU (bf16 products, a bf16 teacher): the held-out KL still falls
/// as in f32, and the student is written in f32.
#[test]
fn bf16_distillation_learns_and_writes_an_f32_student() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let data = texts(tmp.path(), "train.jsonl", &TRAIN);
    let eval = texts(tmp.path(), "eval.jsonl", &HELD_OUT);
    let out = tmp.path().join("distilled");
    let cfg = DistillConfig {
        dtype: "bf16".into(),
        ..quick()
    };
    let (outcome, _) = run(&model, &data, Some(&eval), &out, &cfg, false, None);
    let DistillOutcome::Finished {
        eval: Some([(start, _), (end, _)]),
        ..
    } = outcome
    else {
        panic!("expected a finished run with eval: {outcome:?}")
    };
    assert!(end < 0.2 * start, "held-out KL {start} -> {end}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["torch_dtype"], "float32", "{config}");
}

#[test]
fn only_the_student_learns_under_full_fine_tuning() {
    one_step(None);
}

#[test]
fn only_the_adapters_learn_under_lora() {
    one_step(Some(&LoraConfig {
        dropout: 0.0,
        target_modules: vec!["q_proj".into(), "v_proj".into()],
        ..LoraConfig::default()
    }));
}

#[test]
fn top_k_targets_are_kept_on_disk_and_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let data = texts(tmp.path(), "train.jsonl", &TRAIN);
    let eval = texts(tmp.path(), "eval.jsonl", &HELD_OUT);
    let cfg = DistillConfig {
        top_k: Some(8),
        max_steps: Some(20),
        ..quick()
    };
    let out = tmp.path().join("topk");
    let (first, _) = run(&model, &data, Some(&eval), &out, &cfg, false, None);
    let table = out.join(TEACHER_TOPK_FILE);
    assert!(table.exists() && out.join("teacher_topk.json").exists());
    let DistillOutcome::Finished {
        eval: Some([(start, _), (end, _)]),
        ..
    } = first
    else {
        panic!("{first:?}")
    };
    assert!(end < 0.5 * start, "top-k KL {start} -> {end}");
    // A second run finds the table and does not run the teacher over the data again.
    let modified = std::fs::metadata(&table).unwrap().modified().unwrap();
    let again = tmp.path().join("again");
    std::fs::create_dir_all(&again).unwrap();
    for name in ["teacher_topk.safetensors", "teacher_topk.json"] {
        std::fs::copy(out.join(name), again.join(name)).unwrap();
    }
    let stop = AtomicBool::new(false);
    let mut top_k_passes = 0;
    let spec = DistillRun {
        model_dir: model.clone(),
        context: CONTEXT.into(),
        data: data.clone(),
        eval_data: None,
        output: again.clone(),
        resume: false,
        allow_changes: Vec::new(),
        device: Device::Cpu,
    };
    run_distill(&spec, &cfg, &stop, &mut |event| {
        if matches!(event, DistillEvent::TopK { .. }) {
            top_k_passes += 1;
        }
    })
    .unwrap();
    assert_eq!(top_k_passes, 0, "the saved table should have been reused");
    assert_eq!(
        std::fs::metadata(&table).unwrap().modified().unwrap(),
        modified
    );
}

#[test]
fn the_teacher_answers_prompts_once_and_a_resumed_run_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let prompts: Vec<serde_json::Value> = ["how do I bake bread?", "how do I bake a cake?"]
        .iter()
        .enumerate()
        .map(|(i, p)| serde_json::json!({"id": format!("p{i}"), "prompt": p}))
        .collect();
    let data = write_lines(tmp.path(), "prompts.jsonl", &prompts);
    let cfg = DistillConfig {
        sample: Some(TeacherSampling {
            max_new_tokens: 8,
            ..TeacherSampling::default()
        }),
        epochs: 4,
        batch_size: 1,
        ..quick()
    };
    let straight = tmp.path().join("straight");
    run(&model, &data, None, &straight, &cfg, false, None);
    let samples = std::fs::read_to_string(straight.join(TEACHER_SAMPLES_FILE)).unwrap();
    assert_eq!(samples.lines().count(), 2);
    assert!(samples.contains("\"assistant\""), "{samples}");

    let resumed = tmp.path().join("resumed");
    let (first, _) = run(&model, &data, None, &resumed, &cfg, false, Some(3));
    assert!(matches!(first, DistillOutcome::Interrupted { .. }));
    let (second, _) = run(&model, &data, None, &resumed, &cfg, true, None);
    assert!(matches!(second, DistillOutcome::Finished { steps: 8, .. }));
    let losses = |dir: &Path| -> Vec<(u64, f64)> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<MetricRecord>(l).unwrap())
            .map(|r| (r.step, r.loss))
            .collect()
    };
    assert_eq!(losses(&straight), losses(&resumed));
    assert_eq!(
        samples,
        std::fs::read_to_string(resumed.join(TEACHER_SAMPLES_FILE)).unwrap(),
        "the same seed gives the same answers"
    );
}

/// `run_distill` with `context`, without unwrapping its result.
fn try_run(
    model: &Path,
    data: &Path,
    out: &Path,
    context: &str,
    cfg: &DistillConfig,
    resume: bool,
    stop_after: Option<u64>,
) -> cai_train::Result<DistillOutcome> {
    let stop = AtomicBool::new(false);
    let spec = DistillRun {
        model_dir: model.to_path_buf(),
        context: context.into(),
        data: data.to_path_buf(),
        eval_data: None,
        output: out.to_path_buf(),
        resume,
        allow_changes: Vec::new(),
        device: Device::Cpu,
    };
    run_distill(&spec, cfg, &stop, &mut |event| {
        if let DistillEvent::Metric { record, .. } = event {
            if record.split == Split::Train && Some(record.step) == stop_after {
                stop.store(true, Ordering::SeqCst);
            }
        }
    })
}

#[test]
fn divergence_too_long_a_context_and_a_changed_context_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let data = texts(tmp.path(), "train.jsonl", &TRAIN);
    let wild = DistillConfig {
        learning_rate: 1e6,
        max_grad_norm: 0.0,
        save_every: 1,
        ..quick()
    };
    let out = tmp.path().join("wild");
    let err = try_run(&model, &data, &out, CONTEXT, &wild, false, None).unwrap_err();
    assert!(
        matches!(
            err,
            cai_train::TrainError::Diverged {
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

    let window = ModelConfig::from_file(&model.join("config.json"))
        .unwrap()
        .max_position_embeddings;
    let long = CONTEXT.repeat(window);
    let err = try_run(
        &model,
        &data,
        &tmp.path().join("long"),
        &long,
        &quick(),
        false,
        None,
    )
    .unwrap_err();
    assert!(
        matches!(err, cai_train::TrainError::ContextTooLong { window: w, .. } if w == window),
        "{err}"
    );

    let cfg = DistillConfig {
        save_every: 2,
        max_steps: Some(4),
        ..quick()
    };
    let out = tmp.path().join("ctx");
    let stopped = try_run(&model, &data, &out, CONTEXT, &cfg, false, Some(2)).unwrap();
    assert!(matches!(stopped, DistillOutcome::Interrupted { .. }));
    let err = try_run(&model, &data, &out, "the cat.", &cfg, true, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("input data changed"), "{err}");
    assert!(err.contains("context was"), "{err}");
}

/// `gradient_checkpointing` distils as the plain pass does: the same KL step for step, up to
/// the rounding of sums.
#[test]
fn gradient_checkpointing_distils_as_the_plain_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let data = texts(tmp.path(), "train.jsonl", &TRAIN);
    let losses: Vec<Vec<f64>> = [false, true]
        .iter()
        .map(|&checkpointing| {
            let cfg = DistillConfig {
                epochs: 3,
                gradient_checkpointing: checkpointing,
                ..quick()
            };
            let out = tmp.path().join(format!("distilled-{checkpointing}"));
            let (_, records) = run(&model, &data, None, &out, &cfg, false, None);
            records
                .iter()
                .filter(|r| r.split == Split::Train)
                .map(|r| r.loss)
                .collect()
        })
        .collect();
    assert!(losses[0].len() >= 3, "{losses:?}");
    for (a, b) in losses[0].iter().zip(&losses[1]) {
        assert!((a - b).abs() <= 1e-4 * a.abs().max(1e-3), "{losses:?}");
    }
}
