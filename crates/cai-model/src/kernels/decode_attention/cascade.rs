//! The decode step's attention when the rows continue one prefix held apart (the few-shot
//! block of a critique wave): the prefix's part is two matrix products per key-value head over
//! every row's queries at once — `S = scale · Q Kᵀ` before the softmax, `O += P V` after it —
//! instead of dot products row by row, so each prefix key and value is read once a step and
//! used at a GEMM's speed. The rows' own slots take the grouped kernel, which also runs each
//! query's softmax over both parts.

use rayon::prelude::*;

use super::{each_chunk, grouped, Dims, Keys, View};
use crate::kernels::dense::{self, Mat};

/// Fewest queries of one key-value head (rows × heads per group × queries per row) that make
/// the products worth their gathers.
pub(super) const MIN_QUERIES: usize = 8;

/// Whether [`run`] serves these keys: a prefix held apart that every query sees whole.
pub(super) fn applies(k: &Keys, dims: Dims, b: usize) -> bool {
    let Dims { rep, s, t, .. } = dims;
    k.head.is_some() && k.shared > 0 && t - s >= k.shared && b * rep * s >= MIN_QUERIES
}

/// Attention of `b` rows and `nkv` key-value heads whose first `k.shared` slots are held apart
/// ([`applies`]). Writes `out`.
///
/// Shapes: q `[b, rep · nkv, s, d]`; k, v: head `[1, nkv, shared, d]`, own
/// `[b, nkv, t - shared, d]`; out `[b, rep · nkv, s, d]`.
///
/// # Safety
/// The CPU supports AVX-512F, `d ≤ 16 · grouped::MAX_VECTORS`, and [`applies`] holds.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn run(
    q: &View,
    k: &Keys,
    v: &Keys,
    mask: Option<&[f32]>,
    scale: f32,
    dims: Dims,
    (b, nkv): (usize, usize),
    out: &mut [f32],
    parallel: bool,
) {
    let Dims { rep, s, d, .. } = dims;
    let p = k.shared;
    // The queries of one (row, key-value head), and of one key-value head over all rows.
    let per_row = rep * s;
    let n_q = b * per_row;
    let (kh, vh) = match (&k.head, &v.head) {
        (Some(kh), Some(vh)) => (kh, vh),
        _ => unreachable!("applies() checked the prefix"),
    };
    // The prefix's scores, then its probabilities: `[nkv][b][per_row][p]`.
    let mut pre = vec![0f32; nkv * n_q * p];
    let scores_of = |g: usize, dst: &mut [f32]| {
        let mut qg = vec![0f32; n_q * d];
        for (n, row) in qg.chunks_exact_mut(d).enumerate() {
            let (bi, r) = (n / per_row, n % per_row);
            row.copy_from_slice(q.row(bi, g * rep + r / s, r % s, d));
        }
        let keys = Mat {
            data: &kh.data[kh.offset + g * kh.strides[1]..],
            rs: 1,
            cs: kh.strides[2],
        };
        dense::gemm(dst, p, Mat::rows(&qg, d), keys, n_q, p, d, scale, false, 1);
    };
    each_chunk(&mut pre, n_q * p, parallel, scores_of);
    // Each (row, key-value head) in `out`'s order: its own slots, and the softmax of both.
    let mut units: Vec<Option<&mut [f32]>> = (0..b * nkv).map(|_| None).collect();
    for (n, chunk) in pre.chunks_mut(per_row * p).enumerate() {
        let (g, bi) = (n / b, n % b);
        units[bi * nkv + g] = Some(chunk);
    }
    let work = |bg: usize, o: &mut [f32], pre: Option<&mut [f32]>| {
        // SAFETY: the caller's contract; `pre` holds this unit's `[per_row, p]` scores.
        unsafe { grouped::group(q, k, v, mask, scale, dims, (bg / nkv, bg % nkv), pre, o) }
    };
    if parallel {
        out.par_chunks_mut(per_row * d)
            .zip(units.into_par_iter())
            .enumerate()
            .for_each(|(bg, (o, pre))| work(bg, o, pre));
    } else {
        out.chunks_mut(per_row * d)
            .zip(units)
            .enumerate()
            .for_each(|(bg, (o, pre))| work(bg, o, pre));
    }
    // The prefix's values, weighed by its probabilities, added to each query's output.
    let values_of = |g: usize| -> Vec<f32> {
        let mut og = vec![0f32; n_q * d];
        let values = Mat::strided(&vh.data[vh.offset + g * vh.strides[1]..], vh.strides[2]);
        let probs = Mat::rows(&pre[g * n_q * p..(g + 1) * n_q * p], p);
        dense::gemm(&mut og, d, probs, values, n_q, d, p, 1.0, false, 1);
        og
    };
    let parts: Vec<Vec<f32>> = if parallel {
        (0..nkv).into_par_iter().map(values_of).collect()
    } else {
        (0..nkv).map(values_of).collect()
    };
    for (g, og) in parts.iter().enumerate() {
        for (n, add) in og.chunks_exact(d).enumerate() {
            let (bi, r) = (n / per_row, n % per_row);
            let at = ((bi * nkv + g) * per_row + r) * d;
            out[at..at + d]
                .iter_mut()
                .zip(add)
                .for_each(|(o, a)| *o += a);
        }
    }
}
