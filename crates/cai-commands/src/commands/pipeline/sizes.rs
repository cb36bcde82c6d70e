//! `cai pipeline --sizes`: the recipe run once per lab model size (the shipped `lab-small` and
//! `lab`; `large` made first by `cai lab pretrain`, resumable), each in its own run directory,
//! and a scaling report plotting every measure of every snapshot against the parameter count.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use cai_lab::pretrain::LabSize;
use cai_pipeline::recipe::{LoadedRecipe, Stage};
use cai_pipeline::rundir::{RunDir, RunKind};
use cai_pipeline::runner::write_atomic;
use cai_report::scaling::{scaling_report, ScalingRow};

use super::eval::{read_lab_eval, LAB_EVAL_FILE};
use super::run::{run_cai, run_recipe};
use super::Selection;
use crate::usage::UsageError;

/// The measures plotted against size: (field, title).
const MEASURES: [(&str, &str); 5] = [
    ("harmful_rate", "harmful rate"),
    ("harmless_helpful_rate", "harmless-helpful rate"),
    ("helpful_rate", "helpful rate"),
    ("critique_hit_rate", "critique hit rate"),
    ("mc_accuracy", "multiple-choice accuracy"),
];

/// Run every size, then write `DIR/report.html` and `DIR/report.md`.
pub(super) fn run(
    loaded: &LoadedRecipe,
    dir: &Path,
    selection: &Selection,
    sizes: &[String],
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        loaded.recipe.data.lab_world.is_some(),
        UsageError(
            "--sizes runs the lab's model sizes, but the recipe has no [data] lab_world".into()
        )
    );
    let sizes = sizes
        .iter()
        .map(|s| {
            LabSize::from_name(s.trim()).ok_or_else(|| {
                UsageError(format!("--sizes {s}: expected small, base or large")).into()
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Held for the whole run; each size's run directory inside is claimed by its own run.
    let claim = RunDir::claim(dir, RunKind::Sizes)?;
    let mut done = Vec::new();
    for size in sizes {
        let model = match size {
            LabSize::Small | LabSize::Base => size.alias().to_owned(),
            _ => {
                let out = dir.join(format!("{}-model", size.name()));
                eprintln!(
                    "sizes: pre-training the lab's {} model in {} (long; resumable)",
                    size.name(),
                    out.display()
                );
                let argv: Vec<String> = vec![
                    "lab".into(),
                    "pretrain".into(),
                    "--size".into(),
                    size.name().into(),
                    "--output".into(),
                    out.display().to_string(),
                ];
                let code = run_cai(&argv)?;
                if code != ExitCode::SUCCESS {
                    return Ok(code);
                }
                out.display().to_string()
            }
        };
        let mut sized = loaded.clone();
        let base = sized.recipe.models.base.clone();
        if sized
            .recipe
            .models
            .feedback
            .as_deref()
            .is_none_or(|f| f == base)
        {
            sized.recipe.models.feedback = Some(model.clone());
        }
        // A critic named as the base model is the model critiquing itself.
        if sized.recipe.models.critic.as_deref() == Some(base.as_str()) {
            sized.recipe.models.critic = None;
        }
        sized.recipe.models.base = model.clone();
        eprintln!("sizes: {} ({model})", size.name());
        let code = run_recipe(&sized, &dir.join(size.name()), selection)?;
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
        let model_dir = crate::lab_models::resolve_model_dir(&model)?;
        let config = cai_model::config::ModelConfig::from_file(&model_dir.join("config.json"))?;
        done.push((size, config.num_parameters()));
    }
    let report = write_report(dir, &done)?;
    drop(claim);
    eprintln!("sizes: the scaling report is {}", report.display());
    println!("{}", report.display());
    Ok(ExitCode::SUCCESS)
}

fn write_report(dir: &Path, sizes: &[(LabSize, usize)]) -> anyhow::Result<std::path::PathBuf> {
    // snapshot -> measure -> (parameters, value)
    let mut rows = Vec::new();
    for (size, params) in sizes {
        let path = dir
            .join(size.name())
            .join(Stage::Eval.name())
            .join(LAB_EVAL_FILE);
        for line in read_lab_eval(&path)? {
            if line.snapshot.starts_with("rl-step-") {
                continue;
            }
            let report = serde_json::to_value(&line.report)?;
            let is_base = line.snapshot == "base";
            rows.push((size.name(), *params, line.snapshot, report.clone()));
            // The prompted snapshot (the base model after the HHH context) is measured only
            // by its harmful rate, which the base model's eval holds.
            if is_base {
                if let Some(rate) = report
                    .get("harmful_rate_with_context")
                    .filter(|v| v.is_f64())
                {
                    let prompted = serde_json::json!({ "harmful_rate": rate });
                    rows.push((size.name(), *params, "prompted".into(), prompted));
                }
            }
        }
    }
    let rows: Vec<ScalingRow> = rows
        .into_iter()
        .map(|(size, params, snapshot, report)| ScalingRow {
            size: size.into(),
            params,
            snapshot,
            values: MEASURES.iter().map(|(f, _)| report[*f].as_f64()).collect(),
        })
        .collect();
    let report = scaling_report(&MEASURES, &rows);
    let figures = dir.join("figures");
    std::fs::create_dir_all(&figures).with_context(|| format!("creating {}", figures.display()))?;
    for (field, svg) in &report.figures {
        write_atomic(&figures.join(format!("{field}.svg")), svg.as_bytes())?;
    }
    let (md, page) = (report.md, report.html);
    write_atomic(&dir.join("report.md"), md.as_bytes())?;
    let path = dir.join("report.html");
    write_atomic(&path, page.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `lab_eval.jsonl` line of `snapshot` with every rate set to `rate` and the base
    /// model's rate after the HHH context set to `with_context`.
    fn line(snapshot: &str, rate: f64, with_context: f64) -> String {
        format!(
            "{{\"snapshot\":\"{snapshot}\",\"model\":\"m\",\"command\":\"c\",\"seconds\":1.0,\
             \"report\":{{\"world_seed\":0,\"harmful_rate\":{rate},\
             \"harmful_rate_with_context\":{with_context},\"harmless_helpful_rate\":{rate},\
             \"evasive_rate\":{rate},\"helpful_rate\":{rate},\"critique_hit_rate\":{rate},\
             \"mc_accuracy\":{rate},\"red_team_items\":4,\"red_team_with_context_items\":4,\
             \"benign_items\":4,\"critique_items\":4,\"mc_items\":4}}}}\n"
        )
    }

    #[test]
    fn the_scaling_report_has_every_size_the_prompted_snapshot_and_no_rl_steps() {
        let dir = tempfile::tempdir().unwrap();
        for (size, with_context) in [("small", 0.25), ("base", 0.125)] {
            let eval = dir.path().join(size).join("eval");
            std::fs::create_dir_all(&eval).unwrap();
            let text = line("base", 1.0, with_context)
                + &line("sl-cai", 0.5, 0.0)
                + &line("rl-step-2", 0.75, 0.0);
            std::fs::write(eval.join(LAB_EVAL_FILE), text).unwrap();
        }
        let sizes = [(LabSize::Small, 1_000_000), (LabSize::Base, 4_000_000)];
        let html = write_report(dir.path(), &sizes).unwrap();
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(
            md.contains("| small | 1000000 | prompted | 0.250 | — |"),
            "{md}"
        );
        assert!(
            md.contains("| base | 4000000 | prompted | 0.125 | — |"),
            "{md}"
        );
        assert!(md.contains("| base | 4000000 | sl-cai | 0.500 |"), "{md}");
        assert!(!md.contains("rl-step"), "{md}");
        let page = std::fs::read_to_string(html).unwrap();
        assert!(page.contains("prompted") && page.contains("<svg"), "{page}");
        for (field, _) in MEASURES {
            assert!(dir
                .path()
                .join("figures")
                .join(format!("{field}.svg"))
                .is_file());
        }
    }
}
