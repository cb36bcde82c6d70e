//! The few-row kernels as they were before the register-blocked rewrite (commit 07e26cf),
//! kept in the example only, to time old against new in one run.
//!
//! A CPU kernel for `y = x Wᵀ` when `x` has few rows — the decode step of generation, where a
//! general GEMM spends more time packing `W` than multiplying. Each output is a dot product of
//! two contiguous rows, computed in register blocks of 4 × 4 with 16-lane FMA accumulators,
//! split across threads by output column. Inference only: it has no backward pass, and
//! `Linear` uses it only when neither operand tracks gradients.

use rayon::prelude::*;

/// Below this many multiply-adds a second thread costs more than it saves.
const PARALLEL_WORK: usize = 1 << 20;

/// `x [m, k] · W[n, k]ᵀ` as a row-major `[m, n]` vector.
pub fn matmul_transposed(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    assert_eq!(x.len(), m * k);
    assert_eq!(w.len(), n * k);
    // Column-major result: each thread owns a contiguous range of output columns.
    let mut out_t = vec![0f32; n * m];
    let threads = rayon::current_num_threads();
    if threads > 1 && m * n * k >= PARALLEL_WORK {
        let cols = n.div_ceil(threads).next_multiple_of(4);
        out_t
            .par_chunks_mut(cols * m)
            .enumerate()
            .for_each(|(c, chunk)| {
                let first = c * cols;
                let count = chunk.len() / m;
                columns(x, &w[first * k..(first + count) * k], chunk, m, k);
            });
    } else {
        columns(x, w, &mut out_t, m, k);
    }
    let mut out = vec![0f32; m * n];
    for (j, col) in out_t.chunks_exact(m).enumerate() {
        for (i, &v) in col.iter().enumerate() {
            out[i * n + j] = v;
        }
    }
    out
}

/// Fill `out_t[j * m + i] = x_i · w_j` for the rows of `w`, with the widest SIMD available.
fn columns(x: &[f32], w: &[f32], out_t: &mut [f32], m: usize, k: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, which is all `avx512::columns` uses.
            return unsafe { avx512::columns(x, w, out_t, m, k) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA, which is all `avx2::columns` uses.
            return unsafe { avx2::columns(x, w, out_t, m, k) };
        }
    }
    columns_scalar(x, w, out_t, m, k)
}

fn columns_scalar(x: &[f32], w: &[f32], out_t: &mut [f32], m: usize, k: usize) {
    for (j, wr) in w.chunks_exact(k).enumerate() {
        for (i, xr) in x.chunks_exact(k).enumerate() {
            out_t[j * m + i] = xr.iter().zip(wr).map(|(a, b)| a * b).sum();
        }
    }
}

/// Walk the output in 4 × 4 blocks (rows of x × rows of w), handing ragged edges to smaller
/// blocks. `$block::<IB, JB>(x, w, out_t, m, k, i, j)` computes one block.
macro_rules! tile {
    ($block:ident, $x:expr, $w:expr, $out_t:expr, $m:expr, $k:expr) => {{
        let (x, w, out_t, m, k) = ($x, $w, $out_t, $m, $k);
        let n = w.len() / k;
        let mut j = 0;
        while j < n {
            let jb = (n - j).min(4);
            let mut i = 0;
            while i < m {
                let ib = (m - i).min(4);
                if ib == 4 && jb == 4 {
                    $block::<4, 4>(x, w, out_t, m, k, i, j);
                } else if jb == 4 {
                    for d in 0..ib {
                        $block::<1, 4>(x, w, out_t, m, k, i + d, j);
                    }
                } else {
                    for di in 0..ib {
                        for dj in 0..jb {
                            $block::<1, 1>(x, w, out_t, m, k, i + di, j + dj);
                        }
                    }
                }
                i += ib;
            }
            j += jb;
        }
    }};
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// `out[i, j0..j1] = x_i · Wt[:, j0..j1]` in blocks of up to 4 rows × 64 columns, all row
    /// blocks of a column block in turn; the last partial 16-column group uses masked loads
    /// and stores.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn columns_t(
        x: &[f32],
        wt: &[f32],
        out: *mut f32,
        m: usize,
        n: usize,
        k: usize,
        j0: usize,
        j1: usize,
    ) {
        // Column blocks outside, row blocks inside: a block's weights (k × 64 floats, at most
        // a few hundred KiB) stay in cache while every group of 4 rows uses them, so the
        // weights come from memory once per call instead of once per 4 rows (bench-6m decode
        // at batch 16 read them four times per step).
        let mut j = j0;
        while j < j1 {
            let width = (j1 - j).min(64);
            let mut i = 0;
            while i < m {
                let ib = (m - i).min(4);
                match ib {
                    4 => block_t::<4>(x, wt, out, n, k, i, j, width),
                    3 => block_t::<3>(x, wt, out, n, k, i, j, width),
                    2 => block_t::<2>(x, wt, out, n, k, i, j, width),
                    _ => block_t::<1>(x, wt, out, n, k, i, j, width),
                }
                i += ib;
            }
            j += width;
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block_t<const IB: usize>(
        x: &[f32],
        wt: &[f32],
        out: *mut f32,
        n: usize,
        k: usize,
        i: usize,
        j: usize,
        width: usize,
    ) {
        let masks: [__mmask16; 4] = std::array::from_fn(|v| {
            let rem = width.saturating_sub(v * 16);
            if rem >= 16 {
                0xffff
            } else {
                ((1u32 << rem) - 1) as u16
            }
        });
        let mut acc = [[_mm512_setzero_ps(); 4]; IB];
        let xp = x.as_ptr().add(i * k);
        let wp = wt.as_ptr().add(j);
        for t in 0..k {
            let row = wp.add(t * n);
            let w = [
                _mm512_maskz_loadu_ps(masks[0], row),
                _mm512_maskz_loadu_ps(masks[1], row.add(16)),
                _mm512_maskz_loadu_ps(masks[2], row.add(32)),
                _mm512_maskz_loadu_ps(masks[3], row.add(48)),
            ];
            for (a, acc_row) in acc.iter_mut().enumerate() {
                let xv = _mm512_set1_ps(*xp.add(a * k + t));
                for (cell, wv) in acc_row.iter_mut().zip(&w) {
                    *cell = _mm512_fmadd_ps(xv, *wv, *cell);
                }
            }
        }
        for (a, acc_row) in acc.iter().enumerate() {
            let o = out.add((i + a) * n + j);
            for (v, cell) in acc_row.iter().enumerate() {
                _mm512_mask_storeu_ps(o.add(v * 16), masks[v], *cell);
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn columns(x: &[f32], w: &[f32], out_t: &mut [f32], m: usize, k: usize) {
        tile!(block, x, w, out_t, m, k)
    }

    /// Dot products of x rows `i..i+IB` with w rows `j..j+JB`; the tail of `k` is read with a
    /// masked load, so no scalar loop is needed.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block<const IB: usize, const JB: usize>(
        x: &[f32],
        w: &[f32],
        out_t: &mut [f32],
        m: usize,
        k: usize,
        i: usize,
        j: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); JB]; IB];
        let xp = x.as_ptr().add(i * k);
        let wp = w.as_ptr().add(j * k);
        let mut o = 0;
        while o < k {
            let rem = k - o;
            let mask: __mmask16 = if rem >= 16 { 0xffff } else { (1u16 << rem) - 1 };
            let mut wv = [_mm512_setzero_ps(); JB];
            for (b, v) in wv.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(mask, wp.add(b * k + o));
            }
            for (a, row) in acc.iter_mut().enumerate() {
                let xv = _mm512_maskz_loadu_ps(mask, xp.add(a * k + o));
                for (b, cell) in row.iter_mut().enumerate() {
                    *cell = _mm512_fmadd_ps(xv, wv[b], *cell);
                }
            }
            o += 16;
        }
        for (a, row) in acc.iter().enumerate() {
            for (b, cell) in row.iter().enumerate() {
                out_t[(j + b) * m + i + a] = _mm512_reduce_add_ps(*cell);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn columns(x: &[f32], w: &[f32], out_t: &mut [f32], m: usize, k: usize) {
        tile!(block, x, w, out_t, m, k)
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn block<const IB: usize, const JB: usize>(
        x: &[f32],
        w: &[f32],
        out_t: &mut [f32],
        m: usize,
        k: usize,
        i: usize,
        j: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); JB]; IB];
        let xp = x.as_ptr().add(i * k);
        let wp = w.as_ptr().add(j * k);
        let full = k / 8 * 8;
        let mut o = 0;
        while o < full {
            let mut wv = [_mm256_setzero_ps(); JB];
            for (b, v) in wv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(wp.add(b * k + o));
            }
            for (a, row) in acc.iter_mut().enumerate() {
                let xv = _mm256_loadu_ps(xp.add(a * k + o));
                for (b, cell) in row.iter_mut().enumerate() {
                    *cell = _mm256_fmadd_ps(xv, wv[b], *cell);
                }
            }
            o += 8;
        }
        for (a, row) in acc.iter().enumerate() {
            for (b, cell) in row.iter().enumerate() {
                let mut lanes = [0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), *cell);
                let mut s: f32 = lanes.iter().sum();
                for t in full..k {
                    s += *xp.add(a * k + t) * *wp.add(b * k + t);
                }
                out_t[(j + b) * m + i + a] = s;
            }
        }
    }
}

/// Raw output pointer shared by threads that write disjoint column ranges.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every thread writes a disjoint set of columns of the output.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// `x [m, k] · Wt[k, n]` as a row-major `[m, n]` vector.
pub fn matmul_weight_t(x: &[f32], wt: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    assert_eq!(x.len(), m * k);
    assert_eq!(wt.len(), k * n);
    let mut out = vec![0f32; m * n];
    let threads = rayon::current_num_threads();
    let ptr = OutPtr(out.as_mut_ptr());
    if threads > 1 && m * n * k >= PARALLEL_WORK {
        let cols = n.div_ceil(threads).next_multiple_of(16);
        (0..n.div_ceil(cols)).into_par_iter().for_each(|c| {
            let j0 = c * cols;
            // SAFETY: column ranges [j0, j0 + cols) are disjoint between tasks.
            unsafe { columns_t(x, wt, ptr, m, n, k, j0, (j0 + cols).min(n)) }
        });
    } else {
        // SAFETY: a single task owns the whole output.
        unsafe { columns_t(x, wt, ptr, m, n, k, 0, n) }
    }
    out
}

/// Fill `out[:, j0..j1]`.
///
/// # Safety
/// `out` points to an `m × n` buffer and no other thread writes columns `j0..j1`.
#[allow(clippy::too_many_arguments)]
unsafe fn columns_t(
    x: &[f32],
    wt: &[f32],
    out: OutPtr,
    m: usize,
    n: usize,
    k: usize,
    j0: usize,
    j1: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        return avx512::columns_t(x, wt, out.0, m, n, k, j0, j1);
    }
    columns_t_portable(x, wt, out, m, n, k, j0, j1)
}

/// The portable version of `columns_t`: row-wise axpys over contiguous weight rows, which the
/// compiler vectorises for the baseline target.
///
/// # Safety
/// As for `columns_t`.
#[allow(clippy::too_many_arguments)]
unsafe fn columns_t_portable(
    x: &[f32],
    wt: &[f32],
    out: OutPtr,
    m: usize,
    n: usize,
    k: usize,
    j0: usize,
    j1: usize,
) {
    let mut acc = vec![0f32; j1 - j0];
    for i in 0..m {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for t in 0..k {
            let xv = x[i * k + t];
            for (a, &w) in acc.iter_mut().zip(&wt[t * n + j0..t * n + j1]) {
                *a += xv * w;
            }
        }
        std::ptr::copy_nonoverlapping(acc.as_ptr(), out.0.add(i * n + j0), j1 - j0);
    }
}
