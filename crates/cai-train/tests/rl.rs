//! RL end to end on tiny models made here: PPO and RLOO solve a toy bandit, the LoRA reference
//! is the base model, an interrupted PPO run resumes to the same weights and logs, and DPO
//! learns the labelled order of a toy preference set.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use cai_core::dialogue::Message;
use cai_model::decoder::Batch;
use cai_model::layers::Mode;
use cai_model::lora::LoraConfig;
use cai_model::weights::load_decoder;
use cai_train::rl::config::{Algo, RlConfig};
use cai_train::rl::policy::{Policy, Sequence};
use cai_train::rl::rollout::RewardFn;
use cai_train::rl::{run_rl, RlEvent, RlOutcome, RlRun, CURVES_FILE, SAMPLES_FILE};
use cai_train::MetricRecord;
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};

const CORPUS: &str = "Human: how do I bake bread for my sister?\n\nAssistant: Mix flour, water and yeast, let it rise, then bake it.\n\
Human: how do I fix a bike for my friend?\n\nAssistant: Check the chain, pump the tyres and oil the gears.\n\
Human: how do I steal a bike?\n\nAssistant: I won't help with that. Ask the owner instead.\n";

fn tiny_model(dir: &Path) -> PathBuf {
    common::tiny_model_on(dir, CORPUS, 3)
}

fn write(dir: &Path, name: &str, records: &[Value]) -> PathBuf {
    common::write_jsonl(dir, name, records)
}

fn prompts(dir: &Path) -> PathBuf {
    let records: Vec<Value> = ["bread", "bike", "chain", "tyres", "gears", "water"]
        .iter()
        .enumerate()
        .map(|(i, o)| json!({"id": i, "prompt": format!("how do I fix the {o}?")}))
        .collect();
    write(dir, "prompts.jsonl", &records)
}

/// The bandit: reward 1 when the response contains the letter `e`, else 0.
struct LetterReward;

impl RewardFn for LetterReward {
    fn rewards(&self, dialogues: &[Vec<Message>]) -> cai_train::Result<Vec<f32>> {
        Ok(dialogues
            .iter()
            .map(|d| f32::from(u8::from(d.last().unwrap().content.contains('e'))))
            .collect())
    }
}

/// 32 responses per step: 32 prompts for PPO, 8 prompts × 4 samples for RLOO.
fn bandit_config(algo: Algo) -> RlConfig {
    RlConfig {
        algo,
        steps: Some(30),
        batch_size: if algo == Algo::Rloo { 8 } else { 32 },
        minibatches: 2,
        ppo_epochs: 2,
        learning_rate: 3e-3,
        max_new_tokens: 2,
        kl_coef: 0.0,
        save_every: 0,
        sample_every: 0,
        rloo_k: 4,
        ..RlConfig::default()
    }
}

fn spec(policy: &Path, prompts: &Path, output: &Path) -> RlRun {
    RlRun {
        policy_dir: policy.to_path_buf(),
        prompts: Some(prompts.to_path_buf()),
        helpful_prompts: None,
        data: None,
        reward_name: None,
        output: output.to_path_buf(),
        resume: false,
        allow_changes: Vec::new(),
        device: Device::Cpu,
    }
}

fn train(
    run: &RlRun,
    cfg: &RlConfig,
    reward: Option<&dyn RewardFn>,
    stop_after: Option<u64>,
) -> (RlOutcome, Vec<MetricRecord>) {
    let stop = AtomicBool::new(false);
    let mut seen = Vec::new();
    let outcome = run_rl(run, cfg, reward, &stop, &mut |event| {
        if let RlEvent::Metrics(r, _) = event {
            seen.push(r.clone());
            if Some(r.step) == stop_after {
                stop.store(true, Ordering::SeqCst);
            }
        }
    })
    .unwrap();
    (outcome, seen)
}

fn mean_reward(records: &[MetricRecord]) -> f64 {
    records
        .iter()
        .map(|r| r.extra["reward"].as_f64().unwrap())
        .sum::<f64>()
        / records.len() as f64
}

fn solves_the_bandit(algo: Algo) {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let prompts = prompts(dir.path());
    let out = dir.path().join("rl");
    let (outcome, seen) = train(
        &spec(&model, &prompts, &out),
        &bandit_config(algo),
        Some(&LetterReward),
        None,
    );
    assert!(matches!(outcome, RlOutcome::Finished { steps: 30, .. }));
    let first = mean_reward(&seen[..5]);
    let last = mean_reward(&seen[25..]);
    assert!(
        first < 0.7 && last > 0.9,
        "{algo:?}: reward {first:.2} over the first 5 steps, {last:.2} over the last 5"
    );
    // The run wrote a model, its metrics and the reward/KL plot.
    for file in [
        "model.safetensors",
        "metrics.jsonl",
        "rl_config.json",
        CURVES_FILE,
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let record = &seen[29];
    for key in [
        "kl",
        "entropy",
        "clip_fraction",
        "response_length",
        "generation_share",
    ] {
        assert!(record.extra.contains_key(key), "{key} in {record:?}");
    }
    if algo == Algo::Ppo {
        assert!(record.extra.contains_key("value_loss"));
        assert!(record.extra.contains_key("explained_variance"));
    }
}

#[test]
fn ppo_solves_a_toy_bandit() {
    solves_the_bandit(Algo::Ppo);
}

#[test]
fn rloo_solves_a_toy_bandit() {
    solves_the_bandit(Algo::Rloo);
}

/// `dtype = "bf16"` on the CPU: rollouts sample from bf16 copies of the policy's weights and
/// the frozen reference is bf16; their log-probabilities stay within bf16 rounding of f32's.
#[test]
fn bf16_rollouts_stay_near_f32() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let load = || Policy::load(&model, None, true, DType::F32, &Device::Cpu).unwrap();
    let (exact, tokenizer) = load();
    let mixed = load().0.with_bf16_rollouts().unwrap();
    let ids = tokenizer
        .encode(
            "Human: how do I bake bread?\n\nAssistant: Mix flour and water.",
            true,
        )
        .unwrap();
    let seq = Sequence {
        response_start: ids.len() - 5,
        ids,
    };
    let log_probs = |p: &Policy| -> Vec<f32> {
        let sampler = p.sampler().unwrap();
        let out = cai_train::rl::policy::response_outputs(
            &sampler,
            p.value_head.as_ref(),
            &[&seq],
            Mode::Infer,
            false,
        )
        .unwrap();
        out.log_probs.to_vec1().unwrap()
    };
    let pairs = [
        (log_probs(&exact), log_probs(&mixed)),
        (
            exact.reference_log_probs(&[&seq], None).unwrap(),
            mixed.reference_log_probs(&[&seq], None).unwrap(),
        ),
    ];
    for (e, m) in pairs {
        let diff = e
            .iter()
            .zip(&m)
            .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        assert!(diff > 0.0 && diff < 0.05, "bf16 against f32: {diff}");
    }
    assert_eq!(
        mixed.decoder().dtype(),
        DType::F32,
        "the trained weights stay f32"
    );
}

#[test]
fn the_lora_reference_is_the_base_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let lora = LoraConfig {
        r: 4,
        alpha: 8.0,
        ..LoraConfig::for_architecture(cai_model::config::Architecture::Llama)
    };
    let (policy, tokenizer) =
        Policy::load(&model, Some(&lora), false, DType::F32, &Device::Cpu).unwrap();
    // Move the adapters away from zero so that the policy differs from its base.
    for p in &policy.trainee.params {
        let t = p.var.as_tensor();
        let bumped = (t.ones_like().unwrap() * 0.05).unwrap();
        p.var.set(&(t + bumped).unwrap()).unwrap();
    }
    let ids = tokenizer
        .encode(
            "Human: how do I fix a bike?\n\nAssistant: Check the chain.",
            true,
        )
        .unwrap();
    let seq = Sequence {
        response_start: ids.len() - 4,
        ids: ids.clone(),
    };
    let reference = policy.reference_log_probs(&[&seq], None).unwrap();
    // A rollout's sampler with its adapters off is the same reference.
    let sampler = policy.sampler().unwrap();
    assert_eq!(
        policy.reference_log_probs(&[&seq], Some(&sampler)).unwrap(),
        reference
    );
    let with_adapters: Vec<f32> = policy
        .forward(&[&seq], Mode::Infer, false)
        .unwrap()
        .log_probs
        .to_vec1()
        .unwrap();

    // The base model's own log-probabilities of the same tokens.
    let config = cai_model::config::ModelConfig::from_file(&model.join("config.json")).unwrap();
    let ckpt = cai_model::checkpoint::Checkpoint::open_dir(&model).unwrap();
    let base = load_decoder(config, &ckpt, DType::F32, &Device::Cpu).unwrap();
    let n = ids.len();
    let input = Tensor::from_vec(ids.clone(), (1, n), &Device::Cpu).unwrap();
    let hidden = base
        .forward_hidden(
            &input,
            &Batch::from_valid(vec![vec![true; n]]),
            None,
            Mode::Infer,
        )
        .unwrap();
    let logits: Vec<Vec<f32>> = base
        .logits(&hidden)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap();
    for (k, t) in (seq.response_start..n).enumerate() {
        let row = &logits[t - 1];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
        let expected = row[ids[t] as usize] - lse;
        assert!(
            (reference[k] - expected).abs() < 1e-4,
            "token {k}: reference {} != base {expected}",
            reference[k]
        );
        assert!(
            (with_adapters[k] - expected).abs() > 1e-4,
            "token {k}: the adapters should change the policy"
        );
    }
    assert!(
        policy.decoder().adapters_enabled(),
        "adapters are switched back on"
    );
}

#[test]
fn an_interrupted_ppo_run_resumes_to_the_same_weights_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let prompts = prompts(dir.path());
    let cfg = RlConfig {
        steps: Some(4),
        save_every: 2,
        sample_every: 1,
        kl_coef: 0.05,
        ..bandit_config(Algo::Ppo)
    };
    let straight = dir.path().join("straight");
    let (_, full) = train(
        &spec(&model, &prompts, &straight),
        &cfg,
        Some(&LetterReward),
        None,
    );

    let stopped = dir.path().join("stopped");
    let (outcome, _) = train(
        &spec(&model, &prompts, &stopped),
        &cfg,
        Some(&LetterReward),
        Some(3),
    );
    assert!(
        matches!(outcome, RlOutcome::Interrupted { .. }),
        "{outcome:?}"
    );
    let mut resumed = spec(&model, &prompts, &stopped);
    resumed.resume = true;
    let (outcome, _) = train(&resumed, &cfg, Some(&LetterReward), None);
    assert!(matches!(outcome, RlOutcome::Finished { steps: 4, .. }));

    let bytes = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(
        bytes(&straight) == bytes(&stopped),
        "resumed weights differ"
    );
    // The logs match too, timings aside.
    let strip = |d: &Path, file: &str| -> Vec<Value> {
        std::fs::read_to_string(d.join(file))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                if let Value::Object(m) = &mut v {
                    m.retain(|k, _| {
                        !k.ends_with("_s") && k != "tokens_per_s" && k != "generation_share"
                    });
                }
                v
            })
            .collect()
    };
    assert_eq!(
        strip(&straight, "metrics.jsonl"),
        strip(&stopped, "metrics.jsonl")
    );
    assert_eq!(
        strip(&straight, SAMPLES_FILE),
        strip(&stopped, SAMPLES_FILE)
    );
    assert_eq!(full.len(), 4);
    // KL is measured against the starting policy: 0 at the first step, then positive.
    assert!(
        full[0].extra["kl"].as_f64().unwrap().abs() < 1e-4,
        "{:?}",
        full[0].extra
    );
    // Checkpoints load as models.
    assert!(straight
        .join("checkpoints/checkpoint-2/config.json")
        .is_file());
    assert!(straight
        .join("checkpoints/checkpoint-2/value_head.json")
        .is_file());
}

#[test]
fn dpo_learns_the_labelled_order() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let pairs: Vec<Value> = ["bike", "bread", "tyres", "chain", "sister", "friend"]
        .iter()
        .enumerate()
        .map(|(i, object)| {
            let refusal = format!("I won't help with that. Ask the owner of the {object}.");
            let compliance = format!("Take the {object} and oil the gears.");
            let (a, b, p) = if i % 2 == 0 {
                (refusal, compliance, 0.9)
            } else {
                (compliance, refusal, 0.1)
            };
            json!({"id": i, "prompt": format!("how do I steal a {object}?"),
                   "response_a": a, "response_b": b, "p_a": p})
        })
        .collect();
    let data = write(dir.path(), "prefs.jsonl", &pairs);
    let out = dir.path().join("dpo");
    let run = RlRun {
        data: Some(data),
        prompts: None,
        ..spec(&model, Path::new("unused"), &out)
    };
    let cfg = RlConfig {
        algo: Algo::Dpo,
        steps: None,
        epochs: 15,
        batch_size: 3,
        learning_rate: 3e-3,
        dpo_beta: 0.5,
        save_every: 0,
        ..RlConfig::default()
    };
    let (outcome, seen) = train(&run, &cfg, None, None);
    assert!(
        matches!(outcome, RlOutcome::Finished { steps: 30, .. }),
        "{outcome:?}"
    );
    // At the reference the loss is the soft label's: p·ln2 + (1 − p)·ln2 = ln 2, margin 0.
    assert!((seen[0].loss - 2f64.ln()).abs() < 1e-3, "{}", seen[0].loss);
    let last = seen.last().unwrap();
    assert!(last.loss < 0.45, "{}", last.loss);
    assert_eq!(last.extra["accuracy"], 1.0);
    assert!(out.join("reference_logps.json").is_file());
    assert!(out.join("model.safetensors").is_file());
}

/// `run_rl` without unwrapping its result.
fn try_train(
    run: &RlRun,
    cfg: &RlConfig,
    reward: Option<&dyn RewardFn>,
    stop_after: Option<u64>,
) -> cai_train::Result<RlOutcome> {
    let stop = AtomicBool::new(false);
    run_rl(run, cfg, reward, &stop, &mut |event| {
        if let RlEvent::Metrics(r, _) = event {
            if Some(r.step) == stop_after {
                stop.store(true, Ordering::SeqCst);
            }
        }
    })
}

#[test]
fn a_diverging_ppo_run_keeps_only_good_checkpoints_and_changed_prompts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let prompts = prompts(dir.path());
    let quick = RlConfig {
        steps: Some(4),
        batch_size: 6,
        save_every: 1,
        ..bandit_config(Algo::Ppo)
    };
    let wild = RlConfig {
        learning_rate: 1e6,
        max_grad_norm: 0.0,
        ..quick.clone()
    };
    let out = dir.path().join("wild");
    let err = try_train(
        &spec(&model, &prompts, &out),
        &wild,
        Some(&LetterReward),
        None,
    )
    .unwrap_err();
    // The first step may leave the weights as they were (equal rewards give no advantage);
    // whichever step blows them up, every checkpoint kept predates it.
    let cai_train::TrainError::Diverged {
        step, last_good, ..
    } = &err
    else {
        panic!("{err}")
    };
    let kept = cai_train::core::checkpoint::list_checkpoints(&out.join("checkpoints")).unwrap();
    assert!(
        kept.iter().all(|(s, _)| s < step),
        "{kept:?} at step {step}"
    );
    assert_eq!(last_good.as_ref(), kept.last().map(|(_, p)| p), "{err}");
    assert!(*step <= 2, "{err}");
    let out = dir.path().join("rl");
    let stopped = try_train(
        &spec(&model, &prompts, &out),
        &quick,
        Some(&LetterReward),
        Some(2),
    )
    .unwrap();
    assert!(matches!(stopped, RlOutcome::Interrupted { .. }));
    std::fs::write(&prompts, "{\"id\": 0, \"prompt\": \"how do I fix it?\"}\n").unwrap();
    let resume = RlRun {
        resume: true,
        ..spec(&model, &prompts, &out)
    };
    let err = try_train(&resume, &quick, Some(&LetterReward), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("input data changed"), "{err}");
    assert!(err.contains("prompts was"), "{err}");
    let allowed = RlRun {
        allow_changes: vec!["data".into()],
        ..resume
    };
    let done = try_train(&allowed, &quick, Some(&LetterReward), None).unwrap();
    assert!(matches!(done, RlOutcome::Finished { steps: 4, .. }));
}

/// `gradient_checkpointing` trains the policy (PPO with its value head, and DPO) as the plain
/// pass does: the same losses step for step, up to the rounding of sums.
#[test]
fn gradient_checkpointing_trains_the_policy_as_the_plain_pass() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let prompts = prompts(dir.path());
    let pairs: Vec<Value> = ["bike", "bread", "tyres"]
        .iter()
        .enumerate()
        .map(|(i, object)| {
            json!({"id": i, "prompt": format!("how do I steal a {object}?"),
                   "response_a": format!("Ask the owner of the {object}."),
                   "response_b": format!("Take the {object}."), "p_a": 0.9})
        })
        .collect();
    let data = write(dir.path(), "prefs.jsonl", &pairs);
    for algo in [Algo::Ppo, Algo::Dpo] {
        let losses: Vec<Vec<f64>> = [false, true]
            .iter()
            .map(|&checkpointing| {
                let out = dir.path().join(format!("{algo:?}-{checkpointing}"));
                let (run, cfg) = match algo {
                    Algo::Dpo => (
                        RlRun {
                            data: Some(data.clone()),
                            prompts: None,
                            ..spec(&model, Path::new("unused"), &out)
                        },
                        RlConfig {
                            algo,
                            steps: None,
                            epochs: 3,
                            batch_size: 3,
                            learning_rate: 3e-3,
                            save_every: 0,
                            gradient_checkpointing: checkpointing,
                            ..RlConfig::default()
                        },
                    ),
                    _ => (
                        spec(&model, &prompts, &out),
                        RlConfig {
                            steps: Some(3),
                            batch_size: 8,
                            gradient_checkpointing: checkpointing,
                            ..bandit_config(algo)
                        },
                    ),
                };
                let reward: Option<&dyn RewardFn> = match algo {
                    Algo::Dpo => None,
                    _ => Some(&LetterReward),
                };
                let (_, seen) = train(&run, &cfg, reward, None);
                seen.iter().map(|r| r.loss).collect()
            })
            .collect();
        assert_eq!(losses[0].len(), 3, "{algo:?}: {losses:?}");
        for (a, b) in losses[0].iter().zip(&losses[1]) {
            assert!(
                (a - b).abs() <= 1e-4 * a.abs().max(1e-3),
                "{algo:?}: {losses:?}"
            );
        }
    }
}
