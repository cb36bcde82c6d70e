//! A CPU kernel for `y = x Wᵀ` when `x` has few rows — the decode step of generation, where a
//! general GEMM spends more time packing `W` than multiplying. Each output is a dot product of
//! two contiguous rows, computed in register blocks of 4 × 4 with 16-lane FMA accumulators,
//! split across threads by output column. Inference only: it has no backward pass, and
//! [`crate::layers::Linear`] uses it only when neither operand tracks gradients.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape};

use crate::kernels::cpu_storage::contiguous_f32;
use rayon::prelude::*;

/// Largest row count for which the kernel beats packed GEMM on the reference model.
pub const MAX_ROWS: usize = 64;
/// Below this many multiply-adds a second thread costs more than it saves.
const PARALLEL_WORK: usize = 1 << 20;

/// `x [m, k] · W[n, k]ᵀ -> [m, n]` for f32 CPU tensors (see the module docs).
pub struct SmallMatmul;

impl CustomOp2 for SmallMatmul {
    fn name(&self) -> &'static str {
        "small-m-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name(), "x")?;
        let w = contiguous_f32(s2, l2, self.name(), "w")?;
        let (m, k) = l1.shape().dims2()?;
        let (n, k2) = l2.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("small-m-matmul: inner dimensions {k} and {k2} differ");
        }
        let out = matmul_transposed(x, w, m, n, k);
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

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

/// `x [m, k] · Wt[k, n] -> [m, n]` for f32 CPU tensors whose weight is stored transposed
/// (`[in, out]` row-major, see [`crate::decoder::Decoder::prepare_for_inference`]). Each
/// thread owns a range of output columns; inside it, 4-row × 64-column register blocks
/// accumulate broadcast `x` values times contiguous weight rows, so no horizontal sums are
/// needed; each 64-column block of the weight is read from memory once and reused from cache
/// for every 4 input rows.
pub struct SmallMatmulT;

impl CustomOp2 for SmallMatmulT {
    fn name(&self) -> &'static str {
        "small-m-matmul-t"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name(), "x")?;
        let wt = contiguous_f32(s2, l2, self.name(), "wt")?;
        let (m, k) = l1.shape().dims2()?;
        let (k2, n) = l2.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("small-m-matmul-t: inner dimensions {k} and {k2} differ");
        }
        let out = matmul_weight_t(x, wt, m, n, k);
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = (0..k)
                    .map(|t| x[i * k + t] as f64 * w[j * k + t] as f64)
                    .sum::<f64>() as f32;
            }
        }
        y
    }

    /// Deterministic x `[m, k]` and W `[n, k]` with varied, exactly representable values.
    fn operands(m: usize, n: usize, k: usize) -> (Vec<f32>, Vec<f32>) {
        let x = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0)
            .collect();
        let w = (0..n * k)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0)
            .collect();
        (x, w)
    }

    /// W `[n, k]` -> Wᵀ `[k, n]`, row-major.
    fn transpose(w: &[f32], n: usize, k: usize) -> Vec<f32> {
        let mut wt = vec![0f32; k * n];
        for j in 0..n {
            for t in 0..k {
                wt[t * n + j] = w[j * k + t];
            }
        }
        wt
    }

    #[test]
    fn transposed_weight_kernel_matches_naive() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 5, 17),
            (8, 100, 64),
            (5, 4096, 40),
            (16, 70, 300),
            (4, 64, 16),
        ] {
            let (x, w) = operands(m, n, k);
            let wt = transpose(&w, n, k);
            let got = matmul_weight_t(&x, &wt, m, n, k);
            let want = naive(&x, &w, m, n, k);
            for (g, e) in got.iter().zip(&want) {
                assert!(
                    (g - e).abs() < 1e-4 * (1.0 + e.abs()),
                    "{m}x{n}x{k}: {g} vs {e}"
                );
            }
        }
    }

    #[test]
    fn portable_transposed_kernel_matches_naive() {
        let (m, n, k) = (5, 37, 19);
        let (x, w) = operands(m, n, k);
        let wt = transpose(&w, n, k);
        let mut out = vec![0f32; m * n];
        let ptr = OutPtr(out.as_mut_ptr());
        // SAFETY: one caller owns the whole output; two column ranges cover it.
        unsafe {
            columns_t_portable(&x, &wt, ptr, m, n, k, 0, 16);
            columns_t_portable(&x, &wt, ptr, m, n, k, 16, n);
        }
        for (g, e) in out.iter().zip(naive(&x, &w, m, n, k)) {
            assert!((g - e).abs() < 1e-4 * (1.0 + e.abs()), "{g} vs {e}");
        }
    }

    #[test]
    fn scalar_fallback_matches_naive() {
        let (m, n, k) = (3, 5, 7);
        let x: Vec<f32> = (0..m * k).map(|i| i as f32 / 10.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| 1.0 - i as f32 / 20.0).collect();
        let mut out_t = vec![0f32; m * n];
        columns_scalar(&x, &w, &mut out_t, m, k);
        let want = naive(&x, &w, m, n, k);
        for i in 0..m {
            for j in 0..n {
                assert!((out_t[j * m + i] - want[i * n + j]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn matches_naive_matmul_on_ragged_shapes() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 5, 17),
            (8, 33, 64),
            (5, 4096, 40),
            (16, 7, 300),
            (4, 4, 16),
        ] {
            let (x, w) = operands(m, n, k);
            let got = matmul_transposed(&x, &w, m, n, k);
            let want = naive(&x, &w, m, n, k);
            for (g, e) in got.iter().zip(&want) {
                assert!(
                    (g - e).abs() < 1e-4 * (1.0 + e.abs()),
                    "{m}x{n}x{k}: {g} vs {e}"
                );
            }
        }
    }
}
