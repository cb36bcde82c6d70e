//! RL fine-tuning (`cai rl`): the run and its outcome, the session every algorithm shares
//! (policy, optimiser, checkpoints, exact resume, logs), and the online loop of PPO and
//! RLOO/GRPO — rollout → rewards with the KL penalty → advantages → clipped updates in
//! minibatches → log → samples → checkpoint. DPO's offline loop is in [`crate::rl::dpo`].

pub mod advantages;
pub mod config;
mod dpo;
pub mod kl_penalty;
pub mod loss;
pub mod policy;
pub mod rollout;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use cai_core::FinishReason;
use cai_model::tokenizer::Tokenizer;
use cai_report::rl::{rl_curves_svg, RlPoint};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::core::data_order::permutation;
use crate::core::precision::Precision;
use crate::core::resume::{fingerprint, FINGERPRINT_KEY};
use crate::core::session::{SessionSpec, TrainSession};
use crate::rl::advantages::{
    explained_variance, gae, group_normalised, leave_one_out, mean_var, whiten,
};
use crate::rl::config::{Algo, RlConfig};
use crate::rl::loss::{clipped_value_loss, ppo_policy_loss};
use crate::rl::policy::{Policy, Sequence};
use crate::rl::rollout::{rollout, PromptKind, PromptPool, RewardFn, Sample};
use crate::{
    AdamWConfig, GradAccumulator, MetricRecord, MetricsWriter, Result, Schedule, Split, TrainError,
};

/// The resolved config written beside the outputs.
pub const RL_CONFIG_FILE: &str = "rl_config.json";
/// Sample responses logged every `sample_every` steps.
pub const SAMPLES_FILE: &str = "samples.jsonl";
/// The log of every step.
pub const METRICS_FILE: &str = crate::core::session::METRICS_FILE;
/// Samples logged per table.
const SAMPLES_PER_TABLE: usize = 6;

/// What to train and where to write.
#[derive(Debug, Clone)]
pub struct RlRun {
    /// The policy to start from (HF layout); also the reference.
    pub policy_dir: PathBuf,
    /// Red-team prompts (PPO, RLOO).
    pub prompts: Option<PathBuf>,
    /// Helpful prompts mixed in (PPO, RLOO).
    pub helpful_prompts: Option<PathBuf>,
    /// Labelled pairs (DPO): `cai label` records, TRL or hh-rlhf preferences.
    pub data: Option<PathBuf>,
    /// Where the reward came from (recorded in the config).
    pub reward_name: Option<String>,
    /// Output directory.
    pub output: PathBuf,
    /// Continue from the newest checkpoint in `output/checkpoints`.
    pub resume: bool,
    /// Settings a resume may change, and `"data"` for changed prompts or pairs (see
    /// [`crate::core::resume`]); anything else that differs from the checkpoint is refused.
    pub allow_changes: Vec<String>,
    /// Device to train on.
    pub device: Device,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RlOutcome {
    /// Every step ran and the policy was written to the output directory.
    Finished {
        /// Steps taken.
        steps: u64,
        /// The last step's record.
        last: Option<MetricRecord>,
    },
    /// The stop flag was raised; a checkpoint was saved to resume from.
    Interrupted {
        /// The checkpoint written.
        checkpoint: PathBuf,
    },
}

/// One logged sample response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// The step after which it was sampled.
    pub step: u64,
    /// `red_team` or `helpful`.
    pub kind: String,
    /// The prompt's id.
    pub prompt_id: String,
    /// The user's request.
    pub prompt: String,
    /// The response.
    pub response: String,
    /// The reward's score.
    pub reward: f32,
    /// Σ per-token KL(policy ‖ reference) of the response.
    pub kl: f32,
}

/// What the trainer reports as it goes.
pub enum RlEvent<'a> {
    /// A step's metrics, and the run's total steps.
    Metrics(&'a MetricRecord, u64),
    /// A table of sample responses.
    Samples(&'a [SampleRecord]),
}

/// Train. `reward` is required by PPO and RLOO; `stop` is polled between steps (Ctrl-C).
pub fn run_rl(
    run: &RlRun,
    cfg: &RlConfig,
    reward: Option<&dyn RewardFn>,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(RlEvent<'_>),
) -> Result<RlOutcome> {
    cfg.validate()?;
    // The policy is built in `Precision::build` by `load_policy`; its products follow this
    // scope for the whole run.
    let _bf16_products = Precision::of(&cfg.dtype, &run.device)?.scope();
    match cfg.algo {
        Algo::Dpo => crate::rl::dpo::run_dpo(run, cfg, stop, progress),
        Algo::Ppo | Algo::Rloo => {
            let reward = reward.ok_or_else(|| {
                TrainError::Config(format!(
                    "{} needs a reward (a preference model)",
                    cfg.algo.name()
                ))
            })?;
            run_online(run, cfg, reward, stop, progress)
        }
    }
}

/// The session every algorithm shares: the policy, its optimiser, schedule, logs and
/// checkpoints.
pub(crate) type Session<'m> = TrainSession<'m, Policy>;

/// Load the policy to train (with a value head for PPO) and its tokenizer.
pub(crate) fn load_policy(run: &RlRun, cfg: &RlConfig) -> Result<(Policy, Tokenizer)> {
    let precision = Precision::of(&cfg.dtype, &run.device)?;
    let (policy, tokenizer) = Policy::load(
        &run.policy_dir,
        cfg.lora.as_ref(),
        cfg.algo == Algo::Ppo,
        precision.build,
        &run.device,
    )?;
    let policy = if precision.bf16_matmuls {
        policy.with_bf16_rollouts()?
    } else {
        policy
    };
    Ok((policy, tokenizer))
}

/// Open the training session over `policy` (resuming from the newest checkpoint when asked),
/// and its log of sample responses.
pub(crate) fn open_session<'m>(
    run: &RlRun,
    cfg: &RlConfig,
    total_steps: u64,
    policy: &'m Policy,
    tokenizer: &'m Tokenizer,
) -> Result<(Session<'m>, MetricsWriter)> {
    let schedule = Schedule {
        kind: cfg.schedule,
        warmup_steps: cfg.warmup_steps,
        total_steps,
        min_lr_ratio: 0.0,
    };
    schedule.validate()?;
    let config_json = json!({
        "rl": cfg,
        "policy": run.policy_dir,
        "prompts": run.prompts,
        "helpful_prompts": run.helpful_prompts,
        "data": run.data,
        "reward": run.reward_name,
        FINGERPRINT_KEY: fingerprint(&[
            ("prompts", run.prompts.as_deref()),
            ("helpful_prompts", run.helpful_prompts.as_deref()),
            ("data", run.data.as_deref()),
        ])?,
    });
    let session = TrainSession::open(
        policy,
        tokenizer,
        policy.params(cfg.value_lr_scale),
        SessionSpec {
            method: "rl",
            config: config_json,
            config_file: RL_CONFIG_FILE,
            output: &run.output,
            resume: run.resume,
            allow_changes: &run.allow_changes,
            seed: cfg.seed,
            keep_last: cfg.keep_last,
            optimizer: AdamWConfig {
                lr: cfg.learning_rate,
                weight_decay: cfg.weight_decay,
                ..AdamWConfig::default()
            },
            schedule,
            device: &run.device,
        },
    )?;
    let samples = session.open_log(SAMPLES_FILE)?;
    Ok((session, samples))
}

/// PPO and RLOO/GRPO.
fn run_online(
    run: &RlRun,
    cfg: &RlConfig,
    reward: &dyn RewardFn,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(RlEvent<'_>),
) -> Result<RlOutcome> {
    let prompts_path = run
        .prompts
        .as_deref()
        .ok_or_else(|| TrainError::Config(format!("{} needs red-team prompts", cfg.algo.name())))?;
    let total_steps = cfg.steps.expect("validated: online runs have steps");
    let (policy, tokenizer) = load_policy(run, cfg)?;
    let (mut session, mut samples) = open_session(run, cfg, total_steps, &policy, &tokenizer)?;
    let max_positions = policy.decoder().config().max_position_embeddings;
    let pool = PromptPool::load(
        prompts_path,
        run.helpful_prompts.as_deref(),
        &tokenizer,
        cfg,
        max_positions,
    )?;
    let mut grads = GradAccumulator::new();
    let mut last = None;
    while session.state.step < total_steps {
        if stop.load(Ordering::SeqCst) {
            let checkpoint = session.save()?;
            return Ok(RlOutcome::Interrupted { checkpoint });
        }
        let record = online_step(
            &mut session,
            &mut samples,
            &pool,
            cfg,
            reward,
            &mut grads,
            progress,
        )?;
        progress(RlEvent::Metrics(&record, total_steps));
        last = Some(record);
        session.step_done(cfg.save_every);
    }
    write_curves(&run.output, cfg)?;
    session.finish()?;
    policy.trainee.write(&run.output, &tokenizer)?;
    Ok(RlOutcome::Finished {
        steps: session.state.step,
        last,
    })
}

/// The plot of the run's reward and KL.
pub const CURVES_FILE: &str = "rl_curves.svg";

/// Draw [`CURVES_FILE`] from the run's metrics.
pub fn write_curves(output: &Path, cfg: &RlConfig) -> Result<()> {
    // The steps that logged both a KL and a reward.
    let points: Vec<RlPoint> = read_metrics(output)?
        .iter()
        .filter_map(|r| {
            let get = |k: &str| r.extra.get(k).and_then(serde_json::Value::as_f64);
            Some(RlPoint {
                step: r.step as f64,
                kl: get("kl")?,
                reward: get("reward")?,
            })
        })
        .collect();
    let title = format!(
        "{} against the preference model, β = {}",
        cfg.algo.name().to_uppercase(),
        cfg.kl_coef
    );
    let svg = rl_curves_svg(&points, &title).map_err(TrainError::Config)?;
    let path = output.join(CURVES_FILE);
    Ok(cai_model::write_atomic(&path, svg.as_bytes())?)
}

/// Per-token advantages and returns of a rollout (returns are empty for RLOO).
fn advantages(samples: &[Sample], cfg: &RlConfig) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let beta = cfg.kl_coef as f32;
    let (mut adv, returns): (Vec<Vec<f32>>, Vec<Vec<f32>>) = match cfg.algo {
        Algo::Ppo => samples
            .iter()
            .map(|s| {
                let mut rewards: Vec<f32> = s
                    .kl_tokens(cfg.kl_estimator)
                    .iter()
                    .map(|k| -beta * k)
                    .collect();
                if let Some(last) = rewards.last_mut() {
                    *last += s.score;
                }
                gae(&rewards, &s.values, cfg.gamma as f32, cfg.lam as f32)
            })
            .unzip(),
        _ => {
            let totals: Vec<f32> = samples
                .iter()
                .map(|s| s.score - beta * s.kl(cfg.kl_estimator))
                .collect();
            let per_sequence = if cfg.group_norm {
                group_normalised(&totals, cfg.group())
            } else {
                leave_one_out(&totals, cfg.group())
            };
            let adv = samples
                .iter()
                .zip(per_sequence)
                .map(|(s, a)| vec![a; s.logp.len()])
                .collect();
            (adv, Vec::new())
        }
    };
    let whiten_them = cfg.whiten_advantages && !(cfg.algo == Algo::Rloo && cfg.group_norm);
    if whiten_them {
        let mut flat: Vec<f32> = adv.iter().flatten().copied().collect();
        whiten(&mut flat, true);
        let mut at = 0;
        for a in adv.iter_mut() {
            let n = a.len();
            a.copy_from_slice(&flat[at..at + n]);
            at += n;
        }
    }
    (adv, returns)
}

/// One rollout and its updates; returns the step's record (already written).
fn online_step(
    session: &mut Session<'_>,
    samples_log: &mut MetricsWriter,
    pool: &PromptPool,
    cfg: &RlConfig,
    reward: &dyn RewardFn,
    grads: &mut GradAccumulator,
    progress: &mut dyn FnMut(RlEvent<'_>),
) -> Result<MetricRecord> {
    let (policy, step) = (session.model, session.state.step);
    let started = session.begin_step();
    let prompts = pool.batch(step);
    let roll = rollout(policy, session.tokenizer, &prompts, cfg, step, reward)?;
    let samples = &roll.samples;
    let (adv, returns) = advantages(samples, cfg);
    let ppo = cfg.algo == Algo::Ppo;

    // Updates: ppo_epochs passes, each over the rollout split into minibatches.
    let update_started = Instant::now();
    let device = policy.decoder().device().clone();
    let mut sums = UpdateSums::default();
    let updates_per_step = (cfg.ppo_epochs * cfg.minibatches) as u64;
    let mut grad_norm = 0.0;
    let mut lr = cfg.learning_rate;
    let params = policy.params(cfg.value_lr_scale);
    for epoch in 0..cfg.ppo_epochs {
        let seed = cai_core::rng::derive_seed_u64(cfg.seed, &[step, epoch as u64, 7]);
        let order = permutation(samples.len(), seed);
        let size = samples.len().div_ceil(cfg.minibatches);
        for (m, minibatch) in order.chunks(size).enumerate() {
            let tokens: usize = minibatch.iter().map(|&i| samples[i].logp.len()).sum();
            if tokens == 0 {
                continue;
            }
            for (u, micro) in minibatch.chunks(cfg.rollout_batch).enumerate() {
                policy
                    .decoder()
                    .set_dropout_seed(cai_core::rng::derive_seed_u64(
                        cfg.seed,
                        &[step, epoch as u64, m as u64, u as u64],
                    ));
                let seqs: Vec<&Sequence> = micro.iter().map(|&i| &samples[i].sequence).collect();
                let train = policy.forward_train(
                    &seqs,
                    cfg.entropy_coef > 0.0,
                    cfg.gradient_checkpointing,
                )?;
                let out = &train.outputs;
                let old = gather(micro, |i| &samples[i].logp, &device)?;
                let a = gather(micro, |i| &adv[i], &device)?;
                let (policy_loss, stats) = ppo_policy_loss(&out.log_probs, &old, &a, cfg.clip)?;
                let n_micro = old.dims1()? as f64;
                let mut loss = policy_loss.clone();
                if let (true, Some(values)) = (ppo, &out.values) {
                    let old_values = gather(micro, |i| &samples[i].values, &device)?;
                    let ret = gather(micro, |i| &returns[i], &device)?;
                    let vl = clipped_value_loss(values, &old_values, &ret, cfg.value_clip)?;
                    sums.value_loss += f64::from(vl.to_scalar::<f32>()?);
                    loss = (loss + (vl * cfg.vf_coef)?)?;
                }
                if let Some(entropy) = &out.entropy_sum {
                    loss = (loss - (entropy * cfg.entropy_coef)?)?;
                }
                let value = f64::from(policy_loss.to_scalar::<f32>()?);
                // The clipped surrogate has no fixed scale to compare with: finiteness only
                // (exploding weights are caught after the update).
                session.check_loss("policy loss", value, false)?;
                sums.policy_loss += value;
                sums.clip_fraction += stats.clip_fraction * n_micro;
                sums.approx_kl += stats.approx_kl * n_micro;
                sums.tokens += n_micro;
                train.backward(&(loss * (1.0 / tokens as f64))?, &params, grads)?;
            }
            let index = step * updates_per_step + (epoch * cfg.minibatches + m) as u64;
            (grad_norm, lr) = session.step(grads, cfg.max_grad_norm, cfg.learning_rate, index)?;
        }
    }
    let update_s = update_started.elapsed().as_secs_f64();
    session.state.step += 1;
    let record = step_record(
        session.state.step,
        samples,
        &adv,
        &returns,
        cfg,
        &sums,
        (grad_norm, lr),
        Timings {
            generation_s: roll.generation_s,
            reward_s: roll.reward_s,
            logprob_s: roll.logprob_s,
            update_s,
            step_s: started.elapsed().as_secs_f64(),
        },
    );
    session.log(&record)?;
    if cfg.sample_every > 0
        && (session.state.step == 1 || session.state.step.is_multiple_of(cfg.sample_every))
    {
        let table = sample_table(session.state.step, samples, cfg);
        for row in &table {
            samples_log.write(row)?;
        }
        progress(RlEvent::Samples(&table));
    }
    Ok(record)
}

/// The per-token numbers of some samples, concatenated. Shapes: -> `[Σ lengths]`.
fn gather<'a>(micro: &[usize], f: impl Fn(usize) -> &'a [f32], device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = micro.iter().flat_map(|&i| f(i).iter().copied()).collect();
    let n = v.len();
    Ok(Tensor::from_vec(v, n, device)?)
}

/// Sums over a step's updates.
#[derive(Default)]
struct UpdateSums {
    policy_loss: f64,
    value_loss: f64,
    clip_fraction: f64,
    approx_kl: f64,
    tokens: f64,
}

/// Where a step's time went.
struct Timings {
    generation_s: f64,
    reward_s: f64,
    logprob_s: f64,
    update_s: f64,
    step_s: f64,
}

#[allow(clippy::too_many_arguments)]
fn step_record(
    step: u64,
    samples: &[Sample],
    adv: &[Vec<f32>],
    returns: &[Vec<f32>],
    cfg: &RlConfig,
    sums: &UpdateSums,
    (grad_norm, lr): (f64, f64),
    t: Timings,
) -> MetricRecord {
    let n = samples.len().max(1) as f64;
    let tokens = sums.tokens.max(1.0);
    let mean = |f: &dyn Fn(&Sample) -> f64| samples.iter().map(f).sum::<f64>() / n;
    let scores: Vec<f32> = samples.iter().map(|s| s.score).collect();
    let (_, score_var) = mean_var(&scores);
    let kl = mean(&|s| f64::from(s.kl(cfg.kl_estimator)));
    let by_kind = |kind: PromptKind| -> Option<f64> {
        let picked: Vec<f64> = samples
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| f64::from(s.score))
            .collect();
        (!picked.is_empty()).then(|| picked.iter().sum::<f64>() / picked.len() as f64)
    };
    let entropy_tokens: usize = samples.iter().map(|s| s.entropy.len()).sum();
    let entropy = samples
        .iter()
        .flat_map(|s| &s.entropy)
        .map(|&e| f64::from(e))
        .sum::<f64>()
        / entropy_tokens.max(1) as f64;
    let mut record = MetricRecord::new(step, Split::Train, sums.policy_loss / tokens);
    record.lr = Some(lr);
    record.grad_norm = Some(grad_norm);
    let total_tokens: usize = samples.iter().map(|s| s.sequence.ids.len()).sum();
    record.tokens_per_s = Some(total_tokens as f64 / t.step_s.max(1e-9));
    let mut put = |k: &str, v: Option<f64>| {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            record.extra.insert(k.into(), json!(v));
        }
    };
    let reward = mean(&|s| f64::from(s.score));
    put("reward", Some(reward));
    put("reward_std", Some(f64::from(score_var.sqrt())));
    put("reward_red_team", by_kind(PromptKind::RedTeam));
    put("reward_helpful", by_kind(PromptKind::Helpful));
    put("kl", Some(kl));
    put("non_score_reward", Some(-cfg.kl_coef * kl));
    put("total_reward", Some(reward - cfg.kl_coef * kl));
    put("entropy", Some(entropy));
    put("clip_fraction", Some(sums.clip_fraction / tokens));
    put("approx_kl", Some(sums.approx_kl / tokens));
    put("policy_loss", Some(sums.policy_loss / tokens));
    if cfg.algo == Algo::Ppo {
        put("value_loss", Some(sums.value_loss / tokens));
        let values: Vec<f32> = samples.iter().flat_map(|s| s.values.clone()).collect();
        let rets: Vec<f32> = returns.iter().flatten().copied().collect();
        put(
            "explained_variance",
            Some(f64::from(explained_variance(&values, &rets))),
        );
    }
    let advs: Vec<f32> = adv.iter().flatten().copied().collect();
    put("advantage_mean", Some(f64::from(mean_var(&advs).0)));
    put("response_length", Some(mean(&|s| s.logp.len() as f64)));
    put(
        "truncated",
        Some(mean(&|s| {
            f64::from(u8::from(s.finish == FinishReason::Length))
        })),
    );
    put("generation_s", Some(t.generation_s));
    put("reward_s", Some(t.reward_s));
    put("logprob_s", Some(t.logprob_s));
    put("update_s", Some(t.update_s));
    put("step_s", Some(t.step_s));
    put(
        "generation_share",
        Some(t.generation_s / t.step_s.max(1e-9)),
    );
    record
}

/// A few samples of the step, red-team and helpful alternating.
fn sample_table(step: u64, samples: &[Sample], cfg: &RlConfig) -> Vec<SampleRecord> {
    let pick = |kind: PromptKind| samples.iter().filter(move |s| s.kind == kind);
    let mut red = pick(PromptKind::RedTeam);
    let mut helpful = pick(PromptKind::Helpful);
    let mut out = Vec::new();
    while out.len() < SAMPLES_PER_TABLE {
        let before = out.len();
        for s in [red.next(), helpful.next()].into_iter().flatten() {
            if out.len() < SAMPLES_PER_TABLE {
                out.push(SampleRecord {
                    step,
                    kind: match s.kind {
                        PromptKind::RedTeam => "red_team",
                        PromptKind::Helpful => "helpful",
                    }
                    .into(),
                    prompt_id: s.prompt_id.clone(),
                    prompt: s
                        .messages
                        .iter()
                        .rev()
                        .find(|m| m.role == cai_core::dialogue::Role::User)
                        .map(|m| m.content.clone())
                        .unwrap_or_default(),
                    response: s.text.clone(),
                    reward: s.score,
                    kl: s.kl(cfg.kl_estimator),
                });
            }
        }
        if out.len() == before {
            break;
        }
    }
    out
}

/// The output directory's metrics, for plots (records without a reward are skipped).
pub fn read_metrics(output: &Path) -> Result<Vec<MetricRecord>> {
    let path = output.join(METRICS_FILE);
    Ok(cai_core::jsonl::read_jsonl::<MetricRecord>(&path)?)
}
