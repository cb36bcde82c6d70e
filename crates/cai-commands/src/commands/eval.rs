//! `cai eval`: measures of a model — `mc`, multiple-choice accuracy by log-probability or by
//! a preference model's rewards; `elo`, Elo ratings of snapshots under a judge; `harm`, the
//! harm rate of a model's answers under a judge; `safety`, attack success and over-refusal
//! of snapshots under one or two judges.

pub mod elo;
pub mod harm;
pub mod judges;
pub mod mc;
pub mod safety;

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
    /// Attack success rate on red-team prompts and over-refusal on safe prompts that look
    /// unsafe (`--benign over-refusal`: the set cai ships), per snapshot, under one or two
    /// judges (refusal patterns, classifier LMs, an LLM judge), with bootstrap 95 %
    /// intervals, Cohen's κ, per-item verdicts and a plot (resumable)
    Safety(Box<safety::SafetyArgs>),
}

/// Run `cai eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    match args.command {
        EvalCommand::Mc(args) => mc::run(args),
        EvalCommand::Elo(args) => elo::run(*args),
        EvalCommand::Harm(args) => harm::run(*args),
        EvalCommand::Safety(args) => safety::run(*args),
    }
}
