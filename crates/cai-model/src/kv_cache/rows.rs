//! Rows in and out of a [`KvCache`]: selecting rows, retaining them in place as others leave,
//! one row kept compact for reuse, and the slot gathers these share (a prefix held apart
//! read once for every row).

use candle_core::Tensor;

use super::KvCache;
use crate::Result;

impl KvCache {
    /// The keys and values of the given slots (increasing) of every row, one layer each:
    /// views where the slots are a run, gathered otherwise; slots of a prefix held apart are
    /// the same in every row.
    /// Shapes: -> per layer two `[batch, kv_heads, slots, head_dim]`.
    pub(super) fn gather(&self, slots: &[usize]) -> Result<Vec<(Tensor, Tensor)>> {
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
