//! The three products of a linear layer's training step with bf16 operands and f32 sums on
//! AMX, for [`crate::autocast`]: `y = x Wᵀ`, `∂x = G W` and `∂W = Gᵀ x`, each as the one
//! product the AMX kernel computes (`a Bᵀ` with `a` f32 rows packed into tiles and `B` bf16
//! `[n, k]` rows, `k` a multiple of 32). The weight is rounded to bf16 per call (its f32 master
//! is the variable), transposed for `∂x`; `∂W` transposes `x` and packs `G` straight from its
//! `[tokens, n]` layout, the tokens zero-padded to a multiple of 32, which adds nothing.

use rayon::prelude::*;

use super::{run_packed_into, Weight, XRows, BLOCK_K, TILE};

/// Whether the products of a layer with `k` inputs and `n` outputs run here: AMX is on (with
/// the AVX-512 extensions the operand code uses) and both dimensions the kernel sums over (`k`
/// forward, `n` for `∂x`) are multiples of 32 (`∂W` pads its own). Otherwise the caller keeps
/// f32.
pub(crate) fn handles(n: usize, k: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::amx_available()
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && k.is_multiple_of(BLOCK_K)
            && n.is_multiple_of(BLOCK_K)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (n, k);
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod on_amx {
    use super::*;
    use crate::kernels::bf16::operands::{convert, pack_k_major, transpose_block};
    use crate::kernels::bf16::Bf16Isa;

    /// Elements per parallel chunk of a conversion.
    const CHUNK: usize = 1 << 14;

    /// `src` rounded to bf16.
    pub(crate) fn rounded(src: &[f32]) -> Vec<u16> {
        let mut out = vec![0u16; src.len()];
        out.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            // SAFETY: `handles` checked the CPU; the chunks have equal lengths.
            .for_each(|(d, s)| unsafe { convert(s, d) });
        out
    }

    /// The transpose of `src` `[rows, cols]` in bf16, rows of `stride ≥ rows` (zero past
    /// `rows`). Shapes: -> `[cols, stride]`.
    pub(crate) fn transposed(src: &[f32], rows: usize, cols: usize, stride: usize) -> Vec<u16> {
        let mut out = vec![0u16; cols * stride];
        out.par_chunks_mut(TILE * stride)
            .enumerate()
            // SAFETY: `handles` checked the CPU; each chunk holds the 16 rows (fewer at the
            // end) that block `c` writes.
            .for_each(|(c, d)| unsafe { transpose_block(src, (rows, cols), c * TILE, d, stride) });
        out
    }

    /// `out (+)= x Wᵀ` for `x` `[m, w.k]` f32 rows. Shapes: out `[m, w.n]`.
    pub(crate) fn product_into(x: &[f32], m: usize, w: Weight<'_>, out: &mut [f32], add: bool) {
        let xs = XRows::pack(Bf16Isa::Amx, x, m, w.k);
        run_packed_into(Bf16Isa::Amx, &xs, m, w, out, add);
    }

    /// `out (+)= aᵀ Wᵀ` for `a` `[t, m]` row-major (read as `[m, t]`), `t` zero-padded to
    /// `w.k` (a multiple of 32 no smaller than `t`). Shapes: out `[m, w.n]`.
    pub(crate) fn product_k_major_into(
        a: &[f32],
        (t, m): (usize, usize),
        w: Weight<'_>,
        out: &mut [f32],
        add: bool,
    ) {
        debug_assert!(w.k >= t && w.k.is_multiple_of(BLOCK_K));
        let k_blocks = w.k / BLOCK_K;
        let tile = TILE * BLOCK_K;
        let mut data = vec![0u16; m.div_ceil(TILE) * k_blocks * tile];
        data.par_chunks_mut(k_blocks * tile)
            .enumerate()
            // SAFETY: `handles` checked the CPU; each block holds `k_blocks` tiles (those past
            // `t` stay zero).
            .for_each(|(rb, block)| unsafe { pack_k_major(a, (t, m), rb, &mut block[..]) });
        run_packed_into(
            Bf16Isa::Amx,
            &XRows::Tiles { data, k_blocks },
            m,
            w,
            out,
            add,
        );
    }

    /// A fresh `[m, n]` buffer that `f` fills completely.
    fn filled(m: usize, n: usize, f: impl FnOnce(&mut [f32])) -> Vec<f32> {
        // SAFETY: every caller passes a non-accumulating product, which writes all of it.
        let mut out = unsafe { crate::kernels::linear_train::unfilled(m * n) };
        f(&mut out);
        out
    }

    /// `y = x Wᵀ`. Shapes: x `[m, k]`, w `[n, k]` (f32) -> `[m, n]`.
    pub(crate) fn forward(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let wb = rounded(w);
        filled(m, n, |y| {
            product_into(x, m, Weight { data: &wb, n, k }, y, false)
        })
    }

    /// `∂x = G W`. Shapes: g `[m, n]`, w `[n, k]` (f32) -> `[m, k]`.
    pub(crate) fn input_grad(g: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let wt = transposed(w, n, k, n);
        filled(m, k, |dx| {
            product_into(
                g,
                m,
                Weight {
                    data: &wt,
                    n: k,
                    k: n,
                },
                dx,
                false,
            )
        })
    }

    /// `∂W = Gᵀ x`, the tokens (`m`) padded to a multiple of 32. Shapes: g `[m, n]`, x
    /// `[m, k]` (f32) -> `[n, k]`.
    pub(crate) fn weight_grad(g: &[f32], x: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let padded = m.next_multiple_of(BLOCK_K);
        let xt = transposed(x, m, k, padded);
        let w = Weight {
            data: &xt,
            n: k,
            k: padded,
        };
        filled(n, k, |dw| product_k_major_into(g, (m, n), w, dw, false))
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use on_amx::{
    forward, input_grad, product_into, product_k_major_into, rounded, transposed, weight_grad,
};

/// Without x86-64 there is no AMX: [`handles`] is false and these are never called.
#[cfg(not(target_arch = "x86_64"))]
mod elsewhere {
    pub(crate) fn forward(_: &[f32], _: &[f32], _: usize, _: usize, _: usize) -> Vec<f32> {
        unreachable!("bf16 training products need AMX")
    }
    pub(crate) fn input_grad(_: &[f32], _: &[f32], _: usize, _: usize, _: usize) -> Vec<f32> {
        unreachable!("bf16 training products need AMX")
    }
    pub(crate) fn weight_grad(_: &[f32], _: &[f32], _: usize, _: usize, _: usize) -> Vec<f32> {
        unreachable!("bf16 training products need AMX")
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) use elsewhere::{forward, input_grad, weight_grad};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::bf16::{from_bf16, to_bf16};

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
}
