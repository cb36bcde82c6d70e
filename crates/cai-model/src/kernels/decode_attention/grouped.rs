//! The decode step's attention on AVX-512, one (row, key-value head) at a time: the `rep`
//! query heads that share a key-value head read each key and value row once per group, and
//! the scores of 16 keys come out of one transposing reduction instead of 16 horizontal sums.
//!
//! For each query of the group: `q · k_j` for 16 keys as 16 vectors of partial sums, reduced
//! together into one vector of 16 scores; the masked softmax; then `Σ_j p_j v_j` for two to
//! four queries at once, their outputs held in registers while every value row is read once.
//! Head dimensions up to 128 (8 vectors) take this kernel; larger ones keep the query-by-query
//! kernel. The sums run in another order than that kernel's, so results agree to rounding.

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::{Dims, Keys, View};
use crate::kernels::vector::{tail_mask as lanes, Avx512, Kernels};

/// Largest head dimension, in 16-lane vectors, that this kernel serves.
pub(super) const MAX_VECTORS: usize = 8;

thread_local! {
    /// The scores of a group's queries, `[queries][t]`, kept between calls.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `[Σ v[0], Σ v[1], …, Σ v[15]]`: the horizontal sums of 16 vectors as one vector, by
/// adding pairs through unpacks and shuffles (45 instructions instead of 16 reductions).
///
/// # Safety
/// The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn sums16(v: &[__m512; 16]) -> __m512 {
    // Per 128-bit lane, [a0+a2, b0+b2, a1+a3, b1+b3] for each pair (a, b).
    let mut pairs = [_mm512_setzero_ps(); 8];
    for (p, ab) in pairs.iter_mut().zip(v.chunks_exact(2)) {
        *p = _mm512_add_ps(
            _mm512_unpacklo_ps(ab[0], ab[1]),
            _mm512_unpackhi_ps(ab[0], ab[1]),
        );
    }
    // Per 128-bit lane L, [a_L, b_L, c_L, d_L]: each of four vectors' sum over lane L.
    let mut quads = [_mm512_setzero_ps(); 4];
    for (q, p) in quads.iter_mut().zip(pairs.chunks_exact(2)) {
        *q = _mm512_add_ps(
            _mm512_shuffle_ps::<0x44>(p[0], p[1]),
            _mm512_shuffle_ps::<0xEE>(p[0], p[1]),
        );
    }
    // Across 128-bit lanes: [x(L0+L1), x(L2+L3), y(L0+L1), y(L2+L3)], then the totals.
    let halves = |x: __m512, y: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(x, y),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(x, y),
        )
    };
    let (lo, hi) = (halves(quads[0], quads[1]), halves(quads[2], quads[3]));
    halves(lo, hi)
}

/// One (row, key-value head): every query of its `rep` heads against the keys each may see,
/// the shared prefix's slots read once for every row ([`Keys`]). Writes `out [rep, s, d]`
/// (the group's heads, in order).
///
/// With `pre`, the scores of the prefix's `k.shared` slots come computed (scaled, unmasked,
/// `[rep · s, shared]`, see `cascade`): the kernel takes them into the softmax, writes their
/// probabilities back there, and sums only the values after the prefix.
///
/// # Safety
/// The CPU supports AVX-512F and `d ≤ 16 · MAX_VECTORS`. (Every slot read is bounds-checked.)
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn group(
    q: &View,
    k: &Keys,
    v: &Keys,
    mask: Option<&[f32]>,
    scale: f32,
    dims: Dims,
    (row, g): (usize, usize),
    pre: Option<&mut [f32]>,
    out: &mut [f32],
) {
    let c = dims.d.div_ceil(16);
    debug_assert!(c <= MAX_VECTORS);
    match c {
        1 => group_c::<1>(q, k, v, mask, scale, dims, (row, g), pre, out),
        2 => group_c::<2>(q, k, v, mask, scale, dims, (row, g), pre, out),
        3 => group_c::<3>(q, k, v, mask, scale, dims, (row, g), pre, out),
        4 => group_c::<4>(q, k, v, mask, scale, dims, (row, g), pre, out),
        5 => group_c::<5>(q, k, v, mask, scale, dims, (row, g), pre, out),
        6 => group_c::<6>(q, k, v, mask, scale, dims, (row, g), pre, out),
        7 => group_c::<7>(q, k, v, mask, scale, dims, (row, g), pre, out),
        _ => group_c::<8>(q, k, v, mask, scale, dims, (row, g), pre, out),
    }
}

/// [`group`] for a head dimension of `C` vectors (the last one masked to `d`).
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn group_c<const C: usize>(
    q: &View,
    k: &Keys,
    v: &Keys,
    mask: Option<&[f32]>,
    scale: f32,
    dims: Dims,
    (row, g): (usize, usize),
    mut pre: Option<&mut [f32]>,
    out: &mut [f32],
) {
    let Dims { rep, s, t, d } = dims;
    let queries = rep * s;
    // Slots whose scores come in `pre` (and whose values are summed elsewhere).
    let from = if pre.is_some() { k.shared } else { 0 };
    assert_eq!(out.len(), queries * d);
    let masks: [__mmask16; C] = std::array::from_fn(|c| lanes(d - (c * 16).min(d)));
    let slot = |x: &Keys, j: usize| x.slot(row, g, j, d).as_ptr();
    // Query r of the group is head g · rep + r / s, query i = r % s, which sees t − s + i + 1
    // slots.
    let visible = |r: usize| t - s + r % s + 1;
    SCORES.with_borrow_mut(|scores| {
        if scores.len() < queries * t {
            scores.resize(queries * t, 0.0);
        }
        for r in 0..queries {
            let (head, i) = (g * rep + r / s, r % s);
            let qr = q.row(row, head, i, d).as_ptr();
            let qv: [__m512; C] =
                std::array::from_fn(|c| _mm512_maskz_loadu_ps(masks[c], qr.add(c * 16)));
            let vis = visible(r);
            let sr = &mut scores[r * t..(r + 1) * t];
            let mrow = mask.map(|m| &m[(row * s + i) * t..(row * s + i + 1) * t]);
            for j0 in (from..vis).step_by(16) {
                let n = (vis - j0).min(16);
                let mut parts = [_mm512_setzero_ps(); 16];
                for (jj, part) in parts.iter_mut().enumerate().take(n) {
                    let kj = slot(k, j0 + jj);
                    let mut acc = _mm512_mul_ps(qv[0], _mm512_maskz_loadu_ps(masks[0], kj));
                    for cc in 1..C {
                        let kv = _mm512_maskz_loadu_ps(masks[cc], kj.add(cc * 16));
                        acc = _mm512_fmadd_ps(qv[cc], kv, acc);
                    }
                    *part = acc;
                }
                let mut sv = _mm512_mul_ps(sums16(&parts), _mm512_set1_ps(scale));
                let m = lanes(n);
                if let Some(mrow) = mrow {
                    sv = _mm512_add_ps(sv, _mm512_maskz_loadu_ps(m, mrow.as_ptr().add(j0)));
                }
                _mm512_mask_storeu_ps(sr.as_mut_ptr().add(j0), m, sv);
            }
            if let Some(pre) = pre.as_deref() {
                sr[..from].copy_from_slice(&pre[r * from..(r + 1) * from]);
                if let Some(mrow) = mrow {
                    sr[..from].iter_mut().zip(mrow).for_each(|(x, m)| *x += m);
                }
            }
            let seen = &mut sr[..vis];
            let max = seen.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let inv = 1.0 / Avx512::exp_sum(seen, max);
            seen.iter_mut().for_each(|p| *p *= inv);
            sr[vis..].fill(0.0);
            if let Some(pre) = pre.as_deref_mut() {
                pre[r * from..(r + 1) * from].copy_from_slice(&sr[..from]);
            }
        }
        // Σ_j p_j v_j, a few queries at a time (a value row read once for all of them), as
        // many as keep their outputs and a value row in registers.
        let most = match C {
            1..=5 => 4,
            6 | 7 => 3,
            _ => 2,
        };
        let mut r0 = 0;
        while r0 < queries {
            let rows = (queries - r0).min(most);
            let most_seen = (r0..r0 + rows).map(visible).max().unwrap_or(0);
            let args = (&scores[..queries * t], r0, t, from..most_seen);
            match rows {
                4 => weigh::<C, 4>(args, &masks, |j| slot(v, j), out, d),
                3 => weigh::<C, 3>(args, &masks, |j| slot(v, j), out, d),
                2 => weigh::<C, 2>(args, &masks, |j| slot(v, j), out, d),
                _ => weigh::<C, 1>(args, &masks, |j| slot(v, j), out, d),
            }
            r0 += rows;
        }
    });
}

/// `out[r] = Σ_{j ∈ slots} p[r][j] · v_j` for the `G` queries from `r0`, whose probabilities
/// are zero past their own visible slots (`slots` ends at the most any of them sees).
///
/// Shapes: `scores` `[queries, t]`, `value(j)` `[d]`, `out` `[queries, d]`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn weigh<const C: usize, const G: usize>(
    (scores, r0, t, slots): (&[f32], usize, usize, std::ops::Range<usize>),
    masks: &[__mmask16; C],
    value: impl Fn(usize) -> *const f32,
    out: &mut [f32],
    d: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); C]; G];
    let p = scores.as_ptr().add(r0 * t);
    for j in slots {
        let vj = value(j);
        let vv: [__m512; C] =
            std::array::from_fn(|c| _mm512_maskz_loadu_ps(masks[c], vj.add(c * 16)));
        for (gi, acc_row) in acc.iter_mut().enumerate() {
            let pj = _mm512_set1_ps(*p.add(gi * t + j));
            for (cell, x) in acc_row.iter_mut().zip(&vv) {
                *cell = _mm512_fmadd_ps(pj, *x, *cell);
            }
        }
    }
    let o = out.as_mut_ptr().add(r0 * d);
    for (gi, acc_row) in acc.iter().enumerate() {
        for (c, cell) in acc_row.iter().enumerate() {
            _mm512_mask_storeu_ps(o.add(gi * d + c * 16), masks[c], *cell);
        }
    }
}
