//! `cai generate`: completions for every prompt (or dialogue) of a JSONL file, written
//! incrementally and resumable, optionally after a dialogue-prompting context.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use cai_core::dialogue::{transcript_stop_strings, Message, Role};
use cai_core::rng::derive_seed;
use cai_core::{GenerateRequest, LanguageModel};
use cai_model::tokenizer::DialogueFormat;
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backend::Backend;
use crate::human;
use crate::model_args::{self, ModelArgs, SamplingArgs, SamplingConfig};
use crate::progress;
use crate::resume::{self, InputRecord};
use crate::usage::ensure;

/// Raw `cai generate` arguments.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// JSONL of {"id"?, "prompt"} or {"id"?, "messages": [{role, content}]} records
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// JSONL to write: each input record plus "id", "completion", "token_ids",
    /// "finish_reason". An existing file is resumed
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// End a completion at this string (repeatable) [default: the transcript's "\n\nHuman:"
    /// and "\n\nAssistant:" when dialogues are rendered as transcripts]
    #[arg(long, value_name = "STR")]
    pub stop: Vec<String>,
    /// Text put in front of every prompt (dialogue prompting); prefilled once
    #[arg(long, value_name = "FILE")]
    pub context: Option<PathBuf>,
    /// How "messages" are rendered: the Human:/Assistant: transcript, the tokenizer's chat
    /// template, or auto (the chat template if the tokenizer has one)
    #[arg(long, default_value = "auto", value_parser = model_args::parse_format)]
    pub format: DialogueFormat,
    /// Prompts per model call; results are written after each call
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub batch_size: usize,
    /// Start afresh instead of resuming an existing --output
    #[arg(long)]
    pub overwrite: bool,
}

/// A validated `cai generate` run; saved beside the output as `<output>.config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateConfig {
    /// The model.
    pub model: ModelArgs,
    /// Input JSONL.
    pub input: PathBuf,
    /// Output JSONL.
    pub output: PathBuf,
    /// Sampling as asked for (unset: the model's generation_config.json).
    pub sampling: SamplingConfig,
    /// Stop strings given on the command line (empty: the format's defaults).
    pub stop: Vec<String>,
    /// Context file.
    pub context: Option<PathBuf>,
    /// Dialogue rendering.
    pub format: DialogueFormat,
    /// Prompts per model call.
    pub batch_size: usize,
}

/// Config fields that do not change the results, so a resumed run may change them.
const VOLATILE: &[&str] = &["batch_size"];

impl GenerateConfig {
    /// Check the arguments.
    pub fn from_args(args: GenerateArgs) -> anyhow::Result<(Self, bool)> {
        ensure(args.batch_size > 0, || {
            "--batch-size 0: expected at least 1".into()
        })?;
        ensure(args.stop.iter().all(|s| !s.is_empty()), || {
            "--stop: expected a non-empty string".into()
        })?;
        let config = Self {
            sampling: args.sampling.validate()?,
            model: args.model,
            input: args.input,
            output: args.output,
            stop: args.stop,
            context: args.context,
            format: args.format,
            batch_size: args.batch_size,
        };
        Ok((config, args.overwrite))
    }
}

/// One record to complete: the input record and the text the model continues.
struct Job {
    record: InputRecord,
    prompt: String,
}

/// What one input record asks to continue.
enum PromptInput {
    /// Raw text.
    Text(String),
    /// A dialogue to render, with the assistant's turn opened.
    Messages(Vec<Message>),
}

/// Read what a record asks for: exactly one of "prompt" (a string) and "messages".
fn prompt_input(path: &Path, record: &InputRecord) -> anyhow::Result<PromptInput> {
    let at = format!("{}:{}", path.display(), record.line);
    match (record.object.get("prompt"), record.object.get("messages")) {
        (Some(_), Some(_)) => {
            bail!("{at}: has both \"prompt\" and \"messages\"; expected one of them")
        }
        (Some(Value::String(prompt)), None) => Ok(PromptInput::Text(prompt.clone())),
        (Some(other), None) => bail!(
            "{at}: \"prompt\" is {}; expected a string",
            resume::kind(other)
        ),
        (None, Some(messages)) => {
            let messages: Vec<Message> = serde_json::from_value(messages.clone()).map_err(|e| {
                anyhow::anyhow!(
                    "{at}: \"messages\" is not a list of {{\"role\", \"content\"}} objects \
                     with role system, user or assistant ({e})"
                )
            })?;
            anyhow::ensure!(!messages.is_empty(), "{at}: \"messages\" is empty");
            // The renderers treat a late system message as a bug of the caller, so catch it here.
            anyhow::ensure!(
                messages.iter().skip(1).all(|m| m.role != Role::System),
                "{at}: a \"system\" message is only allowed first in \"messages\""
            );
            Ok(PromptInput::Messages(messages))
        }
        (None, None) => bail!(
            "{at}: expected \"prompt\" (a string) or \"messages\" (a list of {{\"role\", \
             \"content\"}} objects); found {}",
            resume::keys(&record.object)
        ),
    }
}

/// Run `cai generate`.
pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let (config, overwrite) = GenerateConfig::from_args(args)?;
    let mut inputs = vec![config.input.as_path()];
    inputs.extend(config.context.as_deref());
    let claim = resume::claim(&config.output, &inputs)?;
    let input = resume::read_input(&config.input)?;
    let prompts = input
        .iter()
        .map(|record| prompt_input(&config.input, record))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let context = config
        .context
        .as_deref()
        .map(model_args::read_context)
        .transpose()?;

    let model = config.model.load()?;
    let (sampling, max_new_tokens) = config.sampling.resolve(&model.generation_defaults());
    let stop = if !config.stop.is_empty() {
        config.stop.clone()
    } else if model_args::renders_transcript(&model, config.format) {
        transcript_stop_strings()
    } else {
        Vec::new()
    };
    let jobs = input
        .into_iter()
        .zip(prompts)
        .map(|(record, prompt)| {
            let prompt = render(&model, prompt, config.format, &config.input, &record)?;
            Ok(Job { record, prompt })
        })
        .collect::<anyhow::Result<Vec<Job>>>()?;

    let mut out = claim.open(
        jobs,
        |job| &job.record.id,
        overwrite,
        &resume::OutputKind {
            command: "cai generate",
            config: &config,
            volatile: VOLATILE,
            marks: &["completion"],
        },
    )?;
    if out.all_done(&config.output) {
        return Ok(());
    }
    let total = out.total();
    if let (Some(text), Some(path)) = (&context, &config.context) {
        model_args::prefill_context(&model, text, path)?;
    }
    eprintln!(
        "generating {} ({}){}",
        human::count(out.todo.len(), "completion"),
        model_args::describe_sampling(&sampling, max_new_tokens),
        if out.done > 0 {
            format!(", resuming after {} done", out.done)
        } else {
            String::new()
        }
    );

    let bar = progress::records_bar(total, out.done, "generate");
    let start = Instant::now();
    let mut new_tokens = 0;
    for chunk in out.todo.chunks(config.batch_size) {
        let requests: Vec<GenerateRequest> = chunk
            .iter()
            .map(|job| GenerateRequest {
                prefix: context.clone().unwrap_or_default(),
                prompt: job.prompt.clone(),
                max_new_tokens,
                sampling,
                stop: stop.clone(),
                seed: derive_seed(config.sampling.seed, &[job.record.id.as_str()]),
                format: cai_core::OutputFormat::Text,
            })
            .collect();
        let generations = model.generate(&requests).with_context(|| {
            format!(
                "generating for lines {}-{} of {}",
                chunk[0].record.line,
                chunk[chunk.len() - 1].record.line,
                config.input.display()
            )
        })?;
        for (job, generation) in chunk.iter().zip(generations) {
            let mut object = job.record.object.clone();
            object.insert("completion".into(), Value::String(generation.text));
            object.insert(
                "token_ids".into(),
                serde_json::to_value(&generation.token_ids)?,
            );
            object.insert(
                "finish_reason".into(),
                serde_json::to_value(generation.finish_reason)?,
            );
            new_tokens += generation.token_ids.len();
            out.writer.write(&object)?;
        }
        bar.inc(chunk.len() as u64);
    }
    out.writer.sync()?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} to {} in {seconds:.1} s ({:.0} new tokens/s)",
        human::count(out.todo.len(), "completion"),
        config.output.display(),
        new_tokens as f64 / seconds.max(1e-9)
    );
    Ok(())
}

/// The text the model continues for one record.
fn render(
    model: &Backend,
    prompt: PromptInput,
    format: DialogueFormat,
    path: &Path,
    record: &InputRecord,
) -> anyhow::Result<String> {
    match prompt {
        PromptInput::Text(text) => Ok(text),
        PromptInput::Messages(messages) => model
            .render_dialogue(&messages, true, format)
            .with_context(|| format!("{}:{}: rendering \"messages\"", path.display(), record.line)),
    }
}
