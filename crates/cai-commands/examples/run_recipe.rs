//! Runs a recipe from a program, without the `cai` binary: the whole pipeline (data,
//! distillation, critiques, SFT, labels, preference model, RL, evaluation and the report) in a
//! run directory, resuming what an earlier run left there, exactly as `cai pipeline` does.
//!
//! ```text
//! cargo run --release -p cai-commands --example run_recipe -- [RECIPE.toml] [--full] [--run-dir DIR]
//! ```
//!
//! Without a recipe it runs the built-in lab recipe; without `--full`, its `[quick]` version
//! (a smoke run of about a minute on 2 cores). The run directory defaults to
//! `cai-runs/example-<recipe name>`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use cai_commands::commands::pipeline::{run_recipe, Selection};
use cai_pipeline::recipe::LoadedRecipe;

fn main() -> anyhow::Result<ExitCode> {
    cai_commands::prepare_process();
    let mut recipe: Option<PathBuf> = None;
    let mut quick = true;
    let mut run_dir: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--full" => quick = false,
            "--run-dir" => run_dir = Some(args.next().context("--run-dir needs a folder")?.into()),
            flag if flag.starts_with('-') => {
                bail!("unknown option {flag}; expected [RECIPE.toml] [--full] [--run-dir DIR]")
            }
            path => recipe = Some(path.into()),
        }
    }

    // The recipe, with its [quick] overrides applied when `quick`.
    let loaded = LoadedRecipe::load(recipe.as_deref(), quick)?;
    let run_dir = run_dir.unwrap_or_else(|| {
        PathBuf::from("cai-runs").join(format!("example-{}", loaded.recipe.name))
    });
    // Every stage; finished, unchanged ones are skipped, interrupted ones resume.
    // It prints its progress and the report's path on stderr, as `cai pipeline` does.
    run_recipe(&loaded, &run_dir, &Selection::all(&loaded))
}
