//! Running a recipe's stages in a run directory: fingerprints, the skip/resume/restart
//! decision, the stages' typed jobs run in-process, manifests and metrics, then the report.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use cai_pipeline::manifest::{Input, Manifest, Status, CONFIG_FILE, METRICS_FILE};
use cai_pipeline::recipe::{LoadedRecipe, Stage};
use cai_pipeline::rundir::{clear_stage, first_foreign, Claimed, RunDir, RunKind};
use cai_pipeline::runner::{
    decide, hash_path, join_prompt_files, killed_attempt_seconds, write_atomic, Decision, Hasher,
};
use cai_pipeline::stages::outputs::{
    check_outputs, count_jsonl, fingerprint, outputs_intact, Intact,
};
use cai_pipeline::stages::{self, command_line, InputSpec, RunContext, StagePlan, Step};
use clap::Parser;
use serde_json::json;

use super::jobs::{self, Start};
use super::Selection;
use crate::cli::Cli;
use crate::interrupt::INTERRUPTED;

/// A recipe in a run directory.
type Ctx<'a> = RunContext<'a>;

/// The run directory's record of the recipe it runs.
pub(super) const RUN_FILE: &str = "run.json";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Run the selected stages of a recipe in `run_dir`, then write the report. Exits 130 when a
/// training stage was stopped by Ctrl-C.
pub fn run_recipe(
    loaded: &LoadedRecipe,
    run_dir: &Path,
    selection: &Selection,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let ctx = Ctx { loaded, run_dir };
    let plans = stages::plan_all(&ctx)?;
    check_jobs(&plans)?;
    // Held until the run ends: a second `cai pipeline` here fails at once, naming our PID.
    let claim = RunDir::claim(run_dir, RunKind::Run)?;
    match claim.claimed() {
        Claimed::AdoptedEmpty => eprintln!(
            "pipeline: {} was an empty folder; it is now this run's directory",
            run_dir.display()
        ),
        Claimed::AdoptedLegacy => eprintln!(
            "pipeline: {} is a run directory of an earlier cai (every entry is one cai \
             pipeline writes, every stage folder has its manifest); adopted it",
            run_dir.display()
        ),
        Claimed::Created | Claimed::Marked => {}
    }
    stages::check_inputs(&ctx, &plans)?;
    write_atomic(&run_dir.join("recipe.toml"), loaded.text.as_bytes())?;
    let record = json!({
        "recipe": loaded.recipe.name,
        "recipe_file": loaded.path,
        "quick": loaded.quick,
        "stages": loaded.recipe.stages(),
        "description": loaded.recipe.description,
    });
    write_atomic(
        &run_dir.join(RUN_FILE),
        (serde_json::to_string_pretty(&record)? + "\n").as_bytes(),
    )?;
    eprintln!(
        "pipeline: recipe {}{} in {}",
        loaded.recipe.name,
        if loaded.quick { " (quick)" } else { "" },
        run_dir.display()
    );
    let mut hashes = Hashes::default();
    let mut outcome = Ok(ExitCode::SUCCESS);
    for plan in &plans {
        if !selection.run.contains(&plan.stage) {
            continue;
        }
        let force = selection.force.contains(&plan.stage);
        match run_stage(&ctx, &plans, plan, force, &mut hashes) {
            Ok(StageEnd::Done) => {}
            Ok(StageEnd::Interrupted) => {
                outcome = Ok(ExitCode::from(INTERRUPTED));
                break;
            }
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    let report = super::report::write(run_dir).context("writing the report")?;
    drop(claim);
    match &outcome {
        Ok(code) if *code == ExitCode::SUCCESS => eprintln!(
            "pipeline: done in {:.0} s; the report is {}",
            started.elapsed().as_secs_f64(),
            report.display()
        ),
        Ok(_) => eprintln!(
            "pipeline: interrupted; run the same command again to continue (report so far: {})",
            report.display()
        ),
        Err(_) => eprintln!(
            "pipeline: stopped; the report so far is {}",
            report.display()
        ),
    }
    if outcome.is_ok() {
        println!("{}", report.display());
    }
    outcome
}

/// Turn every job of the plans into its command's arguments before anything runs, so that a
/// bad value or flag in a recipe fails at once, naming the stage.
fn check_jobs(plans: &[StagePlan]) -> anyhow::Result<()> {
    for plan in plans {
        for job in plan.jobs() {
            jobs::check_config(job)?;
            jobs::command(job, Start::Afresh).with_context(|| {
                format!(
                    "the {} stage's command `{}` is not valid (check the recipe's [{}] table \
                     and its args)",
                    plan.stage,
                    job.command_line(),
                    plan.stage
                )
            })?;
        }
    }
    Ok(())
}

/// Content hashes of inputs, computed once per run.
#[derive(Default)]
struct Hashes {
    files: HashMap<String, String>,
    /// Stages whose outputs were found to be what they wrote (or were written) in this run.
    intact: HashSet<Stage>,
}

impl Hashes {
    /// The hash of an input: the fingerprint of the stage that made it (with its path inside
    /// the stage), else the hash of its contents, else of its name (endpoints).
    fn of(&mut self, ctx: &Ctx, plans: &[StagePlan], input: &InputSpec) -> anyhow::Result<Input> {
        let (role, path, spec) = match input {
            InputSpec::Path { role, path } => (role, path.clone(), path.display().to_string()),
            InputSpec::Model { role, spec } => (role, PathBuf::from(spec), spec.clone()),
        };
        if let Some(stage) = producing_stage(ctx, &path) {
            let manifest = Manifest::read(&ctx.stage_dir(stage))?
                .filter(|m| m.status == Status::Finished)
                .with_context(|| {
                    format!(
                        "{spec} comes from the {stage} stage, which has not finished; run it \
                         first (leave out --stages, or add {stage} to it)"
                    )
                })?;
            anyhow::ensure!(
                path.exists(),
                "{spec} comes from the {stage} stage, which finished, but it is gone; run the \
                 stage again with --from {stage}"
            );
            // Read as that stage's output only while it is what the stage wrote.
            let producer = plans.iter().find(|p| p.stage == stage);
            if let (false, Some(producer)) = (self.intact.contains(&stage), producer) {
                match outputs_intact(producer, &manifest)? {
                    Intact::Yes => {
                        self.intact.insert(stage);
                    }
                    Intact::Missing(gone) => bail!(
                        "{spec} comes from the {stage} stage, which finished, but its output {} \
                         is gone; run the stage again with --from {stage}",
                        gone.display()
                    ),
                    Intact::Changed(changed) => bail!(
                        "{} changed since the {stage} stage finished (its manifest holds the \
                         hash of what cai wrote), so it is not read as that stage's output; \
                         restore it, or run with --from {stage} to redo the stage (replacing it)",
                        changed.display()
                    ),
                }
            }
            let mut h = Hasher::default();
            h.field(&manifest.fingerprint).field(&spec);
            return Ok(Input {
                role: role.clone(),
                path: spec,
                hash: h.hex(),
                records: count_jsonl(&path),
            });
        }
        if let Some(hash) = self.files.get(&spec) {
            return Ok(Input {
                role: role.clone(),
                path: spec.clone(),
                hash: hash.clone(),
                records: count_jsonl(&path),
            });
        }
        let hash = if path.exists() {
            hash_path(&path)?
        } else if matches!(input, InputSpec::Model { .. }) && !cai_remote::is_remote_spec(&spec) {
            let dir = crate::lab_models::resolve_model_dir(&spec)?;
            hash_path(&dir)?
        } else if matches!(input, InputSpec::Model { .. }) {
            Hasher::default().field(&spec).hex()
        } else {
            bail!("{spec} does not exist (an input of the recipe)");
        };
        self.files.insert(spec.clone(), hash.clone());
        Ok(Input {
            role: role.clone(),
            path: spec,
            hash,
            records: count_jsonl(&path),
        })
    }
}

/// The stage whose folder holds `path`, if any.
fn producing_stage(ctx: &Ctx, path: &Path) -> Option<Stage> {
    cai_pipeline::recipe::STAGES
        .into_iter()
        .find(|s| path.starts_with(ctx.stage_dir(*s)))
}

enum StageEnd {
    Done,
    Interrupted,
}

fn run_stage(
    ctx: &Ctx,
    plans: &[StagePlan],
    plan: &StagePlan,
    force: bool,
    hashes: &mut Hashes,
) -> anyhow::Result<StageEnd> {
    let stage = plan.stage;
    let dir = ctx.stage_dir(stage);
    let inputs = plan
        .inputs
        .iter()
        .map(|i| hashes.of(ctx, plans, i))
        .collect::<anyhow::Result<Vec<_>>>()
        .with_context(|| format!("the inputs of the {stage} stage"))?;
    let fingerprint = fingerprint(plan, &inputs);
    let previous = Manifest::read(&dir)?;
    let mut decision = decide(previous.as_ref(), &fingerprint, force);
    if let (Decision::Skip, Some(m)) = (decision, &previous) {
        match outputs_intact(plan, m)? {
            Intact::Yes => {
                hashes.intact.insert(stage);
                eprintln!("[{stage}] finished earlier with the same inputs and config: skipped");
                return Ok(StageEnd::Done);
            }
            Intact::Missing(path) => {
                eprintln!(
                    "[{stage}] {} is gone since the stage finished: running it again",
                    path.display()
                );
                decision = Decision::Fresh;
            }
            Intact::Changed(path) => bail!(
                "{} changed since the {stage} stage finished (its manifest holds the hash of \
                 what cai wrote); cai will not overwrite it. Restore it, move it away, or run \
                 with --from {stage} to redo the stage (replacing it)",
                path.display()
            ),
        }
    }
    // What cai wrote here: the names the manifest lists (an older manifest lists none: the
    // names this stage writes, which that version wrote too).
    let owned: Vec<String> = match &previous {
        Some(m) if !m.writes.is_empty() => m.writes.clone(),
        Some(_) => plan.writes.clone(),
        None => Vec::new(),
    };
    let (attempts, seconds) = match (&previous, decision) {
        (Some(m), Decision::Resume) => {
            let seconds = m.seconds + killed_attempt_seconds(m, &dir);
            // The run directory is locked by this run: a stage another run left running was
            // killed.
            let before = match m.status {
                Status::Running => "killed",
                other => other.name(),
            };
            eprintln!("[{stage}] resuming ({before} before, {seconds:.0} s so far)");
            (m.attempts + 1, seconds)
        }
        _ => {
            let removed = clear_stage(&dir, &owned)?;
            if removed.is_empty() {
                eprintln!("[{stage}] starting");
            } else {
                eprintln!(
                    "[{stage}] starting (deleted what its earlier run wrote: {})",
                    removed.join(", ")
                );
            }
            (1, 0.0)
        }
    };
    let still_owned: &[String] = if decision == Decision::Resume {
        &owned
    } else {
        &[]
    };
    if let Some(path) = first_foreign(&dir, &plan.writes, still_owned) {
        return Err(cai_pipeline::runner::RunError::NotOurs {
            path,
            stage: stage.name().into(),
        }
        .into());
    }
    anyhow::ensure!(
        !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()),
        "{} is a link, not the stage folder cai made; move it out of the run directory",
        dir.display()
    );
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut manifest = Manifest {
        stage: stage.name().into(),
        status: Status::Running,
        fingerprint,
        inputs,
        outputs: Vec::new(),
        writes: plan.writes.clone(),
        commands: plan.jobs().map(|j| j.command_line()).collect(),
        jobs: plan
            .jobs()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()?,
        attempts,
        seconds,
        peak_rss_mib: None,
        started_at: now(),
        finished_at: None,
        error: None,
    };
    // The manifest first: everything the stage writes after it is listed in it.
    manifest.write(&dir)?;
    write_atomic(
        &dir.join(CONFIG_FILE),
        (serde_json::to_string_pretty(&plan.config)? + "\n").as_bytes(),
    )?;
    // Each stage's own peak: hand the previous stages' freed memory back to the kernel and
    // restart the high-water mark.
    crate::release_freed_memory();
    cai_model::bench::reset_peak_rss();
    let started = Instant::now();
    let result = run_steps(ctx, plan);
    manifest.seconds = seconds + started.elapsed().as_secs_f64();
    manifest.peak_rss_mib = cai_model::bench::peak_rss_mib();
    match result {
        Ok(StageEnd::Done) => {
            let outputs = match check_outputs(plan) {
                Ok(outputs) => outputs,
                Err(e) => {
                    let e = anyhow::Error::new(e).context(format!(
                        "the {stage} stage's outputs are incomplete, so it is not marked \
                         finished; run with --from {stage} to redo it"
                    ));
                    manifest.status = Status::Failed;
                    manifest.error = Some(format!("{e:#}"));
                    manifest.write(&dir)?;
                    return Err(e);
                }
            };
            hashes.intact.insert(stage);
            manifest.status = Status::Finished;
            manifest.finished_at = Some(now());
            manifest.outputs = outputs;
            write_metrics(plan, &dir, &manifest)?;
            manifest.write(&dir)?;
            match manifest.peak_rss_mib {
                Some(mib) => eprintln!(
                    "[{stage}] finished in {:.1} s, peak memory {:.0} MiB",
                    manifest.seconds, mib
                ),
                None => eprintln!("[{stage}] finished in {:.1} s", manifest.seconds),
            }
            Ok(StageEnd::Done)
        }
        Ok(StageEnd::Interrupted) => {
            manifest.status = Status::Interrupted;
            manifest.write(&dir)?;
            Ok(StageEnd::Interrupted)
        }
        Err(e) => {
            manifest.status = Status::Failed;
            manifest.error = Some(format!("{e:#}"));
            manifest.write(&dir)?;
            Err(e.context(format!("the {stage} stage failed")))
        }
    }
}

fn run_steps(ctx: &Ctx, plan: &StagePlan) -> anyhow::Result<StageEnd> {
    for step in &plan.steps {
        match step {
            Step::Join {
                inputs,
                output,
                limit,
            } => {
                join_prompt_files(inputs, output, *limit)?;
            }
            Step::Job(job) => {
                let mut words = job.words();
                let mut start = Start::Afresh;
                if let Some(out) = job.training_output() {
                    if can_resume(out)? {
                        start = Start::Resume;
                    }
                    words.push(jobs::start_word(start).into());
                }
                let line = command_line(&words);
                eprintln!("[{}] {line}", plan.stage);
                let code = jobs::run(job, start)?;
                if code == ExitCode::from(INTERRUPTED) {
                    return Ok(StageEnd::Interrupted);
                }
                if code != ExitCode::SUCCESS {
                    bail!("`{line}` failed");
                }
            }
            Step::Eval => super::eval::run(ctx)?,
        }
    }
    Ok(StageEnd::Done)
}

/// Whether a training output folder holds a checkpoint or a finished model to resume from.
fn can_resume(out: &Path) -> anyhow::Result<bool> {
    let finished = ["model.safetensors", "adapter_model.safetensors"]
        .iter()
        .any(|f| out.join(f).is_file());
    let checkpoint = cai_train::core::checkpoint::latest_checkpoint(&out.join("checkpoints"))?;
    Ok(finished || checkpoint.is_some())
}

/// Run a `cai` command given as words in this process (`cai pipeline --sizes` makes its
/// models this way; the stages run typed jobs).
pub(super) fn run_cai(argv: &[String]) -> anyhow::Result<ExitCode> {
    let words = std::iter::once("cai".to_owned()).chain(argv.iter().cloned());
    let cli = Cli::try_parse_from(words)
        .map_err(|e| anyhow::anyhow!("`{}`: {}", command_line(argv), e.render()))?;
    let code = crate::run(cli.command);
    crate::interrupt::release_ctrl_c();
    code
}

/// The stage's `metrics.jsonl`: the trainer's, or one line of counts and timing.
fn write_metrics(plan: &StagePlan, dir: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let target = dir.join(METRICS_FILE);
    if let Some(from) = plan.metrics_from.as_ref().filter(|p| p.is_file()) {
        let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
        write_atomic(&target, &bytes)?;
        return Ok(());
    }
    if plan.stage == Stage::Eval {
        // The eval stage writes its own.
        return Ok(());
    }
    let mut line = serde_json::Map::new();
    line.insert("seconds".into(), json!(manifest.seconds));
    for output in &manifest.outputs {
        if let Some(n) = output.records {
            line.insert(
                format!("{}_records", output.role.replace(' ', "_")),
                json!(n),
            );
        }
    }
    write_atomic(&target, (serde_json::to_string(&line)? + "\n").as_bytes())?;
    Ok(())
}
