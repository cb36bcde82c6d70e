//! The eval stage: every snapshot (base, prompted, distilled, SL-CAI, RL-CAI and the RL
//! checkpoints) measured by the recipe's judges — the lab's oracle measures of `cai lab eval`
//! — written one snapshot per line (resumable) to `eval/lab_eval.jsonl`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use cai_lab::eval::{evaluate, EvalOptions, LabReport};
use cai_lab::World;
use cai_pipeline::manifest::METRICS_FILE;
use cai_pipeline::recipe::{PromptSet, Snapshot, Stage};
use cai_pipeline::runner::write_atomic;
use serde::{Deserialize, Serialize};

use super::plan::{command_line, Ctx};
use crate::model_args::{DeviceName, Dtype, ModelArgs};

/// The lab measures, one snapshot per line.
pub(super) const LAB_EVAL_FILE: &str = "lab_eval.jsonl";

/// A model the eval stage measures.
#[derive(Debug, Clone)]
pub(super) struct SnapshotModel {
    /// Its name in tables: base, distilled, sl-cai, rl-cai, rl-step-N.
    pub name: String,
    /// The model spec.
    pub model: String,
}

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

/// The snapshots with a model of their own, in the recipe's order (`prompted` is the base
/// model's with-context measure, not a model). RL checkpoints come at run time.
pub(super) fn snapshots(ctx: &Ctx) -> Vec<SnapshotModel> {
    let recipe = &ctx.loaded.recipe;
    let Some(eval) = &recipe.eval else {
        return Vec::new();
    };
    eval.snapshots
        .iter()
        .filter(|s| **s != Snapshot::Prompted)
        .filter(|s| s.stage().is_none_or(|stage| recipe.has_stage(stage)))
        .map(|s| SnapshotModel {
            name: s.name().into(),
            model: match s.stage() {
                None => recipe.models.base.clone(),
                Some(stage) => ctx.stage_model(stage).display().to_string(),
            },
        })
        .collect()
}

/// The RL run's intermediate checkpoints that load as models, by step.
fn rl_checkpoints(ctx: &Ctx) -> Vec<SnapshotModel> {
    let dir = ctx.stage_dir(Stage::Rl).join("model").join("checkpoints");
    let mut steps: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
                    let path = e.path();
                    path.join("config.json").is_file().then_some((step, path))
                })
                .collect()
        })
        .unwrap_or_default();
    steps.sort();
    steps
        .into_iter()
        .map(|(step, path)| SnapshotModel {
            name: format!("rl-step-{step}"),
            model: path.display().to_string(),
        })
        .collect()
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
pub(super) fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let recipe = &ctx.loaded.recipe;
    let eval = recipe.eval.as_ref().expect("the eval stage has a table");
    let dir = ctx.stage_dir(Stage::Eval);
    let mut all = snapshots(ctx);
    if eval.rl_checkpoints && recipe.has_stage(Stage::Rl) {
        // The newest checkpoint is the final model, already measured as rl-cai.
        let mut checkpoints = rl_checkpoints(ctx);
        checkpoints.pop();
        all.extend(checkpoints);
    }
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
            let mut command = vec![
                "lab".to_owned(),
                "eval".into(),
                "--model".into(),
                snapshot.model.clone(),
                "--world-seed".into(),
                lab.world_seed.to_string(),
            ];
            if let Some(n) = lab.max_items {
                command.extend(["--max-items".into(), n.to_string()]);
            }
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
    if eval.elo.is_some() {
        run_elo(ctx, &all)?;
    }
    Ok(())
}

/// The folder of the Elo evaluation, inside the eval stage's.
pub(super) const ELO_DIR: &str = "elo";

/// `cai eval elo` over every snapshot (the prompted one with the context in front), in
/// `eval/elo/` (resumable: answers and comparisons already made are kept).
fn run_elo(ctx: &Ctx, snapshots: &[SnapshotModel]) -> anyhow::Result<()> {
    let recipe = &ctx.loaded.recipe;
    let eval = recipe.eval.as_ref().expect("the eval stage has a table");
    let elo = eval.elo.as_ref().expect("called with an elo table");
    let dir = ctx.stage_dir(Stage::Eval);
    let judge = match elo.judge.as_str() {
        "pm" => format!(
            "pm:{}",
            ctx.stage_dir(Stage::TrainPm).join("model").display()
        ),
        "feedback" => format!(
            "feedback:{}",
            ctx.model(cai_pipeline::recipe::ModelRef::Feedback)
        ),
        other => other.to_owned(),
    };
    let mut argv: Vec<String> = vec![
        "eval".into(),
        "elo".into(),
        "--output".into(),
        dir.join(ELO_DIR).display().to_string(),
        "--judge".into(),
        judge,
        "--red-team".into(),
        ctx.prompt_set(PromptSet::EvalRedTeam).display().to_string(),
        "--benign".into(),
        ctx.prompt_set(PromptSet::EvalHelpful).display().to_string(),
    ];
    let mut names = Vec::new();
    for snapshot in snapshots {
        names.push(snapshot.name.clone());
        argv.extend([
            "--snapshot".into(),
            format!("{}={}", snapshot.name, snapshot.model),
        ]);
        if snapshot.name == Snapshot::Base.name() && eval.snapshots.contains(&Snapshot::Prompted) {
            if let Some(context) = &recipe.data.context {
                let context = cai_pipeline::recipe::resolve_path(
                    context,
                    &ctx.loaded.base_dir(),
                    &ctx.run_dir,
                )?;
                argv.extend([
                    "--snapshot".into(),
                    format!("prompted={}", snapshot.model),
                    "--context".into(),
                    format!("prompted={}", context.display()),
                ]);
            }
        }
    }
    let opt = |argv: &mut Vec<String>, flag: &str, value: Option<String>| {
        if let Some(v) = value {
            argv.extend([flag.to_owned(), v]);
        }
    };
    opt(&mut argv, "--samples", elo.samples.map(|n| n.to_string()));
    opt(
        &mut argv,
        "--bootstrap",
        elo.bootstrap.map(|n| n.to_string()),
    );
    opt(
        &mut argv,
        "--max-new-tokens",
        elo.max_new_tokens.map(|n| n.to_string()),
    );
    argv.extend(["--device".into(), recipe.models.device.clone()]);
    if let Some(d) = &recipe.models.dtype {
        argv.extend(["--dtype".into(), d.clone()]);
    }
    argv.extend(elo.args.iter().cloned());
    let line = command_line(&argv);
    eprintln!("[eval] {line}");
    std::fs::create_dir_all(dir.join(ELO_DIR))?;
    write_atomic(
        &dir.join(ELO_DIR).join("command.txt"),
        (line.clone() + "\n").as_bytes(),
    )?;
    let code = super::run::run_cai(&argv)?;
    anyhow::ensure!(code == std::process::ExitCode::SUCCESS, "`{line}` failed");
    Ok(())
}
