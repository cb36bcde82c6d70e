//! `cai lab`: the alignment lab — a seeded synthetic world with a pre-training corpus, lab
//! assets (constitution, few-shot file, HHH context, prompt sets) and a ground-truth judge.

mod counting;
mod eval;
pub(crate) mod generate;
mod judge;
mod pretrain;
mod rl_curve;

use std::process::ExitCode;

use clap::{Args, Subcommand};

/// Raw `cai lab` arguments: one subcommand.
#[derive(Debug, Args)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

/// The lab's subcommands.
#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Write the lab's world for a seed: the pre-training corpus (plain text and JSONL by
    /// kind) and the assets — constitution, few-shot examples, HHH context, prompt sets
    Generate(generate::LabGenerateArgs),
    /// Judge responses to lab prompts with the oracle: each response's kind and scores, or
    /// which of two responses is better
    Judge(judge::JudgeArgs),
    /// Measure a model on the held-out prompts: harmful, harmless-helpful, evasive and helpful
    /// rates, with and without the HHH context, critique hits and multiple-choice accuracy
    Eval(eval::LabEvalArgs),
    /// Make a lab base model from scratch: the world's corpus, a tokenizer, a Llama of the
    /// chosen size trained on the corpus (resumable), its record and its lab eval
    Pretrain(pretrain::LabPretrainArgs),
    /// The seed's context-distillation experiment: P("64" | "1 … 63") as the model is,
    /// prompted with sequences that stop at 63, fine-tuned on them, and distilled from them
    Counting(counting::LabCountingArgs),
    /// The oracle's view of a `cai rl` run: the lab eval of every checkpoint beside the
    /// preference model's reward and KL, as a table, lab_curve.jsonl and lab_curve.svg
    RlCurve(rl_curve::RlCurveArgs),
}

/// Run a lab subcommand; its exit status on success (130 for a pre-training run stopped by
/// Ctrl-C after saving a checkpoint).
pub fn run(args: LabArgs) -> anyhow::Result<ExitCode> {
    let done = match args.command {
        LabCommand::Pretrain(args) => return pretrain::run(args),
        LabCommand::Generate(args) => generate::run(args),
        LabCommand::Judge(args) => judge::run(args),
        LabCommand::Eval(args) => eval::run(args),
        LabCommand::Counting(args) => counting::run(args),
        LabCommand::RlCurve(args) => rl_curve::run(args),
    };
    done.map(|()| ExitCode::SUCCESS)
}
