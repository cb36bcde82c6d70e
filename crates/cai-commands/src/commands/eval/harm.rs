//! `cai eval harm`: the share of a model's answers to a prompt set that a judge calls harmful
//! — the lab's oracle (its verdict `harmful`) or a preference model (a reward below
//! `--pm-threshold`); the feedback judge only compares, so it is refused. With `--output`,
//! each answer and its verdict are written as they are made, and a rerun resumes.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use cai_core::jsonl::read_complete_records;
use cai_core::prompts::Prompt;
use cai_core::Sampling;
use cai_data::read_prompts;
use cai_model::tokenizer::DialogueFormat;
use cai_pipeline::eval::harm::{harm_records, HarmRecord, HarmSummary};
use cai_pipeline::eval::judge::Judge;
use cai_pipeline::eval::samples::{spread, SampleSettings, Snapshot};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::judges::{JudgeOptions, JudgeSpec, LoadedJudge};
use crate::commands::critique::prompt_format;
use crate::model_args::{self, DeviceName, Dtype, ModelArgs};
use crate::progress;
use crate::resume;
use crate::usage::{ensure, UsageError};

/// Raw `cai eval harm` arguments.
#[derive(Debug, Args)]
pub struct HarmArgs {
    /// The model answering: a directory, a model id, `lab`, or http(s)://…/v1 endpoints
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompts (JSONL, as cai critique reads them), usually red-team prompts
    #[arg(long, value_name = "FILE")]
    pub prompts: PathBuf,
    /// The judge: oracle (the lab's) or pm:DIR (a preference model, harmful below
    /// --pm-threshold)
    #[arg(long, value_name = "JUDGE")]
    pub judge: JudgeSpec,
    /// A PM judge calls an answer harmful when its reward is below this
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "R",
        allow_negative_numbers = true
    )]
    pub pm_threshold: f64,
    /// Text put in front of every prompt (dialogue prompting)
    #[arg(long, value_name = "FILE")]
    pub context: Option<PathBuf>,
    /// At most N prompts, spread over the file [default: every prompt]
    #[arg(long, value_name = "N")]
    pub samples: Option<usize>,
    /// Most new tokens per answer (CAI paper: 128)
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub max_new_tokens: usize,
    /// Temperature of the answers; 0 is greedy (CAI paper: 1)
    #[arg(long, default_value_t = 1.0, value_name = "T")]
    pub temperature: f32,
    /// Run seed: each answer's sampler is seeded from it and the prompt's id
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
    /// How prompts (and a PM's dialogues) are rendered: transcript, chat-template, or auto
    #[arg(long, default_value = "auto", value_parser = model_args::parse_format)]
    pub format: DialogueFormat,
    /// Prompts per generation call
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub batch_size: usize,
    /// JSONL of {"id", "prompt", "response", "harmful", "score", "label"}, one per prompt;
    /// an existing file is resumed
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Start afresh instead of resuming an existing --output
    #[arg(long)]
    pub overwrite: bool,
    /// Print the summary as one JSON object
    #[arg(long)]
    pub json: bool,
}

/// A validated `cai eval harm` run; saved beside `--output`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HarmConfig {
    /// The model.
    pub model: String,
    /// Device.
    pub device: DeviceName,
    /// Compute dtype.
    pub dtype: Option<Dtype>,
    /// Prompts.
    pub prompts: PathBuf,
    /// The judge.
    pub judge: String,
    /// A PM's threshold.
    pub pm_threshold: f64,
    /// Context file.
    pub context: Option<PathBuf>,
    /// Sampling.
    pub samples: SampleSettings,
    /// Prompt rendering.
    pub format: DialogueFormat,
    /// Prompts per call.
    pub batch_size: usize,
}

/// Run `cai eval harm`.
pub fn run(args: HarmArgs) -> anyhow::Result<()> {
    ensure(args.batch_size > 0, || {
        "--batch-size 0: expected at least 1".into()
    })?;
    ensure(args.samples != Some(0), || {
        "--samples 0: expected at least 1 prompt".into()
    })?;
    ensure(args.max_new_tokens > 0, || {
        "--max-new-tokens 0: expected at least 1".into()
    })?;
    let t = args.temperature;
    ensure(t.is_finite() && t >= 0.0, || {
        format!("--temperature {t}: expected a number ≥ 0 (0 is greedy)")
    })?;
    if !args.judge.gives_harm() {
        anyhow::bail!(UsageError(format!(
            "--judge {}: a feedback model only compares answers and gives no harm verdict; use \
             --judge oracle (the lab) or --judge pm:DIR with --pm-threshold",
            args.judge
        )));
    }
    let claim = match &args.output {
        Some(path) => {
            let mut read = vec![args.prompts.as_path()];
            read.extend(args.context.as_deref());
            Some(resume::claim(path, &read)?)
        }
        None => None,
    };
    let prompts = spread(&read_prompts(&args.prompts)?, args.samples);
    ensure(!prompts.is_empty(), || {
        format!(
            "{}: no prompts; expected JSONL records with \"prompt\"",
            args.prompts.display()
        )
    })?;
    let config = HarmConfig {
        model: args.model.model.clone(),
        device: args.model.device,
        dtype: args.model.dtype,
        prompts: args.prompts.clone(),
        judge: args.judge.to_string(),
        pm_threshold: args.pm_threshold,
        context: args.context.clone(),
        samples: SampleSettings {
            max_new_tokens: args.max_new_tokens,
            sampling: Sampling {
                temperature: t,
                ..Sampling::default()
            },
            seed: args.seed,
        },
        format: args.format,
        batch_size: args.batch_size,
    };
    let judge = LoadedJudge::load(
        &args.judge,
        &JudgeOptions {
            device: args.model.device,
            dtype: args.model.dtype,
            format: args.format,
            pm_threshold: args.pm_threshold,
            constitution: "default".into(),
            seed: args.seed,
            concurrency: 8,
        },
    )?;
    let mut out = match claim {
        Some(claim) => Some(claim.open(
            prompts.clone(),
            |p: &Prompt| &p.id,
            args.overwrite,
            &resume::OutputKind {
                command: "cai eval harm",
                config: &config,
                volatile: &["batch_size", "device"],
                marks: &["harmful"],
            },
        )?),
        None => None,
    };
    let todo = out.as_ref().map_or(prompts.clone(), |o| o.todo.clone());
    let mut records = Vec::new();
    if !todo.is_empty() {
        let model = args.model.load()?;
        let context = match &args.context {
            Some(path) => {
                let text = model_args::read_context(path)?;
                model_args::prefill_context(&model, &text, path)?;
                text
            }
            None => String::new(),
        };
        let snapshot = Snapshot {
            name: "model".into(),
            model: &model,
            context,
            format: prompt_format(&model, args.format)?,
        };
        let bar = progress::records_bar(prompts.len(), prompts.len() - todo.len(), "eval harm");
        let start = Instant::now();
        for chunk in todo.chunks(args.batch_size) {
            let made =
                harm_records(&snapshot, &judge, chunk, &config.samples).with_context(|| {
                    format!(
                        "answering and judging prompts {} … {} of {}",
                        chunk[0].id,
                        chunk[chunk.len() - 1].id,
                        args.prompts.display()
                    )
                })?;
            if let Some(out) = &mut out {
                for record in &made {
                    out.writer.write(record)?;
                }
                out.writer.sync()?;
            }
            records.extend(made);
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        eprintln!(
            "answered and judged {} prompts in {:.1} s",
            todo.len(),
            start.elapsed().as_secs_f64()
        );
    }
    if let Some(path) = &args.output {
        records = read_complete_records(path)?
            .into_iter()
            .map(serde_json::from_value::<HarmRecord>)
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}: not a cai eval harm output", path.display()))?;
    }
    let summary = HarmSummary::of(&judge.name(), records.iter().map(|r| &r.verdict));
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        let mut line = format!(
            "harm rate {:.3} ({} of {} answers of {} to {}, judged by {})",
            summary.harm_rate,
            summary.harmful,
            summary.responses,
            config.model,
            args.prompts.display(),
            summary.judge
        );
        if let Some(score) = summary.mean_score {
            line += &format!("; mean score {score:.3}");
        }
        println!("{line}");
    }
    Ok(())
}
