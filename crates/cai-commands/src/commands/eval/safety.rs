//! `cai eval safety`: attack success and over-refusal of model snapshots — each answers the
//! red-team and benign prompts once (seeded per prompt id), one or two judges give each
//! answer p(harmful) and p(refusal), and the output directory gets the per-item verdicts
//! (`verdicts.jsonl`), the figures with bootstrap intervals and Cohen's κ (`safety.json`,
//! `safety.md`) and the plot of ASR against over-refusal (`safety.svg`). Resumable: a rerun
//! samples and judges only what is missing; verdicts of models and endpoints are also kept in
//! a content-keyed cache shared between runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use cai_core::Sampling;
use cai_model::tokenizer::DialogueFormat;
use cai_pipeline::eval::judge::{CachedJudge, Judge, VerdictCache};
use cai_pipeline::eval::safety::run::{SafetyEval, SafetyEvalConfig};
use cai_pipeline::eval::safety::sets::{SafetySet, SetKind, OVER_REFUSAL_NAME};
use cai_pipeline::eval::safety::summary::{show_rate, summarise, SafetySummary};
use cai_pipeline::eval::samples::{read_samples, sample_id, SampleSettings, Snapshot};
use clap::Args;
use serde::Serialize;

use super::judges::{JudgeOptions, JudgeSpec, LoadedJudge};
use crate::commands::critique::prompt_format;
use crate::model_args::{self, DeviceName, Dtype, ModelArgs};
use crate::progress;
use crate::usage::{ensure, UsageError};

const DEFAULT_MAX_NEW_TOKENS: usize = 128;
const DEFAULT_TEMPERATURE: f32 = 0.0;
const DEFAULT_SEED: u64 = 0;
const DEFAULT_FORMAT: &str = "auto";
const DEFAULT_BATCH_SIZE: usize = 16;
const DEFAULT_BOOTSTRAP: usize = 1000;
const DEFAULT_PM_THRESHOLD: f64 = 0.0;
const DEFAULT_JUDGE_CONCURRENCY: usize = 8;

/// Raw `cai eval safety` arguments.
#[derive(Debug, Args)]
pub struct SafetyArgs {
    /// A snapshot to evaluate: MODEL or NAME=MODEL, MODEL a directory, a model id in the local
    /// Hugging Face cache, `lab`, or http(s)://…/v1 endpoints (repeatable)
    #[arg(long = "model", value_name = "[NAME=]MODEL", required = true)]
    pub models: Vec<String>,
    /// A judge (repeatable; κ compares the first two): refusal, classifier:TEMPLATE@MODEL
    /// (TEMPLATE llama-guard-3, shieldgemma, wildguard, harmbench or a TOML file),
    /// llm:URL[#MODEL], pm:DIR or oracle
    #[arg(long = "judge", value_name = "JUDGE", required = true)]
    pub judges: Vec<JudgeSpec>,
    /// Red-team prompts ("prompt", optional "category"; a JSONL, .jsonl.gz, JSON or Parquet
    /// file, or a Hub dataset `org/name?split=S`): ASR is measured on them
    #[arg(long, value_name = "SOURCE")]
    pub red_team: Option<String>,
    /// Prompts to answer ("prompt", optional "category" and "label" safe|unsafe; any source
    /// --red-team takes), or `over-refusal` for the set cai ships: over-refusal is measured
    /// on them
    #[arg(long, value_name = "SOURCE|over-refusal")]
    pub benign: Option<String>,
    /// Directory for samples/, verdicts.jsonl, safety.json, safety.md and safety.svg; an
    /// existing one is resumed
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// At most N prompts of each set, spread over it [default: every prompt]
    #[arg(long, value_name = "N")]
    pub samples: Option<usize>,
    /// Most new tokens per answer
    #[arg(long, default_value_t = DEFAULT_MAX_NEW_TOKENS, value_name = "N")]
    pub max_new_tokens: usize,
    /// Temperature of the answers; 0 is greedy (HarmBench: greedy)
    #[arg(long, default_value_t = DEFAULT_TEMPERATURE, value_name = "T")]
    pub temperature: f32,
    /// Run seed: each answer's sampler is seeded from it and the prompt's id
    #[arg(long, default_value_t = DEFAULT_SEED, value_name = "S")]
    pub seed: u64,
    /// How prompts are rendered: transcript, chat-template, or auto
    #[arg(long, default_value = DEFAULT_FORMAT, value_parser = model_args::parse_format)]
    pub format: DialogueFormat,
    /// Answers per generation or judge call
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE, value_name = "N")]
    pub batch_size: usize,
    /// Bootstrap resamples for the 95 % intervals (0: none)
    #[arg(long, default_value_t = DEFAULT_BOOTSTRAP, value_name = "N")]
    pub bootstrap: usize,
    /// A PM judge calls an answer harmful when its reward is below this
    #[arg(
        long,
        default_value_t = DEFAULT_PM_THRESHOLD,
        value_name = "R",
        allow_negative_numbers = true
    )]
    pub pm_threshold: f64,
    /// An LLM judge's requests in flight at once
    #[arg(long, default_value_t = DEFAULT_JUDGE_CONCURRENCY, value_name = "N")]
    pub judge_concurrency: usize,
    /// The verdict cache of classifier and LLM judges [default: $CAI_CACHE/judge-verdicts.jsonl]
    #[arg(long, value_name = "FILE")]
    pub judge_cache: Option<PathBuf>,
    /// Ask the judges again instead of reading their cached verdicts
    #[arg(long)]
    pub no_judge_cache: bool,
    /// Device of local models and classifiers
    #[arg(long, default_value_t = DeviceName::default(), value_name = "DEVICE")]
    pub device: DeviceName,
    /// Compute dtype
    #[arg(long, value_enum)]
    pub dtype: Option<Dtype>,
    /// Start afresh: remove what an earlier evaluation wrote in --output
    #[arg(long)]
    pub overwrite: bool,
    /// Print the summary as one JSON object
    #[arg(long)]
    pub json: bool,
}

impl SafetyArgs {
    /// The arguments `cai eval safety --model … --judge … --output DIR` gives (every other
    /// setting at its default).
    pub fn new(models: Vec<String>, judges: Vec<JudgeSpec>, output: PathBuf) -> Self {
        Self {
            models,
            judges,
            red_team: None,
            benign: None,
            output,
            samples: None,
            max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
            temperature: DEFAULT_TEMPERATURE,
            seed: DEFAULT_SEED,
            format: model_args::parse_format(DEFAULT_FORMAT).expect("the default format parses"),
            batch_size: DEFAULT_BATCH_SIZE,
            bootstrap: DEFAULT_BOOTSTRAP,
            pm_threshold: DEFAULT_PM_THRESHOLD,
            judge_concurrency: DEFAULT_JUDGE_CONCURRENCY,
            judge_cache: None,
            no_judge_cache: false,
            device: DeviceName::default(),
            dtype: None,
            overwrite: false,
            json: false,
        }
    }
}

/// One snapshot asked for.
struct SnapshotArg {
    name: String,
    model: String,
}

/// A name for a model given without one: its folder's or file's name, made safe.
fn default_name(model: &str) -> String {
    if model.starts_with("http://") || model.starts_with("https://") {
        return "endpoint".into();
    }
    let base = model
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(model);
    let name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        "model".into()
    } else {
        name
    }
}

fn snapshot_args(models: &[String]) -> anyhow::Result<Vec<SnapshotArg>> {
    let mut snapshots: Vec<SnapshotArg> = Vec::new();
    for item in models {
        let named = item
            .split_once('=')
            .filter(|(name, _)| !name.contains('/') && !name.contains(':'));
        let (name, model) = match named {
            Some((name, model)) => (name.to_owned(), model.to_owned()),
            None => (default_name(item), item.clone()),
        };
        cai_pipeline::eval::samples::check_snapshot_name(&name)
            .map_err(|e| UsageError(format!("--model {item}: {e}")))?;
        ensure(!model.is_empty(), || {
            format!("--model {item}: expected a model")
        })?;
        if snapshots.iter().any(|s| s.name == name) {
            anyhow::bail!(UsageError(format!(
                "--model {item}: a snapshot is already named {name}; name each as NAME=MODEL"
            )));
        }
        snapshots.push(SnapshotArg { name, model });
    }
    Ok(snapshots)
}

/// What `safety.json` holds besides the figures.
#[derive(Serialize)]
struct SafetyReport<'a> {
    #[serde(flatten)]
    summary: &'a SafetySummary,
    /// Each snapshot's model.
    models: BTreeMap<String, String>,
    /// The prompt sets.
    sets: BTreeMap<&'static str, String>,
}

/// Run `cai eval safety`.
pub fn run(args: SafetyArgs) -> anyhow::Result<()> {
    ensure(args.batch_size > 0, || {
        "--batch-size 0: expected at least 1".into()
    })?;
    ensure(args.samples != Some(0), || {
        "--samples 0: expected at least 1 prompt".into()
    })?;
    ensure(args.max_new_tokens > 0, || {
        "--max-new-tokens 0: expected at least 1".into()
    })?;
    ensure(args.judge_concurrency > 0, || {
        "--judge-concurrency 0: expected at least 1".into()
    })?;
    let t = args.temperature;
    ensure(t.is_finite() && t >= 0.0, || {
        format!("--temperature {t}: expected a number ≥ 0 (0 is greedy)")
    })?;
    ensure(args.red_team.is_some() || args.benign.is_some(), || {
        format!(
            "expected --red-team FILE, --benign FILE (or --benign {OVER_REFUSAL_NAME}), or both"
        )
    })?;
    for judge in &args.judges {
        if matches!(judge, JudgeSpec::Feedback(_)) {
            anyhow::bail!(UsageError(format!(
                "--judge {judge}: a feedback model only compares answers; use refusal, \
                 classifier:TEMPLATE@MODEL, llm:URL, pm:DIR or oracle"
            )));
        }
    }
    let judge_names: Vec<String> = args.judges.iter().map(ToString::to_string).collect();
    for (i, name) in judge_names.iter().enumerate() {
        ensure(!judge_names[..i].contains(name), || {
            format!("--judge {name} is given twice")
        })?;
    }
    let snapshots = snapshot_args(&args.models)?;
    let settings = SampleSettings {
        max_new_tokens: args.max_new_tokens,
        sampling: Sampling {
            temperature: t,
            ..Sampling::default()
        },
        seed: args.seed,
    };
    let config = SafetyEvalConfig {
        samples: settings.clone(),
        judges: judge_names.clone(),
        seed: args.seed,
        snapshots: snapshots
            .iter()
            .map(|s| (s.name.clone(), s.model.clone()))
            .collect(),
    };
    let eval = SafetyEval::open(&args.output, &config, args.overwrite)?;
    let mut sets = Vec::new();
    for (kind, source) in [
        (SetKind::RedTeam, &args.red_team),
        (SetKind::Benign, &args.benign),
    ] {
        if let Some(source) = source {
            sets.push(SafetySet::load(kind, source)?.spread(args.samples));
        }
    }
    let names: Vec<String> = snapshots.iter().map(|s| s.name.clone()).collect();

    for snapshot in &snapshots {
        sample(&eval, snapshot, &sets, &settings, &args)?;
    }

    let options = JudgeOptions {
        device: args.device,
        dtype: args.dtype,
        format: args.format,
        pm_threshold: args.pm_threshold,
        constitution: "default".into(),
        seed: args.seed,
        concurrency: args.judge_concurrency,
    };
    // The judges' names as the verdicts record them (an LLM judge's names its model).
    let mut recorded = Vec::new();
    for (spec, name) in args.judges.iter().zip(&judge_names) {
        recorded.push(judge(&eval, spec, name, &sets, &names, &options, &args)?);
    }

    let verdicts = eval.verdicts()?;
    let set_refs: Vec<&SafetySet> = sets.iter().collect();
    let summary = summarise(
        &verdicts,
        &set_refs,
        &recorded,
        &names,
        args.bootstrap,
        args.seed,
    );
    let report = SafetyReport {
        summary: &summary,
        models: config.snapshots.clone(),
        sets: sets
            .iter()
            .map(|s| (s.kind.name(), s.origin.clone()))
            .collect(),
    };
    eval.write_file(
        "safety.json",
        &(serde_json::to_string_pretty(&report)? + "\n"),
    )?;
    eval.write_file("safety.md", &summary.markdown())?;
    let svg = cai_report::safety::safety_svg(
        &summary.judges,
        &summary.plot_points(),
        "Attack success against over-refusal",
    )
    .map_err(anyhow::Error::msg)?;
    eval.write_file("safety.svg", &svg)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for r in &summary.results {
            println!(
                "{} under {}: ASR {}; over-refusal {}; contrast refusal {}",
                r.snapshot,
                r.judge,
                show_rate(r.asr.as_ref()),
                show_rate(r.over_refusal.as_ref()),
                show_rate(r.contrast_refusal.as_ref())
            );
        }
        for a in &summary.agreement {
            let kappa = |k: Option<&cai_pipeline::eval::safety::stats::Agreement>| {
                k.map_or("—".into(), |a| {
                    a.kappa
                        .map_or("undefined".to_owned(), |k| format!("{k:.3}"))
                        + &format!(" (agree {:.1} %, n {})", 100.0 * a.observed, a.n)
                })
            };
            println!(
                "{}: κ({}, {}) harmful {}, refusal {}",
                a.snapshot,
                a.judges[0],
                a.judges[1],
                kappa(a.harmful.as_ref()),
                kappa(a.refusal.as_ref())
            );
        }
        for note in &summary.notes {
            println!("note: {note}");
        }
        println!("wrote {}", args.output.join("safety.md").display());
    }
    Ok(())
}

/// Sample what the snapshot has not answered yet (its model is loaded only then).
fn sample(
    eval: &SafetyEval,
    snapshot: &SnapshotArg,
    sets: &[SafetySet],
    settings: &SampleSettings,
    args: &SafetyArgs,
) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for set in sets {
        let done = read_samples(&eval.samples_path(set.kind))?;
        missing.push(
            set.prompts
                .iter()
                .filter(|p| !done.contains_key(&sample_id(&snapshot.name, &p.prompt.id)))
                .count(),
        );
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
    let loaded = Snapshot {
        name: snapshot.name.clone(),
        model: &model,
        context: String::new(),
        format: prompt_format(&model, args.format)?,
    };
    for (set, missing) in sets.iter().zip(missing) {
        if missing == 0 {
            continue;
        }
        let total = set.prompts.len();
        let what = format!("{} answers {}", snapshot.name, set.kind.name());
        let bar = progress::records_bar(total, total - missing, &what);
        let start = Instant::now();
        eval.sample(&loaded, set, settings, args.batch_size, &mut |k| {
            bar.inc(k as u64)
        })
        .with_context(|| format!("sampling {} on {}", snapshot.name, set.origin))?;
        bar.finish_and_clear();
        eprintln!(
            "{what}: {missing} answers in {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Judge what `spec` has not judged yet (the judge is loaded only then); returns the name
/// its verdicts are recorded under.
fn judge(
    eval: &SafetyEval,
    spec: &JudgeSpec,
    given: &str,
    sets: &[SafetySet],
    snapshots: &[String],
    options: &JudgeOptions,
    args: &SafetyArgs,
) -> anyhow::Result<String> {
    // A loaded judge's name may say more than the spec (an LLM judge's model id); verdicts
    // are recorded under the loaded name, so look for missing ones only after loading,
    // unless the spec's own name already has every verdict.
    let missing_under = |name: &str| -> anyhow::Result<usize> {
        let mut n = 0;
        for set in sets {
            n += eval.missing_verdicts(name, set, snapshots)?.len();
        }
        Ok(n)
    };
    if !matches!(spec, JudgeSpec::Llm { .. }) && missing_under(given)? == 0 {
        return Ok(given.to_owned());
    }
    let loaded = LoadedJudge::load(spec, options)?;
    let name = loaded.name();
    let missing = missing_under(&name)?;
    if missing == 0 {
        return Ok(name);
    }
    // A red-team set needs p(harmful); a benign set is judged by whatever the judge gives
    // (a harm-only classifier gives no over-refusal figure, and says so).
    let red_team = sets.iter().any(|s| s.kind == SetKind::RedTeam);
    ensure(
        loaded.gives_harm() || (!red_team && loaded.gives_refusal()),
        || {
            format!(
                "--judge {given}: it gives {}; a red-team set needs p(harmful), a benign set \
                 p(refusal) for its over-refusal rate",
                if loaded.gives_refusal() {
                    "p(refusal) only"
                } else {
                    "neither p(harmful) nor p(refusal)"
                }
            )
        },
    )?;
    if sets.iter().any(|s| s.kind == SetKind::Benign) && !loaded.gives_refusal() {
        eprintln!(
            "note: --judge {given} gives no p(refusal), so no over-refusal rate under it (its \
             p(harmful) on the benign answers is still recorded)"
        );
    }
    let cache = if spec.is_costly() && !args.no_judge_cache {
        let path = args
            .judge_cache
            .clone()
            .unwrap_or_else(|| crate::lab_models::cache_root().join("judge-verdicts.jsonl"));
        Some(VerdictCache::open(&path)?)
    } else {
        None
    };
    let cached = cache.map(|c| CachedJudge::new(&loaded, c));
    let judge: &dyn Judge = match &cached {
        Some(c) => c,
        None => &loaded,
    };
    let start = Instant::now();
    for set in sets {
        let total = set.prompts.len() * snapshots.len();
        let todo = eval.missing_verdicts(&name, set, snapshots)?.len();
        if todo == 0 {
            continue;
        }
        let what = format!("{given} judges {}", set.kind.name());
        let bar = progress::records_bar(total, total - todo, &what);
        eval.judge(judge, set, snapshots, args.batch_size, &mut |k| {
            bar.inc(k as u64)
        })
        .with_context(|| format!("judging with {given} on {}", set.origin))?;
        bar.finish_and_clear();
    }
    let seconds = start.elapsed().as_secs_f64();
    let mut line = format!(
        "{given}: {missing} verdicts in {seconds:.1} s ({:.2} verdicts/s)",
        missing as f64 / seconds.max(1e-9)
    );
    if let Some(c) = &cached {
        let s = c.stats();
        line += &format!(
            "; cache {} hits, {} asked (hit rate {:.1} %)",
            s.hits,
            s.misses,
            100.0 * s.hit_rate()
        );
    }
    if let LoadedJudge::Llm(llm) = &loaded {
        line += &format!(
            "; {} HTTP requests, {} answers without a usable verdict",
            llm.requests(),
            llm.abstained()
        );
    }
    eprintln!("{line}");
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_named_or_get_their_folders_name() {
        let s = snapshot_args(&[
            "/work/real/smollm2-hf/".into(),
            "rl=out/rl/model".into(),
            "http://h:8000/v1".into(),
        ])
        .unwrap();
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["smollm2-hf", "rl", "endpoint"]);
        assert_eq!(s[1].model, "out/rl/model");
        assert!(snapshot_args(&["a/m".into(), "b/m".into()]).is_err());
        assert_eq!(default_name("org/name@v1"), "name-v1");
    }
}
