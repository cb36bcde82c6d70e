//! AVX-512F register blocks of the few-row matmul: 8 rows × 48 columns (24 accumulators) in
//! `columns_t`, up to 12 weight rows × 32 rows of `x` in `columns`. The broadcast operand is
//! read straight into the FMA (`{1to16}`), so a block issues one load per FMA at most.

use std::arch::x86_64::*;

use std::ops::Range;

use super::loops::{self, CacheBlock, StripBlock};
use super::prefetch::{self, Prefetch};

/// Rows of `x` per packed panel (the register block's height) in `columns_t`.
pub(super) const T_ROWS: usize = 8;
/// 16-lane vectors of weight columns per register block in `columns_t`.
const T_VECS: usize = 3;
/// Weight columns per strip in `columns_t`.
pub(super) const T_COLS: usize = 16 * T_VECS;
/// Weight rows per register block in `columns`.
const W_ROWS: usize = 12;

/// Lane masks of a strip `width` columns wide (full vectors, then a partial one, then none).
fn masks<const V: usize>(width: usize) -> [__mmask16; V] {
    std::array::from_fn(|v| {
        let rem = width.saturating_sub(v * 16);
        if rem >= 16 {
            0xffff
        } else {
            ((1u32 << rem) - 1) as u16
        }
    })
}

/// One register block of `columns_t` (see [`StripBlock`]): up to 8 rows × 48 columns, the
/// output of the last strip of a range masked.
///
/// # Safety
/// The CPU supports AVX-512F; the block's pointers are valid for its rows and columns.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn strip_block(s: &StripBlock, pf: &mut Prefetch) {
    let masks = masks::<T_VECS>(s.width);
    match s.rows {
        5.. => block_t::<8>(s, &masks, pf),
        3 | 4 => block_t::<4>(s, &masks, pf),
        2 => block_t::<2>(s, &masks, pf),
        _ => block_t::<1>(s, &masks, pf),
    }
}

/// Copy weight rows into packed strips of 48 (see [`loops::pack_rows`]) with this
/// instruction set's vector moves.
///
/// # Safety
/// The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack(
    wt: &[f32],
    n: usize,
    b: CacheBlock,
    rows: Range<usize>,
    buf: &mut [f32],
) {
    loops::pack_rows::<T_COLS>(wt, n, b, rows, buf)
}

/// `c[r, :] (+)= Σ_t a[t][r] · b[t][:]` for `rows <= R` rows and the masked columns of one
/// strip, over `kb` steps; `first` starts from zero, else from what `c` holds.
///
/// Shapes: `a` `[kb][8]` (a packed panel), `b` `[kb][ldb]`, `c` `[rows, n]`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn block_t<const R: usize>(s: &StripBlock, masks: &[__mmask16; T_VECS], pf: &mut Prefetch) {
    let StripBlock {
        a,
        b,
        ldb,
        n,
        kb,
        c,
        rows,
        first,
        ..
    } = *s;
    let mut p = *pf;
    let mut acc = [[_mm512_setzero_ps(); T_VECS]; R];
    if !first {
        for (r, acc_row) in acc.iter_mut().enumerate().take(rows) {
            for (v, cell) in acc_row.iter_mut().enumerate() {
                *cell = _mm512_maskz_loadu_ps(masks[v], c.add(r * n + v * 16));
            }
        }
    }
    for t in 0..kb {
        p.step();
        let row = b.add(t * ldb);
        let mut w = [_mm512_setzero_ps(); T_VECS];
        for (v, wv) in w.iter_mut().enumerate() {
            *wv = _mm512_maskz_loadu_ps(masks[v], row.add(v * 16));
        }
        let at = a.add(t * T_ROWS);
        for (r, acc_row) in acc.iter_mut().enumerate() {
            let xv = _mm512_set1_ps(*at.add(r));
            for (cell, wv) in acc_row.iter_mut().zip(&w) {
                *cell = _mm512_fmadd_ps(xv, *wv, *cell);
            }
        }
    }
    for (r, acc_row) in acc.iter().enumerate().take(rows) {
        for (v, cell) in acc_row.iter().enumerate() {
            _mm512_mask_storeu_ps(c.add(r * n + v * 16), masks[v], *cell);
        }
    }
    *pf = p;
}

/// Fill `out[:, j0..j1]` with `x · W[j0..j1, :]ᵀ`: blocks of 12 (then 4, then 1) weight rows,
/// each times every group of `group` (16 or 32) rows of `x`, the next block's rows prefetched.
///
/// Shapes: `xg` packed `[groups][k][group]`, `w` `[n, k]`, `out` `[m, n]`.
///
/// # Safety
/// The CPU supports AVX-512F; `group` is 16 or 32; `out` points to an `m × n` buffer of which
/// no other thread writes columns `j0..j1`; `j1 <= n`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn columns(
    xg: &[f32],
    group: usize,
    w: &[f32],
    out: *mut f32,
    m: usize,
    n: usize,
    k: usize,
    j0: usize,
    j1: usize,
) {
    let groups = m.div_ceil(group);
    debug_assert!(xg.len() >= groups * group * k && w.len() == n * k && j1 <= n);
    let mut j = j0;
    while j < j1 {
        let rows = match j1 - j {
            r if r >= W_ROWS => W_ROWS,
            r if r >= 4 => 4,
            _ => 1,
        };
        let next = j + rows;
        let next_rows = (j1 - next).min(W_ROWS);
        for g in 0..groups {
            let args = Block {
                a: w.as_ptr().add(j * k),
                k,
                b: xg.as_ptr().add(g * group * k),
                c: out.add(g * group * n + j),
                n,
                cols: (m - g * group).min(group),
                // The first group streams the next block's rows in; the others reuse them.
                pf: w.as_ptr().add(next.min(n - 1) * k),
                pf_rows: if g == 0 { next_rows } else { 0 },
            };
            match (group, rows) {
                (16, W_ROWS) => block::<W_ROWS, 1>(args),
                (16, 4) => block::<4, 1>(args),
                (16, _) => block::<1, 1>(args),
                (_, W_ROWS) => block::<W_ROWS, 2>(args),
                (_, 4) => block::<4, 2>(args),
                _ => block::<1, 2>(args),
            }
        }
        j = next;
    }
}

/// One register block of [`columns`].
struct Block {
    /// The block's first weight row; rows are `k` apart.
    a: *const f32,
    k: usize,
    /// The packed group of `x`, `[k][16 · V]`.
    b: *const f32,
    /// `out[first row of the group, first column of the block]`; rows are `n` apart.
    c: *mut f32,
    n: usize,
    /// Valid rows of `x` in the group.
    cols: usize,
    /// The next block's first weight row, and how many of its rows to prefetch.
    pf: *const f32,
    pf_rows: usize,
}

/// `out[i, j + r] = Σ_t w[j + r, t] · x[i, t]` for the `R` weight rows of the block and the
/// group's rows `i`: each weight element is broadcast against `V` vectors of packed `x`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn block<const R: usize, const V: usize>(blk: Block) {
    let Block {
        a,
        k,
        b,
        c,
        n,
        cols,
        pf,
        pf_rows,
    } = blk;
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    let mut t0 = 0;
    while t0 < k {
        // One cache line of each of the next block's rows per 16 steps.
        for r in 0..pf_rows {
            prefetch::line(pf.add(r * k + t0));
        }
        for t in t0..(t0 + 16).min(k) {
            let bt = b.add(t * 16 * V);
            let mut xv = [_mm512_setzero_ps(); V];
            for (v, x) in xv.iter_mut().enumerate() {
                *x = _mm512_loadu_ps(bt.add(v * 16));
            }
            for (r, acc_row) in acc.iter_mut().enumerate() {
                let wv = _mm512_set1_ps(*a.add(r * k + t));
                for (cell, x) in acc_row.iter_mut().zip(&xv) {
                    *cell = _mm512_fmadd_ps(wv, *x, *cell);
                }
            }
        }
        t0 += 16;
    }
    let mut tile = [[[0f32; 16]; V]; R];
    for (acc_row, tile_row) in acc.iter().zip(tile.iter_mut()) {
        for (cell, lanes) in acc_row.iter().zip(tile_row.iter_mut()) {
            _mm512_storeu_ps(lanes.as_mut_ptr(), *cell);
        }
    }
    for col in 0..cols {
        let o = c.add(col * n);
        for (r, tile_row) in tile.iter().enumerate() {
            *o.add(r) = tile_row[col / 16][col % 16];
        }
    }
}

/// `out[0, j] = x · w_j` for `j` in `j0..j1` and a single row of `x`: dot products of 16
/// lanes, 4 weight rows at a time, reduced at the end (the broadcast blocks would use one
/// lane in 16).
///
/// Shapes: `x` `[1, k]`, `w` `[n, k]`, `out` `[1, n]`.
///
/// # Safety
/// The CPU supports AVX-512F; `out` points to `n` floats of which no other thread writes
/// `j0..j1`; `j1 <= n`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn dot_rows(x: &[f32], w: &[f32], out: *mut f32, k: usize, j0: usize, j1: usize) {
    debug_assert!(x.len() == k && w.len() >= j1 * k);
    let mut j = j0;
    while j < j1 {
        if j1 - j >= 4 {
            dots::<4>(x, w, out, k, j);
            j += 4;
        } else {
            dots::<1>(x, w, out, k, j);
            j += 1;
        }
    }
}

/// `out[j + b] = x · w_{j + b}` for `b < B`, the tail of `k` read with a masked load.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn dots<const B: usize>(x: &[f32], w: &[f32], out: *mut f32, k: usize, j: usize) {
    let mut acc = [_mm512_setzero_ps(); B];
    let wp = w.as_ptr().add(j * k);
    let mut o = 0;
    while o < k {
        let rem = k - o;
        let mask: __mmask16 = if rem >= 16 { 0xffff } else { (1u16 << rem) - 1 };
        let xv = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(o));
        for (b, cell) in acc.iter_mut().enumerate() {
            let wv = _mm512_maskz_loadu_ps(mask, wp.add(b * k + o));
            *cell = _mm512_fmadd_ps(xv, wv, *cell);
        }
        o += 16;
    }
    for (b, cell) in acc.iter().enumerate() {
        *out.add(j + b) = _mm512_reduce_add_ps(*cell);
    }
}
