//! The eval stage: every snapshot (base, prompted, distilled, SL-CAI, RL-CAI and the RL
//! checkpoints) measured by the recipe's judges — the lab's oracle measures of `cai lab eval`,
//! written one snapshot per line (resumable) to `eval/lab_eval.jsonl`, then the Elo
//! (`eval/elo/`) and safety (`eval/safety/`) jobs.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use cai_lab::eval::{evaluate, EvalOptions, LabReport};
use cai_lab::World;
use cai_pipeline::manifest::METRICS_FILE;
use cai_pipeline::recipe::Stage;
use cai_pipeline::runner::write_atomic;
use cai_pipeline::stages::eval::{jobs as eval_jobs, lab_eval_words, snapshots_now};
use cai_pipeline::stages::{command_line, Job, RunContext};
use serde::{Deserialize, Serialize};

use super::jobs::{self, Start};
use crate::model_args::{DeviceName, Dtype, ModelArgs};

/// The lab measures, one snapshot per line.
pub(super) use cai_pipeline::stages::eval::LAB_EVAL_FILE;

/// The command line of an Elo or safety job, beside its output.
pub(super) const COMMAND_FILE: &str = "command.txt";

/// One line of `lab_eval.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LabEvalLine {
    /// The snapshot's name.
    pub snapshot: String,
    /// The model measured.
    pub model: String,
    /// The equivalent command.
    pub command: String,
    /// Seconds it took.
    pub seconds: f64,
    /// The measures.
    pub report: LabReport,
}

/// Read the lines of `lab_eval.jsonl` (a cut-off last line is dropped).
pub(crate) fn read_lab_eval(path: &Path) -> anyhow::Result<Vec<LabEvalLine>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Measure every snapshot not measured yet.
pub(super) fn run(ctx: &RunContext) -> anyhow::Result<()> {
    let recipe = &ctx.loaded.recipe;
    let eval = recipe.eval.as_ref().expect("the eval stage has a table");
    let dir = ctx.stage_dir(Stage::Eval);
    let all = snapshots_now(ctx);
    if let Some(lab) = &eval.lab {
        let path = dir.join(LAB_EVAL_FILE);
        let mut lines = read_lab_eval(&path)?;
        let world = World::new(lab.world_seed);
        for snapshot in &all {
            if lines.iter().any(|l| l.snapshot == snapshot.name) {
                continue;
            }
            let args = ModelArgs {
                model: snapshot.model.clone(),
                device: recipe
                    .models
                    .device
                    .parse::<DeviceName>()
                    .map_err(anyhow::Error::msg)?,
                dtype: recipe
                    .models
                    .dtype
                    .as_deref()
                    .map(|d| <Dtype as clap::ValueEnum>::from_str(d, true))
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
            };
            let command = lab_eval_words(&snapshot.model, lab.world_seed, lab.max_items);
            let started = Instant::now();
            let model = args.load()?;
            let opts = EvalOptions {
                max_items: lab.max_items,
                ..EvalOptions::new(&world)
            };
            let report = evaluate(&model, &world, &opts)
                .with_context(|| format!("evaluating {} on the lab", snapshot.name))?;
            let line = LabEvalLine {
                snapshot: snapshot.name.clone(),
                model: snapshot.model.clone(),
                command: command_line(&command),
                seconds: started.elapsed().as_secs_f64(),
                report,
            };
            eprintln!(
                "[eval] {:<12} harmful {:.3} (with context {:.3}), harmless-helpful {:.3}, \
                 helpful {:.3} ({:.1} s)",
                line.snapshot,
                line.report.harmful_rate,
                line.report.harmful_rate_with_context,
                line.report.harmless_helpful_rate,
                line.report.helpful_rate,
                line.seconds
            );
            lines.push(line);
            // Rewritten whole after each snapshot: a killed run keeps every finished one.
            let text: String = lines
                .iter()
                .map(|l| serde_json::to_string(l).expect("serialises") + "\n")
                .collect();
            write_atomic(&path, text.as_bytes())?;
        }
        let metrics: String = lines
            .iter()
            .map(|l| {
                let mut v = serde_json::to_value(&l.report).expect("serialises");
                v["snapshot"] = l.snapshot.clone().into();
                v["seconds"] = l.seconds.into();
                v.to_string() + "\n"
            })
            .collect();
        write_atomic(&dir.join(METRICS_FILE), metrics.as_bytes())?;
    }
    // `cai eval elo` over every snapshot (the prompted one with the context in front) in
    // `eval/elo/`, then `cai eval safety` in `eval/safety/`: each resumes what its folder
    // holds (answers, comparisons and verdicts already made are kept).
    for job in eval_jobs(ctx, &all)? {
        run_job(&job)?;
    }
    Ok(())
}

/// Run one of the eval stage's jobs, its command line kept beside its output as
/// `command.txt`.
fn run_job(job: &Job) -> anyhow::Result<()> {
    let dir = job.output();
    let line = job.command_line();
    eprintln!("[eval] {line}");
    std::fs::create_dir_all(dir)?;
    write_atomic(&dir.join(COMMAND_FILE), (line.clone() + "\n").as_bytes())?;
    let code = jobs::run(job, Start::Afresh)?;
    anyhow::ensure!(code == std::process::ExitCode::SUCCESS, "`{line}` failed");
    Ok(())
}
