//! Batched scoring: log p(continuation | prefix, prompt) summed and per token, with optional
//! top-k alternatives. Rows are right-padded (causal attention never looks ahead, so no mask
//! is needed for the padding), and logits are computed only where a continuation token is
//! predicted.

use candle_core::{DType, Tensor, D};
use rayon::prelude::*;

use crate::decoder::{Batch, Decoder};
use crate::layers::Mode;
use crate::prefix::Prefix;
use crate::sampling::log_sum_exp;
use crate::{ModelError, Result};

/// One tokenized scoring job.
#[derive(Debug, Clone)]
pub struct ScoreJob {
    /// Conditioning tokens after the prefix.
    pub prompt: Vec<u32>,
    /// Tokens to score.
    pub continuation: Vec<u32>,
    /// How many alternatives to return per position (0: none).
    pub top_k: usize,
}

/// The result of one [`ScoreJob`].
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreOutput {
    /// log p of each continuation token.
    pub logprobs: Vec<f32>,
    /// Per position, the `top_k` most likely tokens and their log-probabilities.
    pub top: Vec<Vec<(u32, f32)>>,
}

/// Score a batch of jobs that share `prefix` (if any).
pub fn score_batch(
    decoder: &Decoder,
    prefix: Option<&Prefix>,
    jobs: &[ScoreJob],
) -> Result<Vec<ScoreOutput>> {
    let b = jobs.len();
    let mut out: Vec<ScoreOutput> = jobs
        .iter()
        .map(|_| ScoreOutput {
            logprobs: Vec::new(),
            top: Vec::new(),
        })
        .collect();
    let p = prefix.map_or(0, Prefix::len);
    let lens: Vec<usize> = jobs
        .iter()
        .map(|j| j.prompt.len() + j.continuation.len())
        .collect();
    let l = lens.iter().copied().max().unwrap_or(0);
    if b == 0 || l == 0 {
        return Ok(out);
    }
    if p + l > decoder.config().max_position_embeddings {
        return Err(ModelError::Request(format!(
            "prefix ({p}) + prompt + continuation ({l}) tokens exceed the model's context of {}",
            decoder.config().max_position_embeddings
        )));
    }
    // Which suffix slot predicts each continuation token; the first token of a continuation
    // with an empty prompt is predicted by the prefix itself.
    let mut slots: Vec<u32> = Vec::new();
    let mut targets: Vec<u32> = Vec::new();
    let mut owners: Vec<usize> = Vec::new();
    let mut from_prefix: Vec<(usize, u32)> = Vec::new();
    for (r, j) in jobs.iter().enumerate() {
        for (k, &tok) in j.continuation.iter().enumerate() {
            let at = j.prompt.len() + k;
            if at == 0 {
                if prefix.is_none() {
                    return Err(ModelError::Request(
                        "cannot score the first token of a continuation with an empty prompt and no prefix".into(),
                    ));
                }
                from_prefix.push((r, tok));
            } else {
                slots.push((r * l + at - 1) as u32);
                targets.push(tok);
                owners.push(r);
            }
        }
    }
    for &(r, tok) in &from_prefix {
        let pre = prefix.expect("checked above");
        out[r].logprobs.push(pre.last_logprobs[tok as usize]);
        if jobs[r].top_k > 0 {
            out[r].top.push(top_k(&pre.last_logprobs, jobs[r].top_k));
        }
    }
    if slots.is_empty() {
        return Ok(out);
    }
    let mut ids = Vec::with_capacity(b * l);
    let mut valid = Vec::with_capacity(b);
    for (j, &n) in jobs.iter().zip(&lens) {
        ids.extend(
            j.prompt
                .iter()
                .chain(&j.continuation)
                .copied()
                .chain(std::iter::repeat_n(0, l - n)),
        );
        valid.push((0..l).map(|i| i < n).collect::<Vec<bool>>());
    }
    let device = decoder.device();
    let ids = Tensor::from_vec(ids, (b, l), device)?;
    let batch = Batch::from_valid(valid);
    let batch = Batch {
        positions: batch
            .positions
            .iter()
            .map(|r| r.iter().map(|&x| x + p as u32).collect())
            .collect(),
        ..batch
    };
    let hidden = match prefix {
        Some(pre) => {
            let mut cache = pre.cache.expand(b, p + l)?;
            decoder.forward_hidden(&ids, &batch, Some(&mut cache), Mode::Infer)?
        }
        None => decoder.forward_hidden(&ids, &batch, None, Mode::Infer)?,
    };
    let h = hidden.dim(D::Minus1)?;
    let n = slots.len();
    let picked = hidden
        .reshape((b * l, h))?
        .index_select(&Tensor::from_vec(slots, n, device)?, 0)?;
    // The output layer runs over chunks of rows so that the [rows, vocab] logits stay a few
    // MiB instead of the whole batch's (32 × 256 × 4096 floats would be 134 MiB).
    let vocab = decoder.config().vocab_size;
    let chunk = LOGIT_ROWS.min((LOGIT_BYTES / (4 * vocab.max(1))).max(16));
    let mut next = 0;
    while next < n {
        let rows = chunk.min(n - next);
        let logits = decoder
            .logits(&picked.narrow(0, next, rows)?)?
            .to_dtype(DType::F32)?
            .contiguous()?;
        // Read the CPU logits in place (copying them out was ~4 % of a SmolLM2 scoring pass);
        // other devices copy them to the host first.
        let in_place = logits.device().is_cpu() && logits.is_contiguous();
        let copied: Vec<f32> = if in_place {
            Vec::new()
        } else {
            logits.flatten_all()?.to_vec1()?
        };
        let (storage, layout) = logits.storage_and_layout();
        let flat: &[f32] = match &*storage {
            candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)) if in_place => {
                &v[layout.start_offset()..layout.start_offset() + logits.elem_count()]
            }
            _ => &copied,
        };
        // Each row's log-sum-exp on its own, so rows spread over the threads (over 49,152
        // tokens they took a tenth of a SmolLM2 scoring pass on one core).
        let lses: Vec<f32> = flat.par_chunks_exact(vocab).map(log_sum_exp).collect();
        for (row, (values, &lse)) in flat.chunks_exact(vocab).zip(&lses).enumerate() {
            let i = next + row;
            let r = owners[i];
            out[r].logprobs.push(values[targets[i] as usize] - lse);
            if jobs[r].top_k > 0 {
                let logprobs: Vec<f32> = values.iter().map(|v| v - lse).collect();
                out[r].top.push(top_k(&logprobs, jobs[r].top_k));
            }
        }
        next += rows;
    }
    Ok(out)
}

/// Rows of logits materialised at once when scoring …
const LOGIT_ROWS: usize = 512;
/// … and at most this many bytes of them (170 rows of a 49,152-token vocabulary).
const LOGIT_BYTES: usize = 32 << 20;

/// The `k` largest entries of a log-probability row, best first.
pub fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let k = k.min(row.len());
    if k == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(k - 1, |&a, &b| row[b as usize].total_cmp(&row[a as usize]));
    idx.truncate(k);
    idx.sort_unstable_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]));
    idx.into_iter().map(|i| (i, row[i as usize])).collect()
}
