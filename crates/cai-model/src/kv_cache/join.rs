//! Joining [`KvCache`]s: a prefix's cache spread to a batch, a kept row joined back to the
//! prefix it continued, and the rows of several caches in one (continuous batching).

use std::borrow::Cow;

use candle_core::Tensor;

use super::KvCache;
use crate::Result;

impl KvCache {
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
