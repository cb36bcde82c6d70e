//! `cai bench`: the docs/BENCH.md workloads on the `bench-6m` model, each in its own child process
//! so that its peak resident memory is its own; a table with docs/BENCH.md's anchors, or JSON.

use std::process::Command;

use anyhow::{bail, Context};
use cai_model::batching::EngineLimits;
use cai_model::bench::{bench_generate, bench_score, bench_shape, peak_rss_mib, Throughput};
use cai_model::bench_context::{
    bench_context_generate, bench_critique_waves, ContextWorkload, CritiqueWorkload,
};
use cai_model::config::ModelConfig;
use cai_model::decoder::Decoder;
use cai_model::init::ModelShape;
use cai_model::local::{LoadOptions, LocalModel};
use cai_model::weights::random_decoder;
use cai_train::bench::{
    bench_ppo_step, bench_train, bench_train_decoder, PpoStepWorkload, TrainBenchOptions,
};
use cai_train::core::precision::Precision;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::human;
use crate::model_args::{DeviceName, Dtype};
use crate::progress;
use crate::usage::{ensure, UsageError};

/// Raw `cai bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Print one JSON object instead of the table
    #[arg(long)]
    pub json: bool,
    /// Workloads, comma-separated: generate (batch 1, 8 and 32), score, train, context
    /// (generation after a 1,000-token context, its cache reused or recomputed), critique (one
    /// round's answer, critique and revision waves), ppo_step (a rollout and one update), or
    /// single ones (generate_b1, generate_b8, generate_b32, context_reuse, context_recompute)
    #[arg(long, value_delimiter = ',', default_value = "generate,score,train")]
    pub workloads: Vec<String>,
    /// Timed runs per workload, after one warm-up; the fastest is reported
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub runs: usize,
    /// Device to run on: cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: DeviceName,
    /// Dtype of weights and activations
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: Dtype,
    /// Run only this workload, in this process, and print its result as JSON (the parent
    /// runs each workload so, to read each one's peak memory)
    #[arg(long, hide = true, value_enum)]
    pub workload: Option<Workload>,
    /// A random model of a standard shape (docs/BENCH.md): bench-6m or smollm2-135m
    #[arg(long, value_enum, default_value = "bench-6m", conflicts_with = "model")]
    pub shape: Shape,
    /// Run the workloads on this model instead (a Hugging Face model directory, a GGUF file, a
    /// Hub model id, or `lab`); train updates a copy of its weights in memory
    #[arg(long, value_name = "M")]
    pub model: Option<String>,
    /// The train workload trains LoRA adapters (PEFT's default targets) instead of every
    /// weight
    #[arg(long)]
    pub lora: bool,
    /// The train workload uses activation checkpointing (as `cai sft --gradient-checkpointing`)
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// A tiny model instead of bench-6m, for tests of the harness
    #[arg(long, hide = true)]
    pub tiny: bool,
}

/// The standard shapes of docs/BENCH.md, as random models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum Shape {
    /// Hidden 256, 4 layers, vocab 4,096 (~6.3M parameters).
    #[value(name = "bench-6m")]
    Bench6m,
    /// SmolLM2-135M: hidden 576, 30 layers, 9 heads (3 KV), vocab 49,152, tied.
    #[value(name = "smollm2-135m")]
    Smollm2_135m,
}

/// One docs/BENCH.md workload. A new one (docs/BENCH.md's `train`) is a variant here plus its arms in
/// `run`, `label`, `anchor` and `select`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Greedy generation, batch 1.
    #[value(name = "generate_b1")]
    GenerateB1,
    /// Greedy generation, batch 8: the headline number.
    #[value(name = "generate_b8")]
    GenerateB8,
    /// Greedy generation, batch 32.
    #[value(name = "generate_b32")]
    GenerateB32,
    /// Log-probs of 32 sequences × 256 tokens.
    #[value(name = "score")]
    Score,
    /// Forward, backward and an AdamW step on 8 × 256 tokens.
    #[value(name = "train")]
    Train,
    /// Generation after a shared 1,000-token context whose KV cache is computed once.
    #[value(name = "context_reuse")]
    ContextReuse,
    /// The same generation with the context recomputed as part of every prompt.
    #[value(name = "context_recompute")]
    ContextRecompute,
    /// One critique round: answer, critique and revision waves of 8 growing transcripts.
    #[value(name = "critique")]
    Critique,
    /// One PPO step: 8 sampled responses, policy and reference log-probs, one update.
    #[value(name = "ppo_step")]
    PpoStep,
}

/// Prompt and new tokens of the generate workloads (docs/BENCH.md: prompt 32 tokens, 64 new
/// tokens, greedy, KV cache).
const PROMPT_TOKENS: usize = 32;
const NEW_TOKENS: usize = 64;
/// Sequences and tokens per sequence of the score workload (docs/BENCH.md: 32 × 256).
const SCORE_SEQUENCES: usize = 32;
const SCORE_TOKENS: usize = 256;
/// Sequences and tokens per sequence of the train workload (docs/BENCH.md: batch 8 × 256).
const TRAIN_SEQUENCES: usize = 8;
const TRAIN_TOKENS: usize = 256;
/// The dialogue-prompting workloads: four generate_b8 calls after a 1,000-token context.
const CONTEXT: ContextWorkload = ContextWorkload {
    context: 1000,
    batches: 4,
    batch: 8,
    prompt: PROMPT_TOKENS,
    new_tokens: NEW_TOKENS,
};

/// The critique workload: a 256-token few-shot context, then 8 transcripts through the answer,
/// critique and revision waves (prompts of 32 tokens, requests of 16, 64 new tokens each).
const CRITIQUE: CritiqueWorkload = CritiqueWorkload {
    context: 256,
    batch: 8,
    prompt: PROMPT_TOKENS,
    request: 16,
    new_tokens: NEW_TOKENS,
    waves: 3,
};

/// The PPO-step workload: 8 prompts of 32 tokens, 64 new tokens sampled at temperature 1.
const PPO: PpoStepWorkload = PpoStepWorkload {
    batch: 8,
    prompt: PROMPT_TOKENS,
    new_tokens: NEW_TOKENS,
};

/// Throughput of the reference tools on the same workload, as docs/BENCH.md's table "Anchors
/// measured on this kind of machine" gives them (2-core AMD EPYC Zen 4, AVX-512, fp32,
/// 2 threads). Update both together.
struct Anchor {
    pytorch: &'static str,
    llama_cpp: &'static str,
}

impl Workload {
    /// Every workload, in report order.
    const ALL: [Workload; 9] = [
        Workload::GenerateB1,
        Workload::GenerateB8,
        Workload::GenerateB32,
        Workload::Score,
        Workload::Train,
        Workload::ContextReuse,
        Workload::ContextRecompute,
        Workload::Critique,
        Workload::PpoStep,
    ];

    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::GenerateB1 => "generate_b1",
            Self::GenerateB8 => "generate_b8",
            Self::GenerateB32 => "generate_b32",
            Self::Score => "score",
            Self::Train => "train",
            Self::ContextReuse => "context_reuse",
            Self::ContextRecompute => "context_recompute",
            Self::Critique => "critique",
            Self::PpoStep => "ppo_step",
        }
    }

    fn label(self) -> String {
        match self {
            Self::GenerateB1 | Self::GenerateB8 | Self::GenerateB32 => {
                format!("generate, batch {}", self.batch())
            }
            Self::Score => format!("score {SCORE_SEQUENCES} × {SCORE_TOKENS}"),
            Self::Train => format!("train {TRAIN_SEQUENCES} × {TRAIN_TOKENS}"),
            Self::ContextReuse => "context, reused".into(),
            Self::ContextRecompute => "context, recomputed".into(),
            Self::Critique => format!("critique, {} waves", CRITIQUE.waves),
            Self::PpoStep => format!("PPO step, {} × {}", PPO.batch, PPO.new_tokens),
        }
    }

    fn batch(self) -> usize {
        match self {
            Self::GenerateB1 => 1,
            Self::GenerateB8 => 8,
            Self::GenerateB32 => 32,
            Self::Score => SCORE_SEQUENCES,
            Self::Train => TRAIN_SEQUENCES,
            Self::ContextReuse | Self::ContextRecompute => CONTEXT.batch,
            Self::Critique => CRITIQUE.batch,
            Self::PpoStep => PPO.batch,
        }
    }

    fn anchor(self) -> Anchor {
        let (pytorch, llama_cpp) = match self {
            Self::GenerateB1 => ("~240", "~1,900–2,000"),
            Self::GenerateB8 => ("~1,000 (best 1,400)", "~3,300 decode"),
            Self::GenerateB32 => ("~2,400", "~3,300"),
            Self::Score => ("~11,500", "~10,500 prefill"),
            Self::Train => ("~3,500", "—"),
            Self::ContextReuse | Self::ContextRecompute | Self::Critique | Self::PpoStep => {
                ("—", "—")
            }
        };
        Anchor { pytorch, llama_cpp }
    }

    /// Time the workload: best of `runs` after a warm-up.
    fn run(
        self,
        model: &BenchModel,
        dtype: Dtype,
        device: DeviceName,
        runs: usize,
        train: TrainBenchOptions,
    ) -> anyhow::Result<Throughput> {
        if matches!(self, Self::PpoStep | Self::Train) {
            return self.run_training(model, dtype, device, runs, train);
        }
        let decoder = model.build(dtype, device)?;
        let decoder = &decoder;
        Ok(match self {
            Self::GenerateB1 | Self::GenerateB8 | Self::GenerateB32 => {
                bench_generate(decoder, self.batch(), PROMPT_TOKENS, NEW_TOKENS, runs)?
            }
            // Split into passes as `cai score` splits them, so the number is what users get.
            Self::Score => bench_score(
                decoder,
                SCORE_SEQUENCES,
                SCORE_TOKENS,
                runs,
                EngineLimits::default(),
            )?,
            Self::ContextReuse | Self::ContextRecompute => {
                let reuse = self == Self::ContextReuse;
                bench_context_generate(decoder, CONTEXT, reuse, runs)?
            }
            Self::Critique => bench_critique_waves(decoder, CRITIQUE, runs)?,
            Self::Train | Self::PpoStep => unreachable!("handled above"),
        })
    }

    /// The training workloads (a PPO step, or else training), trained as `cai sft --dtype` trains: bf16 on the CPU is an f32
    /// model whose linear layers multiply in bf16 (`cai_train::core::precision`).
    fn run_training(
        self,
        model: &BenchModel,
        dtype: Dtype,
        device: DeviceName,
        runs: usize,
        train: TrainBenchOptions,
    ) -> anyhow::Result<Throughput> {
        let candle_device = cai_model::device::device_from_name(&device.to_string())?;
        let precision = Precision::for_dtype(dtype.to_candle(), &candle_device);
        let _bf16_products = precision.scope();
        let dtype = if precision.bf16_matmuls {
            Dtype::F32
        } else {
            dtype
        };
        if self == Self::PpoStep {
            let (policy, reference) = (
                model.build_for_training(dtype, device)?,
                model.build_for_training(dtype, device)?,
            );
            let modes = (train.gradient_checkpointing, precision.bf16_matmuls);
            return Ok(bench_ppo_step(policy, reference, PPO, runs, modes)?);
        }
        if let BenchModel::Path(_) = model {
            let decoder = model.build_for_training(dtype, device)?;
            return Ok(bench_train_decoder(
                decoder,
                TRAIN_SEQUENCES,
                TRAIN_TOKENS,
                runs,
                train,
            )?);
        }
        // The trainer builds its own model: its parameters become variables.
        Ok(bench_train(
            model.config()?,
            TRAIN_SEQUENCES,
            TRAIN_TOKENS,
            runs,
            dtype.to_candle(),
            &candle_device,
            train,
        )?)
    }
}

/// The workloads a `--workloads` list names, in report order, each once.
fn select(names: &[String]) -> Result<Vec<Workload>, UsageError> {
    let mut chosen = Vec::new();
    for name in names {
        let matching: Vec<Workload> = match name.trim() {
            "generate" => vec![
                Workload::GenerateB1,
                Workload::GenerateB8,
                Workload::GenerateB32,
            ],
            "context" => vec![Workload::ContextReuse, Workload::ContextRecompute],
            other => match Workload::from_str(other, false) {
                Ok(w) => vec![w],
                Err(_) => {
                    return Err(UsageError(format!(
                        "--workloads: unknown workload '{other}'; expected generate, score, \
                         train, context, critique, ppo_step, generate_b1, generate_b8, \
                         generate_b32, context_reuse or context_recompute"
                    )))
                }
            },
        };
        chosen.extend(matching);
    }
    Ok(Workload::ALL
        .into_iter()
        .filter(|w| chosen.contains(w))
        .collect())
}

/// Which model the workloads run on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchModel {
    /// A random model of a docs/BENCH.md shape.
    Shape(Shape),
    /// Hidden 32, 2 layers, vocab 300: exercises the harness in tests, measures nothing.
    Tiny,
    /// A model loaded as `--model` names it.
    Path(String),
}

impl BenchModel {
    /// The shape of a random model (`None` for a loaded one).
    fn shape(&self) -> Option<ModelShape> {
        Some(match self {
            Self::Shape(Shape::Bench6m) => ModelShape::default(),
            Self::Shape(Shape::Smollm2_135m) => ModelShape::smollm2_135m(),
            Self::Path(_) => return None,
            Self::Tiny => ModelShape {
                hidden_size: 32,
                num_layers: 2,
                num_heads: 4,
                intermediate_size: 64,
                vocab_size: 300,
                // Room for the context workloads (1,000 + 32 + 64 tokens).
                max_position_embeddings: 2048,
                ..ModelShape::default()
            },
        })
    }

    /// The model's configuration (a loaded model's is read from its `config.json`).
    fn config(&self) -> anyhow::Result<ModelConfig> {
        Ok(match (self.shape(), self) {
            (Some(shape), _) => shape.config()?,
            (None, Self::Path(spec)) => {
                let dir = crate::lab_models::resolve_model_dir(spec)?;
                let dir = cai_model::hub::resolve_model_dir(&dir.display().to_string())?;
                ModelConfig::from_file(&dir.join("config.json"))?
            }
            (None, _) => unreachable!("only a loaded model has no shape"),
        })
    }

    /// The model in `dtype` for the inference workloads: bf16 on the CPU is f32 activations
    /// over packed bf16 weights, as `cai generate --dtype bf16` runs.
    fn build(&self, dtype: Dtype, device: DeviceName) -> anyhow::Result<Decoder> {
        self.build_as(dtype, device, false)
    }

    /// The model for the training workloads: every parameter in `dtype` (bf16 packing is for
    /// inference only).
    fn build_for_training(&self, dtype: Dtype, device: DeviceName) -> anyhow::Result<Decoder> {
        self.build_as(dtype, device, true)
    }

    fn build_as(
        &self,
        dtype: Dtype,
        device: DeviceName,
        training: bool,
    ) -> anyhow::Result<Decoder> {
        let device = cai_model::device::device_from_name(&device.to_string())?;
        if training {
            if let Self::Shape(_) = self {
                let mut decoder = random_decoder(self.config()?, 0, dtype.to_candle(), &device)?;
                decoder.prepare_for_inference()?;
                return Ok(decoder);
            }
        }
        Ok(match self {
            Self::Shape(_) => {
                bench_shape(&self.shape().expect("a shape"), dtype.to_candle(), &device)?
            }
            Self::Tiny => random_decoder(self.config()?, 0, dtype.to_candle(), &device)?,
            Self::Path(spec) => {
                let dir = crate::lab_models::resolve_model_dir(spec)?;
                let options = LoadOptions {
                    device,
                    dtype: Some(dtype.to_candle()),
                };
                LocalModel::load(&dir.display().to_string(), &options)
                    .with_context(|| format!("loading model '{spec}'"))?
                    .decoder()
                    .clone()
            }
        })
    }

    fn name(&self) -> String {
        match self {
            Self::Shape(Shape::Bench6m) => "bench-6m".into(),
            Self::Shape(Shape::Smollm2_135m) => "smollm2-135m (random weights)".into(),
            Self::Tiny => "tiny".into(),
            Self::Path(spec) => spec.clone(),
        }
    }
}

/// A validated `cai bench` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchConfig {
    /// Workloads, in report order.
    pub workloads: Vec<Workload>,
    /// Timed runs per workload.
    pub runs: usize,
    /// Device.
    pub device: DeviceName,
    /// Dtype.
    pub dtype: Dtype,
    /// The model.
    pub model: BenchModel,
    /// JSON output instead of the table.
    pub json: bool,
    /// How the train workload trains (LoRA, activation checkpointing).
    #[serde(skip)]
    pub train: TrainBenchOptions,
}

impl BenchConfig {
    /// Check the arguments.
    pub fn from_args(args: &BenchArgs) -> Result<Self, UsageError> {
        ensure(args.runs > 0, || "--runs 0: expected at least 1".into())?;
        let workloads = match args.workload {
            Some(w) => vec![w],
            None => select(&args.workloads)?,
        };
        ensure(!workloads.is_empty(), || {
            "--workloads: expected at least one".into()
        })?;
        Ok(Self {
            workloads,
            runs: args.runs,
            device: args.device,
            dtype: args.dtype,
            model: match (&args.model, args.tiny) {
                (_, true) => BenchModel::Tiny,
                (Some(spec), false) => BenchModel::Path(spec.clone()),
                (None, false) => BenchModel::Shape(args.shape),
            },
            json: args.json,
            train: TrainBenchOptions {
                lora: args.lora,
                gradient_checkpointing: args.gradient_checkpointing,
            },
        })
    }
}

/// What a workload's child process prints on stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadReport {
    /// The workload.
    pub workload: Workload,
    /// Tokens generated or scored in the best run.
    pub tokens: usize,
    /// Seconds of the best run.
    pub seconds: f64,
    /// Tokens per second of the best run.
    pub tok_s: f64,
    /// The child's peak resident memory (None where the OS does not say).
    pub peak_rss_mib: Option<f64>,
}

/// Run `cai bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let config = BenchConfig::from_args(&args)?;
    if args.workload.is_some() {
        return run_here(&config);
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this cai is a debug build, so its numbers say little; \
             build with --release to measure"
        );
    }
    let threads = rayon_threads();
    let mut reports = Vec::with_capacity(config.workloads.len());
    for &workload in &config.workloads {
        let spinner = progress::spinner(format!("bench {}", workload.label()));
        let report = run_in_child(&config, workload)?;
        spinner.finish_and_clear();
        reports.push(report);
    }
    if config.json {
        println!("{}", json_summary(&reports, threads));
    } else {
        print_table(&config, &reports, threads)?;
    }
    Ok(())
}

/// Child mode: run the one workload of `config` and print its report as JSON.
fn run_here(config: &BenchConfig) -> anyhow::Result<()> {
    let workload = config.workloads[0];
    let t = workload.run(
        &config.model,
        config.dtype,
        config.device,
        config.runs,
        config.train,
    )?;
    let report = WorkloadReport {
        workload,
        tokens: t.tokens,
        seconds: t.seconds,
        tok_s: t.tok_s(),
        peak_rss_mib: peak_rss_mib(),
    };
    println!(
        "{}",
        serde_json::to_string(&report).expect("reports serialise")
    );
    Ok(())
}

/// Run one workload in a child process of this same binary and read its report.
fn run_in_child(config: &BenchConfig, workload: Workload) -> anyhow::Result<WorkloadReport> {
    let exe = std::env::current_exe().context("finding the cai executable to run workloads")?;
    let mut command = Command::new(&exe);
    command.args(["bench", "--workload", workload.name()]);
    command.args(["--runs", &config.runs.to_string()]);
    command.args(["--device", &config.device.to_string()]);
    command.args(["--dtype", config.dtype.name()]);
    if config.train.lora {
        command.arg("--lora");
    }
    if config.train.gradient_checkpointing {
        command.arg("--gradient-checkpointing");
    }
    match &config.model {
        BenchModel::Tiny => {
            command.arg("--tiny");
        }
        BenchModel::Path(spec) => {
            command.args(["--model", spec]);
        }
        BenchModel::Shape(shape) => {
            command.args([
                "--shape",
                shape.to_possible_value().expect("named").get_name(),
            ]);
        }
    }
    let output = command
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "workload {} failed ({}): {}",
            workload.name(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| {
        format!(
            "workload {}: expected a JSON report, got {last:?}",
            workload.name()
        )
    })
}

/// The size of the thread pool the workloads run on (set by `main` if the user did not).
fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// New tokens/s with the context's cache reused over new tokens/s with it recomputed, when
/// both were measured.
fn context_speedup(reports: &[WorkloadReport]) -> Option<f64> {
    let rate = |w: Workload| reports.iter().find(|r| r.workload == w).map(|r| r.tok_s);
    Some(rate(Workload::ContextReuse)? / rate(Workload::ContextRecompute)?)
}

/// The JSON summary: `{"<workload>_tok_s": .., "peak_rss_mib": {workload: MiB}, "threads"}`.
fn json_summary(reports: &[WorkloadReport], threads: usize) -> Value {
    let mut summary = Map::new();
    let mut peaks = Map::new();
    for report in reports {
        let name = report.workload.name();
        summary.insert(format!("{name}_tok_s"), json!(report.tok_s));
        peaks.insert(name.to_owned(), json!(report.peak_rss_mib));
    }
    if let Some(speedup) = context_speedup(reports) {
        summary.insert("context_speedup".into(), json!(speedup));
    }
    summary.insert("peak_rss_mib".into(), Value::Object(peaks));
    summary.insert("threads".into(), json!(threads));
    Value::Object(summary)
}

fn print_table(
    config: &BenchConfig,
    reports: &[WorkloadReport],
    threads: usize,
) -> anyhow::Result<()> {
    let model_config = config.model.config()?;
    println!(
        "{} ({}, {} parameters), {} on {}, {threads} threads, best of {} run{}",
        config.model.name(),
        model_config.architecture.model_type(),
        human::thousands(model_config.num_parameters() as u64),
        config.dtype.name(),
        config.device,
        config.runs,
        if config.runs == 1 { "" } else { "s" },
    );
    let train = match (config.train.lora, config.train.gradient_checkpointing) {
        (false, false) => None,
        (true, false) => Some("LoRA adapters"),
        (false, true) => Some("every weight, gradient checkpointing"),
        (true, true) => Some("LoRA adapters, gradient checkpointing"),
    };
    if let Some(train) = train.filter(|_| config.workloads.contains(&Workload::Train)) {
        println!("train: {train}");
    }
    println!();
    println!(
        "{:<20} {:>10} {:>13}   {:<22} llama.cpp (docs/BENCH.md)",
        "workload", "tok/s", "peak RSS MiB", "PyTorch (docs/BENCH.md)"
    );
    // The anchors were measured on bench-6m only.
    let anchored = config.model == BenchModel::Shape(Shape::Bench6m);
    for report in reports {
        let anchor = if anchored {
            report.workload.anchor()
        } else {
            Anchor {
                pytorch: "—",
                llama_cpp: "—",
            }
        };
        let peak = report
            .peak_rss_mib
            .map_or_else(|| "-".to_owned(), |m| format!("{m:.0}"));
        println!(
            "{:<20} {:>10} {:>13}   {:<22} {}",
            report.workload.label(),
            human::thousands(report.tok_s.round() as u64),
            peak,
            anchor.pytorch,
            anchor.llama_cpp,
        );
    }
    if let Some(speedup) = context_speedup(reports) {
        println!();
        println!(
            "Prefix reuse: generation after a {}-token context runs {speedup:.2}× as fast with \
             the context's KV cache computed once ({} calls of batch {}) as with it recomputed \
             in every prompt.",
            human::thousands(CONTEXT.context as u64),
            CONTEXT.batches,
            CONTEXT.batch,
        );
    }
    println!();
    if !anchored {
        println!(
            "The anchors are bench-6m's: measure PyTorch beside this model with \
             scripts/bench_compare.sh."
        );
        return Ok(());
    }
    println!(
        "Anchors: docs/BENCH.md, 2-core AMD EPYC Zen 4, fp32, 2 threads; they vary ±15% between \
         runs and machines,\nso compare ratios measured side by side in one run."
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn groups_expand_in_report_order() {
        assert_eq!(
            select(&names(&[
                "ppo_step", "critique", "context", "train", "score", "generate"
            ]))
            .unwrap(),
            Workload::ALL
        );
        assert_eq!(
            select(&names(&["generate_b8", "generate_b8"])).unwrap(),
            [Workload::GenerateB8]
        );
        assert!(select(&names(&["training"])).is_err());
    }

    #[test]
    fn json_keys_follow_workload_names() {
        let report = WorkloadReport {
            workload: Workload::GenerateB8,
            tokens: 512,
            seconds: 0.5,
            tok_s: 1024.0,
            peak_rss_mib: Some(40.0),
        };
        assert_eq!(
            json_summary(&[report], 2),
            json!({"generate_b8_tok_s": 1024.0, "peak_rss_mib": {"generate_b8": 40.0}, "threads": 2})
        );
    }

    #[test]
    fn the_context_speedup_is_reuse_over_recompute() {
        let report = |workload, tok_s| WorkloadReport {
            workload,
            tokens: 2048,
            seconds: 2048.0 / tok_s,
            tok_s,
            peak_rss_mib: None,
        };
        let reuse = report(Workload::ContextReuse, 600.0);
        let recompute = report(Workload::ContextRecompute, 150.0);
        assert_eq!(context_speedup(std::slice::from_ref(&reuse)), None);
        let both = [reuse, recompute];
        assert_eq!(context_speedup(&both), Some(4.0));
        assert_eq!(json_summary(&both, 2)["context_speedup"], json!(4.0));
    }
}
