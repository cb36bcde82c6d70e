//! The three products of a linear layer's training step with bf16 operands and f32 sums on
//! AMX, for [`crate::autocast`]: `y = x Wᵀ`, `∂x = G W` and `∂W = Gᵀ x`, each as the one
//! product the AMX kernel computes (`a Bᵀ` with `a` f32 rows and `B` bf16 `[n, k]`, `k` a
//! multiple of 32). The weight is rounded to bf16 per call (its f32 master is the variable),
//! transposed for `∂x`; `∂W` transposes `G` and `x`, their shared dimension (the tokens)
//! zero-padded to a multiple of 32, which adds nothing to the sums.

use rayon::prelude::*;

use super::{matmul_on, to_bf16, Bf16Isa, Weight, BLOCK_K};

/// Square blocks of the transposes: 32 × 32 f32 reads stay in L1 while written across.
const T_BLOCK: usize = 32;

/// Whether the products of a layer with `k` inputs and `n` outputs, over `m` rows, run here:
/// AMX is on and both dimensions the kernel sums over (`k` forward, `n` for `∂x`) are
/// multiples of 32 (`∂W` pads its own). Otherwise the caller keeps f32.
pub(crate) fn handles(n: usize, k: usize) -> bool {
    super::amx_available() && k.is_multiple_of(BLOCK_K) && n.is_multiple_of(BLOCK_K)
}

/// The AMX kernel (the caller checked [`handles`]).
fn amx() -> Bf16Isa {
    #[cfg(target_arch = "x86_64")]
    {
        Bf16Isa::Amx
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        unreachable!("AMX is x86-64 only")
    }
}

/// `y = x Wᵀ`. Shapes: x `[m, k]`, w `[n, k]` (f32) -> `[m, n]`.
pub(crate) fn forward(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let wb: Vec<u16> = w.par_iter().map(|&v| to_bf16(v)).collect();
    matmul_on(amx(), x, m, Weight { data: &wb, n, k })
}

/// `∂x = G W`. Shapes: g `[m, n]`, w `[n, k]` (f32) -> `[m, k]`.
pub(crate) fn input_grad(g: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut wt = vec![0u16; k * n];
    transpose(w, n, k, &mut wt, n, to_bf16);
    matmul_on(
        amx(),
        g,
        m,
        Weight {
            data: &wt,
            n: k,
            k: n,
        },
    )
}

/// `∂W = Gᵀ x`. Shapes: g `[m, n]`, x `[m, k]` (f32) -> `[n, k]`.
pub(crate) fn weight_grad(g: &[f32], x: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let padded = m.next_multiple_of(BLOCK_K);
    let mut gt = vec![0f32; n * padded];
    transpose(g, m, n, &mut gt, padded, |v| v);
    let mut xt = vec![0u16; k * padded];
    transpose(x, m, k, &mut xt, padded, to_bf16);
    matmul_on(
        amx(),
        &gt,
        n,
        Weight {
            data: &xt,
            n: k,
            k: padded,
        },
    )
}

/// `dst[c][r] = f(src[r][c])` for `src` `[rows, cols]` row-major, `dst` rows of `stride ≥ rows`
/// (the rest left as it is), in parallel over blocks of `dst` rows.
fn transpose<T: Copy + Send + Sync>(
    src: &[f32],
    rows: usize,
    cols: usize,
    dst: &mut [T],
    stride: usize,
    f: impl Fn(f32) -> T + Sync,
) {
    debug_assert_eq!(src.len(), rows * cols);
    debug_assert!(dst.len() >= cols * stride && stride >= rows);
    dst.par_chunks_mut(T_BLOCK * stride)
        .enumerate()
        .for_each(|(cb, block)| {
            let c0 = cb * T_BLOCK;
            let c_end = (c0 + T_BLOCK).min(cols);
            for r0 in (0..rows).step_by(T_BLOCK) {
                let r_end = (r0 + T_BLOCK).min(rows);
                for r in r0..r_end {
                    let row = &src[r * cols..(r + 1) * cols];
                    for c in c0..c_end {
                        block[(c - c0) * stride + r] = f(row[c]);
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::bf16::from_bf16;

    /// Deterministic values of both signs over a few magnitudes.
    fn values(len: usize, seed: f32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as f32 * 0.618 + seed).sin() * 1.7) * (1.0 + (i % 7) as f32))
            .collect()
    }

    fn round(v: &[f32]) -> Vec<f64> {
        v.iter()
            .map(|&x| f64::from(from_bf16(to_bf16(x))))
            .collect()
    }

    /// `Σ_t a[i][t] b[j][t]` over bf16-rounded values, in f64. Shapes: a `[p, t]`, b `[q, t]`.
    fn reference(a: &[f64], b: &[f64], p: usize, q: usize, t: usize) -> Vec<f64> {
        let mut out = vec![0f64; p * q];
        for i in 0..p {
            for j in 0..q {
                out[i * q + j] = (0..t).map(|s| a[i * t + s] * b[j * t + s]).sum();
            }
        }
        out
    }

    fn transposed(v: &[f64], rows: usize, cols: usize) -> Vec<f64> {
        let mut t = vec![0f64; v.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = v[r * cols + c];
            }
        }
        t
    }

    fn assert_close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        let scale = want.iter().fold(1f64, |a, &b| a.max(b.abs()));
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (f64::from(g) - w).abs() <= 1e-5 * scale,
                "{what}[{i}]: {g} against {w}"
            );
        }
    }

    /// The three products equal exact sums over the same bf16 values (f32 rounding apart), at
    /// a row count that is not a multiple of 32 (∂W pads it). Needs AMX: elsewhere `handles`
    /// must say no, and the layer keeps f32.
    #[test]
    fn products_match_bf16_references() {
        let (m, n, k) = (45, 64, 96);
        if !handles(n, k) {
            assert!(!super::super::amx_available() || !n.is_multiple_of(32));
            return;
        }
        assert!(!handles(n, k + 16), "k must be a multiple of 32");
        let (x, w, g) = (values(m * k, 0.1), values(n * k, 0.7), values(m * n, 1.3));
        let (xr, wr, gr) = (round(&x), round(&w), round(&g));
        assert_close(
            &forward(&x, &w, m, n, k),
            &reference(&xr, &wr, m, n, k),
            "y",
        );
        let wt = transposed(&wr, n, k);
        assert_close(
            &input_grad(&g, &w, m, n, k),
            &reference(&gr, &wt, m, k, n),
            "dx",
        );
        let (gt, xt) = (transposed(&gr, m, n), transposed(&xr, m, k));
        assert_close(
            &weight_grad(&g, &x, m, n, k),
            &reference(&gt, &xt, n, k, m),
            "dw",
        );
    }

    #[test]
    fn transposes_fill_the_strided_rows() {
        let src: Vec<f32> = (0..35 * 3).map(|i| i as f32).collect();
        let mut dst = vec![-1f32; 3 * 40];
        transpose(&src, 35, 3, &mut dst, 40, |v| v);
        for c in 0..3 {
            for r in 0..35 {
                assert_eq!(dst[c * 40 + r], (r * 3 + c) as f32);
            }
            assert!(dst[c * 40 + 35..(c + 1) * 40].iter().all(|&v| v == -1.0));
        }
    }
}
