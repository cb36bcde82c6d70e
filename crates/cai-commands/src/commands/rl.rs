//! `cai rl`: RL-CAI's last step — optimise a policy against a preference model with PPO or
//! RLOO/GRPO, held near its starting point by a KL penalty, or with DPO offline on labelled
//! pairs; with a progress bar, sample tables, checkpoints, Ctrl-C and `--resume`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use cai_core::dialogue::{render_transcript, Message};
use cai_model::config::ModelConfig;
use cai_model::lora::{LoraConfig, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
use cai_model::tokenizer::DialogueFormat;
use cai_train::rl::config::{Algo, RlConfig};
use cai_train::rl::kl_penalty::KlEstimator;
use cai_train::rl::rollout::{PmReward, RewardFn};
use cai_train::rl::{
    run_rl, RlEvent, RlOutcome, RlRun, SampleRecord, CURVES_FILE, METRICS_FILE, RL_CONFIG_FILE,
    SAMPLES_FILE,
};
use cai_train::MetricRecord;
use clap::Args;

use crate::human;
use crate::interrupt::{resume_command, stop_on_ctrl_c, INTERRUPTED};
use crate::progress;
use crate::train_flags::{self, read_config, set, RunFlags};
use crate::train_output::{explain, Earlier, Plan, TrainOutput};
use crate::train_progress::ShownMetrics;
use crate::usage::UsageError;

/// Raw `cai rl` arguments. A setting left unset comes from `--config`, else from the defaults
/// listed after `--help`.
#[derive(Debug, Default, Args)]
#[command(after_help = defaults_help())]
pub struct RlArgs {
    /// ppo, rloo or dpo
    #[arg(long, value_enum)]
    pub algo: Option<Algo>,
    /// Policy to start from (the SL-CAI model), also the reference of the KL penalty: a
    /// directory in Hugging Face layout, a model id in the local HF cache, or `lab`
    #[arg(long, value_name = "M")]
    pub policy: String,
    /// Preference model whose score is the reward (ppo, rloo): a `cai train-pm` output, or
    /// `http(s)://…/v1` endpoints of `cai serve` serving one (dialogues sent as transcripts)
    #[arg(long, value_name = "PM")]
    pub reward: Option<PathBuf>,
    /// Red-team prompts (ppo, rloo): JSONL with "prompt" or "messages", or hh-rlhf records
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// Helpful prompts mixed into every rollout batch (ppo, rloo)
    #[arg(long, value_name = "FILE")]
    pub helpful_prompts: Option<PathBuf>,
    /// Helpful prompts per red-team prompt in a batch
    #[arg(long, value_name = "R")]
    pub helpful_ratio: Option<f64>,
    /// Labelled pairs (dpo): `cai label` records (soft labels), TRL or hh-rlhf preferences
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// Directory for the trained policy (a Hugging Face model, or a PEFT adapter with
    /// --lora), rl_config.json, metrics.jsonl, samples.jsonl, rl_curves.svg, checkpoints/
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// Steps: rollout batches (ppo, rloo) or optimiser steps (dpo; default: --epochs)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: Option<u64>,
    /// Passes over the pairs (dpo)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: Option<u64>,
    /// Prompts per rollout batch (ppo, rloo) or pairs per step (dpo)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,
    /// Minibatches each rollout batch is split into
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub minibatches: Option<u64>,
    /// Passes over each rollout batch (the paper: 1)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub ppo_epochs: Option<u64>,
    /// Steps of linear warm-up from 0
    #[arg(long, value_name = "N")]
    pub warmup_steps: Option<u64>,
    /// β of the per-token KL penalty (the paper: 0.001; 0 turns it off)
    #[arg(long, value_name = "B")]
    pub kl_coef: Option<f64>,
    /// KL estimator per token
    #[arg(long, value_enum)]
    pub kl_estimator: Option<KlEstimator>,
    /// PPO's clip range ε of the probability ratio (the paper: 0.2)
    #[arg(long, value_name = "E")]
    pub clip: Option<f64>,
    /// Clip range of the value loss
    #[arg(long, value_name = "C")]
    pub value_clip: Option<f64>,
    /// Weight of the value loss
    #[arg(long, value_name = "W")]
    pub vf_coef: Option<f64>,
    /// The value head's learning rate as a multiple of the policy's
    #[arg(long, value_name = "X")]
    pub value_lr_scale: Option<f64>,
    /// Discount γ (the paper: 1)
    #[arg(long, value_name = "G")]
    pub gamma: Option<f64>,
    /// GAE's λ
    #[arg(long, value_name = "L")]
    pub lam: Option<f64>,
    /// Whiten advantages over each rollout batch: true or false
    #[arg(long, value_name = "BOOL")]
    pub whiten_advantages: Option<bool>,
    /// Entropy bonus (the paper: none)
    #[arg(long, value_name = "W")]
    pub entropy_coef: Option<f64>,
    /// Samples per prompt (rloo)
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(2..))]
    pub rloo_k: Option<u64>,
    /// Group-normalised advantages (GRPO) instead of the leave-one-out baseline (rloo)
    #[arg(long)]
    pub group_norm: bool,
    /// Longest response in tokens (the paper: 128)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_new_tokens: Option<u64>,
    /// Sampling temperature of the rollouts
    #[arg(long, value_name = "T")]
    pub temperature: Option<f32>,
    /// Reward added to a response cut at --max-new-tokens (≤ 0)
    #[arg(long, value_name = "P", allow_hyphen_values = true)]
    pub truncation_penalty: Option<f64>,
    /// β of DPO's implicit reward
    #[arg(long, value_name = "B")]
    pub dpo_beta: Option<f64>,
    /// DPO label smoothing ε (conservative DPO)
    #[arg(long, value_name = "E")]
    pub label_smoothing: Option<f64>,
    /// Longest dialogue in tokens
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(2..))]
    pub max_length: Option<u64>,
    /// Show and log a table of sample responses every N steps (0: never)
    #[arg(long, value_name = "N")]
    pub sample_every: Option<u64>,
    /// Checkpoints kept: a number, or "all" (the default: the curves and Elo use them)
    #[arg(long, value_name = "N")]
    pub keep_last: Option<String>,
    /// Train LoRA adapters; the reference is the same weights with the adapters off
    #[arg(long)]
    pub lora: bool,
    /// LoRA rank (with --lora)
    #[arg(long, value_name = "R")]
    pub lora_r: Option<usize>,
    /// LoRA alpha (with --lora)
    #[arg(long, value_name = "A")]
    pub lora_alpha: Option<f64>,
    /// Rows per generation or scoring pass
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub rollout_batch: Option<u64>,
    /// Settings every training command shares.
    #[command(flatten)]
    pub run: RunFlags,
}

/// The text after `--help`: every setting's default, as `--config` TOML.
fn defaults_help() -> String {
    let text = toml::to_string(&RlConfig::default()).expect("RlConfig serialises to TOML");
    train_flags::defaults_help(&text, "; [lora] with r, alpha, dropout, target_modules")
}

/// The resolved settings: `--config`, then the flags.
fn resolve(args: &RlArgs, policy_dir: &Path) -> anyhow::Result<RlConfig> {
    let mut rl: RlConfig = read_config(args.run.config.as_deref())?;
    set(&mut rl.algo, args.algo);
    if rl.algo == Algo::Dpo && args.run.config.is_none() && args.steps.is_none() {
        rl.steps = None;
    }
    if args.steps.is_some() {
        rl.steps = args.steps;
    }
    set(&mut rl.epochs, args.epochs);
    let usize_flag = |v: Option<u64>| v.map(|n| n as usize);
    set(&mut rl.batch_size, usize_flag(args.batch_size));
    set(&mut rl.minibatches, usize_flag(args.minibatches));
    set(&mut rl.ppo_epochs, usize_flag(args.ppo_epochs));
    set(&mut rl.learning_rate, args.run.learning_rate);
    set(&mut rl.warmup_steps, args.warmup_steps);
    set(&mut rl.kl_coef, args.kl_coef);
    set(&mut rl.kl_estimator, args.kl_estimator);
    set(&mut rl.clip, args.clip);
    set(&mut rl.value_clip, args.value_clip);
    set(&mut rl.vf_coef, args.vf_coef);
    set(&mut rl.value_lr_scale, args.value_lr_scale);
    set(&mut rl.gamma, args.gamma);
    set(&mut rl.lam, args.lam);
    set(&mut rl.whiten_advantages, args.whiten_advantages);
    set(&mut rl.entropy_coef, args.entropy_coef);
    set(&mut rl.rloo_k, usize_flag(args.rloo_k));
    if args.group_norm {
        rl.group_norm = true;
    }
    set(&mut rl.max_new_tokens, usize_flag(args.max_new_tokens));
    set(&mut rl.temperature, args.temperature);
    set(&mut rl.truncation_penalty, args.truncation_penalty);
    set(&mut rl.helpful_ratio, args.helpful_ratio);
    set(&mut rl.dpo_beta, args.dpo_beta);
    set(&mut rl.label_smoothing, args.label_smoothing);
    set(&mut rl.max_length, usize_flag(args.max_length));
    set(&mut rl.sample_every, args.sample_every);
    set(&mut rl.save_every, args.run.save_every);
    set(&mut rl.seed, args.run.seed);
    set(&mut rl.format, args.run.format);
    set(&mut rl.rollout_batch, usize_flag(args.rollout_batch));
    if let Some(keep) = &args.keep_last {
        rl.keep_last = match keep.as_str() {
            "all" => None,
            n => match n.parse::<usize>() {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    return Err(UsageError(format!(
                        "--keep-last '{n}': expected a number ≥ 1, or \"all\""
                    ))
                    .into())
                }
            },
        };
    }
    if let Some(dtype) = args.run.dtype {
        rl.dtype = dtype.name().to_owned();
    }
    rl.gradient_checkpointing |= args.run.gradient_checkpointing;
    if args.lora || args.lora_r.is_some() || args.lora_alpha.is_some() {
        if !args.lora && rl.lora.is_none() {
            return Err(UsageError("--lora-r and --lora-alpha need --lora".into()).into());
        }
        let mut lora = match rl.lora.take() {
            Some(lora) => lora,
            None => {
                let config = ModelConfig::from_file(&policy_dir.join("config.json"))?;
                LoraConfig {
                    seed: rl.seed,
                    ..LoraConfig::for_architecture(config.architecture)
                }
            }
        };
        set(&mut lora.r, args.lora_r);
        set(&mut lora.alpha, args.lora_alpha);
        rl.lora = Some(lora);
    }
    rl.validate().map_err(|e| UsageError(e.to_string()))?;
    let need = |given: bool, flag: &str, why: &str| -> Result<(), UsageError> {
        if given {
            Ok(())
        } else {
            Err(UsageError(format!(
                "--algo {} needs {flag} ({why})",
                rl.algo.name()
            )))
        }
    };
    match rl.algo {
        Algo::Dpo => need(args.data.is_some(), "--data", "the labelled pairs")?,
        Algo::Ppo | Algo::Rloo => {
            need(args.reward.is_some(), "--reward", "the preference model")?;
            need(args.prompts.is_some(), "--prompts", "the red-team prompts")?;
        }
    }
    Ok(rl)
}

/// Run `cai rl`. Exits 130 after Ctrl-C, once the checkpoint is saved.
pub fn run(args: RlArgs) -> anyhow::Result<ExitCode> {
    let policy_dir = crate::lab_models::resolve_model_dir(&args.policy)
        .with_context(|| format!("finding the policy '{}'", args.policy))?;
    let rl = resolve(&args, &policy_dir)?;
    for path in [&args.prompts, &args.helpful_prompts, &args.data]
        .into_iter()
        .flatten()
    {
        // A file, or a Hub dataset source (downloaded when read).
        if let Err(message) = cai_data::check_source(path) {
            return Err(UsageError(message).into());
        }
    }
    let earlier = args.run.earlier();
    let target = TrainOutput {
        output: &args.output,
        model_dir: &policy_dir,
        method: "rl",
        settings: serde_json::to_value(&rl)?,
        config_file: RL_CONFIG_FILE,
        extra_files: &[SAMPLES_FILE, CURVES_FILE, "reference_logps.json"],
        allow_changes: &args.run.allow_config_change,
    };
    let (plan, _lock) = target.prepare(earlier)?;
    if let Plan::AlreadyFinished(weights) = plan {
        eprintln!(
            "{} already holds the finished policy ({weights}); nothing to resume. Pass \
             --overwrite to train again",
            args.output.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let device = cai_model::device::device_from_name(&args.run.device.to_string())
        .with_context(|| format!("opening device {}", args.run.device))?;
    let bar = progress::spinner("loading the policy, the reward and the prompts");
    let reward: Option<Box<dyn RewardFn>> = match (&args.reward, rl.algo) {
        (Some(spec), Algo::Ppo | Algo::Rloo) => {
            let spec = spec.display().to_string();
            if cai_remote::is_remote_spec(&spec) {
                if rl.format == DialogueFormat::ChatTemplate {
                    return Err(UsageError(
                        "a remote reward reads dialogues as transcripts; --format \
                         chat-template needs a local preference model"
                            .into(),
                    )
                    .into());
                }
                Some(Box::new(RemoteReward {
                    model: crate::backend::open_remote(&spec)?,
                }))
            } else {
                let dir = crate::lab_models::resolve_model_dir(&spec)?;
                Some(Box::new(
                    PmReward::load(&dir, rl.format, &device).with_context(|| {
                        format!("loading the preference model {}", dir.display())
                    })?,
                ))
            }
        }
        _ => None,
    };
    let run = RlRun {
        policy_dir: policy_dir.clone(),
        prompts: args.prompts.clone(),
        helpful_prompts: args.helpful_prompts.clone(),
        data: args.data.clone(),
        reward_name: args.reward.as_ref().map(|p| p.display().to_string()),
        output: args.output.clone(),
        resume: earlier == Earlier::Resume,
        allow_changes: args.run.allow_config_change.clone(),
        device,
    };
    let stop = stop_on_ctrl_c(bar.clone())?;
    let mut shown = ShownMetrics::new("rl");
    let outcome = run_rl(
        &run,
        &rl,
        reward.as_deref(),
        &stop,
        &mut |event| match event {
            RlEvent::Metrics(record, total_steps) => {
                if !shown.started {
                    let from = match record.step {
                        1 => String::new(),
                        step => format!(", resuming after step {}", step - 1),
                    };
                    bar.suspend(|| eprintln!("{}{from}", describe(&args, &rl, total_steps)));
                }
                shown.update(&bar, &shown_record(record), total_steps);
            }
            RlEvent::Samples(rows) => bar.suspend(|| eprint!("{}", sample_table(rows))),
        },
    );
    bar.finish_and_clear();
    let outcome = outcome
        .map_err(|e| explain(e, "rl", rl.learning_rate))
        .with_context(|| format!("RL on {}", args.policy))?;
    match outcome {
        RlOutcome::Finished { steps, last } => {
            println!(
                "trained {} with {}{}",
                human::count(steps as usize, "step"),
                rl.algo.name(),
                last.as_ref().map(summary).unwrap_or_default()
            );
            println!("wrote {}: {}", args.output.display(), written(&args, &rl));
            Ok(ExitCode::SUCCESS)
        }
        RlOutcome::Interrupted { checkpoint } => {
            eprintln!("interrupted: saved the checkpoint {}", checkpoint.display());
            eprintln!("resume with: {}", resume_command());
            Ok(ExitCode::from(INTERRUPTED))
        }
    }
}

/// A preference model behind `cai serve` endpoints: each dialogue is sent as a transcript and
/// scored whole.
struct RemoteReward {
    model: cai_remote::RemoteModel,
}

impl RewardFn for RemoteReward {
    fn rewards(&self, dialogues: &[Vec<Message>]) -> cai_train::Result<Vec<f32>> {
        let texts: Vec<String> = dialogues
            .iter()
            .map(|d| render_transcript(d, false))
            .collect();
        self.model
            .rewards(&texts)
            .map_err(|e| cai_train::TrainError::Reward(e.to_string()))
    }
}

/// The few numbers the progress bar shows (the log has them all).
fn shown_record(record: &MetricRecord) -> MetricRecord {
    let mut shown = record.clone();
    let keep = [
        "reward",
        "kl",
        "entropy",
        "clip_fraction",
        "response_length",
        "accuracy",
        "margin",
    ];
    shown.extra.retain(|k, _| keep.contains(&k.as_str()));
    shown
}

/// The last step in a few words.
fn summary(record: &MetricRecord) -> String {
    let get = |k: &str| record.extra.get(k).and_then(serde_json::Value::as_f64);
    match (get("reward"), get("kl"), get("accuracy")) {
        (Some(r), Some(kl), _) => format!(": last reward {r:.3}, KL {kl:.3}"),
        (_, _, Some(a)) => format!(": last loss {:.4}, accuracy {a:.3}", record.loss),
        _ => String::new(),
    }
}

/// A table of sample responses for stderr.
fn sample_table(rows: &[SampleRecord]) -> String {
    let cut = |s: &str, n: usize| -> String {
        let one_line = s.replace('\n', " ⏎ ");
        if one_line.chars().count() > n {
            one_line.chars().take(n - 1).collect::<String>() + "…"
        } else {
            one_line
        }
    };
    let mut out = String::new();
    if let Some(first) = rows.first() {
        out += &format!("samples after step {}:\n", first.step);
    }
    out += &format!(
        "  {:<8} {:>7} {:>6}  {:<38} {}\n",
        "set", "reward", "KL", "prompt", "response"
    );
    for r in rows {
        out += &format!(
            "  {:<8} {:>7.3} {:>6.2}  {:<38} {}\n",
            if r.kind == "red_team" {
                "red-team"
            } else {
                "helpful"
            },
            r.reward,
            r.kl,
            cut(&r.prompt, 38),
            cut(&r.response, 70)
        );
    }
    out
}

/// One line on stderr saying what is trained, for how many steps.
fn describe(args: &RlArgs, rl: &RlConfig, total_steps: u64) -> String {
    let what = match &rl.lora {
        Some(lora) => format!("LoRA (r {}, alpha {}) on", lora.r, lora.alpha),
        None => "every weight of".into(),
    };
    let steps = human::count(total_steps as usize, "step");
    match rl.algo {
        Algo::Dpo => format!(
            "rl: dpo, {what} {} on {}, {steps}, β {}, learning rate {:e}, batch {} pairs",
            args.policy,
            args.data.as_deref().map(show).unwrap_or_default(),
            rl.dpo_beta,
            rl.learning_rate,
            rl.batch_size
        ),
        algo => format!(
            "rl: {}, {what} {} against {}, {steps} of {} prompts{}, KL β {}, learning rate \
             {:e}, {} new tokens at most",
            algo.name(),
            args.policy,
            args.reward.as_deref().map(show).unwrap_or_default(),
            rl.batch_size,
            if algo == Algo::Rloo {
                format!(" × {} samples", rl.rloo_k)
            } else {
                String::new()
            },
            rl.kl_coef,
            rl.learning_rate,
            rl.max_new_tokens
        ),
    }
}

fn show(path: &Path) -> String {
    path.display().to_string()
}

/// What the finished run wrote, for stdout.
fn written(args: &RlArgs, rl: &RlConfig) -> String {
    let mut logs = format!("{RL_CONFIG_FILE}, {METRICS_FILE}");
    if rl.algo != Algo::Dpo {
        logs += &format!(", {SAMPLES_FILE}, {CURVES_FILE}");
    }
    if args.output.join("checkpoints").is_dir() {
        logs += ", checkpoints/";
    }
    match &rl.lora {
        Some(_) => format!(
            "a PEFT adapter ({ADAPTER_CONFIG_FILE}, {ADAPTER_WEIGHTS_FILE}, tokenizer) and \
             {logs}; `cai merge-lora --model {} --adapter {} --output DIR` makes it a model",
            args.policy,
            args.output.display()
        ),
        None => {
            format!("a Hugging Face model (config.json, model.safetensors, tokenizer) and {logs}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_help_lists_the_config_keys() {
        let help = defaults_help();
        assert!(help.contains("  kl_coef = 0.001"), "{help}");
        assert!(help.contains("  clip = 0.2"), "{help}");
    }

    #[test]
    fn the_table_cuts_long_text_to_one_line() {
        let rows = [SampleRecord {
            step: 3,
            kind: "red_team".into(),
            prompt_id: "p".into(),
            prompt: "how do I\nsteal a bike?".into(),
            response: "x".repeat(200),
            reward: 1.25,
            kl: 0.5,
        }];
        let table = sample_table(&rows);
        assert!(table.starts_with("samples after step 3:\n"), "{table}");
        assert!(table.contains("how do I ⏎ steal a bike?"), "{table}");
        assert!(table.contains('…'));
        assert_eq!(table.lines().count(), 3);
    }
}
