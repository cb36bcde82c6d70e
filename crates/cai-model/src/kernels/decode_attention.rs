//! A CPU causal-attention kernel: for each (row, head, query) it takes dot products with the
//! keys the query may see, a masked softmax and a weighted sum of the values, reading the KV
//! cache in place. A decode step (a few queries) runs query by query with vector dot products
//! (on AVX-512, the heads of a key-value group together: `grouped`); a prefill or training
//! pass runs blocks of 64 queries as two GEMMs each. Compared with candle ops it launches one op instead of a dozen, skips the
//! keys causality hides, and never materialises the `[b, heads, s, t]` score tensor.
//! [`crate::decoder`] uses it for every f32 forward pass on the CPU, inference and training
//! alike: its backward is [`crate::kernels::attention_backward`].

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use crate::kernels::attention_backward::{attention_backward, AttnDims};
use crate::kernels::dense::{self, Mat};
use crate::kernels::vector::{self, Isa, Kernels, Scalar};
#[cfg(target_arch = "x86_64")]
use crate::kernels::vector::{Avx2, Avx512};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod cascade;
#[cfg(target_arch = "x86_64")]
mod grouped;

/// Below this many multiply-adds the work stays on one thread.
const PARALLEL_WORK: usize = 1 << 16;

/// `softmax(q kᵀ · scale + mask) v` with grouped-query heads, causal: the `s` queries are the
/// last `s` of the `t` key slots, and query `i` never sees slots after `t - s + i`.
///
/// Shapes: q `[b, heads, s, d]`, k and v `[b, kv_heads, t, d]` (any strides with a unit last
/// stride, e.g. a view of the KV cache), mask `[b, s, t]` additive -> `[b, heads, s, d]`.
pub struct DecodeAttention {
    /// `1 / sqrt(d)`.
    pub scale: f32,
    /// Additive mask, row-major `[b, s, t]`, or `None` when every key is visible.
    pub mask: Option<std::sync::Arc<Vec<f32>>>,
    /// The first `shared` key and value slots are the same in every row (a prefix expanded
    /// to the batch, [`crate::kv_cache::KvCache::shared`]): the decode kernel reads them from
    /// row 0 for every row, so they come from memory once per step instead of once per row.
    /// 0 reads each row's own.
    pub shared: usize,
    /// The first `shared` slots held apart, once for every row
    /// ([`crate::kv_cache::LayerKeys`]): keys and values `[1, kv_heads, shared, d]`, and then
    /// the op's `k` and `v` hold only the slots after them (inference only: no backward).
    pub head: Option<(Tensor, Tensor)>,
}

struct View<'a> {
    data: &'a [f32],
    offset: usize,
    strides: [usize; 4],
}

impl View<'_> {
    #[inline]
    fn row(&self, b: usize, h: usize, t: usize, d: usize) -> &[f32] {
        let start = self.offset + b * self.strides[0] + h * self.strides[1] + t * self.strides[2];
        &self.data[start..start + d]
    }
}

/// The key (or value) slots of a batch: each row's own, and those of a prefix every row
/// shares.
struct Keys<'a> {
    /// The rows' slots: slot `j` at `j`, or at `j - shared` when `head` holds the prefix.
    own: View<'a>,
    /// The prefix held apart (its row 0), or `None`.
    head: Option<View<'a>>,
    /// Slots before this are the same in every row: read from `head`, or from row 0 of `own`.
    shared: usize,
}

impl Keys<'_> {
    /// Where slot `j` of row `b`, kv head `h` lives: the view, its row and its slot.
    #[inline(always)]
    fn locate(&self, b: usize, j: usize) -> (&View<'_>, usize, usize) {
        match &self.head {
            Some(head) if j < self.shared => (head, 0, j),
            Some(_) => (&self.own, b, j - self.shared),
            None if j < self.shared => (&self.own, 0, j),
            None => (&self.own, b, j),
        }
    }

    /// Slot `j` of row `b`, kv head `h`: `[d]`.
    #[inline(always)]
    fn slot(&self, b: usize, h: usize, j: usize, d: usize) -> &[f32] {
        let (x, row, at) = self.locate(b, j);
        x.row(row, h, at, d)
    }

    /// Runs of consecutive slots from `0..t` of row `b`, kv head `h`, each as
    /// `(first slot, count, data from the first slot on, slot stride)`.
    fn runs(&self, b: usize, h: usize, t: usize) -> Vec<(usize, usize, &[f32], usize)> {
        let start = |x: &View<'_>, row: usize, j: usize| {
            x.offset + row * x.strides[0] + h * x.strides[1] + j * x.strides[2]
        };
        match &self.head {
            Some(head) => {
                let n = self.shared.min(t);
                let mut out = vec![(0, n, &head.data[start(head, 0, 0)..], head.strides[2])];
                if t > n {
                    let own = &self.own;
                    out.push((n, t - n, &own.data[start(own, b, 0)..], own.strides[2]));
                }
                out
            }
            None => vec![(
                0,
                t,
                &self.own.data[start(&self.own, b, 0)..],
                self.own.strides[2],
            )],
        }
    }
}

fn view<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<View<'a>> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("decode-attention: {what} must be f32");
    };
    let st = l.stride();
    if st.len() != 4 || st[3] != 1 {
        candle_core::bail!("decode-attention: {what} must be rank 4 with a unit last stride");
    }
    Ok(View {
        data,
        offset: l.start_offset(),
        strides: [st[0], st[1], st[2], st[3]],
    })
}

impl CustomOp3 for DecodeAttention {
    fn name(&self) -> &'static str {
        "decode-attention"
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, nh, s, d) = q.dims4()?;
        let (_, nkv, t, _) = k.dims4()?;
        let flat = |x: &Tensor| -> candle_core::Result<Vec<f32>> { x.flatten_all()?.to_vec1() };
        let dims = AttnDims {
            b,
            nh,
            nkv,
            s,
            t,
            d,
        };
        let mask = self.mask.as_deref().map(Vec::as_slice);
        let (dq, dk, dv) = attention_backward(
            &flat(q)?,
            &flat(k)?,
            &flat(v)?,
            &flat(res)?,
            &flat(grad)?,
            mask,
            self.scale,
            dims,
        );
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), q.device())?),
            Some(Tensor::from_vec(dk, k.shape(), k.device())?),
            Some(Tensor::from_vec(dv, v.shape(), v.device())?),
        ))
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, nh, s, d) = l1.shape().dims4()?;
        let (_, nkv, own_t, _) = l2.shape().dims4()?;
        let q = view(s1, l1, "q")?;
        // The prefix held apart, read in place.
        let guards = self
            .head
            .as_ref()
            .map(|(hk, hv)| (hk.storage_and_layout(), hv.storage_and_layout()));
        let head = match &guards {
            Some(((ks, kl), (vs, vl))) => {
                let (candle_core::Storage::Cpu(ks), candle_core::Storage::Cpu(vs)) = (&**ks, &**vs)
                else {
                    candle_core::bail!("decode-attention: the shared prefix is not on the CPU");
                };
                if kl.shape().dims4()?.2 != self.shared {
                    candle_core::bail!(
                        "decode-attention: the prefix held apart is not `shared` slots"
                    );
                }
                Some((view(ks, kl, "head k")?, view(vs, vl, "head v")?))
            }
            None => None,
        };
        let t = own_t + head.as_ref().map_or(0, |_| self.shared);
        let (hk, hv) = head.map_or((None, None), |(k, v)| (Some(k), Some(v)));
        let k = Keys {
            own: view(s2, l2, "k")?,
            head: hk,
            shared: self.shared.min(t),
        };
        let v = Keys {
            own: view(s3, l3, "v")?,
            head: hv,
            shared: self.shared.min(t),
        };
        if s > t {
            candle_core::bail!("decode-attention: {s} queries but only {t} key slots");
        }
        let rep = nh / nkv;
        let mut out = vec![0f32; b * nh * s * d];
        let shape = Dims { rep, s, t, d };
        let mask = self.mask.as_deref().map(Vec::as_slice);
        let parallel = b * nh * s * t * d >= PARALLEL_WORK && rayon::current_num_threads() > 1;
        #[cfg(target_arch = "x86_64")]
        if s < BLOCKED_QUERIES && d <= 16 * grouped::MAX_VECTORS && Isa::detect() == Isa::Avx512 {
            if cascade::applies(&k, shape, b) {
                // SAFETY: AVX-512F is available, d is within the kernel's limit, and the
                // prefix is held apart and seen whole by every query.
                unsafe {
                    cascade::run(
                        &q,
                        &k,
                        &v,
                        mask,
                        self.scale,
                        shape,
                        (b, nkv),
                        &mut out,
                        parallel,
                    )
                };
                return Ok((CpuStorage::F32(out), Shape::from((b, nh, s, d))));
            }
            // A decode step: the heads of a key-value group together.
            let work = |bg: usize, chunk: &mut [f32]| {
                // SAFETY: AVX-512F is available, d is within the kernel's limit, and the
                // views hold every row, head and slot of the shapes checked above.
                unsafe {
                    grouped::group(
                        &q,
                        &k,
                        &v,
                        mask,
                        self.scale,
                        shape,
                        (bg / nkv, bg % nkv),
                        None,
                        chunk,
                    )
                }
            };
            each_chunk(&mut out, rep * s * d, parallel, work);
            return Ok((CpuStorage::F32(out), Shape::from((b, nh, s, d))));
        }
        let work = |bh: usize, chunk: &mut [f32]| {
            let at = Head {
                row: bh / nh,
                head: bh % nh,
            };
            if s >= BLOCKED_QUERIES {
                return head_blocked(&q, &k, &v, mask, self.scale, shape, at, chunk);
            }
            match Isa::detect() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX-512F is available.
                Isa::Avx512 => unsafe {
                    head_avx512(&q, &k, &v, mask, self.scale, shape, at, chunk)
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2 and FMA are available.
                Isa::Avx2 => unsafe { head_avx2(&q, &k, &v, mask, self.scale, shape, at, chunk) },
                _ => head_generic::<Scalar>(&q, &k, &v, mask, self.scale, shape, at, chunk),
            }
        };
        each_chunk(&mut out, s * d, parallel, work);
        Ok((CpuStorage::F32(out), Shape::from((b, nh, s, d))))
    }
}

/// `f(i, chunk)` for each `size`-long chunk `i` of `out`, on rayon's threads when `parallel`.
fn each_chunk(out: &mut [f32], size: usize, parallel: bool, f: impl Fn(usize, &mut [f32]) + Sync) {
    if parallel {
        out.par_chunks_mut(size)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    } else {
        out.chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    }
}

#[derive(Clone, Copy)]
struct Dims {
    rep: usize,
    s: usize,
    t: usize,
    d: usize,
}

#[derive(Clone, Copy)]
struct Head {
    row: usize,
    head: usize,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn head_avx512(
    q: &View,
    k: &Keys,
    v: &Keys,
    mask: Option<&[f32]>,
    scale: f32,
    dims: Dims,
    at: Head,
    out: &mut [f32],
) {
    head_generic::<Avx512>(q, k, v, mask, scale, dims, at, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn head_avx2(
    q: &View,
    k: &Keys,
    v: &Keys,
    mask: Option<&[f32]>,
    scale: f32,
    dims: Dims,
    at: Head,
    out: &mut [f32],
) {
    head_generic::<Avx2>(q, k, v, mask, scale, dims, at, out)
}

/// From this many queries on (a prefill, a training pass) a head runs as blocked GEMMs.
const BLOCKED_QUERIES: usize = 16;
/// Queries per block of [`head_blocked`]: their scores against the visible keys are one
/// `[QUERY_BLOCK, t]` matrix.
const QUERY_BLOCK: usize = 64;

/// One (row, head) as matrix products, a block of queries at a time: `S = scale · Q Kᵀ` over
/// the keys the block's last query may see, the masked softmax row by row, then `O = P V` —
/// each key and value row is read once per block instead of once per query. Writes
/// `out [s, d]`.
#[allow(clippy::too_many_arguments)]
fn head_blocked(
    q: &View,
    k: &Keys,
    v: &Keys,
    mask: Option<&[f32]>,
    scale: f32,
    dims: Dims,
    at: Head,
    out: &mut [f32],
) {
    let Dims { rep, s, t, d } = dims;
    let g = at.head / rep;
    let (key_runs, value_runs) = (k.runs(at.row, g, t), v.runs(at.row, g, t));
    let mut scores = vec![0f32; QUERY_BLOCK.min(s) * t];
    for i0 in (0..s).step_by(QUERY_BLOCK) {
        let rows = QUERY_BLOCK.min(s - i0);
        let tv = t - s + i0 + rows;
        let q0 = q.offset + at.row * q.strides[0] + at.head * q.strides[1] + i0 * q.strides[2];
        let queries = Mat::strided(&q.data[q0..], q.strides[2]);
        let block = &mut scores[..rows * tv];
        // S = scale · Q Kᵀ, a run of key slots at a time (the prefix held apart, then the rest).
        for &(j0, n, data, cs) in &key_runs {
            let n = n.min(tv.saturating_sub(j0));
            if n > 0 {
                let keys = Mat { data, rs: 1, cs };
                dense::gemm(
                    &mut block[j0..],
                    tv,
                    queries,
                    keys,
                    rows,
                    n,
                    d,
                    scale,
                    false,
                    1,
                );
            }
        }
        for (r, row) in block.chunks_exact_mut(tv).enumerate() {
            let i = i0 + r;
            let visible = t - s + i + 1;
            let (seen, hidden) = row.split_at_mut(visible);
            hidden.fill(0.0);
            if let Some(m) = mask {
                let m0 = (at.row * s + i) * t;
                for (sc, mv) in seen.iter_mut().zip(&m[m0..m0 + visible]) {
                    *sc += mv;
                }
            }
            let max = seen.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let inv = 1.0 / vector::exp_shifted_sum(seen, max);
            seen.iter_mut().for_each(|p| *p *= inv);
        }
        // O = P V, summed over the runs of value slots.
        let o = &mut out[i0 * d..(i0 + rows) * d];
        let mut first = true;
        for &(j0, n, data, cs) in &value_runs {
            let n = n.min(tv.saturating_sub(j0));
            if n > 0 {
                let probs = Mat::rows(&block[j0..], tv);
                let values = Mat::strided(data, cs);
                dense::gemm(o, d, probs, values, rows, d, n, 1.0, !first, 1);
                first = false;
            }
        }
    }
}

/// One (row, head): all `s` queries against the visible keys. Writes `out [s, d]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn head_generic<K: Kernels>(
    q: &View,
    k: &Keys,
    v: &Keys,
    mask: Option<&[f32]>,
    scale: f32,
    dims: Dims,
    at: Head,
    out: &mut [f32],
) {
    let Dims { rep, s, t, d } = dims;
    let g = at.head / rep;
    let mut all_scores = vec![0f32; t];
    for i in 0..s {
        let visible = t - s + i + 1;
        let scores = &mut all_scores[..visible];
        let qi = q.row(at.row, at.head, i, d);
        for (j, sc) in scores.iter_mut().enumerate() {
            *sc = K::dot(qi, k.slot(at.row, g, j, d)) * scale;
        }
        if let Some(m) = mask {
            let base = (at.row * s + i) * t;
            for (sc, mv) in scores.iter_mut().zip(&m[base..base + visible]) {
                *sc += mv;
            }
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum = K::exp_sum(scores, max);
        let o = &mut out[i * d..(i + 1) * d];
        let inv = 1.0 / sum;
        for (j, &p) in scores.iter().enumerate() {
            K::axpy(p * inv, v.slot(at.row, g, j, d), o);
        }
    }
}

#[cfg(test)]
mod tests;
