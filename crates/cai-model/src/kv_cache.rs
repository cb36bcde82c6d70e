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

    /// The keys and values of the given slots (increasing) of every row, one layer each:
    /// views where the slots are a run, gathered otherwise; slots of a prefix held apart are
    /// the same in every row.
    /// Shapes: -> per layer two `[batch, kv_heads, slots, head_dim]`.
    fn gather(&self, slots: &[usize]) -> Result<Vec<(Tensor, Tensor)>> {
        let apart = self.apart();
        let split = slots.partition_point(|&j| j < apart);
        let (in_head, own) = slots.split_at(split);
        let own: Vec<usize> = own.iter().map(|&j| j - apart).collect();
        let device = self.device();
        let pick = |t: &Tensor, idx: &[usize]| -> Result<Tensor> {
            let run = idx.windows(2).all(|w| w[1] == w[0] + 1);
            Ok(match idx.first() {
                None => t.narrow(2, 0, 0)?,
                Some(&first) if run => t.narrow(2, first, idx.len())?,
                Some(_) => {
                    let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
                    t.index_select(&Tensor::from_vec(ids, idx.len(), &device)?, 2)?
                }
            })
        };
        let batch = self.batch();
        (0..self.layers.len())
            .map(|l| {
                let (k, v) = &self.layers[l];
                let mut pair = Vec::with_capacity(2);
                for (i, t) in [k, v].into_iter().enumerate() {
                    let mine = pick(t, &own)?;
                    pair.push(match &self.head {
                        Some(head) if !in_head.is_empty() => {
                            let h = if i == 0 { &head[l].0 } else { &head[l].1 };
                            let (_, kv, _, d) = h.dims4()?;
                            let shared =
                                pick(h, in_head)?.broadcast_as((batch, kv, in_head.len(), d))?;
                            Tensor::cat(&[&shared, &mine], 2)?
                        }
                        _ => mine,
                    });
                }
                let v = pair.pop().expect("two");
                Ok((pair.pop().expect("two"), v))
            })
            .collect()
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

    /// Keep only the given rows, in that order (used to drop finished sequences).
    pub fn select_rows(&self, rows: &[usize]) -> Result<Self> {
        let device = self.device();
        let idx = Tensor::from_vec(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            rows.len(),
            &device,
        )?;
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| Ok((k.index_select(&idx, 0)?, v.index_select(&idx, 0)?)))
            .collect::<Result<_>>()?;
        Ok(Self {
            layers,
            head: self.head.clone(),
            len: self.len,
            valid: rows.iter().map(|&r| self.valid[r].clone()).collect(),
            positions: rows.iter().map(|&r| self.positions[r].clone()).collect(),
            prefix: self.prefix,
        })
    }

    /// Keep only the rows `keep` (increasing), moving as few as possible: kept rows below
    /// `keep.len()` stay where they are and the rows removed there take the kept rows from
    /// above, copied in place, so removing one row of 32 copies at most one row, not 31.
    /// Returns the new order: the old index of each row. The cache's memory must be its own
    /// (it is, for a running batch: joins, expansions and growth allocate afresh).
    pub fn retain_rows(&mut self, keep: &[usize]) -> Result<Vec<usize>> {
        let n = keep.len();
        let mut order: Vec<usize> = Vec::with_capacity(n);
        let mut movers = keep.iter().copied().filter(|&r| r >= n);
        let mut stays = keep.iter().copied().filter(|&r| r < n).peekable();
        for i in 0..n {
            if stays.peek() == Some(&i) {
                order.push(stays.next().expect("peeked"));
            } else {
                order.push(movers.next().expect("a kept row above fills each hole"));
            }
        }
        for (k, v) in &mut self.layers {
            for t in [&mut *k, &mut *v] {
                for (i, &from) in order.iter().enumerate().filter(|(i, f)| *i != **f) {
                    let row = t.narrow(0, from, 1)?.force_contiguous()?;
                    t.slice_set(&row, 0, i)?;
                }
                *t = t.narrow(0, 0, n)?;
            }
        }
        reorder(&mut self.valid, &order);
        reorder(&mut self.positions, &order);
        Ok(order)
    }

    /// A cache of `batch` rows that each start with this single-row cache's contents (a shared
    /// prefix computed once), with room for `capacity` slots. A marked prefix
    /// ([`KvCache::shared`]) is held once, apart from the rows, where attention can read it so
    /// (f32 on the CPU); otherwise it is copied into every row.
    pub fn expand(&self, batch: usize, capacity: usize) -> Result<Self> {
        assert_eq!(self.batch(), 1, "expand() takes a single-row prefix cache");
        let capacity = capacity.max(self.len);
        let hold_apart = self.head.is_none()
            && self.prefix.is_some_and(|p| p.len == self.len)
            && self
                .layers
                .first()
                .is_some_and(|(k, _)| Self::can_hold_apart(k));
        let (head, apart) = if hold_apart {
            let head = self
                .layers
                .iter()
                .map(|(k, v)| Ok((k.narrow(2, 0, self.len)?, v.narrow(2, 0, self.len)?)))
                .collect::<Result<Vec<_>>>()?;
            (Some(head), self.len)
        } else {
            (self.head.clone(), self.apart())
        };
        // The slots each row holds itself, copied from this row.
        let own = self.len - apart;
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| {
                let mut out = Vec::with_capacity(2);
                for t in [k, v] {
                    let (_, h, _, d) = t.dims4()?;
                    let fresh =
                        Tensor::zeros((batch, h, capacity - apart, d), t.dtype(), t.device())?;
                    if own > 0 {
                        let row = t.narrow(2, 0, own)?.broadcast_as((batch, h, own, d))?;
                        fresh.slice_set(&row.contiguous()?, 2, 0)?;
                    }
                    out.push(fresh);
                }
                let v = out.pop().expect("two");
                Ok((out.pop().expect("two"), v))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            layers,
            head,
            len: self.len,
            valid: vec![self.valid[0].clone(); batch],
            positions: vec![self.positions[0].clone(); batch],
            prefix: self.prefix,
        })
    }

    /// Row `row`'s real tokens as a one-row cache with no padding and no spare room: its
    /// valid slots in order, which must hold positions `0, 1, …` (a row that started at
    /// position 0, as every generation row does); `None` otherwise. What a finished row
    /// leaves for [`crate::prefix_cache::PrefixCache`].
    /// Shapes: each layer `[batch, kv_heads, capacity, head_dim]` -> `[1, kv_heads, n, head_dim]`.
    pub fn compact_row(&self, row: usize) -> Result<Option<Self>> {
        // A prefix's slots are valid and first, so they stay first.
        Ok(self.compact_row_from(row, 0)?.map(|c| Self {
            prefix: self.prefix,
            ..c
        }))
    }

    /// [`KvCache::compact_row`] from position `from` on: the row's valid slots that hold
    /// positions `from, from + 1, …`, in order (`None` when there are none or they are not in
    /// order). With `from` the length of the prefix the row continues
    /// ([`KvCache::continues`]), what the row adds to it.
    /// Shapes: each layer -> `[1, kv_heads, n, head_dim]`.
    pub fn compact_row_from(&self, row: usize, from: usize) -> Result<Option<Self>> {
        let slots: Vec<u32> = (0..self.len)
            .filter(|&i| self.valid[row][i] && self.positions[row][i] as usize >= from)
            .map(|i| i as u32)
            .collect();
        let in_order = slots
            .iter()
            .zip(from as u32..)
            .all(|(&i, p)| self.positions[row][i as usize] == p);
        if slots.is_empty() || !in_order {
            return Ok(None);
        }
        let n = slots.len();
        let slots: Vec<usize> = slots.into_iter().map(|i| i as usize).collect();
        // Copied, never a view: the batch's memory is written in place ([`KvCache::retain_rows`]).
        let layers = self
            .row_view(row)?
            .gather(&slots)?
            .into_iter()
            .map(|(k, v)| Ok((k.force_contiguous()?, v.force_contiguous()?)))
            .collect::<Result<_>>()?;
        Ok(Some(Self {
            layers,
            head: None,
            len: n,
            valid: vec![vec![true; n]],
            positions: vec![(from as u32..(from + n) as u32).collect()],
            prefix: None,
        }))
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

    /// Row `row` as a one-row cache that shares this one's memory.
    fn row_view(&self, row: usize) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| Ok((k.narrow(0, row, 1)?, v.narrow(0, row, 1)?)))
            .collect::<Result<_>>()?;
        Ok(Self {
            layers,
            head: self.head.clone(),
            len: self.len,
            valid: vec![self.valid[row].clone()],
            positions: vec![self.positions[row].clone()],
            prefix: self.prefix,
        })
    }

    /// A one-row prefix cache (`head`, [`KvCache::continues`]) followed by what a row added to
    /// it (`tail`, [`KvCache::compact_row_from`]) as one one-row cache, still marked as
    /// continuing the prefix. Where the prefix can be held apart (see [`KvCache::expand`]),
    /// both are taken by reference and nothing is copied; appending to the result grows it
    /// into fresh memory first, so neither ever changes.
    /// Shapes: each layer `[1, kv_heads, h, head_dim]` + `[1, kv_heads, t, head_dim]` ->
    /// `[1, kv_heads, h + t, head_dim]`.
    pub fn join_slots(head: &KvCache, tail: &KvCache) -> Result<Self> {
        assert!(head.batch() == 1 && tail.batch() == 1, "one-row caches");
        let dense = head.densified()?;
        let hold_apart = dense.prefix.is_some_and(|p| p.len == head.len)
            && dense
                .layers
                .first()
                .is_some_and(|(k, _)| Self::can_hold_apart(k));
        let narrow = |c: &KvCache| -> Result<Vec<(Tensor, Tensor)>> {
            c.layers
                .iter()
                .map(|(k, v)| Ok((k.narrow(2, 0, c.len)?, v.narrow(2, 0, c.len)?)))
                .collect()
        };
        let tail_layers = tail.densified()?;
        let (layers, kept_head) = if hold_apart {
            (narrow(&tail_layers)?, Some(narrow(&dense)?))
        } else {
            let layers = narrow(&dense)?
                .into_iter()
                .zip(narrow(&tail_layers)?)
                .map(|((hk, hv), (tk, tv))| {
                    Ok((Tensor::cat(&[hk, tk], 2)?, Tensor::cat(&[hv, tv], 2)?))
                })
                .collect::<Result<_>>()?;
            (layers, None)
        };
        let cat = |a: &[Vec<bool>], b: &[Vec<bool>]| vec![[&a[0][..], &b[0][..]].concat()];
        Ok(Self {
            layers,
            head: kept_head,
            len: head.len + tail.len,
            valid: cat(&head.valid, &tail.valid),
            positions: vec![[&head.positions[0][..], &tail.positions[0][..]].concat()],
            prefix: head.prefix,
        })
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

    /// The rows of several caches in one cache, in order: each part's slots are right-aligned
    /// (left-padded with invalid slots) to the longest part, after dropping the leading slots
    /// that no row of that part uses; `spare` empty slots follow. Continuous batching joins
    /// newly prefilled rows to a running batch this way, and the trimming keeps the slot count
    /// from growing with the rows that have left. Parts that all start with the same prefix
    /// ([`KvCache::shared`]) are left-aligned instead, keeping every slot some row of the part
    /// uses (invalid slots after each row's own), so the prefix stays in the same slots of
    /// every row and stays shared; a part that holds it apart gives the result its one copy,
    /// and the other parts' copies are dropped.
    pub fn concat_rows(parts: &[&KvCache], spare: usize) -> Result<Self> {
        let prefix = parts.first().and_then(|c| c.prefix).and_then(|first| {
            let ids_agree = parts
                .iter()
                .all(|c| c.prefix.is_some_and(|p| p.id == first.id));
            let len = parts.iter().filter_map(|c| c.prefix).map(|p| p.len).min();
            ids_agree.then(|| first.first(len.unwrap_or(0))).flatten()
        });
        let left_aligned = prefix.is_some();
        // One copy of the prefix, from a part that holds it apart (at most the shared slots).
        let head: Option<Vec<(Tensor, Tensor)>> = match prefix {
            Some(p) => parts
                .iter()
                .find_map(|c| c.head.as_ref())
                .map(|h| {
                    h.iter()
                        .map(|(k, v)| Ok((k.narrow(2, 0, p.len)?, v.narrow(2, 0, p.len)?)))
                        .collect::<Result<Vec<_>>>()
                })
                .transpose()?,
            None => None,
        };
        let apart = head.as_ref().map_or(0, |_| prefix.map_or(0, |p| p.len));
        // Parts of different prefixes keep every slot in every row.
        let parts: Vec<Cow<'_, KvCache>> = parts
            .iter()
            .map(|c| {
                if left_aligned {
                    Ok(Cow::Borrowed(*c))
                } else {
                    c.densified()
                }
            })
            .collect::<Result<_>>()?;
        // The slots each part keeps, in order.
        let kept: Vec<Vec<usize>> = parts
            .iter()
            .map(|c| {
                let used = |i: &usize| c.valid.iter().any(|v| v[*i]);
                if left_aligned {
                    (0..c.len).filter(used).collect()
                } else {
                    let lead = (0..c.len).find(used).unwrap_or(c.len);
                    (lead..c.len).collect()
                }
            })
            .collect();
        let width = kept.iter().map(Vec::len).max().unwrap_or(0);
        // Each part's own slots past the prefix held apart (every row holds the prefix's).
        let own: Vec<Vec<(Tensor, Tensor)>> = parts
            .iter()
            .zip(&kept)
            .map(|(c, slots)| {
                debug_assert!(slots.iter().take(apart).copied().eq(0..apart));
                c.gather(&slots[apart.min(slots.len())..])
            })
            .collect::<Result<_>>()?;
        let num_layers = parts.first().map_or(0, |c| c.layers.len());
        let layers = (0..num_layers)
            .map(|layer| {
                let mut kv = [Vec::new(), Vec::new()];
                for (part, slots) in own.iter().zip(&kept) {
                    let used = slots.len();
                    let (before, after) = if left_aligned {
                        (0, width - used + spare.max(1))
                    } else {
                        (width - used, spare.max(1))
                    };
                    let (k, v) = &part[layer];
                    for (out, t) in kv.iter_mut().zip([k, v]) {
                        out.push(t.pad_with_zeros(2, before, after)?);
                    }
                }
                let [k, v] = kv;
                Ok((Tensor::cat(&k, 0)?, Tensor::cat(&v, 0)?))
            })
            .collect::<Result<_>>()?;
        let mut valid = Vec::new();
        let mut positions = Vec::new();
        for (c, slots) in parts.iter().zip(&kept) {
            let pad = width - slots.len();
            let (before, after) = if left_aligned { (0, pad) } else { (pad, 0) };
            for (v, p) in c.valid.iter().zip(&c.positions) {
                valid.push(
                    std::iter::repeat_n(false, before)
                        .chain(slots.iter().map(|&i| v[i]))
                        .chain(std::iter::repeat_n(false, after))
                        .collect(),
                );
                positions.push(
                    std::iter::repeat_n(0, before)
                        .chain(slots.iter().map(|&i| p[i]))
                        .chain(std::iter::repeat_n(0, after))
                        .collect(),
                );
            }
        }
        Ok(Self {
            layers,
            head,
            len: width,
            valid,
            positions,
            prefix,
        })
    }
}

/// `items` as `order` lists them (old indices, each at most once; the rest are dropped).
pub(crate) fn reorder<T>(items: &mut Vec<T>, order: &[usize]) {
    let mut old: Vec<Option<T>> = items.drain(..).map(Some).collect();
    items.extend(
        order
            .iter()
            .map(|&i| old[i].take().expect("each item once")),
    );
}

fn grow(t: &Tensor, capacity: usize, len: usize) -> Result<Tensor> {
    let (b, h, _, d) = t.dims4()?;
    let fresh = Tensor::zeros((b, h, capacity, d), t.dtype(), t.device())?;
    if len > 0 {
        fresh.slice_set(&t.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
    }
    Ok(fresh)
}

#[cfg(test)]
mod tests;
