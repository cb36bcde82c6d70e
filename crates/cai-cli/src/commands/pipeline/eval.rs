//! The eval stage: every snapshot (base, prompted, distilled, SL-CAI, RL-CAI and the RL
//! checkpoints) measured by the recipe's judges — the lab's oracle measures of `cai lab eval`
//! — written one snapshot per line (resumable) to `eval/lab_eval.jsonl`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use cai_lab::eval::{evaluate, EvalOptions, LabReport};
use cai_lab::World;
use cai_pipeline::manifest::METRICS_FILE;
use cai_pipeline::recipe::{Snapshot, Stage};
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
    Ok(())
}
