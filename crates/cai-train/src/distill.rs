//! Context distillation (`cai distill`, Askell et al. 2021): train the model without a
//! context C so that its next-token distributions match the same model's with C in front —
//! loss Σ_t KL(p0(· | C, x<t) ‖ pθ(· | x<t)). The config, and a loop that reads top to bottom
//! like SFT's: batch → student forward → teacher targets → KL → backward → clip → step →
//! schedule → log → eval → checkpoint, with exact resume and a stop flag for Ctrl-C.

pub mod batch;
pub mod config;
pub mod data;
pub mod loss;
pub mod teacher;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use cai_model::config::ModelConfig;
use cai_model::layers::Mode;
use cai_model::local::{GenerationDefaults, LocalModel};
use cai_model::tokenizer::Tokenizer;
use cai_model::weights::load_decoder;
use candle_core::Device;

use crate::core::data_order::EpochWalk;
use crate::core::precision::Precision;
use crate::core::recompute::TrainPass;
use crate::core::resume::{self, text_fingerprint, FINGERPRINT_KEY};
use crate::core::session::{epoch_session_spec, TrainSession, METRICS_FILE};
use crate::core::trainee::Trainee;
use crate::distill::batch::{collate, evaluate};
use crate::distill::config::validate;
pub use crate::distill::config::DistillConfig;
use crate::distill::data::{
    load_answers, read_records, sample_answers, save_answers, tokenize, DistillExample,
};
use crate::distill::loss::{distill_kl, fused_full_kl, top1_agreement};
use crate::distill::teacher::{fingerprint, TargetSource, Teacher, TopKTable};
use crate::{GradAccumulator, MetricRecord, Result, Split, TrainError};

/// What to distil, from what, and where to write.
#[derive(Debug, Clone)]
pub struct DistillRun {
    /// Model directory (HF layout): the teacher, and the student's starting point.
    pub model_dir: PathBuf,
    /// The context C, as text.
    pub context: String,
    /// Training JSONL (see [`crate::distill::data`]).
    pub data: PathBuf,
    /// Held-out JSONL, for the KL and agreement logged with split "eval".
    pub eval_data: Option<PathBuf>,
    /// Output directory.
    pub output: PathBuf,
    /// Continue from the newest checkpoint in `output/checkpoints` if there is one.
    pub resume: bool,
    /// Settings a resume may change, and `"data"` for changed input data or context (see
    /// [`crate::core::resume`]); anything else that differs from the checkpoint is refused.
    pub allow_changes: Vec<String>,
    /// Device to train on.
    pub device: Device,
}

/// What a run reports as it goes.
#[derive(Debug)]
pub enum DistillEvent<'a> {
    /// The teacher prefilled the context.
    Context {
        /// Its tokens.
        tokens: usize,
    },
    /// The teacher answered `done` of `total` prompts of a split.
    Sampling {
        /// Train or eval data.
        split: Split,
        /// Prompts answered.
        done: usize,
        /// Prompts to answer.
        total: usize,
    },
    /// The teacher's top-k is computed for `done` of `total` sequences of a split.
    TopK {
        /// Train or eval data.
        split: Split,
        /// Sequences done.
        done: usize,
        /// Sequences.
        total: usize,
    },
    /// A line of `metrics.jsonl` (its `loss` is the mean KL in nats; `agreement` the share
    /// of positions where student and teacher have the same most likely token).
    Metric {
        /// The record.
        record: &'a MetricRecord,
        /// Optimiser steps of the whole run.
        total_steps: u64,
    },
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum DistillOutcome {
    /// Every step ran and the student was written to the output directory.
    Finished {
        /// Optimiser steps.
        steps: u64,
        /// Last training KL.
        train_kl: Option<f64>,
        /// Held-out (KL, agreement) before training and after, with eval data.
        eval: Option<[(f64, f64); 2]>,
    },
    /// The stop flag was raised; a checkpoint was saved to resume from.
    Interrupted {
        /// The checkpoint written.
        checkpoint: PathBuf,
    },
}

/// Name of the resolved config written beside the outputs.
pub const DISTILL_CONFIG_FILE: &str = "distill_config.json";
/// The teacher's answers to the training prompts, kept for a resumed run.
pub const TEACHER_SAMPLES_FILE: &str = "teacher_samples.jsonl";
/// The teacher's top-k on the training data, kept for a resumed run.
pub const TEACHER_TOPK_FILE: &str = "teacher_topk.safetensors";

/// Distil. `progress` sees sampling, the teacher's top-k and every metric record.
pub fn run_distill(
    run: &DistillRun,
    cfg: &DistillConfig,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(DistillEvent<'_>),
) -> Result<DistillOutcome> {
    validate(cfg, &run.context)?;
    let precision = Precision::of(&cfg.dtype, &run.device)?;
    let _bf16_products = precision.scope();
    let dtype = precision.build;
    let model_config = ModelConfig::from_file(&run.model_dir.join("config.json"))?;
    let tokenizer = Tokenizer::from_dir(&run.model_dir)?;
    tokenizer.check_fits(model_config.vocab_size, &run.model_dir)?;
    let ckpt = cai_model::checkpoint::Checkpoint::open_dir(&run.model_dir)?;
    let decoder = load_decoder(model_config, &ckpt, dtype, &run.device)?;
    // The teacher is a copy taken before the student's weights become variables: training
    // replaces the student's tensors (or adds adapters to it) and never touches these.
    let mut frozen = decoder.clone();
    if cfg.lora.is_none() {
        // bf16 training on the CPU samples and scores with the teacher in bf16 as well.
        frozen.prepare_for_inference_as(if precision.bf16_matmuls {
            candle_core::DType::BF16
        } else {
            dtype
        })?;
    }
    let context_ids = tokenizer.encode(&run.context, tokenizer.add_bos_token())?;
    let skip = usize::from(tokenizer.add_bos_token() && tokenizer.bos_id().is_some());
    // Checked before the teacher reads the context: a context past the window cannot be
    // prefilled at all.
    let window = frozen.config().max_position_embeddings;
    let room = (window + skip).saturating_sub(context_ids.len());
    if room < skip + 2 {
        return Err(TrainError::ContextTooLong {
            tokens: context_ids.len(),
            window,
            room: room.saturating_sub(skip),
        });
    }
    let teacher = Teacher::new(frozen.clone(), context_ids)?;
    progress(DistillEvent::Context {
        tokens: teacher.context_len(),
    });
    std::fs::create_dir_all(&run.output).map_err(|e| TrainError::io(&run.output, e))?;

    let max_length = cfg.max_length.min(teacher.max_student_len(skip));
    if max_length < cfg.max_length {
        tracing::warn!(
            "the context takes {} of the model's {window} positions: sequences are cut to {} \
             tokens (max_length is {})",
            teacher.context_len(),
            max_length - skip,
            cfg.max_length
        );
    }
    let sampler = LocalModel::from_parts(
        run.model_dir.clone(),
        frozen,
        tokenizer.clone(),
        GenerationDefaults::default(),
    );
    let mut load = |path: &PathBuf, split: Split| -> Result<Vec<DistillExample>> {
        let records = read_records(path)?;
        let answers = match &cfg.sample {
            None => Vec::new(),
            Some(sampling) => {
                let file = run.output.join(samples_file(split));
                match load_answers(&file, &records)? {
                    Some(answers) => answers,
                    None => {
                        let answers = sample_answers(
                            &sampler,
                            &run.context,
                            &records,
                            sampling,
                            cfg.format,
                            cfg.seed,
                            &mut |done, total| {
                                progress(DistillEvent::Sampling { split, done, total })
                            },
                        )?;
                        save_answers(&file, &answers)?;
                        answers
                    }
                }
            }
        };
        let examples = tokenize(&records, &answers, &tokenizer, cfg.format, max_length)?;
        if examples.len() < records.len() {
            tracing::warn!(
                "{}: {} of {} records have fewer than 2 tokens to compare and are left out",
                path.display(),
                records.len() - examples.len(),
                records.len()
            );
        }
        Ok(examples)
    };
    let examples = load(&run.data, Split::Train)?;
    let eval_examples = match &run.eval_data {
        Some(path) => load(path, Split::Eval)?,
        None => Vec::new(),
    };
    drop(sampler);
    if examples.is_empty() {
        return Err(TrainError::Config(format!(
            "{}: no sequences of at least 2 tokens to distil on",
            run.data.display()
        )));
    }
    // With top-k the teacher runs once over the data (or not at all when its table is on
    // disk); otherwise on every batch.
    let mut source = |examples: &[DistillExample], split: Split| -> Result<TargetSource<'_>> {
        let Some(k) = cfg.top_k else {
            return Ok(TargetSource::Live(&teacher));
        };
        let path = run.output.join(top_k_file(split));
        let key = fingerprint(&teacher, examples, k);
        if let Some(table) = TopKTable::load(&path, k, &key)? {
            return Ok(TargetSource::Table(table));
        }
        let table =
            TopKTable::compute(&teacher, examples, k, cfg.batch_size, &mut |done, total| {
                progress(DistillEvent::TopK { split, done, total })
            })?;
        table.save(&path, &key)?;
        Ok(TargetSource::Table(table))
    };
    let train_targets = source(&examples, Split::Train)?;
    let eval_targets = source(&eval_examples, Split::Eval)?;

    let trainee = Trainee::new(decoder, cfg.lora.as_ref(), &run.model_dir)?;
    let mut data_fingerprint = resume::fingerprint(&[
        ("data", Some(run.data.as_path())),
        ("eval_data", run.eval_data.as_deref()),
    ])?;
    data_fingerprint["context"] = text_fingerprint(&run.context);
    let config_json = serde_json::json!({
        "distill": cfg,
        "model": run.model_dir,
        "context": run.context,
        "context_tokens": teacher.context_len(),
        "data": run.data,
        "eval_data": run.eval_data,
        FINGERPRINT_KEY: data_fingerprint,
    });
    let mut session = TrainSession::open(
        &trainee,
        &tokenizer,
        trainee.params.clone(),
        epoch_session_spec!(
            method: "distill",
            config: config_json,
            config_file: DISTILL_CONFIG_FILE,
            run: run,
            cfg: cfg,
            examples: examples.len(),
        )?,
    )?;
    let (student, params, total_steps) = (&trainee.decoder, &trainee.params, session.total_steps());
    let eval_now = |session: &mut TrainSession<'_, Trainee>,
                    progress: &mut dyn FnMut(DistillEvent<'_>)|
     -> Result<()> {
        let (kl, agreement) = evaluate(
            student,
            &eval_examples,
            cfg.batch_size,
            &run.device,
            &eval_targets,
        )?;
        session.state.record_eval(kl);
        let mut record = MetricRecord::new(session.state.step, Split::Eval, kl);
        record.extra.insert("agreement".into(), agreement.into());
        session.log(&record)?;
        progress(DistillEvent::Metric {
            record: &record,
            total_steps,
        });
        Ok(())
    };
    // The held-out KL before any update: the baseline the run is measured against.
    if !eval_examples.is_empty() && session.state.step == 0 {
        eval_now(&mut session, progress)?;
    }

    let mut walk = EpochWalk::new(examples.len(), cfg.seed);
    let mut grads = GradAccumulator::new();
    while session.state.step < total_steps {
        if stop.load(Ordering::SeqCst) {
            let checkpoint = session.save()?;
            return Ok(DistillOutcome::Interrupted { checkpoint });
        }
        let started = session.begin_step();
        // Batch: the step's micro-batches, in the epoch's seeded order.
        let micro = walk.next_step(&mut session.state, cfg.batch_size, cfg.grad_accum);
        let total: usize = micro
            .iter()
            .flatten()
            .map(|&i| examples[i].positions())
            .sum();
        // Student forward, teacher targets, KL and backward per micro-batch; the loss is the
        // mean over every compared position of the step.
        let (mut step_kl, mut agree, mut tokens) = (0.0, 0, 0);
        for (m, indices) in micro.iter().enumerate() {
            let seed = cai_core::rng::derive_seed_u64(cfg.seed, &[session.state.step, m as u64]);
            student.set_dropout_seed(seed);
            let batch: Vec<&DistillExample> = indices.iter().map(|&i| &examples[i]).collect();
            let (ids, positions, rows) = collate(&batch, &run.device)?;
            tokens += batch.iter().map(|e| e.ids.len()).sum::<usize>();
            let pass = TrainPass::forward(student, &ids, &positions, cfg.gradient_checkpointing)?;
            let n = rows.dim(0)?;
            let teacher_targets = train_targets.targets(indices, &batch, &run.device)?;
            let hidden = pass.hidden();
            let h = hidden.dim(2)?;
            let picked = hidden
                .reshape((hidden.elem_count() / h, h))?
                .index_select(&rows, 0)?;
            let fused = match student.head_weight() {
                Some(head) => fused_full_kl(&picked, head, &teacher_targets)?,
                None => None,
            };
            let (kl, agreed) = match fused {
                Some(fused) => fused,
                None => {
                    let logits = student.logits_mode(&picked, Mode::Train)?;
                    let kl = distill_kl(&logits, &teacher_targets)?;
                    (kl, top1_agreement(&logits, &teacher_targets)?)
                }
            };
            let kl_value = f64::from(kl.to_scalar::<f32>()?);
            session.check_loss("KL", kl_value, false)?;
            let weight = n as f64 / total.max(1) as f64;
            step_kl += kl_value * weight;
            agree += agreed;
            pass.backward(&(kl * weight)?, params, &mut grads)?;
        }
        session.check_loss("KL", step_kl, true)?;
        // Clip, step, schedule.
        let (grad_norm, lr) = session.step(
            &mut grads,
            cfg.max_grad_norm,
            cfg.learning_rate,
            session.state.step,
        )?;
        session.state.step += 1;
        session.state.tokens_seen += total as u64;
        session.state.last_train_loss = Some(step_kl);
        // Log, evaluate, checkpoint.
        let mut record = MetricRecord::new(session.state.step, Split::Train, step_kl);
        record.lr = Some(lr);
        record.grad_norm = Some(grad_norm);
        record.tokens_per_s = Some(tokens as f64 / started.elapsed().as_secs_f64());
        record.epoch = Some(walk.epochs(&session.state));
        record.extra.insert(
            "agreement".into(),
            (agree as f64 / total.max(1) as f64).into(),
        );
        session.log(&record)?;
        progress(DistillEvent::Metric {
            record: &record,
            total_steps,
        });
        let last = session.state.step == total_steps;
        let eval_due = cfg.eval_every > 0 && session.state.step.is_multiple_of(cfg.eval_every);
        if !eval_examples.is_empty() && (last || eval_due) {
            eval_now(&mut session, progress)?;
        }
        // The last step's model is the run's output, not a checkpoint.
        if !last {
            session.step_done(cfg.save_every);
        }
    }
    session.finish()?;
    trainee.write(&run.output, &tokenizer)?;
    let evals = eval_records(&run.output.join(METRICS_FILE))?;
    Ok(DistillOutcome::Finished {
        steps: session.state.step,
        train_kl: session.state.last_train_loss,
        eval: evals.first().zip(evals.last()).map(|(a, b)| [*a, *b]),
    })
}

fn samples_file(split: Split) -> &'static str {
    match split {
        Split::Train => TEACHER_SAMPLES_FILE,
        Split::Eval => "teacher_samples_eval.jsonl",
    }
}

fn top_k_file(split: Split) -> &'static str {
    match split {
        Split::Train => TEACHER_TOPK_FILE,
        Split::Eval => "teacher_topk_eval.safetensors",
    }
}

/// The (KL, agreement) of every eval record of a run's `metrics.jsonl`, in order.
fn eval_records(path: &std::path::Path) -> Result<Vec<(f64, f64)>> {
    Ok(cai_core::jsonl::read_complete_records(path)?
        .into_iter()
        .filter_map(|r| serde_json::from_value::<MetricRecord>(r).ok())
        .filter(|r| r.split == Split::Eval)
        .map(|r| {
            let agreement = r.extra.get("agreement").and_then(|a| a.as_f64());
            (r.loss, agreement.unwrap_or(0.0))
        })
        .collect())
}
