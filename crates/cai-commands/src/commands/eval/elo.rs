//! `cai eval elo`: Elo ratings of model snapshots — each answers the red-team and benign
//! prompts once, a judge compares every pair's answers (harmlessness on red-team prompts,
//! helpfulness on benign ones), and Bradley–Terry ratings with bootstrap intervals are
//! written as `elo.json`, the table `elo.md` and the paper's figure `elo.svg`. Resumable:
//! samples and comparisons are kept in the output directory and a rerun adds what is missing.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use cai_core::Sampling;
use cai_data::read_prompts;
use cai_model::tokenizer::DialogueFormat;
use cai_pipeline::eval::elo::{whole_elo, EloSettings};
use cai_pipeline::eval::elo_eval::{EloEval, EloEvalConfig, EvalSet};
use cai_pipeline::eval::elo_report::EloReport;
use cai_pipeline::eval::samples::{check_snapshot_names, spread, SampleSettings, Snapshot};
use cai_pipeline::eval::Axis;
use clap::Args;

use super::judges::{JudgeOptions, JudgeSpec, LoadedJudge};
use crate::commands::critique::prompt_format;
use crate::human;
use crate::model_args::{self, DeviceName, Dtype, ModelArgs};
use crate::progress;
use crate::usage::{ensure, UsageError};

const DEFAULT_BOOTSTRAP: usize = 1000;
const DEFAULT_PRIOR: f64 = 0.01;
const DEFAULT_MAX_NEW_TOKENS: usize = 128;
const DEFAULT_TEMPERATURE: f32 = 1.0;
const DEFAULT_FORMAT: &str = "auto";
const DEFAULT_CONSTITUTION: &str = "default";
const DEFAULT_BATCH_SIZE: usize = 16;

/// Raw `cai eval elo` arguments.
#[derive(Debug, Args)]
pub struct EloArgs {
    /// A snapshot to rate: NAME=MODEL, MODEL a model directory, a model id in the local
    /// Hugging Face cache, `lab`/`lab-small`, or http(s)://…/v1 endpoints (repeat, at least
    /// two; names ending in a number, like rl-step-20, are joined by a line in the plot)
    #[arg(long = "snapshot", value_name = "NAME=MODEL", required = true)]
    pub snapshots: Vec<String>,
    /// A dialogue-prompting context for one snapshot: NAME=FILE, the text put in front of its
    /// prompts (e.g. the HHH prompt for a "prompted" snapshot; repeatable)
    #[arg(long = "context", value_name = "NAME=FILE")]
    pub contexts: Vec<String>,
    /// Red-team prompts (JSONL, as cai critique reads them): rated on harmlessness
    #[arg(long, value_name = "FILE")]
    pub red_team: Option<PathBuf>,
    /// Benign prompts: rated on helpfulness
    #[arg(long, value_name = "FILE")]
    pub benign: Option<PathBuf>,
    /// The judge: oracle (the lab's), pm:DIR (a preference model), or feedback:MODEL (a model
    /// answering the RL-CAI multiple-choice question, both orders averaged)
    #[arg(long, value_name = "JUDGE")]
    pub judge: JudgeSpec,
    /// Directory for samples/, comparisons/, elo.json, elo.md and elo.svg; an existing one is
    /// resumed
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// At most N prompts of each set, spread over it [default: every prompt]
    #[arg(long, value_name = "N")]
    pub samples: Option<usize>,
    /// Bootstrap resamples of the prompts for the 95 % intervals (0: none)
    #[arg(long, default_value_t = DEFAULT_BOOTSTRAP, value_name = "N")]
    pub bootstrap: usize,
    /// The snapshot at 0 Elo [default: the first]
    #[arg(long, value_name = "NAME")]
    pub reference: Option<String>,
    /// Strength λ of the Gaussian prior on each logit strength (keeps a snapshot that wins
    /// every comparison finite)
    #[arg(long, default_value_t = DEFAULT_PRIOR, value_name = "L")]
    pub prior: f64,
    /// Run seed: samples, the order each pair is shown in, and the bootstrap
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
    /// Most new tokens per answer (CAI paper: 128)
    #[arg(long, default_value_t = DEFAULT_MAX_NEW_TOKENS, value_name = "N")]
    pub max_new_tokens: usize,
    /// Temperature of the answers; 0 is greedy (CAI paper: 1)
    #[arg(long, default_value_t = DEFAULT_TEMPERATURE, value_name = "T")]
    pub temperature: f32,
    /// Nucleus sampling of the answers, in (0, 1]
    #[arg(long, value_name = "P")]
    pub top_p: Option<f32>,
    /// Keep only the K most likely tokens when sampling
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// How prompts (and a PM's dialogues) are rendered: transcript, chat-template, or auto
    #[arg(long, default_value = DEFAULT_FORMAT, value_parser = model_args::parse_format)]
    pub format: DialogueFormat,
    /// Constitution whose multiple-choice principles a feedback judge asks under: a built-in
    /// name, a .toml file, Anthropic's JSON list, or a directory
    #[arg(long, default_value = DEFAULT_CONSTITUTION, value_name = "C")]
    pub constitution: String,
    /// A PM judge calls an answer harmful when its reward is below this (for harm rates)
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "R",
        allow_negative_numbers = true
    )]
    pub pm_threshold: f64,
    /// Device to run on: cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: DeviceName,
    /// Compute dtype [default: f32 on the CPU, the model's torch_dtype on a GPU]
    #[arg(long, value_enum)]
    pub dtype: Option<Dtype>,
    /// Prompts per generation call and pairs per judge call
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE, value_name = "N")]
    pub batch_size: usize,
    /// Start afresh instead of resuming what --output holds
    #[arg(long)]
    pub overwrite: bool,
    /// Print elo.json's report as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

impl EloArgs {
    /// The arguments `cai eval elo --snapshot … --judge JUDGE --output DIR` gives (every
    /// other setting at its default).
    pub fn new(snapshots: Vec<String>, judge: JudgeSpec, output: PathBuf) -> Self {
        Self {
            snapshots,
            contexts: Vec::new(),
            red_team: None,
            benign: None,
            judge,
            output,
            samples: None,
            bootstrap: DEFAULT_BOOTSTRAP,
            reference: None,
            prior: DEFAULT_PRIOR,
            seed: 0,
            max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
            temperature: DEFAULT_TEMPERATURE,
            top_p: None,
            top_k: None,
            format: model_args::parse_format(DEFAULT_FORMAT).expect("the default parses"),
            constitution: DEFAULT_CONSTITUTION.to_owned(),
            pm_threshold: 0.0,
            device: DeviceName::default(),
            dtype: None,
            batch_size: DEFAULT_BATCH_SIZE,
            overwrite: false,
            json: false,
        }
    }
}

/// One snapshot as given.
#[derive(Debug, Clone)]
struct SnapshotArg {
    name: String,
    model: String,
    context: Option<PathBuf>,
}

/// Split `NAME=VALUE`.
fn name_value<'a>(flag: &str, item: &'a str, what: &str) -> anyhow::Result<(&'a str, &'a str)> {
    item.split_once('=')
        .map(|(n, v)| (n.trim(), v.trim()))
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        .ok_or_else(|| {
            UsageError(format!(
                "{flag} {item:?}: expected NAME={what}, e.g. sl-cai=out/sl-cai"
            ))
            .into()
        })
}

fn sampling_settings(args: &EloArgs) -> anyhow::Result<SampleSettings> {
    let t = args.temperature;
    ensure(t.is_finite() && t >= 0.0, || {
        format!("--temperature {t}: expected a number ≥ 0 (0 is greedy)")
    })?;
    if let Some(p) = args.top_p {
        ensure(p > 0.0 && p <= 1.0, || {
            format!("--top-p {p}: expected a probability in (0, 1]")
        })?;
    }
    ensure(args.top_k != Some(0), || {
        "--top-k 0: expected at least 1".into()
    })?;
    ensure(args.max_new_tokens > 0, || {
        "--max-new-tokens 0: expected at least 1".into()
    })?;
    Ok(SampleSettings {
        max_new_tokens: args.max_new_tokens,
        sampling: Sampling {
            temperature: t,
            top_p: args.top_p,
            top_k: args.top_k,
        },
        seed: args.seed,
    })
}

/// The snapshots, with their contexts.
fn snapshot_args(args: &EloArgs) -> anyhow::Result<Vec<SnapshotArg>> {
    let mut snapshots = Vec::new();
    for item in &args.snapshots {
        let (name, model) = name_value("--snapshot", item, "MODEL")?;
        snapshots.push(SnapshotArg {
            name: name.to_owned(),
            model: model.to_owned(),
            context: None,
        });
    }
    check_snapshot_names(snapshots.iter().map(|s| s.name.as_str()))
        .map_err(|e| UsageError(format!("--snapshot: {e}")))?;
    for item in &args.contexts {
        let (name, file) = name_value("--context", item, "FILE")?;
        let Some(snapshot) = snapshots.iter_mut().find(|s| s.name == name) else {
            anyhow::bail!(UsageError(format!(
                "--context {item:?}: no --snapshot is named {name}"
            )));
        };
        snapshot.context = Some(PathBuf::from(file));
    }
    Ok(snapshots)
}

/// The prompt sets asked for, capped at `--samples` prompts each.
fn eval_sets(args: &EloArgs) -> anyhow::Result<Vec<EvalSet>> {
    let mut sets = Vec::new();
    for (path, name, axis) in [
        (&args.red_team, "red_team", Axis::Harmlessness),
        (&args.benign, "benign", Axis::Helpfulness),
    ] {
        let Some(path) = path else { continue };
        let prompts = read_prompts(path)?;
        ensure(!prompts.is_empty(), || {
            format!(
                "{}: no prompts; expected JSONL records with \"prompt\"",
                path.display()
            )
        })?;
        sets.push(EvalSet {
            name: name.into(),
            axis,
            prompts: spread(&prompts, args.samples),
        });
    }
    ensure(!sets.is_empty(), || {
        "no prompts: give --red-team FILE (harmlessness), --benign FILE (helpfulness), or both"
            .into()
    })?;
    Ok(sets)
}

/// Run `cai eval elo`.
pub fn run(args: EloArgs) -> anyhow::Result<()> {
    ensure(args.batch_size > 0, || {
        "--batch-size 0: expected at least 1".into()
    })?;
    ensure(args.samples != Some(0), || {
        "--samples 0: expected at least 1 prompt".into()
    })?;
    let settings = EloSettings {
        prior: args.prior,
        bootstrap: args.bootstrap,
        confidence: 0.95,
        seed: args.seed,
    };
    settings
        .validate()
        .map_err(|e| UsageError(format!("--prior: {e}")))?;
    let samples = sampling_settings(&args)?;
    let snapshots = snapshot_args(&args)?;
    let names: Vec<String> = snapshots.iter().map(|s| s.name.clone()).collect();
    let reference = args.reference.clone().unwrap_or_else(|| names[0].clone());
    ensure(names.contains(&reference), || {
        format!(
            "--reference {reference}: expected one of {}",
            names.join(", ")
        )
    })?;
    let sets = eval_sets(&args)?;
    let config = EloEvalConfig {
        samples,
        judge: judge_name(&args.judge)?,
        seed: args.seed,
        snapshots: snapshots
            .iter()
            .map(|s| {
                let model = match &s.context {
                    Some(c) => format!("{} with context {}", s.model, c.display()),
                    None => s.model.clone(),
                };
                (s.name.clone(), model)
            })
            .collect(),
    };
    let eval = EloEval::open(&args.output, config, args.overwrite)?;
    let started = Instant::now();
    for snapshot in &snapshots {
        sample(&eval, snapshot, &sets, &args)?;
    }
    let sampled = started.elapsed().as_secs_f64();

    let options = JudgeOptions {
        device: args.device,
        dtype: args.dtype,
        format: args.format,
        pm_threshold: args.pm_threshold,
        constitution: args.constitution.clone(),
        seed: args.seed,
        concurrency: 8,
    };
    let judge = LoadedJudge::load(&args.judge, &options)?;
    for set in &sets {
        let total = EloEval::comparisons_in(set, names.len());
        let missing = eval.missing_comparisons(set, &names)?;
        if missing == 0 {
            continue;
        }
        let bar = progress::records_bar(total, total - missing, &format!("judge {}", set.name));
        eval.compare(&judge, set, &names, args.batch_size, &mut |n| {
            bar.inc(n as u64)
        })
        .with_context(|| format!("comparing answers to {}", set.name))?;
        bar.finish_and_clear();
    }
    let compared = started.elapsed().as_secs_f64() - sampled;
    let report = eval.report(&sets, &names, &reference, &settings, Some(&judge))?;
    let written = eval.write_report(&report)?;
    eprintln!(
        "eval elo: {} snapshots, sampled in {sampled:.1} s, judged in {compared:.1} s; wrote {}",
        names.len(),
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// The judge's name as saved with its comparisons (a PM by its resolved directory).
fn judge_name(spec: &JudgeSpec) -> anyhow::Result<String> {
    Ok(match spec {
        JudgeSpec::Pm(pm) => format!("pm:{}", crate::lab_models::resolve_model_dir(pm)?.display()),
        other => other.to_string(),
    })
}

/// Sample one snapshot's missing answers to every set, loading it only if some are missing.
fn sample(
    eval: &EloEval,
    snapshot: &SnapshotArg,
    sets: &[EvalSet],
    args: &EloArgs,
) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for set in sets {
        missing.push(eval.missing_samples(&snapshot.name, set)?);
    }
    if missing.iter().all(|&m| m == 0) {
        return Ok(());
    }
    let model = ModelArgs {
        model: snapshot.model.clone(),
        device: args.device,
        dtype: args.dtype,
    }
    .load()?;
    let context = match &snapshot.context {
        Some(path) => {
            let text = model_args::read_context(path)?;
            model_args::prefill_context(&model, &text, path)?;
            text
        }
        None => String::new(),
    };
    let loaded = Snapshot {
        name: snapshot.name.clone(),
        model: &model,
        context,
        format: prompt_format(&model, args.format)?,
    };
    for (set, missing) in sets.iter().zip(missing) {
        if missing == 0 {
            continue;
        }
        let total = set.prompts.len();
        let what = format!("{} on {}", snapshot.name, set.name);
        let bar = progress::records_bar(total, total - missing, &what);
        let start = Instant::now();
        eval.sample(&loaded, set, args.batch_size, &mut |n| bar.inc(n as u64))
            .with_context(|| {
                format!(
                    "sampling {what} into {}",
                    show(&eval.samples_path(&set.name))
                )
            })?;
        bar.finish_and_clear();
        eprintln!(
            "sampled {} from {} in {:.1} s",
            human::count(missing, "answer"),
            what,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn show(path: &Path) -> String {
    path.display().to_string()
}

/// The ratings as a table on stdout.
fn print_table(report: &EloReport) {
    println!(
        "Elo by {} ({} at 0; 95 % bootstrap intervals, {} resamples)",
        report.judge, report.reference, report.settings.bootstrap
    );
    let mut header = format!("  {:<16}", "snapshot");
    for axis in &report.axes {
        header += &format!(
            " {:>24}",
            format!("{} ({})", axis.axis.name(), axis.prompts)
        );
    }
    let harm_set = report.harm.first().map(|h| h.set.clone());
    if let Some(set) = &harm_set {
        header += &format!(" {:>14}", format!("harm ({set})"));
    }
    println!("{header}");
    for snapshot in &report.snapshots {
        let mut row = format!("  {snapshot:<16}");
        for axis in &report.axes {
            let cell = axis
                .ratings
                .iter()
                .find(|r| &r.snapshot == snapshot)
                .map(|r| {
                    let r = &r.rating;
                    match (r.lo, r.hi) {
                        (Some(lo), Some(hi)) => format!(
                            "{:.0} [{:.0}, {:.0}]",
                            whole_elo(r.elo),
                            whole_elo(lo),
                            whole_elo(hi)
                        ),
                        _ => format!("{:.0}", whole_elo(r.elo)),
                    }
                })
                .unwrap_or_default();
            row += &format!(" {cell:>24}");
        }
        if let Some(h) = report.harm.iter().find(|h| &h.snapshot == snapshot) {
            row += &format!(" {:>14.3}", h.summary.harm_rate);
        }
        println!("{row}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_value_pairs_split_on_the_first_equals_sign() {
        assert_eq!(
            name_value("--snapshot", "sl=http://h/v1?a=b", "MODEL").unwrap(),
            ("sl", "http://h/v1?a=b")
        );
        for bad in ["sl", "=lab", "sl="] {
            let err = name_value("--snapshot", bad, "MODEL").unwrap_err();
            assert!(err.to_string().contains("expected NAME=MODEL"), "{err}");
        }
    }
}
