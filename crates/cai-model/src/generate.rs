//! Batched generation: left-padded prefill (after an optional shared prefix), then one decode
//! step per token for every unfinished row; rows stop on end-of-sequence, stop strings or
//! their token budget, and finished rows leave the batch.

use cai_core::{FinishReason, Sampling};
use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::decoder::{Batch, Decoder};
use crate::kv_cache::KvCache;
use crate::layers::Mode;
use crate::mask::positions_for;
use crate::prefix::Prefix;
use crate::sampling::{sample, token_logprob};
use crate::tokenizer::Tokenizer;
use crate::{ModelError, Result};

/// One tokenized generation job.
#[derive(Debug, Clone)]
pub struct GenJob {
    /// Prompt tokens after the prefix (may be empty when there is a prefix).
    pub prompt: Vec<u32>,
    /// Token budget.
    pub max_new_tokens: usize,
    /// Sampling settings.
    pub sampling: Sampling,
    /// Stop strings (need a tokenizer to be checked).
    pub stop: Vec<String>,
    /// Seed of this job's sampler.
    pub seed: u64,
}

/// The result of one [`GenJob`].
#[derive(Debug, Clone, PartialEq)]
pub struct GenOutput {
    /// Generated tokens (with the end-of-sequence token if one was sampled).
    pub tokens: Vec<u32>,
    /// Log-probability of each generated token at temperature 1.
    pub logprobs: Vec<f32>,
    /// Decoded text, cut before a stop string (empty without a tokenizer).
    pub text: String,
    /// Why the job ended.
    pub finish: FinishReason,
}

/// What ends a row besides its budget.
#[derive(Debug, Clone, Copy)]
pub struct Stopping<'a> {
    /// Tokenizer for stop strings and the returned text; `None` skips both (benchmarks).
    pub tokenizer: Option<&'a Tokenizer>,
    /// End-of-sequence ids; empty never stops on a token (benchmarks).
    pub eos: &'a [u32],
}

struct Row {
    job: usize,
    rng: ChaCha8Rng,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    next_pos: u32,
}

/// Generate for a batch of jobs that share `prefix` (if any). Shapes are handled inside: the
/// prompts are left-padded to one length and prefilled together.
pub fn generate_batch(
    decoder: &Decoder,
    prefix: Option<&Prefix>,
    jobs: &[GenJob],
    stopping: Stopping<'_>,
) -> Result<Vec<GenOutput>> {
    let b = jobs.len();
    if b == 0 {
        return Ok(Vec::new());
    }
    let p = prefix.map_or(0, Prefix::len);
    if prefix.is_none() && jobs.iter().any(|j| j.prompt.is_empty()) {
        return Err(ModelError::Request(
            "a prompt tokenized to nothing and there is no prefix to continue".into(),
        ));
    }
    let l = jobs.iter().map(|j| j.prompt.len()).max().unwrap_or(0);
    let budget = jobs.iter().map(|j| j.max_new_tokens).max().unwrap_or(0);
    let max_pos = decoder.config().max_position_embeddings;
    // Per job: padding takes cache slots but no positions, so a batch fits whenever each job does.
    if let Some(j) = jobs
        .iter()
        .find(|j| p + j.prompt.len() + j.max_new_tokens > max_pos)
    {
        return Err(ModelError::Request(format!(
            "prefix ({p}) + prompt ({}) + max_new_tokens ({}) tokens exceed the model's context of {max_pos}",
            j.prompt.len(),
            j.max_new_tokens
        )));
    }
    let capacity = p + l + budget;
    let mut cache = match prefix {
        Some(pre) => pre.cache.expand(b, capacity)?,
        None => KvCache::new(
            decoder.config(),
            b,
            capacity,
            decoder.dtype(),
            decoder.device(),
        )?,
    };
    // Prefill: left-pad every prompt to `l`.
    let mut ids = Vec::with_capacity(b * l);
    let mut valid = Vec::with_capacity(b);
    for j in jobs {
        let pad = l - j.prompt.len();
        ids.extend(std::iter::repeat_n(0u32, pad).chain(j.prompt.iter().copied()));
        valid.push((0..l).map(|i| i >= pad).collect::<Vec<bool>>());
    }
    let positions: Vec<Vec<u32>> = valid.iter().map(|v| positions_for(v, p as u32)).collect();
    let mut rows: Vec<Row> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| Row {
            job: i,
            rng: ChaCha8Rng::seed_from_u64(j.seed),
            tokens: Vec::new(),
            logprobs: Vec::new(),
            next_pos: (p + j.prompt.len()) as u32,
        })
        .collect();
    let mut logits: Vec<Vec<f32>> = if l > 0 {
        let ids = Tensor::from_vec(ids, (b, l), decoder.device())?;
        let batch = Batch { valid, positions };
        let hidden = decoder.forward_hidden(&ids, &batch, Some(&mut cache), Mode::Infer)?;
        decoder
            .logits(&hidden.narrow(1, l - 1, 1)?.squeeze(1)?)?
            .to_dtype(DType::F32)?
            .to_vec2()?
    } else {
        Vec::new()
    };
    for (i, j) in jobs.iter().enumerate() {
        if j.prompt.is_empty() {
            let pre = prefix.expect("checked above");
            if l == 0 {
                logits.push(pre.last_logprobs.clone());
            } else {
                logits[i] = pre.last_logprobs.clone();
            }
        }
    }
    let mut outputs: Vec<Option<GenOutput>> = vec![None; b];
    loop {
        let mut keep = Vec::with_capacity(rows.len());
        let mut next = Vec::with_capacity(rows.len());
        for (r, row) in rows.iter_mut().enumerate() {
            let job = &jobs[row.job];
            if job.max_new_tokens == 0 {
                outputs[row.job] = Some(finish(row, job, FinishReason::Length, stopping)?);
                continue;
            }
            let tok = sample(&logits[r], &job.sampling, &mut row.rng);
            row.logprobs.push(token_logprob(&logits[r], tok));
            row.tokens.push(tok);
            if let Some(reason) = finished(row, job, tok, stopping)? {
                outputs[row.job] = Some(finish(row, job, reason, stopping)?);
            } else {
                keep.push(r);
                next.push(tok);
            }
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() < rows.len() {
            cache = cache.select_rows(&keep)?;
            let mut kept = Vec::with_capacity(keep.len());
            for (r, row) in rows.into_iter().enumerate() {
                if keep.contains(&r) {
                    kept.push(row);
                }
            }
            rows = kept;
        }
        let n = rows.len();
        let ids = Tensor::from_vec(next, (n, 1), decoder.device())?;
        let batch = Batch {
            valid: vec![vec![true]; n],
            positions: rows.iter().map(|r| vec![r.next_pos]).collect(),
        };
        for row in &mut rows {
            row.next_pos += 1;
        }
        let hidden = decoder.forward_hidden(&ids, &batch, Some(&mut cache), Mode::Infer)?;
        logits = decoder
            .logits(&hidden.squeeze(1)?)?
            .to_dtype(DType::F32)?
            .to_vec2()?;
    }
    Ok(outputs
        .into_iter()
        .map(|o| o.expect("every row finishes"))
        .collect())
}

/// Whether `row` is done after sampling `tok`.
fn finished(
    row: &Row,
    job: &GenJob,
    tok: u32,
    stopping: Stopping<'_>,
) -> Result<Option<FinishReason>> {
    if stopping.eos.contains(&tok) {
        return Ok(Some(FinishReason::Eos));
    }
    if let (Some(tk), false) = (stopping.tokenizer, job.stop.is_empty()) {
        let text = tk.decode(&row.tokens)?;
        if job.stop.iter().any(|s| text.contains(s.as_str())) {
            return Ok(Some(FinishReason::Stop));
        }
    }
    Ok((row.tokens.len() >= job.max_new_tokens).then_some(FinishReason::Length))
}

fn finish(
    row: &Row,
    job: &GenJob,
    reason: FinishReason,
    stopping: Stopping<'_>,
) -> Result<GenOutput> {
    let text = match stopping.tokenizer {
        None => String::new(),
        Some(tk) => {
            let body = if reason == FinishReason::Eos {
                &row.tokens[..row.tokens.len() - 1]
            } else {
                &row.tokens[..]
            };
            let text = tk.decode(body)?;
            let cut = job.stop.iter().filter_map(|s| text.find(s.as_str())).min();
            match cut {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        }
    };
    Ok(GenOutput {
        tokens: row.tokens.clone(),
        logprobs: row.logprobs.clone(),
        text,
        finish: reason,
    })
}
