//! The command line: global flags and one subcommand per job.

use clap::{Parser, Subcommand};

use crate::commands::{
    bench, chat, convert, critique, distill, eval, generate, init_model, lab, label, merge_lora,
    pipeline, rl, score, serve, sft, train_pm,
};

/// cai: Constitutional AI over Hugging Face causal language models, on candle.
#[derive(Debug, Parser)]
#[command(
    name = "cai",
    version,
    about = "The cai command: Constitutional AI from the command line",
    propagate_version = true
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a new randomly initialised model with a tokenizer, in Hugging Face layout.
    InitModel(init_model::InitModelArgs),
    /// Sample completions for every prompt of a JSONL file (resumable).
    Generate(generate::GenerateArgs),
    /// Log-probability of each continuation given its prompt, from a JSONL file (resumable).
    Score(score::ScoreArgs),
    /// Talk with a model on stdin/stdout, keeping the dialogue history.
    Chat(chat::ChatArgs),
    /// SL-CAI data: answers to red-team prompts, critiqued and revised in rounds against
    /// principles drawn from a constitution (resumable)
    Critique(Box<critique::CritiqueArgs>),
    /// RL-CAI preference labels: two responses per prompt compared by a feedback model in a
    /// multiple-choice question under the constitution's principles (resumable)
    Label(Box<label::LabelArgs>),
    /// Supervised fine-tuning of a model, or of LoRA adapters, on JSONL dialogues or
    /// prompt/completion pairs (resumable).
    Sft(Box<sft::SftArgs>),
    /// A preference model: the model with a scalar head trained on soft-labelled pairs (cai
    /// label output, TRL or hh-rlhf comparisons), with its accuracy and calibration (resumable)
    TrainPm(Box<train_pm::TrainPmArgs>),
    /// RL-CAI: optimise a policy against a preference model with PPO or RLOO/GRPO under a KL
    /// penalty, or with DPO on labelled pairs (resumable)
    Rl(Box<rl::RlArgs>),
    /// Every stage of Constitutional AI from one recipe (the lab's by default), in a run
    /// directory, skipping finished stages and resuming interrupted ones; then a report
    Pipeline(Box<pipeline::PipelineArgs>),
    /// Measures of a model: multiple-choice accuracy (mc), Elo of snapshots under a judge
    /// (elo), harm rate (harm).
    Eval(eval::EvalArgs),
    /// Context distillation: train a model, or LoRA adapters, to act without a context as it
    /// does with it in front (per-token KL to the prompted model; resumable).
    Distill(Box<distill::DistillArgs>),
    /// Fold a LoRA adapter into its base model and write a plain Hugging Face model.
    MergeLora(merge_lora::MergeLoraArgs),
    /// Write any model cai loads (a GGUF file, a model directory or id) as a Hugging Face
    /// folder: safetensors, config, tokenizer with its chat template, generation config.
    Convert(convert::ConvertArgs),
    /// Serve a local model over an OpenAI-compatible HTTP API (completions, chat, scores),
    /// batching concurrent requests together.
    Serve(serve::ServeArgs),
    /// Throughput and peak memory of generation and scoring on the bench-6m model.
    Bench(bench::BenchArgs),
    /// The alignment lab: a synthetic world, its pre-training corpus and assets, and a
    /// ground-truth judge.
    Lab(lab::LabArgs),
}
