//! An external, batched, per-layer key/value cache with host-side row metadata (which cache
//! slots hold real tokens, and at which positions), so left padding, a shared prefix and
//! per-row positions all stay exact. On the CPU a prefix that every row shares is held once,
//! apart from the rows' own slots ([`LayerKeys`]).

use std::borrow::Cow;

use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::Result;

/// Keys and values of every layer for a batch of rows.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// Per layer: keys and values of the rows' own slots, each
    /// `[batch, kv_heads, capacity, head_dim]`: slot `j` at index `j`, or at `j - h` when the
    /// first `h` slots are held apart (`head`).
    layers: Vec<(Tensor, Tensor)>,
    /// The shared prefix's keys and values held once for every row (its first `h` slots), per
    /// layer `[1, kv_heads, h, head_dim]`; `prefix` then marks exactly these slots.
    head: Option<Vec<(Tensor, Tensor)>>,
    /// Slots filled so far (the same for every row; padding fills the gaps).
    len: usize,
    /// `[batch][len]`: slot holds a real token (false: padding).
    valid: Vec<Vec<bool>>,
    /// `[batch][len]`: the position id of the token in each slot.
    positions: Vec<Vec<u32>>,
    /// Every row's first slots hold the same prefix's keys and values (a prefix expanded to
    /// the batch, and rows that continue it), so attention may read them from row 0.
    prefix: Option<PrefixSlots>,
}

/// One layer's keys and values over a cache's filled slots, for attention: the rows' own
/// slots, and the shared prefix's when the cache holds it apart (then `k` and `v` hold the
/// slots after it).
/// Shapes: k, v `[batch, kv_heads, t - h, head_dim]`; head `[1, kv_heads, h, head_dim]` each.
#[derive(Debug, Clone)]
pub struct LayerKeys {
    /// Keys of the rows' own slots.
    pub k: Tensor,
    /// Values of the rows' own slots.
    pub v: Tensor,
    /// The shared prefix's keys and values, held once.
    pub head: Option<(Tensor, Tensor)>,
}

impl LayerKeys {
    /// Every slot of every row in one pair of tensors (the prefix copied into each row).
    /// Shapes: -> two `[batch, kv_heads, t, head_dim]`.
    pub fn dense(self) -> Result<(Tensor, Tensor)> {
        match self.head {
            None => Ok((self.k, self.v)),
            Some((hk, hv)) => Ok((with_head(&hk, &self.k)?, with_head(&hv, &self.v)?)),
        }
    }
}

/// `head [1, h, n, d]` before each row of `own [b, h, m, d]` -> `[b, h, n + m, d]`.
fn with_head(head: &Tensor, own: &Tensor) -> Result<Tensor> {
    let (b, h, _, d) = own.dims4()?;
    let n = head.dim(2)?;
    let head = head.broadcast_as((b, h, n, d))?;
    Ok(Tensor::cat(&[&head, own], 2)?.contiguous()?)
}

/// The leading slots of every row of a cache that hold one prefix's keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PrefixSlots {
    /// The prefix cache it was expanded from (unique in the process).
    id: u64,
    /// Its slots.
    len: usize,
}

impl PrefixSlots {
    /// A new prefix of `len` slots, with an id no other prefix has.
    fn fresh(len: usize) -> Option<Self> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        (len > 0).then(|| Self {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            len,
        })
    }

    /// The first `n` slots of it.
    fn first(self, n: usize) -> Option<Self> {
        (n > 0).then_some(Self {
            len: self.len.min(n),
            ..self
        })
    }
}

impl KvCache {
    /// An empty cache for `batch` rows with room for `capacity` tokens (it grows if needed).
    pub fn new(
        cfg: &ModelConfig,
        batch: usize,
        capacity: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let shape = (batch, cfg.num_kv_heads, capacity.max(1), cfg.head_dim);
        let layers = (0..cfg.num_layers)
            .map(|_| {
                Ok((
                    Tensor::zeros(shape, dtype, device)?,
                    Tensor::zeros(shape, dtype, device)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            layers,
            head: None,
            len: 0,
            valid: vec![Vec::new(); batch],
            positions: vec![Vec::new(); batch],
            prefix: None,
        })
    }

    /// Rows in the cache.
    pub fn batch(&self) -> usize {
        self.valid.len()
    }

    /// Filled slots.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots allocated (filled or not).
    pub(crate) fn capacity(&self) -> usize {
        self.apart() + self.layers.first().map(|(k, _)| k.dims()[2]).unwrap_or(0)
    }

    /// Leading slots held apart, once for every row (0 when each row holds all of its own).
    fn apart(&self) -> usize {
        self.head
            .as_ref()
            .and_then(|h| h.first())
            .map_or(0, |(k, _)| k.dims()[2])
    }

    /// Whether the prefix's slots are held apart, once for every row.
    pub fn holds_prefix_apart(&self) -> bool {
        self.head.is_some()
    }

    /// The device the keys and values live on.
    fn device(&self) -> Device {
        self.layers
            .first()
            .map(|(k, _)| k.device().clone())
            .unwrap_or(Device::Cpu)
    }

    /// Whether a prefix can be held apart: the CPU attention kernel reads it so (f32 caches
    /// on the CPU); elsewhere attention takes every row's copy.
    fn can_hold_apart(t: &Tensor) -> bool {
        t.device().is_cpu() && t.dtype() == DType::F32
    }

    /// This cache with every row holding all of its slots (a prefix held apart copied into
    /// each row).
    pub(crate) fn densified(&self) -> Result<Cow<'_, Self>> {
        let Some(head) = &self.head else {
            return Ok(Cow::Borrowed(self));
        };
        let layers = self
            .layers
            .iter()
            .zip(head)
            .map(|((k, v), (hk, hv))| Ok((with_head(hk, k)?, with_head(hv, v)?)))
            .collect::<Result<_>>()?;
        Ok(Cow::Owned(Self {
            layers,
            head: None,
            ..self.clone()
        }))
    }

    /// The leading slots whose keys and values are the same in every row (a shared prefix
    /// expanded to the batch; 0 when unknown).
    pub fn shared(&self) -> usize {
        self.prefix.map_or(0, |p| p.len)
    }

    /// This cache as the keys and values of a prefix of its own: batches expanded from it,
    /// and the rows that continue them, share its slots ([`KvCache::shared`]).
    /// [`crate::prefix::Prefix::compute`] marks its cache so.
    pub(crate) fn into_prefix(mut self) -> Self {
        self.prefix = PrefixSlots::fresh(self.len);
        self
    }

    /// Layer `i`'s keys and values over the filled slots.
    /// Shapes: -> two `[batch, kv_heads, len, head_dim]`.
    #[cfg(test)]
    pub(crate) fn layer(&self, i: usize) -> (Tensor, Tensor) {
        let dense = self.densified().expect("copy the prefix");
        let (k, v) = &dense.layers[i];
        (
            k.narrow(2, 0, self.len).expect("filled slots"),
            v.narrow(2, 0, self.len).expect("filled slots"),
        )
    }

    /// The same cache with no prefix marked shared (each row's own slots are read).
    #[cfg(test)]
    pub(crate) fn unshared(self) -> Self {
        let mut dense = self.densified().expect("copy the prefix").into_owned();
        dense.prefix = None;
        dense
    }

    /// Per-row slot validity, `[batch][len]`.
    pub fn valid(&self) -> &[Vec<bool>] {
        &self.valid
    }

    /// Per-row slot positions, `[batch][len]`.
    pub fn positions(&self) -> &[Vec<u32>] {
        &self.positions
    }

    /// The position the next real token of each row takes.
    pub fn next_positions(&self) -> Vec<u32> {
        self.positions
            .iter()
            .zip(&self.valid)
            .map(|(p, v)| {
                p.iter()
                    .zip(v)
                    .filter(|(_, &ok)| ok)
                    .map(|(&p, _)| p + 1)
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Record the metadata of `s` new slots per row, before the layers write them.
    pub(crate) fn push_meta(&mut self, valid: &[Vec<bool>], positions: &[Vec<u32>]) -> Result<()> {
        let s = valid.first().map_or(0, Vec::len);
        self.reserve(self.len + s)?;
        for (row, (v, p)) in valid.iter().zip(positions).enumerate() {
            self.valid[row].extend_from_slice(v);
            self.positions[row].extend_from_slice(p);
        }
        Ok(())
    }

    /// Write one layer's new keys/values at slots `len..len+s` and return all `len + s`.
    /// Shapes: k, v `[batch, kv_heads, s, head_dim]` -> [`LayerKeys`] over `len + s` slots.
    pub(crate) fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<LayerKeys> {
        let s = k.dim(2)?;
        let apart = self.apart();
        let (ck, cv) = &self.layers[layer];
        ck.slice_set(&k.contiguous()?, 2, self.len - apart)?;
        cv.slice_set(&v.contiguous()?, 2, self.len - apart)?;
        Ok(LayerKeys {
            k: ck.narrow(2, 0, self.len - apart + s)?,
            v: cv.narrow(2, 0, self.len - apart + s)?,
            head: self.head.as_ref().map(|h| h[layer].clone()),
        })
    }

    /// Mark the `s` slots written by the last forward pass as filled.
    pub(crate) fn commit(&mut self, s: usize) {
        self.len += s;
    }

    fn reserve(&mut self, needed: usize) -> Result<()> {
        let cap = self.capacity();
        if needed <= cap {
            return Ok(());
        }
        let new_cap = needed.max(cap * 2);
        let apart = self.apart();
        for (k, v) in &mut self.layers {
            *k = grow(k, new_cap - apart, self.len - apart)?;
            *v = grow(v, new_cap - apart, self.len - apart)?;
        }
        Ok(())
    }

    /// Whether every row's first slots hold all of `prefix`'s (a one-row prefix cache,
    /// [`crate::prefix::Prefix`]'s): this cache was expanded from it, or joined from rows that
    /// were.
    pub fn continues(&self, prefix: &KvCache) -> bool {
        match (self.prefix, prefix.prefix) {
            (Some(mine), Some(theirs)) => mine.id == theirs.id && mine.len >= prefix.len,
            _ => false,
        }
    }

    /// The first `n` filled slots (at most [`KvCache::len`]) as a cache that shares this one's
    /// memory; appending to it grows it into fresh memory first, so this cache never changes.
    /// Shapes: each layer `[batch, kv_heads, capacity, head_dim]` -> `[batch, kv_heads, n, head_dim]`.
    pub fn truncated(&self, n: usize) -> Result<Self> {
        let n = n.min(self.len);
        let apart = self.apart();
        let keep = |t: &Tensor, n: usize| t.narrow(2, 0, n);
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| {
                let own = n.saturating_sub(apart);
                Ok((keep(k, own)?, keep(v, own)?))
            })
            .collect::<Result<_>>()?;
        let head = self
            .head
            .as_ref()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| Ok((keep(k, n.min(apart))?, keep(v, n.min(apart))?)))
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?
            .filter(|_| n > 0);
        Ok(Self {
            layers,
            head,
            len: n,
            valid: self.valid.iter().map(|v| v[..n].to_vec()).collect(),
            positions: self.positions.iter().map(|p| p[..n].to_vec()).collect(),
            prefix: self.prefix.and_then(|p| p.first(n)),
        })
    }

    /// Bytes the keys and values hold (allocated slots, filled or not; a prefix held apart
    /// once).
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .chain(self.head.iter().flatten())
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }
}

fn grow(t: &Tensor, capacity: usize, len: usize) -> Result<Tensor> {
    let (b, h, _, d) = t.dims4()?;
    let fresh = Tensor::zeros((b, h, capacity, d), t.dtype(), t.device())?;
    if len > 0 {
        fresh.slice_set(&t.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
    }
    Ok(fresh)
}

mod join;
mod rows;
#[cfg(test)]
mod tests;

pub(crate) use rows::reorder;
