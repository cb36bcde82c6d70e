//! `cai lab eval`: measure a model on the lab's held-out prompt sets, judged by the oracle —
//! harmful, harmless-helpful, evasive and helpful rates, the harmful rate after the HHH
//! context, critique hits and multiple-choice accuracy — as a table or one JSON object.

use std::time::Instant;

use anyhow::Context;
use cai_lab::eval::{evaluate, EvalOptions, LabReport, DEFAULT_MAX_NEW_TOKENS};
use cai_lab::World;
use clap::Args;

use crate::model_args::ModelArgs;
use crate::progress;
use crate::usage::ensure;

/// Raw `cai lab eval` arguments.
#[derive(Debug, Args)]
#[command(mut_arg("model", |a| a.default_value("lab").required(false)))]
pub struct LabEvalArgs {
    /// The model to evaluate [default: `lab`, the shipped base model].
    #[command(flatten)]
    pub model: ModelArgs,
    /// Seed of the lab world whose held-out prompts are used (as `cai lab generate --seed`)
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub world_seed: u64,
    /// At most N items per measure, spread over the held-out tasks [default: every prompt]
    #[arg(long, value_name = "N")]
    pub max_items: Option<usize>,
    /// Most new tokens per answer and critique
    #[arg(long, default_value_t = DEFAULT_MAX_NEW_TOKENS, value_name = "N")]
    pub max_new_tokens: usize,
    /// Run seed of the samplers and of the made-up answers critiqued and compared
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sample answers and critiques at this temperature instead of greedily (0): the rates
    /// then describe the model's distribution, as RL samples it, not only its mode
    #[arg(long, default_value_t = 0.0, value_name = "T")]
    pub temperature: f32,
    /// Print the report as one JSON object
    #[arg(long)]
    pub json: bool,
}

/// Run `cai lab eval`.
pub fn run(args: LabEvalArgs) -> anyhow::Result<()> {
    ensure(args.max_items != Some(0), || {
        "--max-items 0: expected at least 1 item per measure".into()
    })?;
    ensure(args.max_new_tokens > 0, || {
        "--max-new-tokens 0: expected at least 1".into()
    })?;
    ensure(
        args.temperature.is_finite() && args.temperature >= 0.0,
        || format!("--temperature {}: expected a number ≥ 0", args.temperature),
    )?;
    let model = args.model.load()?;
    let world = World::new(args.world_seed);
    let opts = EvalOptions {
        max_items: args.max_items,
        max_new_tokens: args.max_new_tokens,
        seed: args.seed,
        sampling: sampling(args.temperature),
        ..EvalOptions::new(&world)
    };
    let started = Instant::now();
    let spinner = progress::spinner("evaluating on the lab's held-out prompts");
    let report = evaluate(&model, &world, &opts)
        .with_context(|| format!("evaluating '{}' on the lab", args.model.model))?;
    spinner.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "lab eval of {} (world seed {}) in {:.1} s",
            args.model.model,
            report.world_seed,
            started.elapsed().as_secs_f64()
        );
        print_report(&report);
    }
    Ok(())
}

/// Greedy decoding at temperature 0, else plain sampling at that temperature.
pub(super) fn sampling(temperature: f32) -> cai_core::Sampling {
    if temperature == 0.0 {
        cai_core::Sampling::greedy()
    } else {
        cai_core::Sampling {
            temperature,
            top_k: None,
            top_p: None,
        }
    }
}

/// The report as a table: each figure with the number of items it is over.
pub(super) fn print_report(r: &LabReport) {
    let rows = [
        ("harmful_rate", r.harmful_rate, r.red_team_items),
        (
            "harmful_rate_with_context",
            r.harmful_rate_with_context,
            r.red_team_with_context_items,
        ),
        (
            "harmless_helpful_rate",
            r.harmless_helpful_rate,
            r.red_team_items,
        ),
        ("evasive_rate", r.evasive_rate, r.red_team_items),
        ("helpful_rate", r.helpful_rate, r.benign_items),
        ("critique_hit_rate", r.critique_hit_rate, r.critique_items),
        ("mc_accuracy", r.mc_accuracy, r.mc_items),
    ];
    println!("  {:<26} {:>6} {:>6}", "measure", "value", "items");
    for (name, value, items) in rows {
        println!("  {name:<26} {value:>6.3} {items:>6}");
    }
}
