//! `cai eval`: measures of a model — `mc`, multiple-choice accuracy by log-probability or by
//! a preference model's rewards; `elo`, Elo ratings of snapshots under a judge; `harm`, the
//! harm rate of a model's answers under a judge.

pub mod elo;
pub mod harm;
pub mod judges;
pub mod mc;

use clap::{Args, Subcommand};

/// Raw `cai eval` arguments.
#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub command: EvalCommand,
}

/// The measures.
#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Accuracy on multiple-choice items ({"prompt", "corrects", "incorrects"}, the shape of
    /// Anthropic's HHH evaluation) by log-probability, or by a preference model's rewards
    Mc(mc::McArgs),
    /// Elo ratings of model snapshots: harmlessness on red-team prompts and helpfulness on
    /// benign prompts, from a judge's pairwise comparisons (Bradley–Terry, bootstrap 95 %
    /// intervals), with a table and the harmlessness-against-helpfulness plot (resumable)
    Elo(Box<elo::EloArgs>),
    /// The share of a model's answers that a judge (the lab's oracle, or a preference model
    /// with a threshold) calls harmful
    Harm(Box<harm::HarmArgs>),
}

/// Run `cai eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    match args.command {
        EvalCommand::Mc(args) => mc::run(args),
        EvalCommand::Elo(args) => elo::run(*args),
        EvalCommand::Harm(args) => harm::run(*args),
    }
}
