//! AVX2 + FMA register blocks of the few-row matmul, for CPUs without AVX-512 (AMD Zen 2/3,
//! older Intel): 6 rows × 16 columns (12 of the 16 `ymm` registers; 4 × 24 spilled an
//! accumulator to the stack) in `columns_t`, up to 6
//! weight rows × 16 rows of `x` in `columns`. Same scheme as the AVX-512 blocks.

use std::arch::x86_64::*;

use std::ops::Range;

use super::loops::{self, CacheBlock, StripBlock};
use super::prefetch::{self, Prefetch};

/// Rows of `x` per packed panel (the register block's height) in `columns_t`.
pub(super) const T_ROWS: usize = 6;
/// 8-lane vectors of weight columns per register block in `columns_t`.
const T_VECS: usize = 2;
/// Weight columns per strip in `columns_t`.
pub(super) const T_COLS: usize = 8 * T_VECS;
/// Weight rows per register block in `columns`.
const W_ROWS: usize = 6;

/// Lane masks (all bits set = lane on) of a strip `width` columns wide.
#[target_feature(enable = "avx2")]
unsafe fn masks(width: usize) -> [__m256i; T_VECS] {
    let mut masks = [_mm256_setzero_si256(); T_VECS];
    for (v, mask) in masks.iter_mut().enumerate() {
        let lanes: [i32; 8] = std::array::from_fn(|l| -i32::from(v * 8 + l < width));
        *mask = _mm256_loadu_si256(lanes.as_ptr().cast());
    }
    masks
}

/// One register block of `columns_t` (see [`StripBlock`]): up to 6 rows × 16 columns, the
/// output of the last strip of a range masked.
///
/// # Safety
/// The CPU supports AVX2 and FMA; the block's pointers are valid for its rows and columns.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn strip_block(s: &StripBlock, pf: &mut Prefetch) {
    let masks = masks(s.width);
    match (s.width == T_COLS, s.rows) {
        (true, 5..) => block_t::<6, false>(s, &masks, pf),
        (true, 3 | 4) => block_t::<4, false>(s, &masks, pf),
        (true, 2) => block_t::<2, false>(s, &masks, pf),
        (true, _) => block_t::<1, false>(s, &masks, pf),
        (false, 5..) => block_t::<6, true>(s, &masks, pf),
        (false, 3 | 4) => block_t::<4, true>(s, &masks, pf),
        (false, 2) => block_t::<2, true>(s, &masks, pf),
        (false, _) => block_t::<1, true>(s, &masks, pf),
    }
}

/// Copy weight rows into packed strips of 16 (see [`loops::pack_rows`]) with this
/// instruction set's vector moves.
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn pack(
    wt: &[f32],
    n: usize,
    b: CacheBlock,
    rows: Range<usize>,
    buf: &mut [f32],
) {
    loops::pack_rows::<T_COLS>(wt, n, b, rows, buf)
}

/// `c[r, :] (+)= Σ_t a[t][r] · b[t][:]` for `rows <= R` rows and the columns of one strip
/// (all 16 unless `MASKED`), over `kb` steps; `first` starts from zero, else from `c`.
///
/// Shapes: `a` `[kb][6]` (a packed panel), `b` `[kb][ldb]`, `c` `[rows, n]`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn block_t<const R: usize, const MASKED: bool>(
    s: &StripBlock,
    masks: &[__m256i; T_VECS],
    pf: &mut Prefetch,
) {
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
    let mut acc = [[_mm256_setzero_ps(); T_VECS]; R];
    if !first {
        for (r, acc_row) in acc.iter_mut().enumerate().take(rows) {
            for (v, cell) in acc_row.iter_mut().enumerate() {
                *cell = load::<MASKED>(c.add(r * n + v * 8), masks[v]);
            }
        }
    }
    for t in 0..kb {
        p.step();
        let row = b.add(t * ldb);
        let mut w = [_mm256_setzero_ps(); T_VECS];
        for (v, wv) in w.iter_mut().enumerate() {
            *wv = load::<MASKED>(row.add(v * 8), masks[v]);
        }
        let at = a.add(t * T_ROWS);
        for (r, acc_row) in acc.iter_mut().enumerate() {
            let xv = _mm256_broadcast_ss(&*at.add(r));
            for (cell, wv) in acc_row.iter_mut().zip(&w) {
                *cell = _mm256_fmadd_ps(xv, *wv, *cell);
            }
        }
    }
    for (r, acc_row) in acc.iter().enumerate().take(rows) {
        for (v, cell) in acc_row.iter().enumerate() {
            let o = c.add(r * n + v * 8);
            if MASKED {
                _mm256_maskstore_ps(o, masks[v], *cell);
            } else {
                _mm256_storeu_ps(o, *cell);
            }
        }
    }
    *pf = p;
}

/// Eight floats at `p`: the lanes of `mask` when `MASKED` (the others zero), else all.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn load<const MASKED: bool>(p: *const f32, mask: __m256i) -> __m256 {
    if MASKED {
        _mm256_maskload_ps(p, mask)
    } else {
        _mm256_loadu_ps(p)
    }
}

/// Fill `out[:, j0..j1]` with `x · W[j0..j1, :]ᵀ`: blocks of 6 (then 1) weight rows, each
/// times every group of `group` (8 or 16) rows of `x`, the next block's rows prefetched.
///
/// Shapes: `xg` packed `[groups][k][group]`, `w` `[n, k]`, `out` `[m, n]`.
///
/// # Safety
/// The CPU supports AVX2 and FMA; `group` is 8 or 16; `out` points to an `m × n` buffer of
/// which no other thread writes columns `j0..j1`; `j1 <= n`.
#[target_feature(enable = "avx2,fma")]
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
        let rows = if j1 - j >= W_ROWS { W_ROWS } else { 1 };
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
                pf: w.as_ptr().add(next.min(n - 1) * k),
                pf_rows: if g == 0 { next_rows } else { 0 },
            };
            match (group, rows) {
                (8, W_ROWS) => block::<W_ROWS, 1>(args),
                (8, _) => block::<1, 1>(args),
                (_, W_ROWS) => block::<W_ROWS, 2>(args),
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
    /// The packed group of `x`, `[k][8 · V]`.
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
#[target_feature(enable = "avx2,fma")]
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
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    let mut t0 = 0;
    while t0 < k {
        for r in 0..pf_rows {
            prefetch::line(pf.add(r * k + t0));
        }
        for t in t0..(t0 + 16).min(k) {
            let bt = b.add(t * 8 * V);
            let mut xv = [_mm256_setzero_ps(); V];
            for (v, x) in xv.iter_mut().enumerate() {
                *x = _mm256_loadu_ps(bt.add(v * 8));
            }
            for (r, acc_row) in acc.iter_mut().enumerate() {
                let wv = _mm256_broadcast_ss(&*a.add(r * k + t));
                for (cell, x) in acc_row.iter_mut().zip(&xv) {
                    *cell = _mm256_fmadd_ps(wv, *x, *cell);
                }
            }
        }
        t0 += 16;
    }
    let mut tile = [[[0f32; 8]; V]; R];
    for (acc_row, tile_row) in acc.iter().zip(tile.iter_mut()) {
        for (cell, lanes) in acc_row.iter().zip(tile_row.iter_mut()) {
            _mm256_storeu_ps(lanes.as_mut_ptr(), *cell);
        }
    }
    for col in 0..cols {
        let o = c.add(col * n);
        for (r, tile_row) in tile.iter().enumerate() {
            *o.add(r) = tile_row[col / 8][col % 8];
        }
    }
}

/// `out[0, j] = x · w_j` for `j` in `j0..j1` and a single row of `x`: dot products of 8
/// lanes, 4 weight rows at a time, reduced at the end with a scalar tail of `k`.
///
/// Shapes: `x` `[1, k]`, `w` `[n, k]`, `out` `[1, n]`.
///
/// # Safety
/// The CPU supports AVX2 and FMA; `out` points to `n` floats of which no other thread writes
/// `j0..j1`; `j1 <= n`.
#[target_feature(enable = "avx2,fma")]
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

/// `out[j + b] = x · w_{j + b}` for `b < B`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dots<const B: usize>(x: &[f32], w: &[f32], out: *mut f32, k: usize, j: usize) {
    let mut acc = [_mm256_setzero_ps(); B];
    let wp = w.as_ptr().add(j * k);
    let full = k / 8 * 8;
    let mut o = 0;
    while o < full {
        let xv = _mm256_loadu_ps(x.as_ptr().add(o));
        for (b, cell) in acc.iter_mut().enumerate() {
            *cell = _mm256_fmadd_ps(xv, _mm256_loadu_ps(wp.add(b * k + o)), *cell);
        }
        o += 8;
    }
    for (b, cell) in acc.iter().enumerate() {
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), *cell);
        let mut sum: f32 = lanes.iter().sum();
        for (t, xv) in x.iter().enumerate().skip(full) {
            sum += xv * *wp.add(b * k + t);
        }
        *out.add(j + b) = sum;
    }
}
