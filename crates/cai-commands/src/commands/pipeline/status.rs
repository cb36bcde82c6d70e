//! `cai pipeline status`: each stage of a run directory with its status, time, attempts and
//! outputs, read from the manifests.

use std::path::Path;

use anyhow::Context;
use cai_pipeline::manifest::{Manifest, Status};
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

/// Print the table. Reads only: a stage whose manifest says `running` is shown running only
/// while a run holds the directory's lock, and `killed` otherwise (its run ended without
/// finishing it: SIGKILL, a crash, power loss).
pub(super) fn print(dir: &Path) -> anyhow::Result<()> {
    let stages = run_stages(dir)?;
    let holder = cai_pipeline::rundir::lock_holder(dir)?;
    println!("run {}", dir.display());
    if let Some(pid) = holder {
        let pid = pid.map_or_else(|| "PID unknown".into(), |p| format!("PID {p}"));
        println!("in progress: a cai pipeline ({pid}) is running in it");
    }
    let mut killed = false;
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
        let status = match m.status {
            Status::Running if holder.is_none() => {
                killed = true;
                "killed"
            }
            other => other.name(),
        };
        println!(
            "  {:<9} {:<12} {:>9.1} {:>8}  {}",
            stage.name(),
            status,
            m.seconds,
            m.attempts,
            outputs.join(", ")
        );
        if let Some(error) = &m.error {
            println!("            error: {error}");
        }
    }
    if killed {
        println!(
            "killed: the run that started it ended without finishing it (killed, crashed or \
             the machine stopped); run the same cai pipeline command to resume it"
        );
    }
    let report = dir.join("report.html");
    if report.is_file() {
        println!("report: {}", report.display());
    }
    Ok(())
}
