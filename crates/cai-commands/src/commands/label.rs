//! `cai label`: RL-CAI preference labels — two responses per prompt from a policy model,
//! compared by a feedback model in a multiple-choice question under the constitution's
//! principles, written as soft labels. Resumable, with the config saved beside the output.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use cai_core::constitution::ChoicePrinciple;
use cai_core::jsonl::read_complete_records;
use cai_core::multiple_choice::{load_items, ChoiceItem};
use cai_core::prompts::Prompt;
use cai_core::rng::derive_seed;
use cai_core::Sampling;
use cai_data::read_prompts;
use cai_model::tokenizer::DialogueFormat;
use cai_pipeline::label::question::QuestionLayout;
use cai_pipeline::label::record::{LabelRecord, LabelSummary};
use cai_pipeline::label::soft_label::Clamp;
use cai_pipeline::label::{CotSettings, LabelSettings, LabelStage, PrincipleChoice};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::critique::{prompt_format, read_constitution};
use crate::backend::Backend;
use crate::human;
use crate::model_args::{self, DeviceName, Dtype, ModelArgs, DEFAULT_FORMAT};
use crate::progress;
use crate::resume;
use crate::usage::ensure;

/// Raw `cai label` arguments.
#[derive(Debug, Args)]
pub struct LabelArgs {
    /// The policy whose two samples per prompt are compared: anything --model takes (a model
    /// directory, a GGUF file, a Hub model id, `lab`, endpoints)
    #[arg(long, value_name = "M")]
    pub policy: String,
    /// The feedback model that answers the multiple-choice questions [default: the policy]
    #[arg(long, value_name = "F")]
    pub feedback: Option<String>,
    /// Prompts: JSONL of {"id"?, "prompt"} or {"id"?, "messages"} records, or hh-rlhf records
    #[arg(long, value_name = "FILE")]
    pub prompts: PathBuf,
    /// Constitution with multiple-choice principles: a built-in name (default), a .toml file,
    /// Anthropic's JSON list of principles ending in "Options:", or a directory of such files
    #[arg(long, value_name = "C")]
    pub constitution: String,
    /// Labelled examples put in front of every question: Anthropic's JSON list of {"prompt",
    /// "corrects", "incorrects"} (a conversation and its right and wrong responses, or a
    /// whole question and its right option), or JSONL of them
    #[arg(long, value_name = "FILE")]
    pub few_shot: Option<PathBuf>,
    /// Average each label over K principles drawn at random, or over all of them [default:
    /// one principle drawn per comparison, as in the CAI paper]
    #[arg(long, value_name = "K|all", value_parser = parse_ensemble)]
    pub ensemble: Option<PrincipleChoice>,
    /// Ask every question in both orders of the options and average (removes position bias)
    #[arg(long)]
    pub swap: bool,
    /// Chain of thought: sample reasoning after "Let's think step-by-step:", then score the
    /// answer; labels are clamped to --cot-clamp
    #[arg(long)]
    pub cot: bool,
    /// Range of chain-of-thought labels (CAI paper: 0.4,0.6)
    #[arg(long, value_name = "LO,HI", default_value = DEFAULT_COT_CLAMP, value_parser = parse_clamp)]
    pub cot_clamp: Clamp,
    /// Most tokens of reasoning
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_NEW_TOKENS)]
    pub cot_max_new_tokens: usize,
    /// Temperature of the reasoning (0: greedy)
    #[arg(long, value_name = "T", default_value_t = Sampling::default().temperature)]
    pub cot_temperature: f32,
    /// Question layout: plain (one line per part, as the CAI paper prints it) or paper
    /// (Anthropic's evaluation files: blank lines, options as " (A) [[[…]]]")
    #[arg(long, value_enum, default_value_t = LayoutArg::Plain)]
    pub layout: LayoutArg,
    /// Text put in front of both samples' prompts (dialogue prompting the policy)
    #[arg(long, value_name = "FILE")]
    pub context: Option<PathBuf>,
    /// Text put in front of the second sample's prompt instead (e.g. an HHH prompt), so the
    /// two samples differ in kind; which response it gave is recorded
    #[arg(long, value_name = "FILE")]
    pub context_b: Option<PathBuf>,
    /// Most new tokens per response (CAI paper: 128)
    #[arg(long, default_value_t = DEFAULT_MAX_NEW_TOKENS, value_name = "N")]
    pub max_new_tokens: usize,
    /// Temperature of the responses; 0 is greedy (CAI paper: 1)
    #[arg(long, default_value_t = Sampling::default().temperature, value_name = "T")]
    pub temperature: f32,
    /// Nucleus sampling of the responses, in (0, 1]
    #[arg(long, value_name = "P")]
    pub top_p: Option<f32>,
    /// Keep only the K most likely tokens when sampling responses
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Run seed: samples, positions, principles and reasoning are seeded from it and the
    /// prompt's id
    #[arg(long, default_value_t = DEFAULT_SEED, value_name = "S")]
    pub seed: u64,
    /// How the policy's prompts are rendered: transcript, chat-template, or auto
    #[arg(long, default_value = DEFAULT_FORMAT, value_parser = model_args::parse_format)]
    pub format: DialogueFormat,
    /// Device to run on: cpu, cuda or cuda:N
    #[arg(long, default_value_t = DeviceName::default(), value_name = "DEVICE")]
    pub device: DeviceName,
    /// Compute dtype [default: f32 on the CPU, the model's torch_dtype on a GPU]
    #[arg(long, value_enum)]
    pub dtype: Option<Dtype>,
    /// Prompts per wave (samples, reasoning and scores are one model call each)
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE, value_name = "N")]
    pub batch_size: usize,
    /// JSONL to write, one record per prompt: "id", "prompt", "conversation", "response_a",
    /// "response_b", "p_a", "chosen", "rejected", "principles" (each one's option
    /// log-probabilities). An existing file is resumed
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// Start afresh instead of resuming an existing --output
    #[arg(long)]
    pub overwrite: bool,
}

/// `--max-new-tokens` and `--cot-max-new-tokens`' default.
const DEFAULT_MAX_NEW_TOKENS: usize = 128;
/// `--cot-clamp`'s default.
const DEFAULT_COT_CLAMP: &str = "0.4,0.6";
/// `--seed`'s default.
const DEFAULT_SEED: u64 = 0;
/// `--batch-size`'s default: prompts per wave.
const DEFAULT_BATCH_SIZE: usize = 16;

impl LabelArgs {
    /// The arguments of a run with these required flags and every other flag at its default
    /// (as clap gives it): the pipeline's label stage sets the rest field by field.
    pub fn new(policy: String, prompts: PathBuf, constitution: String, output: PathBuf) -> Self {
        Self {
            policy,
            feedback: None,
            prompts,
            constitution,
            few_shot: None,
            ensemble: None,
            swap: false,
            cot: false,
            cot_clamp: parse_clamp(DEFAULT_COT_CLAMP).expect("the default parses"),
            cot_max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
            cot_temperature: Sampling::default().temperature,
            layout: LayoutArg::Plain,
            context: None,
            context_b: None,
            max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
            temperature: Sampling::default().temperature,
            top_p: None,
            top_k: None,
            seed: DEFAULT_SEED,
            format: model_args::parse_format(DEFAULT_FORMAT).expect("the default parses"),
            device: DeviceName::default(),
            dtype: None,
            batch_size: DEFAULT_BATCH_SIZE,
            output,
            overwrite: false,
        }
    }
}

/// `--layout`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LayoutArg {
    /// One line per part.
    Plain,
    /// Anthropic's evaluation-file layout.
    Paper,
}

pub(crate) fn parse_ensemble(s: &str) -> Result<PrincipleChoice, String> {
    match s {
        "all" => Ok(PrincipleChoice::All),
        _ => match s.parse::<usize>() {
            Ok(1) => Ok(PrincipleChoice::Sampled),
            Ok(k) if k > 1 => Ok(PrincipleChoice::Ensemble(k)),
            _ => Err(format!(
                "'{s}': expected a number of principles ≥ 1, or \"all\""
            )),
        },
    }
}

fn parse_clamp(s: &str) -> Result<Clamp, String> {
    let (lo, hi) = s
        .split_once(',')
        .ok_or_else(|| format!("'{s}': expected LO,HI such as 0.4,0.6"))?;
    let number = |x: &str| {
        x.trim()
            .parse::<f64>()
            .map_err(|_| format!("'{s}': {x:?} is not a number; expected LO,HI such as 0.4,0.6"))
    };
    let clamp = Clamp {
        lo: number(lo)?,
        hi: number(hi)?,
    };
    clamp.validate()?;
    Ok(clamp)
}

/// A validated `cai label` run; saved beside the output as `<output>.config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelConfig {
    /// The policy model.
    pub policy: String,
    /// The feedback model.
    pub feedback: String,
    /// Device.
    pub device: DeviceName,
    /// Compute dtype.
    pub dtype: Option<Dtype>,
    /// Prompts.
    pub prompts: PathBuf,
    /// The constitution as given.
    pub constitution: String,
    /// Its multiple-choice principles, as read.
    pub principles: Vec<ChoicePrinciple>,
    /// Few-shot file.
    pub few_shot: Option<PathBuf>,
    /// How many few-shot examples were read.
    pub few_shot_examples: usize,
    /// FNV-based fingerprint of the examples (a resumed run must use the same).
    pub few_shot_fingerprint: String,
    /// Context file of both samples.
    pub context: Option<PathBuf>,
    /// Context file of the second sample.
    pub context_b: Option<PathBuf>,
    /// Sampling and labelling settings.
    pub settings: LabelSettings,
    /// Prompt rendering as asked for.
    pub format: DialogueFormat,
    /// Output JSONL.
    pub output: PathBuf,
    /// Prompts per wave.
    pub batch_size: usize,
}

/// Config fields that do not change the records.
const VOLATILE: &[&str] = &["batch_size", "device"];

/// Everything read from the input files, checked before a model is loaded.
struct Inputs {
    prompts: Vec<Prompt>,
    few_shot: Vec<ChoiceItem>,
    context: String,
    context_b: Option<String>,
}

impl LabelConfig {
    /// Check the arguments and read the constitution, the few-shot examples and the prompts.
    fn from_args(args: LabelArgs) -> anyhow::Result<(Self, Inputs, bool)> {
        ensure(args.batch_size > 0, || {
            "--batch-size 0: expected at least 1".into()
        })?;
        for (flag, n) in [
            ("--max-new-tokens", args.max_new_tokens),
            ("--cot-max-new-tokens", args.cot_max_new_tokens),
        ] {
            ensure(n > 0, || format!("{flag} 0: expected at least 1"))?;
        }
        for (flag, t) in [
            ("--temperature", args.temperature),
            ("--cot-temperature", args.cot_temperature),
        ] {
            ensure(t.is_finite() && t >= 0.0, || {
                format!("{flag} {t}: expected a number ≥ 0 (0 is greedy)")
            })?;
        }
        if let Some(p) = args.top_p {
            ensure(p > 0.0 && p <= 1.0, || {
                format!("--top-p {p}: expected a probability in (0, 1]")
            })?;
        }
        ensure(args.top_k != Some(0), || {
            "--top-k 0: expected at least 1".into()
        })?;
        let constitution = read_constitution(&args.constitution)?;
        let n = constitution.multiple_choice.len();
        ensure(n > 0, || {
            format!(
                "--constitution {}: it has no multiple-choice principles; cai label needs at \
                 least one (e.g. Anthropic's list of strings ending in \"Options:\")",
                args.constitution
            )
        })?;
        let principles = args.ensemble.unwrap_or_default();
        if let PrincipleChoice::Ensemble(k) = principles {
            ensure(k <= n, || {
                format!(
                    "--ensemble {k}: the constitution has {n} multiple-choice principles; use at \
                     most {n}, or all"
                )
            })?;
        }
        let few_shot = match &args.few_shot {
            Some(path) => load_items(path)
                .with_context(|| format!("reading the few-shot examples {}", path.display()))?,
            None => Vec::new(),
        };
        let prompts = read_prompts(&args.prompts)?;
        let read =
            |path: &Option<PathBuf>| path.as_deref().map(model_args::read_context).transpose();
        let inputs = Inputs {
            prompts,
            context: read(&args.context)?.unwrap_or_default(),
            context_b: read(&args.context_b)?,
            few_shot,
        };
        let settings = LabelSettings {
            max_new_tokens: args.max_new_tokens,
            sampling: Sampling {
                temperature: args.temperature,
                top_p: args.top_p,
                top_k: args.top_k,
            },
            seed: args.seed,
            principles,
            swap: args.swap,
            cot: args.cot.then(|| CotSettings {
                max_new_tokens: args.cot_max_new_tokens,
                sampling: Sampling {
                    temperature: args.cot_temperature,
                    ..Sampling::default()
                },
                clamp: args.cot_clamp,
            }),
            layout: match args.layout {
                LayoutArg::Plain => QuestionLayout::Plain,
                LayoutArg::Paper => QuestionLayout::Paper,
            },
        };
        let config = Self {
            feedback: args.feedback.unwrap_or_else(|| args.policy.clone()),
            policy: args.policy,
            device: args.device,
            dtype: args.dtype,
            prompts: args.prompts,
            constitution: args.constitution,
            principles: constitution.multiple_choice,
            few_shot: args.few_shot,
            few_shot_examples: inputs.few_shot.len(),
            few_shot_fingerprint: fingerprint(&inputs.few_shot),
            context: args.context,
            context_b: args.context_b,
            settings,
            format: args.format,
            output: args.output,
            batch_size: args.batch_size,
        };
        Ok((config, inputs, args.overwrite))
    }

    fn model_args(&self, model: &str) -> ModelArgs {
        ModelArgs {
            model: model.to_owned(),
            device: self.device,
            dtype: self.dtype,
        }
    }
}

/// Run `cai label`.
pub fn run(args: LabelArgs) -> anyhow::Result<()> {
    let (config, inputs, overwrite) = LabelConfig::from_args(args)?;
    let mut read = vec![config.prompts.as_path()];
    read.extend(config.few_shot.as_deref());
    read.extend(config.context.as_deref());
    read.extend(config.context_b.as_deref());
    let claim = resume::claim(&config.output, &read)?;
    let policy = config.model_args(&config.policy).load()?;
    let feedback_model = (config.feedback != config.policy)
        .then(|| config.model_args(&config.feedback).load())
        .transpose()?;
    let feedback: &Backend = feedback_model.as_ref().unwrap_or(&policy);
    let stage = LabelStage {
        settings: config.settings.clone(),
        principles: config.principles.clone(),
        few_shot: inputs.few_shot,
        context: inputs.context,
        context_b: inputs.context_b,
        format: prompt_format(&policy, config.format)?,
    };
    stage.validate()?;
    for (text, path) in [
        (Some(&stage.context), &config.context),
        (stage.context_b.as_ref(), &config.context_b),
    ] {
        if let (Some(text), Some(path)) = (text, path) {
            model_args::prefill_context(&policy, text, path)?;
        }
    }
    describe(&config, &stage);

    let mut out = claim.open(
        inputs.prompts,
        |p: &Prompt| &p.id,
        overwrite,
        &resume::OutputKind {
            command: "cai label",
            config: &config,
            volatile: VOLATILE,
            marks: &["p_a"],
        },
    )?;
    if !out.all_done(&config.output) {
        if out.done > 0 {
            eprintln!("label: resuming after {} done", out.done);
        }
        let bar = progress::records_bar(out.total(), out.done, "label");
        let start = Instant::now();
        stage
            .run(
                &policy,
                feedback,
                &out.todo,
                config.batch_size,
                &mut out.writer,
                &mut |n| bar.inc(n as u64),
            )
            .with_context(|| format!("writing {}", config.output.display()))?;
        bar.finish_and_clear();
        let seconds = start.elapsed().as_secs_f64();
        eprintln!(
            "wrote {} to {} in {seconds:.1} s ({:.2} prompts/s)",
            human::count(out.todo.len(), "label"),
            config.output.display(),
            out.todo.len() as f64 / seconds.max(1e-9)
        );
    }
    report(&config.output)
}

/// One line on stderr saying what will be sampled and asked.
fn describe(config: &LabelConfig, stage: &LabelStage) {
    let s = &config.settings;
    let principles = match s.principles {
        PrincipleChoice::Sampled => "one principle drawn per comparison".to_owned(),
        PrincipleChoice::Ensemble(k) => format!("an ensemble of {k} principles"),
        PrincipleChoice::All => format!("all {} principles", config.principles.len()),
    };
    let mut variants = vec![principles];
    if s.swap {
        variants.push("both orders".into());
    }
    if let Some(cot) = &s.cot {
        variants.push(format!(
            "chain of thought clamped to [{}, {}]",
            cot.clamp.lo, cot.clamp.hi
        ));
    }
    if !stage.few_shot.is_empty() {
        variants.push(human::count(stage.few_shot.len(), "few-shot example"));
    }
    eprintln!(
        "label: {} compared by {}: {}, {} layout; responses {}",
        config.policy,
        config.feedback,
        variants.join(", "),
        match s.layout {
            QuestionLayout::Plain => "plain",
            QuestionLayout::Paper => "paper",
        },
        model_args::describe_sampling(&s.sampling, s.max_new_tokens),
    );
}

/// The summary of the whole output file on stderr.
fn report(output: &Path) -> anyhow::Result<()> {
    let records: Vec<LabelRecord> = read_complete_records(output)?
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not a cai label output", output.display()))?;
    let Some(summary) = LabelSummary::of(&records) else {
        return Ok(());
    };
    let percent = |x: f64| format!("{:.1}%", 100.0 * x);
    let mut text = format!(
        "{}: mean p_a {:.3}, mean confidence {:.3}; (A) answered in {} of the questions, labels \
         prefer response_a in {}",
        human::count(summary.records, "label"),
        summary.mean_p_a,
        summary.mean_confidence,
        percent(summary.option_a_share),
        percent(summary.label_a_share),
    );
    if let Some(same) = summary.same_position_share {
        text += &format!(
            "; both orders picked the same position in {}",
            percent(same)
        );
    }
    eprintln!("{text}");
    Ok(())
}

/// A fingerprint of the few-shot examples (a resumed run must use the same).
fn fingerprint(examples: &[ChoiceItem]) -> String {
    let text: String = examples
        .iter()
        .map(|e| format!("{:?}{:?}{:?}\n", e.prompt, e.corrects, e.incorrects))
        .collect();
    format!("{:016x}", derive_seed(0, &[&text]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensembles_and_clamps_parse() {
        assert_eq!(parse_ensemble("all").unwrap(), PrincipleChoice::All);
        assert_eq!(parse_ensemble("1").unwrap(), PrincipleChoice::Sampled);
        assert_eq!(parse_ensemble("4").unwrap(), PrincipleChoice::Ensemble(4));
        assert!(parse_ensemble("0").is_err());
        assert!(parse_ensemble("some").is_err());
        assert_eq!(parse_clamp("0.2, 0.8").unwrap(), Clamp { lo: 0.2, hi: 0.8 });
        assert!(parse_clamp("0.6,0.9").unwrap_err().contains("0 ≤ lo ≤ 0.5"));
        assert!(parse_clamp("0.4").is_err());
        assert!(parse_clamp("a,0.6").is_err());
    }
}
