//! `cai score`: the log-probability of each continuation given its prompt, for every record
//! of a JSONL file, written incrementally and resumable; with `--reward-model`, a preference
//! model's reward of each response instead (`score/reward.rs`).

mod reward;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use cai_core::{LanguageModel, ScoreRequest};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::human;
use crate::model_args::{self, ModelArgs};
use crate::progress;
use crate::resume::{self, InputRecord};
use crate::usage::ensure;

/// Raw `cai score` arguments.
#[derive(Debug, Args)]
// --model or --reward-model names the scorer; one of them is needed.
#[command(mut_arg("model", |a| a.required(false).default_value("").hide_default_value(true)))]
#[command(group(clap::ArgGroup::new("scorer").args(["model", "reward_model"]).required(true)))]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Score responses with this preference model (`cai train-pm` output) instead of
    /// log-probabilities: records {"prompt" or "conversation", "response"} (or a whole
    /// "messages" dialogue) get "reward"; pairs with "response_a" and "response_b" get
    /// "reward_a", "reward_b" and "reward_p_a" = σ(reward_a − reward_b)
    #[arg(long, value_name = "PM", conflicts_with_all = ["model", "context", "top_k"])]
    pub reward_model: Option<String>,
    /// With --reward-model: how dialogues become text (transcript, chat-template or auto)
    #[arg(long, default_value = "auto", value_parser = model_args::parse_format)]
    pub format: cai_model::tokenizer::DialogueFormat,
    /// JSONL of {"id"?, "prompt", "continuation"} records
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// JSONL to write: each input record plus "id", "logprob" (the sum), "token_logprobs",
    /// "token_ids" and, with --top-k, "top_logprobs". An existing file is resumed
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// Text put in front of every prompt (dialogue prompting); prefilled once
    #[arg(long, value_name = "FILE")]
    pub context: Option<PathBuf>,
    /// Also write the K most likely tokens at each continuation position
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Records per model call; results are written after each call
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub batch_size: usize,
    /// Start afresh instead of resuming an existing --output
    #[arg(long)]
    pub overwrite: bool,
}

/// A validated `cai score` run; saved beside the output as `<output>.config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreConfig {
    /// The model.
    pub model: ModelArgs,
    /// Input JSONL.
    pub input: PathBuf,
    /// Output JSONL.
    pub output: PathBuf,
    /// Context file.
    pub context: Option<PathBuf>,
    /// Alternatives per position (0: none).
    pub top_k: usize,
    /// Records per model call.
    pub batch_size: usize,
}

/// Config fields that do not change the results, so a resumed run may change them.
const VOLATILE: &[&str] = &["batch_size"];

impl ScoreConfig {
    /// Check the arguments.
    pub fn from_args(args: ScoreArgs) -> anyhow::Result<(Self, bool)> {
        ensure(args.batch_size > 0, || {
            "--batch-size 0: expected at least 1".into()
        })?;
        ensure(args.top_k != Some(0), || {
            "--top-k 0: expected at least 1".into()
        })?;
        let config = Self {
            model: args.model,
            input: args.input,
            output: args.output,
            context: args.context,
            top_k: args.top_k.unwrap_or(0),
            batch_size: args.batch_size,
        };
        Ok((config, args.overwrite))
    }
}

/// One record to score.
struct Job {
    record: InputRecord,
    prompt: String,
    continuation: String,
}

/// Run `cai score`.
pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    if let Some(reward_model) = args.reward_model.clone() {
        return reward::run(args, reward_model);
    }
    let (config, overwrite) = ScoreConfig::from_args(args)?;
    let mut inputs = vec![config.input.as_path()];
    inputs.extend(config.context.as_deref());
    let claim = resume::claim(&config.output, &inputs)?;
    let jobs = resume::read_input(&config.input)?
        .into_iter()
        .map(|record| {
            let prompt = resume::string_field(&config.input, &record, "prompt")?.to_owned();
            let continuation =
                resume::string_field(&config.input, &record, "continuation")?.to_owned();
            Ok(Job {
                record,
                prompt,
                continuation,
            })
        })
        .collect::<anyhow::Result<Vec<Job>>>()?;
    let context = config
        .context
        .as_deref()
        .map(model_args::read_context)
        .transpose()?;

    let model = config.model.load()?;
    let mut out = claim.open(
        jobs,
        |job| &job.record.id,
        overwrite,
        &resume::OutputKind {
            command: "cai score",
            config: &config,
            volatile: VOLATILE,
            marks: &["logprob"],
        },
    )?;
    if out.all_done(&config.output) {
        return Ok(());
    }
    let total = out.total();
    if let (Some(text), Some(path)) = (&context, &config.context) {
        model_args::prefill_context(&model, text, path)?;
    }

    let bar = progress::records_bar(total, out.done, "score");
    let start = Instant::now();
    let mut scored_tokens = 0;
    for chunk in out.todo.chunks(config.batch_size) {
        let requests: Vec<ScoreRequest> = chunk
            .iter()
            .map(|job| ScoreRequest {
                prefix: context.clone().unwrap_or_default(),
                prompt: job.prompt.clone(),
                continuation: job.continuation.clone(),
                top_k: config.top_k,
            })
            .collect();
        let scores = model.score(&requests).with_context(|| {
            format!(
                "scoring lines {}-{} of {}",
                chunk[0].record.line,
                chunk[chunk.len() - 1].record.line,
                config.input.display()
            )
        })?;
        for (job, score) in chunk.iter().zip(scores) {
            let mut object = job.record.object.clone();
            object.insert("logprob".into(), serde_json::to_value(score.logprob)?);
            object.insert(
                "token_logprobs".into(),
                serde_json::to_value(&score.token_logprobs)?,
            );
            object.insert("token_ids".into(), serde_json::to_value(&score.token_ids)?);
            if config.top_k > 0 {
                object.insert(
                    "top_logprobs".into(),
                    serde_json::to_value(&score.top_logprobs)?,
                );
            }
            scored_tokens += score.token_ids.len();
            out.writer.write(&Value::Object(object))?;
        }
        bar.inc(chunk.len() as u64);
    }
    out.writer.sync()?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} to {} in {seconds:.1} s ({:.0} scored tokens/s)",
        human::count(out.todo.len(), "score"),
        config.output.display(),
        scored_tokens as f64 / seconds.max(1e-9)
    );
    Ok(())
}
