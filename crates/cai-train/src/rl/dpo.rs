//! DPO, offline on labelled pairs (`cai label` records with soft labels, TRL or hh-rlhf
//! preferences): the reference's log-probabilities are computed once and stored beside the
//! outputs; each step's loss is the soft-label DPO loss of [`crate::rl::loss::dpo_loss`].
//!
//! A pair's two dialogues share their prompt, so the log-probabilities summed are those of the
//! tokens after the two token sequences part: tokens they share contribute the same amount to
//! both sides and cancel in the DPO margin, so this equals the margin over whole responses.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use cai_model::tokenizer::Tokenizer;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::core::data_order::stream_slice;
use crate::core::trainee::write_json;
use crate::pm::data::load_pairs;
use crate::rl::config::RlConfig;
use crate::rl::loss::dpo_loss;
use crate::rl::policy::{segment_sums, Policy, Sequence};
use crate::rl::{load_policy, open_session, RlEvent, RlOutcome, RlRun};
use crate::{GradAccumulator, MetricRecord, Result, Split, TrainError};

/// The reference's summed log-probabilities of every pair, computed once.
pub const REFERENCE_FILE: &str = "reference_logps.json";

/// One training pair.
#[derive(Debug, Clone)]
struct DpoPair {
    a: Sequence,
    b: Sequence,
    p_a: f32,
}

/// The stored reference log-probabilities, tied to the pairs they were computed for.
#[derive(Debug, Serialize, Deserialize)]
struct ReferenceLogps {
    /// A hash of every pair's tokens.
    fingerprint: String,
    ref_a: Vec<f32>,
    ref_b: Vec<f32>,
}

/// Pairs from `path`, split where the two dialogues' tokens part; identical dialogues carry
/// no preference and are left out. Returns the pairs and how many were left out.
fn dpo_pairs(
    path: &Path,
    tokenizer: &Tokenizer,
    cfg: &RlConfig,
) -> Result<(Vec<DpoPair>, usize, usize)> {
    let loaded = load_pairs(path, tokenizer, cfg.format, cfg.max_length)?;
    let mut identical = 0;
    let mut pairs = Vec::with_capacity(loaded.pairs.len());
    for pair in loaded.pairs {
        if pair.ids_a == pair.ids_b {
            identical += 1;
            continue;
        }
        let shared = pair
            .ids_a
            .iter()
            .zip(&pair.ids_b)
            .take_while(|(x, y)| x == y)
            .count()
            .max(1);
        let smoothed =
            pair.p_a * (1.0 - cfg.label_smoothing) + (1.0 - pair.p_a) * cfg.label_smoothing;
        pairs.push(DpoPair {
            a: Sequence {
                ids: pair.ids_a,
                response_start: shared,
            },
            b: Sequence {
                ids: pair.ids_b,
                response_start: shared,
            },
            p_a: smoothed as f32,
        });
    }
    Ok((pairs, identical, loaded.too_long))
}

fn fingerprint(pairs: &[DpoPair]) -> String {
    let mut text = String::new();
    for p in pairs {
        text.push_str(&format!(
            "{:?}|{:?}|{};",
            p.a.ids, p.b.ids, p.a.response_start
        ));
    }
    format!("{:016x}", cai_core::rng::derive_seed(0, &[&text]))
}

/// Summed log-probabilities of each sequence's response under the reference.
fn reference_sums(policy: &Policy, seqs: &[&Sequence], rows: usize) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(seqs.len());
    for chunk in seqs.chunks(rows) {
        let lp = policy.reference_log_probs(chunk, None)?;
        let mut at = 0;
        for s in chunk {
            let n = s.response().len();
            out.push(lp[at..at + n].iter().sum());
            at += n;
        }
    }
    Ok(out)
}

/// The stored reference log-probabilities if they match the pairs, else computed and stored.
fn reference(
    policy: &Policy,
    pairs: &[DpoPair],
    cfg: &RlConfig,
    output: &Path,
) -> Result<ReferenceLogps> {
    let path = output.join(REFERENCE_FILE);
    let print = fingerprint(pairs);
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(stored) = serde_json::from_str::<ReferenceLogps>(&text) {
            if stored.fingerprint == print && stored.ref_a.len() == pairs.len() {
                return Ok(stored);
            }
        }
        tracing::info!("{}: recomputing (written for other pairs)", path.display());
    }
    let a: Vec<&Sequence> = pairs.iter().map(|p| &p.a).collect();
    let b: Vec<&Sequence> = pairs.iter().map(|p| &p.b).collect();
    let stored = ReferenceLogps {
        fingerprint: print,
        ref_a: reference_sums(policy, &a, cfg.rollout_batch)?,
        ref_b: reference_sums(policy, &b, cfg.rollout_batch)?,
    };
    let tmp = output.join(format!(".{REFERENCE_FILE}.tmp"));
    write_json(&tmp, &serde_json::to_value(&stored).expect("serialisable"))?;
    std::fs::rename(&tmp, &path).map_err(|e| TrainError::io(&path, e))?;
    Ok(stored)
}

/// Train with DPO.
pub(crate) fn run_dpo(
    run: &RlRun,
    cfg: &RlConfig,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(RlEvent<'_>),
) -> Result<RlOutcome> {
    let data = run
        .data
        .as_deref()
        .ok_or_else(|| TrainError::Config("dpo needs labelled pairs (data)".into()))?;
    let tokenizer = Tokenizer::from_dir(&run.policy_dir)?;
    let (pairs, identical, too_long) = dpo_pairs(data, &tokenizer, cfg)?;
    if pairs.is_empty() {
        return Err(TrainError::Config(format!(
            "{}: no usable pairs ({identical} with identical responses, {too_long} longer than \
             max_length {})",
            data.display(),
            cfg.max_length
        )));
    }
    if identical + too_long > 0 {
        tracing::warn!(
            identical,
            too_long,
            "{}: pairs left out (identical responses, or longer than max_length)",
            data.display()
        );
    }
    let per_epoch = pairs.len().div_ceil(cfg.batch_size) as u64;
    let total_steps = cfg.steps.unwrap_or(per_epoch * cfg.epochs);
    let (policy, policy_tokenizer) = load_policy(run, cfg)?;
    // The samples log stays empty: DPO samples nothing.
    let (mut session, _samples) = open_session(run, cfg, total_steps, &policy, &policy_tokenizer)?;
    let reference = reference(&policy, &pairs, cfg, &run.output)?;
    let device = policy.decoder().device().clone();
    let mut grads = GradAccumulator::new();
    let mut last = None;
    let pairs_per_pass = (cfg.rollout_batch / 2).max(1);
    let params = policy.params(1.0);
    while session.state.step < total_steps {
        if stop.load(Ordering::SeqCst) {
            let checkpoint = session.save()?;
            return Ok(RlOutcome::Interrupted { checkpoint });
        }
        let step = session.state.step;
        let started = session.begin_step();
        // The step's pairs: an endless stream of seeded epoch orders.
        let batch = stream_slice(pairs.len(), cfg.batch_size, step, cfg.seed);
        let (mut loss_sum, mut margins, mut chosen, mut rejected) =
            (0.0, Vec::new(), Vec::new(), Vec::new());
        for (u, chunk) in batch.chunks(pairs_per_pass).enumerate() {
            policy
                .decoder()
                .set_dropout_seed(cai_core::rng::derive_seed_u64(cfg.seed, &[step, u as u64]));
            let seqs: Vec<&Sequence> = chunk
                .iter()
                .map(|&i| &pairs[i].a)
                .chain(chunk.iter().map(|&i| &pairs[i].b))
                .collect();
            let train = policy.forward_train(&seqs, false, cfg.gradient_checkpointing)?;
            let out = &train.outputs;
            let sums = segment_sums(&out.log_probs, &out.lengths)?;
            let k = chunk.len();
            let policy_a = sums.narrow(0, 0, k)?;
            let policy_b = sums.narrow(0, k, k)?;
            let vec = |f: &dyn Fn(usize) -> f32| -> Result<Tensor> {
                Ok(Tensor::from_vec(
                    chunk.iter().map(|&i| f(i)).collect::<Vec<f32>>(),
                    k,
                    &device,
                )?)
            };
            let ref_a = vec(&|i| reference.ref_a[i])?;
            let ref_b = vec(&|i| reference.ref_b[i])?;
            let p_a = vec(&|i| pairs[i].p_a)?;
            let (loss, m) = dpo_loss(&policy_a, &policy_b, &ref_a, &ref_b, &p_a, cfg.dpo_beta)?;
            let value = f64::from(loss.to_scalar::<f32>()?);
            session.check_loss("loss", value, false)?;
            let weight = k as f64 / batch.len() as f64;
            loss_sum += value * weight;
            margins.extend(m.to_vec1::<f32>()?);
            let beta = cfg.dpo_beta as f32;
            let (pa, pb): (Vec<f32>, Vec<f32>) = (policy_a.to_vec1()?, policy_b.to_vec1()?);
            for (j, &i) in chunk.iter().enumerate() {
                chosen.push(beta * (pa[j] - reference.ref_a[i]));
                rejected.push(beta * (pb[j] - reference.ref_b[i]));
            }
            train.backward(&(loss * weight)?, &params, &mut grads)?;
        }
        session.check_loss("loss", loss_sum, true)?;
        let (grad_norm, lr) =
            session.step(&mut grads, cfg.max_grad_norm, cfg.learning_rate, step)?;
        session.state.step += 1;
        session.state.epoch = step * cfg.batch_size as u64 / pairs.len() as u64;
        session.state.last_train_loss = Some(loss_sum);

        let decided: Vec<(f32, f32)> = batch
            .iter()
            .zip(&margins)
            .map(|(&i, &m)| (pairs[i].p_a, m))
            .filter(|(p, _)| *p != 0.5)
            .collect();
        let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len().max(1) as f64;
        let mut record = MetricRecord::new(session.state.step, Split::Train, loss_sum);
        record.lr = Some(lr);
        record.grad_norm = Some(grad_norm);
        record.epoch =
            Some((session.state.step * cfg.batch_size as u64) as f64 / pairs.len() as f64);
        let accuracy = decided
            .iter()
            .filter(|(p, m)| (*p > 0.5) == (*m > 0.0))
            .count() as f64
            / decided.len().max(1) as f64;
        for (k, v) in [
            ("margin", mean(&margins)),
            ("reward_chosen", mean(&chosen)),
            ("reward_rejected", mean(&rejected)),
            ("accuracy", accuracy),
            ("step_s", started.elapsed().as_secs_f64()),
        ] {
            record.extra.insert(k.into(), json!(v));
        }
        session.log(&record)?;
        progress(RlEvent::Metrics(&record, total_steps));
        last = Some(record);
        session.step_done(cfg.save_every);
    }
    session.finish()?;
    policy.trainee.write(&run.output, &policy_tokenizer)?;
    Ok(RlOutcome::Finished {
        steps: session.state.step,
        last,
    })
}
