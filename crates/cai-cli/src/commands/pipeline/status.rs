//! `cai pipeline status`: each stage of a run directory with its status, time, attempts and
//! outputs, read from the manifests.

use std::path::Path;

use anyhow::Context;
use cai_pipeline::manifest::Manifest;
use cai_pipeline::recipe::Stage;

use super::run::RUN_FILE;
use crate::human;
use crate::usage::UsageError;

/// The stages of the run in `dir`, as read from its `run.json`.
pub(super) fn run_stages(dir: &Path) -> anyhow::Result<Vec<Stage>> {
    let path = dir.join(RUN_FILE);
    let text = std::fs::read_to_string(&path).map_err(|_| {
        UsageError(format!(
            "{} is not a pipeline run directory (no {RUN_FILE}); pass the run's --run-dir",
            dir.display()
        ))
    })?;
    let run: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    serde_json::from_value(run["stages"].clone())
        .with_context(|| format!("{}: \"stages\"", path.display()))
}

/// Print the table.
pub(super) fn print(dir: &Path) -> anyhow::Result<()> {
    let stages = run_stages(dir)?;
    println!("run {}", dir.display());
    println!(
        "  {:<9} {:<12} {:>9} {:>8}  outputs",
        "stage", "status", "seconds", "attempts"
    );
    for stage in stages {
        let Some(m) = Manifest::read(&dir.join(stage.name()))? else {
            println!(
                "  {:<9} {:<12} {:>9} {:>8}",
                stage.name(),
                "not started",
                "-",
                "-"
            );
            continue;
        };
        let outputs: Vec<String> = m
            .outputs
            .iter()
            .map(|o| match o.records {
                Some(n) => format!("{} ({})", o.role, human::count(n, "record")),
                None => format!("{} ({})", o.role, human::bytes(o.bytes)),
            })
            .collect();
        println!(
            "  {:<9} {:<12} {:>9.1} {:>8}  {}",
            stage.name(),
            m.status.name(),
            m.seconds,
            m.attempts,
            outputs.join(", ")
        );
        if let Some(error) = &m.error {
            println!("            error: {error}");
        }
    }
    let report = dir.join("report.html");
    if report.is_file() {
        println!("report: {}", report.display());
    }
    Ok(())
}
