//! Prefilling the rows that join a [`super::DecodeBatch`]: afresh after a shared prefix, or
//! from the kept keys and values of earlier rows their tokens continue
//! ([`crate::prefix_cache::PrefixCache`]).

use candle_core::{DType, Tensor};

use crate::decoder::{Batch, Decoder};
use crate::generate::GenJob;
use crate::kv_cache::KvCache;
use crate::layers::Mode;
use crate::mask::positions_for;
use crate::prefix::Prefix;
use crate::prefix_cache::Hit;
use crate::Result;

/// A job about to join: its id, the job, its tokens from the first (prefix and prompt, kept
/// only with a [`crate::prefix_cache::PrefixCache`]) and the kept row it continues.
pub(super) type Joining = (u64, GenJob, Vec<u32>, Option<Hit>);

/// Prefill jobs after `prefix` (if any) in one left-padded pass: their cache (room for `room`
/// more tokens) and each row's next-token logits.
/// Shapes: -> cache `[jobs, kv_heads, prefix + longest prompt + room, head_dim]` per layer,
/// logits `[jobs][vocab]`.
pub(super) fn prefill_fresh(
    decoder: &Decoder,
    prefix: Option<&Prefix>,
    jobs: &[Joining],
    room: usize,
) -> Result<(KvCache, Vec<Vec<f32>>)> {
    let b = jobs.len();
    let p = prefix.map_or(0, Prefix::len);
    let l = jobs.iter().map(|j| j.1.prompt.len()).max().unwrap_or(0);
    let mut cache = match prefix {
        Some(pre) => pre.cache.expand(b, p + l + room)?,
        None => KvCache::new(
            decoder.config(),
            b,
            p + l + room,
            decoder.dtype(),
            decoder.device(),
        )?,
    };
    let mut logits: Vec<Vec<f32>> = if l > 0 {
        // Left-pad every prompt to `l`.
        let mut ids = Vec::with_capacity(b * l);
        let mut valid = Vec::with_capacity(b);
        for (_, j, _, _) in jobs {
            let pad = l - j.prompt.len();
            ids.extend(std::iter::repeat_n(0u32, pad).chain(j.prompt.iter().copied()));
            valid.push((0..l).map(|i| i >= pad).collect::<Vec<bool>>());
        }
        let positions = valid.iter().map(|v| positions_for(v, p as u32)).collect();
        let ids = Tensor::from_vec(ids, (b, l), decoder.device())?;
        let batch = Batch { valid, positions };
        let hidden = decoder.forward_hidden(&ids, &batch, Some(&mut cache), Mode::Infer)?;
        decoder
            .logits(&hidden.narrow(1, l - 1, 1)?.squeeze(1)?)?
            .to_dtype(DType::F32)?
            .to_vec2()?
    } else {
        vec![Vec::new(); b]
    };
    for (row_logits, (_, j, _, _)) in logits.iter_mut().zip(jobs) {
        if j.prompt.is_empty() {
            *row_logits = prefix.expect("checked by add").last_logprobs.clone();
        }
    }
    Ok((cache, logits))
}

/// Prefill jobs that continue kept rows: the kept slots of each, right-aligned (left padding)
/// into one cache, then the rest of each job's tokens (at least one) in one left-padded pass
/// at the positions that follow.
/// Shapes: -> cache `[jobs, kv_heads, longest kept + longest rest + room, head_dim]` per layer,
/// logits `[jobs][vocab]`.
pub(super) fn prefill_reused(
    decoder: &Decoder,
    jobs: &[Joining],
    room: usize,
) -> Result<(KvCache, Vec<Vec<f32>>)> {
    let b = jobs.len();
    let mut kept = Vec::with_capacity(b);
    let mut rests = Vec::with_capacity(b);
    for (_, _, context, hit) in jobs {
        let hit = hit.as_ref().expect("only jobs with a hit");
        kept.push(hit.cache()?);
        rests.push((hit.len(), &context[hit.len()..]));
    }
    let l = rests.iter().map(|(_, r)| r.len()).max().unwrap_or(0);
    let parts: Vec<&KvCache> = kept.iter().collect();
    let mut cache = KvCache::concat_rows(&parts, l + room)?;
    drop(kept);
    let mut ids = Vec::with_capacity(b * l);
    let mut valid = Vec::with_capacity(b);
    let mut positions = Vec::with_capacity(b);
    for (start, rest) in rests {
        let pad = l - rest.len();
        ids.extend(std::iter::repeat_n(0u32, pad).chain(rest.iter().copied()));
        let v: Vec<bool> = (0..l).map(|i| i >= pad).collect();
        positions.push(positions_for(&v, start as u32));
        valid.push(v);
    }
    let ids = Tensor::from_vec(ids, (b, l), decoder.device())?;
    let batch = Batch { valid, positions };
    let hidden = decoder.forward_hidden(&ids, &batch, Some(&mut cache), Mode::Infer)?;
    let logits = decoder
        .logits(&hidden.narrow(1, l - 1, 1)?.squeeze(1)?)?
        .to_dtype(DType::F32)?
        .to_vec2()?;
    Ok((cache, logits))
}
