//! `cai lab rl-curve`: the oracle's view of an RL run — `cai lab eval` of the starting policy
//! and of every checkpoint of a `cai rl` output, beside the preference model's reward and KL
//! at those steps, as `lab_curve.jsonl` (resumable) and `lab_curve.svg` (`lab_curve_tT.*` when
//! the eval samples at temperature T).

use std::path::{Path, PathBuf};

use anyhow::Context;
use cai_lab::eval::{evaluate, EvalOptions};
use cai_lab::rl_curve::CurvePoint;
use cai_lab::World;
use cai_report::oracle_curve::{oracle_curve_svg, OraclePoint};
use cai_train::core::checkpoint::list_checkpoints;
use cai_train::rl::{read_metrics, RL_CONFIG_FILE};
use clap::Args;
use serde_json::Value;

use crate::model_args::{DeviceName, ModelArgs};
use crate::progress;
use crate::usage::UsageError;

/// Raw `cai lab rl-curve` arguments.
#[derive(Debug, Args)]
pub struct RlCurveArgs {
    /// A `cai rl` output directory (full fine-tuning: its checkpoints are models)
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// Seed of the lab world whose held-out prompts are used
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub world_seed: u64,
    /// At most N items per measure [default: every held-out prompt]
    #[arg(long, value_name = "N")]
    pub max_items: Option<usize>,
    /// Sample the eval's answers at this temperature (0: greedy)
    #[arg(long, default_value_t = 0.0, value_name = "T")]
    pub temperature: f32,
    /// Print the points as JSON lines
    #[arg(long)]
    pub json: bool,
}

/// Run `cai lab rl-curve`.
pub fn run(args: RlCurveArgs) -> anyhow::Result<()> {
    // Greedy and sampled evaluations are kept apart.
    let (curve_file, plot_file) = if args.temperature == 0.0 {
        ("lab_curve.jsonl".to_owned(), "lab_curve.svg".to_owned())
    } else {
        (
            format!("lab_curve_t{}.jsonl", args.temperature),
            format!("lab_curve_t{}.svg", args.temperature),
        )
    };
    let config_path = args.run.join(RL_CONFIG_FILE);
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).map_err(|_| {
            UsageError(format!(
                "{}: not a `cai rl` output (no {RL_CONFIG_FILE})",
                args.run.display()
            ))
        })?)
        .with_context(|| format!("{}: not valid JSON", config_path.display()))?;
    if !config["rl"]["lora"].is_null() {
        return Err(UsageError(format!(
            "{}: a LoRA run's checkpoints are adapters; merge them with `cai merge-lora` and \
             evaluate them with `cai lab eval`",
            args.run.display()
        ))
        .into());
    }
    let policy = config["policy"]
        .as_str()
        .map(PathBuf::from)
        .with_context(|| format!("{}: no \"policy\"", config_path.display()))?;
    let mut snapshots: Vec<(u64, PathBuf)> = vec![(0, policy)];
    snapshots.extend(list_checkpoints(&args.run.join("checkpoints"))?);
    let metrics = read_metrics(&args.run)?;
    let curve_path = args.run.join(&curve_file);
    let _lock = cai_core::lock::WriterLock::acquire(&curve_path)?;
    let mut points: Vec<CurvePoint> = if curve_path.exists() {
        cai_core::jsonl::read_jsonl(&curve_path)?
    } else {
        Vec::new()
    };
    points.retain(|p| snapshots.iter().any(|(s, _)| *s == p.step));
    let world = World::new(args.world_seed);
    let opts = EvalOptions {
        max_items: args.max_items,
        sampling: super::eval::sampling(args.temperature),
        ..EvalOptions::new(&world)
    };
    let bar = progress::records_bar(snapshots.len(), points.len(), "checkpoints");
    let mut previous = 0;
    for (step, dir) in &snapshots {
        let (reward, kl) = window_means(&metrics, previous, *step);
        previous = *step;
        if let Some(p) = points.iter_mut().find(|p| p.step == *step) {
            (p.reward, p.kl) = (reward, kl);
            continue;
        }
        let model = ModelArgs {
            model: dir.display().to_string(),
            device: DeviceName::Cpu,
            dtype: None,
        };
        let report = bar.suspend(|| model.load())?;
        let report = evaluate(&report, &world, &opts)
            .with_context(|| format!("evaluating {} on the lab", dir.display()))?;
        let point = CurvePoint {
            step: *step,
            reward,
            kl,
            report,
        };
        let mut writer = cai_core::jsonl::JsonlWriter::append(&curve_path)?;
        writer.write(&point)?;
        points.push(point);
        bar.inc(1);
    }
    bar.finish_and_clear();
    points.sort_by_key(|p| p.step);
    cai_core::jsonl::write_jsonl_atomic(&curve_path, &points)?;
    let title = format!(
        "{}: the oracle ({}) against the PM reward (KL β {})",
        args.run.display(),
        if args.temperature == 0.0 {
            "greedy".to_owned()
        } else {
            format!("T = {}", args.temperature)
        },
        config["rl"]["kl_coef"]
    );
    let plotted: Vec<OraclePoint> = points.iter().map(CurvePoint::plotted).collect();
    let svg = oracle_curve_svg(&plotted, &title).map_err(anyhow::Error::msg)?;
    std::fs::write(args.run.join(&plot_file), svg)
        .with_context(|| format!("writing {}", args.run.join(&plot_file).display()))?;
    if args.json {
        for p in &points {
            println!("{}", serde_json::to_string(p)?);
        }
    } else {
        print_table(&points);
        println!(
            "wrote {} and {}",
            show(&args.run.join(&curve_file)),
            show(&args.run.join(&plot_file))
        );
    }
    Ok(())
}

fn show(path: &Path) -> String {
    path.display().to_string()
}

/// Mean reward and KL of the steps in `(from, to]` (the rollouts that led to checkpoint
/// `to`); for step 0, those of the first step (sampled from the starting policy).
fn window_means(
    metrics: &[cai_train::MetricRecord],
    from: u64,
    to: u64,
) -> (Option<f64>, Option<f64>) {
    let (lo, hi) = if to == 0 { (1, 1) } else { (from + 1, to) };
    let mean = |key: &str| -> Option<f64> {
        let v: Vec<f64> = metrics
            .iter()
            .filter(|r| (lo..=hi).contains(&r.step))
            .filter_map(|r| r.extra.get(key)?.as_f64())
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    (mean("reward"), mean("kl"))
}

fn print_table(points: &[CurvePoint]) {
    println!(
        "{:>6} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8}",
        "step", "PM reward", "KL", "harmful", "harmless+", "evasive", "helpful"
    );
    let show = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.3}"));
    for p in points {
        println!(
            "{:>6} {:>9} {:>8} {:>8.3} {:>9.3} {:>8.3} {:>8.3}",
            p.step,
            show(p.reward),
            show(p.kl),
            p.report.harmful_rate,
            p.report.harmless_helpful_rate,
            p.report.evasive_rate,
            p.report.helpful_rate
        );
    }
}
