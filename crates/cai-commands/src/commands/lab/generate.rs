//! `cai lab generate`: the world of a seed, its corpus and its assets, written to a directory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use cai_lab::corpus::Mix;
use cai_lab::generate::{generate, GenerateConfig};
use clap::Args;

use crate::human;
use crate::progress;
use crate::usage::{ensure, UsageError};

/// Raw `cai lab generate` arguments.
#[derive(Debug, Args)]
pub struct LabGenerateArgs {
    /// Directory to write the corpus and the assets to (created if needed)
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// Seed of the task split and of every document
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
    /// Corpus documents in all
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub size: usize,
    /// Distinct requests per task in each prompt set
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub prompts_per_task: usize,
    /// Shares of document kinds, e.g. critique_revision=0.3,counting=0.05 (kinds:
    /// helpful_only, hhh_context, critique_revision, multiple_choice, counting; unnamed
    /// kinds keep their defaults 0.40, 0.15, 0.20, 0.15, 0.10; shares are normalised)
    #[arg(long, value_delimiter = ',', value_name = "KIND=SHARE")]
    pub mix: Vec<String>,
    /// Write into a directory that already holds files
    #[arg(long)]
    pub overwrite: bool,
}

/// Check the arguments and turn them into the library's config.
fn config_from_args(args: &LabGenerateArgs) -> anyhow::Result<GenerateConfig> {
    ensure(args.size > 0, || {
        "--size 0: expected at least 1 document".into()
    })?;
    ensure(args.prompts_per_task > 0, || {
        "--prompts-per-task 0: expected at least 1".into()
    })?;
    let occupied = std::fs::read_dir(&args.output).is_ok_and(|mut d| d.next().is_some());
    ensure(!occupied || args.overwrite, || {
        format!(
            "--output {} already holds files; pass --overwrite to write into it, or choose \
             an empty directory",
            args.output.display()
        )
    })?;
    let mut mix = Mix::default();
    for item in &args.mix {
        let (kind, share) = item.split_once('=').ok_or_else(|| {
            UsageError(format!(
                "--mix {item:?}: expected KIND=SHARE, e.g. counting=0.05"
            ))
        })?;
        let share: f64 = share
            .trim()
            .parse()
            .map_err(|_| UsageError(format!("--mix {item:?}: {share:?} is not a number")))?;
        mix.set(kind.trim(), share)
            .map_err(|e| UsageError(format!("--mix {item:?}: {e}")))?;
    }
    let mut config = GenerateConfig {
        seed: args.seed,
        prompts_per_task: args.prompts_per_task,
        ..GenerateConfig::default()
    };
    config.corpus.size = args.size;
    config.corpus.mix = mix;
    Ok(config)
}

/// Run `cai lab generate`.
pub fn run(args: LabGenerateArgs) -> anyhow::Result<()> {
    let config = config_from_args(&args)?;
    let _lock = cai_core::lock::WriterLock::acquire(&args.output)?;
    let started = Instant::now();
    let spinner = progress::spinner("generating the lab");
    let manifest = generate(&config, &args.output)
        .with_context(|| format!("writing the lab to {}", args.output.display()))?;
    spinner.finish_and_clear();
    let corpus = &manifest.corpus;
    let number = |v: &serde_json::Value| human::thousands(v.as_u64().unwrap_or(0));
    println!(
        "wrote the lab (seed {}) to {} in {:.1} s",
        config.seed,
        args.output.display(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "  world: {} harmful and {} benign tasks ({} held out), {} lexicon words",
        manifest.world["tasks"]["harmful"],
        manifest.world["tasks"]["benign"],
        manifest.world["tasks_by_split"]["held_out"]["harmful"]
            .as_u64()
            .unwrap_or(0)
            + manifest.world["tasks_by_split"]["held_out"]["benign"]
                .as_u64()
                .unwrap_or(0),
        manifest.world["lexicon_words"],
    );
    println!(
        "  corpus: {} documents, {} words, {} distinct words",
        number(&corpus["documents"]),
        number(&corpus["words"]),
        number(&corpus["distinct_words"]),
    );
    if let Some(kinds) = corpus["documents_by_kind"].as_object() {
        for (kind, n) in kinds {
            println!("    {kind:<20} {:>8}", number(n));
        }
    }
    for (set, n) in &manifest.prompt_sets {
        println!("  prompts/{set}.jsonl: {}", human::count(*n, "prompt"));
    }
    println!(
        "  files: see {}",
        args.output.join("manifest.json").display()
    );
    Ok(())
}
