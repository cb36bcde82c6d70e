//! `cai pipeline`: every stage of Constitutional AI from one recipe — data, context
//! distillation, SL-CAI critiques and fine-tuning, RL-CAI labels, the preference model, RL and
//! the evaluation of every snapshot — in one run directory, skipping finished stages whose
//! inputs are unchanged and resuming interrupted ones, then a report.

mod eval;
mod jobs;
mod report;
mod run;
pub use run::run_recipe;
mod sizes;
mod status;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cai_pipeline::recipe::{LoadedRecipe, Stage, STAGES};
use clap::{Args, Subcommand};

use crate::usage::UsageError;

/// Raw `cai pipeline` arguments.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PipelineArgs {
    #[command(subcommand)]
    pub command: Option<PipelineCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Which recipe and run directory.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Recipe TOML [default: the lab's recipe, recipes/lab.toml, built in]
    #[arg(value_name = "RECIPE")]
    pub recipe: Option<PathBuf>,
    /// Run directory [default: cai-runs/<recipe name>, with -quick for --quick]
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// A smoke run: the recipe's [quick] overrides (few prompts, one round, few steps)
    #[arg(long)]
    pub quick: bool,
    /// Run only these stages (comma-separated: data, distill, critique, sft, label, train-pm,
    /// rl, eval); the stages they read must have finished
    #[arg(long, value_delimiter = ',', value_name = "STAGES")]
    pub stages: Vec<String>,
    /// Run this stage and every later one afresh, even if finished and unchanged
    #[arg(long, value_name = "STAGE", conflicts_with = "stages")]
    pub from: Option<String>,
    /// Run the recipe once per lab model size (small = lab-small, base = lab, large = made by
    /// `cai lab pretrain --size large`, ~1 hour on 2 cores) and plot each measure against
    /// size
    #[arg(long, value_delimiter = ',', num_args = 0..=1, default_missing_value = "small,base", value_name = "SIZES")]
    pub sizes: Option<Vec<String>>,
}

/// `cai pipeline` subcommands.
#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Where a run stands: each stage's status, time, attempts and outputs
    Status(RunArgs),
}

/// The stages to run, chosen by `--stages` or `--from`.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Stages to run (others are read as they are).
    pub run: Vec<Stage>,
    /// Run these afresh even when unchanged.
    pub force: Vec<Stage>,
}

impl Selection {
    /// Every stage of the recipe, each skipped when finished and unchanged (a plain
    /// `cai pipeline` run).
    pub fn all(loaded: &LoadedRecipe) -> Self {
        Self {
            run: loaded.recipe.stages(),
            force: Vec::new(),
        }
    }

    fn from_args(args: &RunArgs, recipe_stages: &[Stage]) -> anyhow::Result<Self> {
        let mut run: Vec<Stage> = recipe_stages.to_vec();
        let mut force = Vec::new();
        if !args.stages.is_empty() {
            let chosen = args
                .stages
                .iter()
                .map(|name| parse_stage(name, "--stages"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            run.retain(|s| chosen.contains(s));
            for stage in &chosen {
                anyhow::ensure!(
                    recipe_stages.contains(stage),
                    UsageError(format!(
                        "--stages {stage}: the recipe has no [{stage}] table"
                    ))
                );
            }
        }
        if let Some(from) = &args.from {
            let from = parse_stage(from, "--from")?;
            anyhow::ensure!(
                recipe_stages.contains(&from),
                UsageError(format!("--from {from}: the recipe has no [{from}] table"))
            );
            force = run.iter().copied().filter(|s| *s >= from).collect();
            run = force.clone();
        }
        Ok(Self { run, force })
    }
}

fn parse_stage(name: &str, flag: &str) -> anyhow::Result<Stage> {
    Stage::from_name(name.trim()).map_err(|_| {
        UsageError(format!(
            "{flag} {name}: not a stage; expected one of {}",
            STAGES.map(Stage::name).join(", ")
        ))
        .into()
    })
}

/// The default run directory of a recipe.
fn default_run_dir(loaded: &LoadedRecipe, suffix: &str) -> PathBuf {
    let quick = if loaded.quick { "-quick" } else { "" };
    Path::new("cai-runs").join(format!("{}{suffix}{quick}", loaded.recipe.name))
}

/// Run `cai pipeline`.
pub fn run(args: PipelineArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(PipelineCommand::Status(args)) => {
            let loaded = load_recipe(&args)?;
            let dir = args
                .run_dir
                .clone()
                .unwrap_or_else(|| default_run_dir(&loaded, ""));
            status::print(&dir)?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let args = args.run;
            let loaded = load_recipe(&args)?;
            let selection = Selection::from_args(&args, &loaded.recipe.stages())?;
            crate::interrupt::set_resume_command(this_command());
            if let Some(sizes) = &args.sizes {
                let dir = args
                    .run_dir
                    .clone()
                    .unwrap_or_else(|| default_run_dir(&loaded, "-sizes"));
                return sizes::run(&loaded, &dir, &selection, sizes);
            }
            let dir = args
                .run_dir
                .clone()
                .unwrap_or_else(|| default_run_dir(&loaded, ""));
            let code = run::run_recipe(&loaded, &dir, &selection)?;
            Ok(code)
        }
    }
}

/// The recipe of `args`; its mistakes are usage errors (exit status 2).
fn load_recipe(args: &RunArgs) -> anyhow::Result<LoadedRecipe> {
    LoadedRecipe::load(args.recipe.as_deref(), args.quick).map_err(|e| {
        use cai_pipeline::recipe::RecipeError;
        match e {
            RecipeError::Read { .. } => anyhow::Error::new(e),
            other => UsageError(other.to_string()).into(),
        }
    })
}

/// This process's command line, to print as the way to resume.
fn this_command() -> String {
    let mut words = vec!["cai".to_owned()];
    words.extend(std::env::args().skip(1));
    cai_pipeline::stages::shell_words(&words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(stages: &[&str], from: Option<&str>) -> RunArgs {
        RunArgs {
            recipe: None,
            run_dir: None,
            quick: false,
            stages: stages.iter().map(|s| s.to_string()).collect(),
            from: from.map(str::to_owned),
            sizes: None,
        }
    }

    #[test]
    fn stages_and_from_choose_what_runs() {
        let all = STAGES.to_vec();
        let s = Selection::from_args(&args(&[], None), &all).unwrap();
        assert_eq!(s.run, all);
        assert!(s.force.is_empty());
        let s = Selection::from_args(&args(&["eval", "sft"], None), &all).unwrap();
        assert_eq!(s.run, vec![Stage::Sft, Stage::Eval]);
        let s = Selection::from_args(&args(&[], Some("rl")), &all).unwrap();
        assert_eq!(s.run, vec![Stage::Rl, Stage::Eval]);
        assert_eq!(s.force, s.run);
        let err = Selection::from_args(&args(&["sftt"], None), &all).unwrap_err();
        assert!(err.to_string().contains("sftt"), "{err}");
        let some = vec![Stage::Data, Stage::Critique, Stage::Sft];
        assert!(Selection::from_args(&args(&["rl"], None), &some).is_err());
    }
}
