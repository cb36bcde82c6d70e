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
            if parallel {
                out.par_chunks_mut(rep * s * d)
                    .enumerate()
                    .for_each(|(bg, c)| work(bg, c));
            } else {
                out.chunks_mut(rep * s * d)
                    .enumerate()
                    .for_each(|(bg, c)| work(bg, c));
            }
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
        if parallel {
            out.par_chunks_mut(s * d)
                .enumerate()
                .for_each(|(bh, c)| work(bh, c));
        } else {
            out.chunks_mut(s * d)
                .enumerate()
                .for_each(|(bh, c)| work(bh, c));
        }
        Ok((CpuStorage::F32(out), Shape::from((b, nh, s, d))))
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
mod tests {
    use super::*;
    use candle_core::{Device, Tensor, D};

    #[test]
    fn matches_softmax_attention_with_gqa_mask_and_strided_cache() {
        let dev = Device::Cpu;
        let (b, nh, nkv, s, t, d) = (2, 4, 2, 2, 5, 20);
        let q = Tensor::randn(0f32, 1.0, (b, nh, s, d), &dev).unwrap();
        // k and v as views into a larger cache, like the KV cache hands out.
        let kc = Tensor::randn(0f32, 1.0, (b, nkv, t + 3, d), &dev).unwrap();
        let vc = Tensor::randn(0f32, 1.0, (b, nkv, t + 3, d), &dev).unwrap();
        let (k, v) = (kc.narrow(2, 0, t).unwrap(), vc.narrow(2, 0, t).unwrap());
        // Causal: query i (slot t - s + i) sees slots up to its own.
        let mut mask = vec![0f32; b * s * t];
        for row in 0..b {
            for i in 0..s {
                for j in (t - s + i + 1)..t {
                    mask[(row * s + i) * t + j] = -1e30;
                }
            }
        }
        mask[1] = -1e30; // row 0, query 0 cannot see key 1
        mask[(s + 1) * t - 2] = -1e30; // row 1, query 1 cannot see key 3
        let op = DecodeAttention {
            scale: 0.3,
            mask: Some(std::sync::Arc::new(mask.clone())),
            shared: 0,
            head: None,
        };
        let got = q.apply_op3_no_bwd(&k, &v, &op).unwrap();

        let rep = nh / nkv;
        let kr = k
            .unsqueeze(2)
            .unwrap()
            .repeat((1, 1, rep, 1, 1))
            .unwrap()
            .reshape((b, nh, t, d))
            .unwrap();
        let vr = v
            .unsqueeze(2)
            .unwrap()
            .repeat((1, 1, rep, 1, 1))
            .unwrap()
            .reshape((b, nh, t, d))
            .unwrap();
        let m = Tensor::from_vec(mask, (b, 1, s, t), &dev).unwrap();
        let scores = (q.matmul(&kr.t().unwrap()).unwrap() * 0.3)
            .unwrap()
            .broadcast_add(&m)
            .unwrap();
        let want = candle_nn::ops::softmax(&scores, D::Minus1)
            .unwrap()
            .matmul(&vr)
            .unwrap();
        let diff = crate::test_util::max_abs_diff(&got, &want);
        assert!(diff < 1e-5, "max difference {diff}");
    }

    #[test]
    fn backward_matches_the_gradients_of_softmax_attention() {
        use candle_core::Var;
        let dev = Device::Cpu;
        let (b, nh, nkv, s, d) = (2, 4, 2, 5, 12);
        let q = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, nh, s, d), &dev).unwrap()).unwrap();
        let k = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, nkv, s, d), &dev).unwrap()).unwrap();
        let v = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, nkv, s, d), &dev).unwrap()).unwrap();
        // Causal, and row 1 is left-padded by two slots (a query still sees itself).
        let mut mask = vec![0f32; b * s * s];
        for row in 0..b {
            for i in 0..s {
                for j in 0..s {
                    let padded = row == 1 && j < 2 && j != i;
                    if j > i || padded {
                        mask[(row * s + i) * s + j] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        let probe = Tensor::randn(0f32, 1.0, (b, nh, s, d), &dev).unwrap();
        let op = DecodeAttention {
            scale: 0.3,
            mask: Some(std::sync::Arc::new(mask.clone())),
            shared: 0,
            head: None,
        };
        let fused = q
            .as_tensor()
            .apply_op3(k.as_tensor(), v.as_tensor(), op)
            .unwrap();
        let gf = (fused * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();

        let rep = nh / nkv;
        let expand = |x: &Tensor| {
            x.unsqueeze(2)
                .unwrap()
                .repeat((1, 1, rep, 1, 1))
                .unwrap()
                .reshape((b, nh, s, d))
                .unwrap()
        };
        let m = Tensor::from_vec(mask, (b, 1, s, s), &dev).unwrap();
        let scores = (q
            .as_tensor()
            .matmul(&expand(k.as_tensor()).t().unwrap())
            .unwrap()
            * 0.3)
            .unwrap()
            .broadcast_add(&m)
            .unwrap();
        let plain = candle_nn::ops::softmax(&scores, D::Minus1)
            .unwrap()
            .matmul(&expand(v.as_tensor()))
            .unwrap();
        let gp = (plain * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (name, var) in [("q", &q), ("k", &k), ("v", &v)] {
            let a = gf.get(var.as_tensor()).unwrap();
            let e = gp.get(var.as_tensor()).unwrap();
            let diff = crate::test_util::max_abs_diff(a, e);
            assert!(diff < 1e-4, "d{name} differs by {diff}");
        }
    }

    /// Keys read from each row's own slots.
    fn plain(own: View<'_>) -> Keys<'_> {
        Keys {
            own,
            head: None,
            shared: 0,
        }
    }

    /// A prefix held apart (one copy, the rows' own slots after it) gives what every row's own
    /// copy gives: query by query (the same bits), grouped by key-value head and blocked.
    #[test]
    fn a_prefix_held_apart_reads_as_every_rows_copy() {
        let (rep, t, d, shared) = (3, 90, 64, 37);
        let (b, nkv) = (2, 2);
        let nh = rep * nkv;
        for s in [1, 2, 20, 53] {
            let kv = b * nkv * t * d;
            let q_len = b * nh * s * d;
            let mut data: Vec<f32> = (0..q_len + 2 * kv)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
                .collect();
            // Row 1's first `shared` slots are row 0's (the prefix every row holds).
            for base in [q_len, q_len + kv] {
                for g in 0..nkv {
                    for j in 0..shared * d {
                        data[base + nkv * t * d + g * t * d + j] = data[base + g * t * d + j];
                    }
                }
            }
            let view = |strides: [usize; 4], offset: usize| View {
                data: &data,
                offset,
                strides,
            };
            let q = view([nh * s * d, s * d, d, 1], 0);
            let st = [nkv * t * d, t * d, d, 1];
            let dense = |base| plain(view(st, base));
            // The prefix: row 0's first slots; the rows' own: slots from `shared` on.
            let apart = |base| Keys {
                own: view(st, base + shared * d),
                head: Some(view(st, base)),
                shared,
            };
            let mut mask = vec![0f32; b * s * t];
            for (i, m) in mask.iter_mut().enumerate() {
                if i % 5 == 0 && i % t >= shared && i % t < t - s {
                    *m = f32::NEG_INFINITY;
                }
            }
            let dims = Dims { rep, s, t, d };
            let (dk, dv, ak, av) = (
                dense(q_len),
                dense(q_len + kv),
                apart(q_len),
                apart(q_len + kv),
            );
            for m in [None, Some(mask.as_slice())] {
                for (row, g) in [(0, 0), (1, 1), (1, 0)] {
                    let mut want = vec![0f32; rep * s * d];
                    let mut same = vec![0f32; rep * s * d];
                    let mut blocked = vec![0f32; rep * s * d];
                    for (r, ((w, x), y)) in want
                        .chunks_mut(s * d)
                        .zip(same.chunks_mut(s * d))
                        .zip(blocked.chunks_mut(s * d))
                        .enumerate()
                    {
                        let at = Head {
                            row,
                            head: g * rep + r,
                        };
                        head_generic::<Scalar>(&q, &dk, &dv, m, 0.3, dims, at, w);
                        head_generic::<Scalar>(&q, &ak, &av, m, 0.3, dims, at, x);
                        head_blocked(&q, &ak, &av, m, 0.3, dims, at, y);
                    }
                    assert_eq!(same, want, "s {s}");
                    let close = |got: &[f32], what: &str| {
                        for (a, w) in got.iter().zip(&want) {
                            assert!((a - w).abs() < 1e-5, "{what}, s {s}: {a} vs {w}");
                        }
                    };
                    close(&blocked, "blocked");
                    #[cfg(target_arch = "x86_64")]
                    if is_x86_feature_detected!("avx512f") {
                        let mut grouped = vec![f32::NAN; rep * s * d];
                        // SAFETY: AVX-512F is available and d ≤ 128.
                        unsafe {
                            grouped::group(&q, &ak, &av, m, 0.3, dims, (row, g), None, &mut grouped)
                        };
                        close(&grouped, "grouped");
                    }
                }
            }
        }
    }

    /// The prefix's part as two products over every row's queries (`cascade`) gives what the
    /// query-by-query kernel gives over every row's own copy, with the mask on both parts.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_prefix_as_products_matches_every_rows_copy() {
        if !is_x86_feature_detected!("avx512f") {
            return;
        }
        let (rep, nkv, t, d, shared) = (3, 2, 70, 64, 29);
        let nh = rep * nkv;
        for (b, s) in [(4, 1), (3, 2), (2, 3)] {
            let kv = b * nkv * t * d;
            let q_len = b * nh * s * d;
            let mut data: Vec<f32> = (0..q_len + 2 * kv)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
                .collect();
            for base in [q_len, q_len + kv] {
                for row in 1..b {
                    for g in 0..nkv {
                        for j in 0..shared * d {
                            data[base + row * nkv * t * d + g * t * d + j] =
                                data[base + g * t * d + j];
                        }
                    }
                }
            }
            let view = |strides: [usize; 4], offset: usize| View {
                data: &data,
                offset,
                strides,
            };
            let q = view([nh * s * d, s * d, d, 1], 0);
            let st = [nkv * t * d, t * d, d, 1];
            let apart = |base| Keys {
                own: view(st, base + shared * d),
                head: Some(view(st, base)),
                shared,
            };
            let (dk, dv) = (plain(view(st, q_len)), plain(view(st, q_len + kv)));
            let (ak, av) = (apart(q_len), apart(q_len + kv));
            let mut mask = vec![0f32; b * s * t];
            for (i, m) in mask.iter_mut().enumerate() {
                *m = match (i % 7, i % t) {
                    (0, j) if j >= shared && j < t - s => f32::NEG_INFINITY,
                    (3, j) if j < shared => -0.7,
                    _ => 0.0,
                };
            }
            let dims = Dims { rep, s, t, d };
            assert!(cascade::applies(&ak, dims, b));
            for m in [None, Some(mask.as_slice())] {
                let mut want = vec![0f32; b * nh * s * d];
                for (bh, chunk) in want.chunks_mut(s * d).enumerate() {
                    let at = Head {
                        row: bh / nh,
                        head: bh % nh,
                    };
                    head_generic::<Scalar>(&q, &dk, &dv, m, 0.3, dims, at, chunk);
                }
                for parallel in [false, true] {
                    let mut got = vec![f32::NAN; b * nh * s * d];
                    // SAFETY: AVX-512F is available, d ≤ 128, and `applies` holds.
                    unsafe {
                        cascade::run(&q, &ak, &av, m, 0.3, dims, (b, nkv), &mut got, parallel)
                    };
                    for (a, w) in got.iter().zip(&want) {
                        assert!((a - w).abs() < 1e-5, "b {b}, s {s}: {a} vs {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_blocked_kernel_matches_the_query_by_query_kernel() {
        // Two query blocks (70 > 64) over a longer cache, grouped heads, padding masked.
        let (rep, s, t, d) = (3, 70, 75, 24);
        let data: Vec<f32> = (0..2 * 6 * t * d)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 60.0)
            .collect();
        let view = |strides: [usize; 4], offset: usize| View {
            data: &data,
            offset,
            strides,
        };
        // q [2, 6, s, d] dense; k and v [2, 2, t, d] views with a row stride of 2 d.
        let q = view([6 * s * d, s * d, d, 1], 0);
        let k = view([2 * t * 2 * d, t * 2 * d, 2 * d, 1], 3);
        let v = view([2 * t * 2 * d, t * 2 * d, 2 * d, 1], d + 1);
        let mut mask = vec![0f32; 2 * s * t];
        for i in 0..s {
            for j in 0..4 {
                mask[(s + i) * t + j] = f32::NEG_INFINITY; // row 1 left-padded by 4
            }
        }
        let (k, v) = (plain(k), plain(v));
        let dims = Dims { rep, s, t, d };
        for (row, head) in [(0, 0), (1, 4), (1, 5)] {
            let at = Head { row, head };
            for m in [None, Some(mask.as_slice())] {
                let mut want = vec![0f32; s * d];
                head_generic::<Scalar>(&q, &k, &v, m, 0.3, dims, at, &mut want);
                let mut got = vec![0f32; s * d];
                head_blocked(&q, &k, &v, m, 0.3, dims, at, &mut got);
                for (a, b) in got.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5, "{a} vs {b}");
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_grouped_kernel_matches_the_query_by_query_kernel() {
        if !is_x86_feature_detected!("avx512f") {
            return;
        }
        // Head dimensions with and without a partial vector, up to the limit; one to seven
        // heads per group; key counts around multiples of 16; a few queries.
        let cases = [
            (3, 1, 37, 64),
            (1, 1, 5, 20),
            (4, 2, 50, 128),
            (2, 3, 17, 24),
            (7, 1, 33, 48),
            (3, 1, 1, 64),
            (2, 1, 16, 100),
            (6, 2, 32, 112),
        ];
        for (rep, s, t, d) in cases {
            let (nkv, b) = (2, 2);
            let nh = rep * nkv;
            let data: Vec<f32> = (0..b * nh * (t + 2) * 2 * d + 2 * d)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
                .collect();
            let view = |strides: [usize; 4], offset: usize| View {
                data: &data,
                offset,
                strides,
            };
            // q dense; k and v views of a cache with spare slots and a row stride of 2 d.
            let q = view([nh * s * d, s * d, d, 1], 0);
            let kv_strides = [nkv * (t + 2) * 2 * d, (t + 2) * 2 * d, 2 * d, 1];
            let (k, v) = (plain(view(kv_strides, 5)), plain(view(kv_strides, d + 3)));
            let mut mask = vec![0f32; b * s * t];
            for (i, m) in mask.iter_mut().enumerate() {
                *m = match i % 7 {
                    0 if i % t < t - s => f32::NEG_INFINITY, // never a query's own slot
                    3 => -0.5,
                    _ => 0.0,
                };
            }
            let dims = Dims { rep, s, t, d };
            for m in [None, Some(mask.as_slice())] {
                for (row, g) in [(0, 0), (1, 1)] {
                    let mut want = vec![0f32; rep * s * d];
                    for (r, chunk) in want.chunks_mut(s * d).enumerate() {
                        let at = Head {
                            row,
                            head: g * rep + r,
                        };
                        head_generic::<Scalar>(&q, &k, &v, m, 0.3, dims, at, chunk);
                    }
                    let mut got = vec![f32::NAN; rep * s * d];
                    // SAFETY: AVX-512F is available and d ≤ 128.
                    unsafe { grouped::group(&q, &k, &v, m, 0.3, dims, (row, g), None, &mut got) };
                    for (a, w) in got.iter().zip(&want) {
                        assert!(
                            (a - w).abs() < 1e-5,
                            "{a} vs {w} (rep {rep}, s {s}, t {t}, d {d})"
                        );
                    }
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_shared_prefix_is_read_from_the_first_row() {
        if !is_x86_feature_detected!("avx512f") {
            return;
        }
        let (rep, s, t, d, shared) = (3, 1, 40, 64, 23);
        let (b, nkv) = (2, 2);
        let nh = rep * nkv;
        let kv = b * nkv * t * d;
        let mut data: Vec<f32> = (0..nh * b * s * d + 2 * kv)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        let (q_len, row) = (b * nh * s * d, nkv * t * d);
        // Row 1's first `shared` slots of k and v are row 0's.
        for base in [q_len, q_len + kv] {
            for g in 0..nkv {
                for j in 0..shared * d {
                    data[base + row + g * t * d + j] = data[base + g * t * d + j];
                }
            }
        }
        let run = |data: &[f32], shared: usize| {
            let view = |strides: [usize; 4], offset: usize| View {
                data,
                offset,
                strides,
            };
            let q = view([nh * s * d, s * d, d, 1], 0);
            let kv_strides = [nkv * t * d, t * d, d, 1];
            let keys = |offset| Keys {
                own: view(kv_strides, offset),
                head: None,
                shared,
            };
            let (k, v) = (keys(q_len), keys(q_len + kv));
            let mut out = vec![0f32; rep * s * d];
            let dims = Dims { rep, s, t, d };
            // SAFETY: AVX-512F is available and d ≤ 128.
            unsafe { grouped::group(&q, &k, &v, None, 0.3, dims, (1, 1), None, &mut out) };
            out
        };
        let own = run(&data, 0);
        assert_eq!(run(&data, shared), own);
        // Spoil row 1's copy: with the prefix shared, row 1 never reads it.
        let mut spoiled = data.clone();
        for base in [q_len, q_len + kv] {
            for j in 0..shared * d {
                spoiled[base + row + t * d + j] += 1.0;
            }
        }
        assert_eq!(run(&spoiled, shared), own);
        assert_ne!(run(&spoiled, 0), own);
    }

    #[test]
    fn the_portable_kernel_matches_the_vector_kernel() {
        let (rep, s, t, d) = (2, 3, 7, 20);
        let data: Vec<f32> = (0..2 * 4 * t * d)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 60.0)
            .collect();
        let view = |strides: [usize; 4]| View {
            data: &data,
            offset: 0,
            strides,
        };
        let (q, kv) = (
            view([4 * s * d, s * d, d, 1]),
            plain(view([2 * t * d, t * d, d, 1])),
        );
        let mut mask = vec![0f32; 2 * s * t];
        mask[3] = f32::NEG_INFINITY;
        let dims = Dims { rep, s, t, d };
        for head in 0..4 {
            let at = Head { row: 1, head };
            let mut portable = vec![0f32; s * d];
            head_generic::<Scalar>(&q, &kv, &kv, Some(&mask), 0.2, dims, at, &mut portable);
            let mut reference = vec![0f32; s * d];
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX-512F is available.
                unsafe { head_avx512(&q, &kv, &kv, Some(&mask), 0.2, dims, at, &mut reference) };
            } else {
                head_generic::<Scalar>(&q, &kv, &kv, Some(&mask), 0.2, dims, at, &mut reference);
            }
            for (a, b) in portable.iter().zip(&reference) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
            assert!(portable.iter().all(|v| v.is_finite()));
        }
    }
}
