//! `cai critique`: SL-CAI data — the model answers red-team prompts, then critiques and
//! revises its answers against principles drawn from a constitution (or a separate critic
//! model does, `--critic`); optionally also answers helpfulness prompts to mix into
//! fine-tuning. Resumable, with the config saved beside the output.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use cai_core::constitution::{self, Constitution, CritiquePrinciple, BUILTIN};
use cai_core::few_shot::{self, transcript_prefix, CritiqueExample};
use cai_core::prompts::Prompt;
use cai_core::rng::derive_seed;
use cai_core::usage::CountingModel;
use cai_core::Sampling;
use cai_data::read_prompts;
use cai_model::tokenizer::DialogueFormat;
use cai_pipeline::critique::{Critic, CritiqueSettings, CritiqueStage};
use cai_pipeline::render::PromptFormat;
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::human;
use crate::model_args::{self, ModelArgs, DEFAULT_FORMAT};
use crate::progress;
use crate::resume::{self, ResumedOutput};
use crate::usage::{ensure, UsageError};

/// Raw `cai critique` arguments.
#[derive(Debug, Args)]
pub struct CritiqueArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A separate model that writes the critiques and revisions of --model's answers:
    /// anything --model takes, on the same device and dtype [default: --model critiques
    /// itself, as in the CAI paper]. For a policy too small to critique itself
    #[arg(long, value_name = "M")]
    pub critic: Option<String>,
    /// Red-team prompts: JSONL of {"id"?, "prompt"} or {"id"?, "messages"} records, or
    /// hh-rlhf records ({"chosen", "rejected"} transcripts; the prompt is the first human turn)
    #[arg(long, value_name = "FILE")]
    pub prompts: PathBuf,
    /// Constitution: a built-in name (default), a .toml file in cai's format, Anthropic's or
    /// Hugging Face's JSON file, or a directory of such files
    #[arg(long, value_name = "C")]
    pub constitution: String,
    /// Few-shot critique/revision examples put in front of every critique and revision
    /// request: a .toml file in cai's format, Anthropic's JSON list of transcripts, "default"
    /// (the built-in ones) or "none" [default: the constitution's own (the built-in
    /// constitution's, or Hugging Face's system_chat), else none]
    #[arg(long, value_name = "F")]
    pub few_shot: Option<String>,
    /// Text put in front of every initial and helpful answer (dialogue prompting, e.g. an
    /// HHH context); prefilled once
    #[arg(long, value_name = "FILE")]
    pub context: Option<PathBuf>,
    /// Rounds of critique and revision per prompt (CAI paper: 4)
    #[arg(long, default_value_t = CritiqueSettings::default().rounds, value_name = "N")]
    pub rounds: usize,
    /// Run seed: each round's principle and each sample are seeded from it and the prompt's
    /// id, so results do not depend on batching or resumption
    #[arg(long, default_value_t = CritiqueSettings::default().seed, value_name = "S")]
    pub seed: u64,
    /// Most new tokens per answer, critique and revision (CAI paper: 128)
    #[arg(long, default_value_t = CritiqueSettings::default().max_new_tokens, value_name = "N")]
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 is greedy (CAI paper: 1)
    #[arg(
        long,
        default_value_t = Sampling::default().temperature,
        value_name = "T",
        allow_negative_numbers = true
    )]
    pub temperature: f32,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass, in (0, 1]
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub top_p: Option<f32>,
    /// Keep only the K most likely tokens
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// How dialogues are rendered: the paper's Human:/Assistant:/CritiqueRequest:/… transcript,
    /// the tokenizer's chat template (requests as user turns), or auto (the chat template if
    /// the tokenizer has one)
    #[arg(long, default_value = DEFAULT_FORMAT, value_parser = model_args::parse_format)]
    pub format: DialogueFormat,
    /// Prompts per wave: each step (answers, then critiques and revisions of each round) is
    /// one model call over this many prompts, whose records are written when they are done
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE, value_name = "N")]
    pub batch_size: usize,
    /// Helpfulness prompts (same formats as --prompts) to answer as SFT records to mix into
    /// fine-tuning
    #[arg(long, value_name = "FILE")]
    pub helpful_prompts: Option<PathBuf>,
    /// Where the helpful answers go [default: --output with .helpful.jsonl for .jsonl]
    #[arg(long, value_name = "FILE", requires = "helpful_prompts")]
    pub helpful_output: Option<PathBuf>,
    /// JSONL to write, one record per prompt: "id", "prompt", "initial_response", "rounds"
    /// and Hugging Face's columns (init_prompt, …, messages, chosen, rejected). An existing
    /// file is resumed
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// Start afresh instead of resuming existing outputs
    #[arg(long)]
    pub overwrite: bool,
}

/// `--batch-size`'s default: prompts per wave.
const DEFAULT_BATCH_SIZE: usize = 32;

impl CritiqueArgs {
    /// The arguments of a run with these required flags and every other flag at its default
    /// (as clap gives it): the pipeline's critique stage sets the rest field by field.
    pub fn new(model: ModelArgs, prompts: PathBuf, constitution: String, output: PathBuf) -> Self {
        let settings = CritiqueSettings::default();
        Self {
            model,
            critic: None,
            prompts,
            constitution,
            few_shot: None,
            context: None,
            rounds: settings.rounds,
            seed: settings.seed,
            max_new_tokens: settings.max_new_tokens,
            temperature: Sampling::default().temperature,
            top_p: None,
            top_k: None,
            format: model_args::parse_format(DEFAULT_FORMAT).expect("the default parses"),
            batch_size: DEFAULT_BATCH_SIZE,
            helpful_prompts: None,
            helpful_output: None,
            output,
            overwrite: false,
        }
    }
}

/// A validated `cai critique` run; saved beside each output as `<output>.config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CritiqueConfig {
    /// The model.
    pub model: ModelArgs,
    /// The critic, when not the model itself (absent from configs saved before critics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critic: Option<String>,
    /// Red-team prompts.
    pub prompts: PathBuf,
    /// The constitution as given.
    pub constitution: String,
    /// Its critique/revision principles, as read.
    pub principles: Vec<CritiquePrinciple>,
    /// The few-shot examples as given (`None`: the constitution's).
    pub few_shot: Option<String>,
    /// How many few-shot examples were read.
    pub few_shot_examples: usize,
    /// FNV-based fingerprint of the examples' transcripts (a resumed run must use the same).
    pub few_shot_fingerprint: String,
    /// Context file.
    pub context: Option<PathBuf>,
    /// Rounds, sampling, budget and seed.
    pub settings: CritiqueSettings,
    /// Dialogue rendering as asked for.
    pub format: DialogueFormat,
    /// Helpfulness prompts.
    pub helpful_prompts: Option<PathBuf>,
    /// Where the helpful answers go.
    pub helpful_output: Option<PathBuf>,
    /// Output JSONL.
    pub output: PathBuf,
    /// Prompts per wave.
    pub batch_size: usize,
}

/// Config fields that do not change the records, so a resumed run may change them (helpful
/// prompts may be added to a finished critique run: the critique records stay as they are).
const VOLATILE: &[&str] = &["batch_size", "helpful_prompts", "helpful_output"];

/// Everything read from the input files, checked before the model is loaded.
struct Inputs {
    prompts: Vec<Prompt>,
    helpful: Vec<Prompt>,
    few_shot: Vec<CritiqueExample>,
    context: String,
}

impl CritiqueConfig {
    /// Check the arguments and read the constitution, the few-shot examples and the prompts.
    fn from_args(args: CritiqueArgs) -> anyhow::Result<(Self, Inputs, bool)> {
        ensure(args.batch_size > 0, || {
            "--batch-size 0: expected at least 1".into()
        })?;
        ensure(args.rounds > 0, || "--rounds 0: expected at least 1".into())?;
        ensure(args.max_new_tokens > 0, || {
            "--max-new-tokens 0: expected at least 1".into()
        })?;
        ensure(
            args.temperature.is_finite() && args.temperature >= 0.0,
            || {
                format!(
                    "--temperature {}: expected a number ≥ 0 (0 is greedy)",
                    args.temperature
                )
            },
        )?;
        if let Some(p) = args.top_p {
            ensure(p > 0.0 && p <= 1.0, || {
                format!("--top-p {p}: expected a probability in (0, 1]")
            })?;
        }
        ensure(args.top_k != Some(0), || {
            "--top-k 0: expected at least 1".into()
        })?;

        let constitution = read_constitution(&args.constitution)?;
        anyhow::ensure!(
            !constitution.critique_revision.is_empty(),
            "--constitution {}: it has no critique/revision principles (only multiple-choice \
             ones); cai critique needs at least one",
            args.constitution
        );
        let few_shot = match args.few_shot.as_deref() {
            None => constitution.few_shot,
            Some("none") => Vec::new(),
            Some(name) if name == "default" && !Path::new(name).exists() => {
                constitution::builtin_few_shot()
            }
            Some(path) => few_shot::load(Path::new(path))
                .with_context(|| format!("reading the few-shot examples {path}"))?,
        };
        let prompts = read_prompts(&args.prompts)?;
        let helpful = match &args.helpful_prompts {
            Some(path) => read_prompts(path)?,
            None => Vec::new(),
        };
        let context = args
            .context
            .as_deref()
            .map(model_args::read_context)
            .transpose()?
            .unwrap_or_default();
        let helpful_output = args.helpful_prompts.as_ref().map(|_| {
            args.helpful_output
                .clone()
                .unwrap_or_else(|| helpful_output_path(&args.output))
        });
        ensure(helpful_output.as_ref() != Some(&args.output), || {
            "--helpful-output: expected a file other than --output".into()
        })?;
        let few_shot_text = transcript_prefix(&few_shot);
        ensure(args.critic.as_deref() != Some(""), || {
            "--critic: expected a model".into()
        })?;
        let config = Self {
            // Naming the model itself as its critic is the default, saved as such.
            critic: args.critic.filter(|c| *c != args.model.model),
            model: args.model,
            prompts: args.prompts,
            constitution: args.constitution,
            principles: constitution.critique_revision,
            few_shot: args.few_shot,
            few_shot_examples: few_shot.len(),
            few_shot_fingerprint: format!("{:016x}", derive_seed(0, &[&few_shot_text])),
            context: args.context,
            settings: CritiqueSettings {
                rounds: args.rounds,
                max_new_tokens: args.max_new_tokens,
                sampling: Sampling {
                    temperature: args.temperature,
                    top_p: args.top_p,
                    top_k: args.top_k,
                },
                seed: args.seed,
            },
            format: args.format,
            helpful_prompts: args.helpful_prompts,
            helpful_output,
            output: args.output,
            batch_size: args.batch_size,
        };
        let inputs = Inputs {
            prompts,
            helpful,
            few_shot,
            context,
        };
        Ok((config, inputs, args.overwrite))
    }
}

/// `sl.jsonl` → `sl.helpful.jsonl`.
fn helpful_output_path(output: &Path) -> PathBuf {
    output.with_extension("helpful.jsonl")
}

/// A built-in constitution by name, or a file or directory.
pub(crate) fn read_constitution(spec: &str) -> anyhow::Result<Constitution> {
    let path = Path::new(spec);
    if !path.exists() {
        if let Some(constitution) = constitution::builtin(spec) {
            return Ok(constitution);
        }
        bail!(UsageError(format!(
            "--constitution {spec}: no such file or directory, and not a built-in constitution \
             (built in: {})",
            BUILTIN.join(", ")
        )));
    }
    Ok(constitution::load(path)?)
}

/// The prompt format for this model: the transcript, or its chat template.
pub(crate) fn prompt_format(
    model: &Backend,
    format: DialogueFormat,
) -> anyhow::Result<PromptFormat> {
    if model_args::renders_transcript(model, format) {
        return Ok(PromptFormat::Transcript);
    }
    match (model.chat_template(), model.local()) {
        (Some(template), _) => Ok(PromptFormat::Chat(Box::new(template.clone()))),
        (None, Some(local)) => bail!(UsageError(format!(
            "--format chat-template: the tokenizer of {} has no usable chat_template; use \
             --format transcript",
            local.dir().display()
        ))),
        (None, None) => bail!(UsageError(crate::backend::remote_chat_template())),
    }
}

/// Run `cai critique`.
pub fn run(args: CritiqueArgs) -> anyhow::Result<()> {
    let (config, inputs, overwrite) = CritiqueConfig::from_args(args)?;
    let mut read = vec![config.prompts.as_path()];
    read.extend(config.few_shot.as_deref().map(Path::new));
    read.extend(config.context.as_deref());
    read.extend(config.helpful_prompts.as_deref());
    let critique_claim = resume::claim(&config.output, &read)?;
    let helpful_claim = match &config.helpful_output {
        Some(path) => {
            read.push(&config.output);
            Some((path, resume::claim(path, &read)?))
        }
        None => None,
    };
    let model = config.model.load()?;
    let format = prompt_format(&model, config.format)?;
    // The critic and its dialogue format, when it is not the model itself.
    let critic = config
        .critic
        .as_ref()
        .map(|critic| -> anyhow::Result<(Backend, PromptFormat)> {
            let backend = ModelArgs {
                model: critic.clone(),
                ..config.model.clone()
            }
            .load()
            .context("loading the critic (--critic)")?;
            let format = prompt_format(&backend, config.format)?;
            Ok((backend, format))
        })
        .transpose()?;
    let stage = CritiqueStage {
        settings: config.settings.clone(),
        principles: config.principles.clone(),
        few_shot: inputs.few_shot,
        context: inputs.context,
        format,
    };
    stage.validate()?;
    // Prefilled before any output is opened, so that a context or few-shot block too long
    // for the model fails without touching the outputs.
    if let Some(path) = &config.context {
        model_args::prefill_context(&model, &stage.context, path)?;
    }
    describe(
        &config,
        &stage,
        critic.as_ref().map_or(&model, |(m, _)| m),
        critic.as_ref().map(|(_, f)| f),
    )?;

    let kind = |marks| resume::OutputKind {
        command: "cai critique",
        config: &config,
        volatile: VOLATILE,
        marks,
    };
    let critique_out = critique_claim.open(
        inputs.prompts,
        |p: &Prompt| &p.id,
        overwrite,
        &kind(&["rounds"]),
    )?;
    let helpful_out = match helpful_claim {
        Some((path, claim)) => Some((
            path,
            claim.open(
                inputs.helpful,
                |p: &Prompt| &p.id,
                overwrite,
                &kind(&["messages"]),
            )?,
        )),
        None => None,
    };
    // Counts the tokens generated, for the throughput each part reports.
    let counting = CountingModel::new(&model);
    let counting_critic = critic
        .as_ref()
        .map(|(model, format)| (CountingModel::new(model), format));
    let mut counters = vec![&counting];
    counters.extend(counting_critic.as_ref().map(|(c, _)| c));
    let critic = counting_critic.as_ref().map(|(model, format)| Critic {
        model: model as &dyn cai_core::LanguageModel,
        format,
    });
    run_part(
        "critique",
        &config.output,
        critique_out,
        config.settings.rounds,
        &counters,
        |todo, writer, progress| {
            stage.run(&counting, critic, todo, config.batch_size, writer, progress)
        },
    )?;
    if let Some((path, out)) = helpful_out {
        run_part(
            "helpful",
            path,
            out,
            0,
            &[&counting],
            |todo, writer, progress| {
                stage.run_helpful(&counting, todo, config.batch_size, writer, progress)
            },
        )?;
    }
    Ok(())
}

/// Run one output's remaining prompts with a progress bar, then report.
fn run_part(
    what: &str,
    output: &Path,
    mut out: ResumedOutput<Prompt>,
    rounds: usize,
    counting: &[&CountingModel<'_>],
    run: impl FnOnce(
        &[Prompt],
        &mut cai_core::jsonl::JsonlWriter,
        &mut dyn FnMut(usize),
    ) -> cai_pipeline::Result<()>,
) -> anyhow::Result<()> {
    if out.all_done(output) {
        return Ok(());
    }
    if out.done > 0 {
        eprintln!("{what}: resuming after {} done", out.done);
    }
    let bar = progress::records_bar(out.total(), out.done, what);
    let generated = || -> u64 { counting.iter().map(|c| c.usage().generated_tokens).sum() };
    let tokens_before = generated();
    let start = Instant::now();
    run(&out.todo, &mut out.writer, &mut |n| bar.inc(n as u64))
        .with_context(|| format!("writing {}", output.display()))?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let rounds = match rounds {
        0 => String::new(),
        n => format!(" with {}", human::count(n, "round")),
    };
    let tokens = generated() - tokens_before;
    eprintln!(
        "wrote {}{rounds} to {} in {seconds:.1} s ({:.2} prompts/s; {} new tokens, {:.0} \
         tokens/s)",
        human::count(out.todo.len(), "record"),
        output.display(),
        out.todo.len() as f64 / seconds.max(1e-9),
        human::thousands(tokens),
        tokens as f64 / seconds.max(1e-9)
    );
    Ok(())
}

/// One line on stderr saying what will be sampled, and the few-shot prefix's length in the
/// tokens of `critic`, which reads it (the model itself, or the `--critic` and its format).
fn describe(
    config: &CritiqueConfig,
    stage: &CritiqueStage,
    critic: &Backend,
    critic_format: Option<&PromptFormat>,
) -> anyhow::Result<()> {
    let critic_format = critic_format.unwrap_or(&stage.format);
    let few_shot = match stage.few_shot.len() {
        0 => "no few-shot examples".to_owned(),
        n => {
            let mut text = human::count(n, "few-shot example");
            if let (PromptFormat::Transcript, Some(model)) = (critic_format, critic.local()) {
                let prefix = transcript_prefix(&stage.few_shot);
                let tokens = model
                    .prefix(&prefix)
                    .context("prefilling the few-shot examples")?
                    .map_or(0, |p| p.len());
                let max = model.decoder().config().max_position_embeddings;
                text += &format!(" ({tokens} tokens of the model's {max})");
            }
            text
        }
    };
    let sampling = &config.settings.sampling;
    let critic = match &config.critic {
        Some(critic) => format!(" by the critic {critic} ({} format)", critic_format.name()),
        None => String::new(),
    };
    eprintln!(
        "critique: {}{critic} from {}, {}, {}, {} format; {}",
        human::count(config.settings.rounds, "round"),
        config.constitution,
        human::count(config.principles.len(), "principle"),
        few_shot,
        stage.format.name(),
        model_args::describe_sampling(sampling, config.settings.max_new_tokens),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpful_output_sits_beside_the_output() {
        assert_eq!(
            helpful_output_path(Path::new("out/sl.jsonl")),
            Path::new("out/sl.helpful.jsonl")
        );
        assert_eq!(
            helpful_output_path(Path::new("sl")),
            Path::new("sl.helpful.jsonl")
        );
    }

    #[test]
    fn built_in_constitutions_resolve_by_name() {
        let c = read_constitution("default").unwrap();
        assert_eq!(c.critique_revision.len(), 16);
        let err = read_constitution("no-such-constitution").unwrap_err();
        assert!(err.to_string().contains("built in: default"), "{err}");
    }
}
