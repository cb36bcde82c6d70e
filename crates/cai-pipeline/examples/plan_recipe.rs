//! Plan a recipe with the library alone: each stage's inputs, typed jobs (as JSON and as the
//! equivalent `cai` command line) and outputs, in a run directory.
//!
//! ```sh
//! cargo run --release -p cai-pipeline --example plan_recipe -- [--quick] [RECIPE] [RUN_DIR]
//! ```
//!
//! With no recipe it plans the lab's (`recipes/lab.toml`, embedded); the run directory
//! defaults to `cai pipeline`'s (`cai-runs/<name>`, with `-quick` for `--quick`). Nothing is written: `cai pipeline` runs these jobs.

use std::path::{Path, PathBuf};

use cai_pipeline::recipe::LoadedRecipe;
use cai_pipeline::stages::{plan_all, InputSpec, RunContext, Step};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut quick = false;
    let mut rest = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            _ => rest.push(PathBuf::from(arg)),
        }
    }
    let loaded = LoadedRecipe::load(rest.first().map(PathBuf::as_path), quick)?;
    let suffix = if quick { "-quick" } else { "" };
    let default_dir = Path::new("cai-runs").join(format!("{}{suffix}", loaded.recipe.name));
    let run_dir = rest.get(1).cloned().unwrap_or(default_dir);
    let ctx = RunContext {
        loaded: &loaded,
        run_dir: &run_dir,
    };
    for plan in plan_all(&ctx)? {
        println!("[{}]", plan.stage);
        for input in &plan.inputs {
            match input {
                InputSpec::Path { role, path } => println!("  in  {role}: {}", path.display()),
                InputSpec::Model { role, spec } => println!("  in  {role}: model {spec}"),
            }
        }
        for step in &plan.steps {
            match step {
                Step::Job(job) => {
                    println!("  run {}", job.command_line());
                    println!("      {}", serde_json::to_string(job)?);
                }
                Step::Join { inputs, output, .. } => {
                    println!("  join {} file(s) into {}", inputs.len(), output.display())
                }
                Step::Eval => println!("  measure every snapshot"),
            }
        }
        for (role, path) in &plan.outputs {
            println!("  out {role}: {}", path.display());
        }
    }
    Ok(())
}
