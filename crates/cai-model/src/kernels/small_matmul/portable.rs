//! The portable few-row matmul: the same register blocks as the SIMD versions, written over
//! fixed-size arrays (4 rows × 16 columns) that the compiler vectorises for any target. It
//! multiplies and adds separately: `mul_add` without hardware FMA is a slow library call.

use std::ops::Range;

use super::loops::{self, CacheBlock, StripBlock};
use super::prefetch::Prefetch;

/// Rows of `x` per packed panel in `columns_t`.
pub(super) const T_ROWS: usize = 4;
/// Weight columns per strip in `columns_t`.
pub(super) const T_COLS: usize = 16;
/// Rows of `x` per packed group in `columns`.
pub(super) const N_COLS: usize = 16;
/// Weight rows per block in `columns`.
const W_ROWS: usize = 4;

/// One register block of `columns_t` (see [`StripBlock`]): up to 4 rows × 16 columns.
///
/// # Safety
/// The block's pointers are valid for its rows and columns.
pub(super) unsafe fn strip_block(s: &StripBlock, pf: &mut Prefetch) {
    let StripBlock {
        a,
        b,
        ldb,
        n,
        kb,
        width,
        c,
        rows,
        first,
    } = *s;
    let mut acc = [[0f32; T_COLS]; T_ROWS];
    if !first {
        for (r, acc_row) in acc.iter_mut().enumerate().take(rows) {
            std::ptr::copy_nonoverlapping(c.add(r * n), acc_row.as_mut_ptr(), width);
        }
    }
    for t in 0..kb {
        pf.step();
        let mut w = [0f32; T_COLS];
        std::ptr::copy_nonoverlapping(b.add(t * ldb), w.as_mut_ptr(), width);
        let xs = std::slice::from_raw_parts(a.add(t * T_ROWS), T_ROWS);
        for (acc_row, &xv) in acc.iter_mut().zip(xs) {
            for (cell, wv) in acc_row.iter_mut().zip(&w) {
                *cell += xv * *wv;
            }
        }
    }
    for (r, acc_row) in acc.iter().enumerate().take(rows) {
        std::ptr::copy_nonoverlapping(acc_row.as_ptr(), c.add(r * n), width);
    }
}

/// Copy weight rows into packed strips of 16 (see [`loops::pack_rows`]).
///
/// # Safety
/// None beyond the types: `unsafe` only to share the signature of the SIMD versions.
pub(super) unsafe fn pack(
    wt: &[f32],
    n: usize,
    b: CacheBlock,
    rows: Range<usize>,
    buf: &mut [f32],
) {
    loops::pack_rows::<T_COLS>(wt, n, b, rows, buf)
}

/// Fill `out[:, j0..j1]` with `x · W[j0..j1, :]ᵀ`: blocks of 4 weight rows, each times every
/// group of 16 rows of `x`.
///
/// Shapes: `xg` packed `[groups][k][16]`, `w` `[n, k]`, `out` `[m, n]`.
///
/// # Safety
/// `out` points to an `m × n` buffer of which no other thread writes columns `j0..j1`;
/// `j1 <= n`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn columns(
    xg: &[f32],
    w: &[f32],
    out: *mut f32,
    m: usize,
    n: usize,
    k: usize,
    j0: usize,
    j1: usize,
) {
    let groups = m.div_ceil(N_COLS);
    assert!(xg.len() >= groups * N_COLS * k && w.len() == n * k && j1 <= n);
    let mut j = j0;
    while j < j1 {
        let rows = (j1 - j).min(W_ROWS);
        let wb = &w[j * k..(j + rows) * k];
        for g in 0..groups {
            let b = &xg[g * N_COLS * k..(g + 1) * N_COLS * k];
            let mut acc = [[0f32; N_COLS]; W_ROWS];
            for (t, xs) in b.chunks_exact(N_COLS).enumerate() {
                for (r, acc_row) in acc.iter_mut().enumerate().take(rows) {
                    let wv = wb[r * k + t];
                    for (cell, xv) in acc_row.iter_mut().zip(xs) {
                        *cell += wv * *xv;
                    }
                }
            }
            let c = out.add(g * N_COLS * n + j);
            for col in 0..(m - g * N_COLS).min(N_COLS) {
                for (r, acc_row) in acc.iter().enumerate().take(rows) {
                    *c.add(col * n + r) = acc_row[col];
                }
            }
        }
        j += rows;
    }
}

/// `out[0, j] = x · w_j` for `j` in `j0..j1` and a single row of `x`, in 8 partial sums the
/// compiler vectorises.
///
/// Shapes: `x` `[1, k]`, `w` `[n, k]`, `out` `[1, n]`.
///
/// # Safety
/// `out` points to `n` floats of which no other thread writes `j0..j1`; `j1 <= n`.
pub(super) unsafe fn dot_rows(x: &[f32], w: &[f32], out: *mut f32, k: usize, j0: usize, j1: usize) {
    for j in j0..j1 {
        let wr = &w[j * k..(j + 1) * k];
        let mut part = [0f32; 8];
        let (xc, xt) = x.as_chunks::<8>();
        let (wc, wt) = wr.as_chunks::<8>();
        for (a, b) in xc.iter().zip(wc) {
            for l in 0..8 {
                part[l] += a[l] * b[l];
            }
        }
        let tail: f32 = xt.iter().zip(wt).map(|(a, b)| a * b).sum();
        *out.add(j) = part.iter().sum::<f32>() + tail;
    }
}
