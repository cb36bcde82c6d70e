//! The backward pass of [`crate::kernels::decode_attention::DecodeAttention`], so training on
//! the CPU runs causal attention as one op each way instead of a dozen element-wise passes over
//! the `[b, heads, s, t]` score tensor. Probabilities are recomputed from q and k (as flash
//! attention does) rather than stored: query by query for a few queries, as blocked GEMMs over
//! 64 queries at a time for a training pass.
//!
//! With `S = scale · q kᵀ + mask`, `P = softmax(S)`, `O = P v` and `G = ∂L/∂O`:
//! `dP = G vᵀ`, `D_i = G_i · O_i`, `dS = P ⊙ (dP − D)`, `∂L/∂q = scale · dS k`,
//! `∂L/∂k = scale · dSᵀ q`, `∂L/∂v = Pᵀ G`.

use rayon::prelude::*;

use crate::kernels::dense::{self, Mat};
use crate::kernels::vector::{self, Isa, Kernels, Scalar};
#[cfg(target_arch = "x86_64")]
use crate::kernels::vector::{Avx2, Avx512};

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnDims {
    /// Rows.
    pub b: usize,
    /// Query heads.
    pub nh: usize,
    /// Key/value heads.
    pub nkv: usize,
    /// Queries per row (the last `s` of the `t` key slots).
    pub s: usize,
    /// Key slots per row.
    pub t: usize,
    /// Head width.
    pub d: usize,
}

/// Gradients of q, k and v.
///
/// Shapes (row-major): q, o, grad `[b, nh, s, d]`; k, v `[b, nkv, t, d]`; mask `[b, s, t]`
/// -> (dq `[b, nh, s, d]`, dk `[b, nkv, t, d]`, dv `[b, nkv, t, d]`).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &[f32],
    grad: &[f32],
    mask: Option<&[f32]>,
    scale: f32,
    dims: AttnDims,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let AttnDims {
        b,
        nh,
        nkv,
        s,
        t,
        d,
    } = dims;
    let rep = nh / nkv;
    let mut dq = vec![0f32; b * nh * s * d];
    let mut dk = vec![0f32; b * nkv * t * d];
    let mut dv = vec![0f32; b * nkv * t * d];
    // One task per (row, kv head): it owns the query heads of its group in dq and its own
    // slice of dk and dv, so tasks never write the same memory.
    dq.par_chunks_mut(rep * s * d)
        .zip(dk.par_chunks_mut(t * d))
        .zip(dv.par_chunks_mut(t * d))
        .enumerate()
        .for_each(|(task, ((dq_g, dk_g), dv_g))| {
            let out = GroupGrads {
                dq: dq_g,
                dk: dk_g,
                dv: dv_g,
            };
            let inputs = Inputs {
                q,
                k,
                v,
                o,
                grad,
                mask,
                scale,
                dims,
            };
            if s >= BLOCKED_QUERIES {
                return group_blocked(&inputs, task, out);
            }
            match Isa::detect() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX-512F is available.
                Isa::Avx512 => unsafe { group_avx512(&inputs, task, out) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2 and FMA are available.
                Isa::Avx2 => unsafe { group_avx2(&inputs, task, out) },
                _ => group::<Scalar>(&inputs, task, out),
            }
        });
    (dq, dk, dv)
}

struct Inputs<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    o: &'a [f32],
    grad: &'a [f32],
    mask: Option<&'a [f32]>,
    scale: f32,
    dims: AttnDims,
}

struct GroupGrads<'a> {
    dq: &'a mut [f32],
    dk: &'a mut [f32],
    dv: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn group_avx512(x: &Inputs<'_>, task: usize, out: GroupGrads<'_>) {
    group::<Avx512>(x, task, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn group_avx2(x: &Inputs<'_>, task: usize, out: GroupGrads<'_>) {
    group::<Avx2>(x, task, out)
}

/// From this many queries on a group runs as blocked GEMMs ([`group_blocked`]).
const BLOCKED_QUERIES: usize = 16;
/// Queries per block of [`group_blocked`].
const QUERY_BLOCK: usize = 64;

/// [`group`] as matrix products over blocks of queries: per block, `P` is recomputed as
/// `softmax(scale · Q Kᵀ + mask)` over the keys the block's last query sees, `dP = G Vᵀ`,
/// `dS = scale · P ⊙ (dP − D)`, then `dQ = dS K`, `dK += dSᵀ Q` and `dV += Pᵀ G`.
fn group_blocked(x: &Inputs<'_>, task: usize, out: GroupGrads<'_>) {
    let AttnDims {
        nh, nkv, s, t, d, ..
    } = x.dims;
    let rep = nh / nkv;
    let (row, g) = (task / nkv, task % nkv);
    let kv_base = (row * nkv + g) * t * d;
    let k_g = &x.k[kv_base..kv_base + t * d];
    let v_g = &x.v[kv_base..kv_base + t * d];
    let width = QUERY_BLOCK.min(s) * t;
    let (mut p, mut ds) = (vec![0f32; width], vec![0f32; width]);
    for r in 0..rep {
        let q_base = (row * nh + g * rep + r) * s * d;
        for i0 in (0..s).step_by(QUERY_BLOCK) {
            let rows = QUERY_BLOCK.min(s - i0);
            let tv = t - s + i0 + rows;
            let at = q_base + i0 * d..q_base + (i0 + rows) * d;
            let (qb, gb, ob) = (&x.q[at.clone()], &x.grad[at.clone()], &x.o[at]);
            let (pb, dsb) = (&mut p[..rows * tv], &mut ds[..rows * tv]);
            let keys_t = Mat::transposed(k_g, d);
            dense::gemm(
                pb,
                tv,
                Mat::rows(qb, d),
                keys_t,
                rows,
                tv,
                d,
                x.scale,
                false,
                1,
            );
            let values_t = Mat::transposed(v_g, d);
            dense::gemm(
                dsb,
                tv,
                Mat::rows(gb, d),
                values_t,
                rows,
                tv,
                d,
                1.0,
                false,
                1,
            );
            for (ri, (prow, dsrow)) in pb
                .chunks_exact_mut(tv)
                .zip(dsb.chunks_exact_mut(tv))
                .enumerate()
            {
                let i = i0 + ri;
                let visible = t - s + i + 1;
                let (seen, hidden) = prow.split_at_mut(visible);
                hidden.fill(0.0);
                if let Some(m) = x.mask {
                    let m0 = (row * s + i) * t;
                    for (sc, mv) in seen.iter_mut().zip(&m[m0..m0 + visible]) {
                        *sc += mv;
                    }
                }
                let max = seen.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let inv = 1.0 / vector::exp_shifted_sum(seen, max);
                seen.iter_mut().for_each(|v| *v *= inv);
                let delta: f32 = gb[ri * d..(ri + 1) * d]
                    .iter()
                    .zip(&ob[ri * d..(ri + 1) * d])
                    .map(|(a, b)| a * b)
                    .sum();
                for (dsv, &pv) in dsrow.iter_mut().zip(prow.iter()) {
                    *dsv = x.scale * pv * (*dsv - delta);
                }
            }
            let dq = &mut out.dq[(r * s + i0) * d..(r * s + i0 + rows) * d];
            dense::gemm(
                dq,
                d,
                Mat::rows(dsb, tv),
                Mat::rows(k_g, d),
                rows,
                d,
                tv,
                1.0,
                false,
                1,
            );
            let (dk, dv) = (&mut out.dk[..tv * d], &mut out.dv[..tv * d]);
            let (ds_t, p_t) = (Mat::transposed(dsb, tv), Mat::transposed(pb, tv));
            dense::gemm(dk, d, ds_t, Mat::rows(qb, d), tv, d, rows, 1.0, true, 1);
            dense::gemm(dv, d, p_t, Mat::rows(gb, d), tv, d, rows, 1.0, true, 1);
        }
    }
}

/// The gradients of one (row, kv head) group: its query heads' dq, and its dk and dv.
#[inline(always)]
fn group<K: Kernels>(x: &Inputs<'_>, task: usize, out: GroupGrads<'_>) {
    let AttnDims {
        nh, nkv, s, t, d, ..
    } = x.dims;
    let rep = nh / nkv;
    let (row, g) = (task / nkv, task % nkv);
    let kv_base = (row * nkv + g) * t * d;
    let k_g = &x.k[kv_base..kv_base + t * d];
    let v_g = &x.v[kv_base..kv_base + t * d];
    let mut p = vec![0f32; t];
    for r in 0..rep {
        let head = g * rep + r;
        let q_base = (row * nh + head) * s * d;
        for i in 0..s {
            let visible = t - s + i + 1;
            let qi = &x.q[q_base + i * d..q_base + (i + 1) * d];
            let gi = &x.grad[q_base + i * d..q_base + (i + 1) * d];
            let oi = &x.o[q_base + i * d..q_base + (i + 1) * d];
            // Recompute this query's probabilities.
            let mut max = f32::NEG_INFINITY;
            for (j, pj) in p[..visible].iter_mut().enumerate() {
                let m = x.mask.map_or(0.0, |m| m[(row * s + i) * t + j]);
                *pj = K::dot(qi, &k_g[j * d..(j + 1) * d]) * x.scale + m;
                max = max.max(*pj);
            }
            let sum = K::exp_sum(&mut p[..visible], max);
            let delta = K::dot(gi, oi);
            let dqi = &mut out.dq[(r * s + i) * d..(r * s + i + 1) * d];
            for (j, &pj) in p[..visible].iter().enumerate() {
                let pj = pj / sum;
                if pj == 0.0 {
                    continue;
                }
                let dp = K::dot(gi, &v_g[j * d..(j + 1) * d]);
                let ds = pj * (dp - delta) * x.scale;
                K::axpy(ds, &k_g[j * d..(j + 1) * d], dqi);
                K::axpy(ds, qi, &mut out.dk[j * d..(j + 1) * d]);
                K::axpy(pj, gi, &mut out.dv[j * d..(j + 1) * d]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query-by-query portable path against what `attention_backward` dispatches to.
    fn compare(dims: AttnDims, masked: bool) {
        let n_q = dims.b * dims.nh * dims.s * dims.d;
        let n_kv = dims.b * dims.nkv * dims.t * dims.d;
        let make = |n: usize, salt: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 31 + salt) % 97) as f32 - 48.0) / 50.0)
                .collect()
        };
        let (q, k, v, o, g) = (
            make(n_q, 1),
            make(n_kv, 2),
            make(n_kv, 3),
            make(n_q, 4),
            make(n_q, 5),
        );
        // Row 1 left-padded by three slots.
        let mut mask = vec![0f32; dims.b * dims.s * dims.t];
        for i in 0..dims.s {
            for j in 0..3.min(dims.t - dims.s + i) {
                mask[(dims.s + i) * dims.t + j] = f32::NEG_INFINITY;
            }
        }
        let mask = masked.then_some(mask.as_slice());
        let inputs = Inputs {
            q: &q,
            k: &k,
            v: &v,
            o: &o,
            grad: &g,
            mask,
            scale: 0.25,
            dims,
        };
        let (dq, dk, dv) = attention_backward(&q, &k, &v, &o, &g, mask, 0.25, dims);
        let rep = dims.nh / dims.nkv;
        for task in 0..dims.b * dims.nkv {
            let (row, gr) = (task / dims.nkv, task % dims.nkv);
            let mut pq = vec![0f32; rep * dims.s * dims.d];
            let mut pk = vec![0f32; dims.t * dims.d];
            let mut pv = vec![0f32; dims.t * dims.d];
            group::<Scalar>(
                &inputs,
                task,
                GroupGrads {
                    dq: &mut pq,
                    dk: &mut pk,
                    dv: &mut pv,
                },
            );
            let q0 = (row * dims.nh + gr * rep) * dims.s * dims.d;
            let k0 = (row * dims.nkv + gr) * dims.t * dims.d;
            let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4);
            assert!(close(&pq, &dq[q0..q0 + pq.len()]), "dq, {dims:?}");
            assert!(close(&pk, &dk[k0..k0 + pk.len()]), "dk, {dims:?}");
            assert!(close(&pv, &dv[k0..k0 + pv.len()]), "dv, {dims:?}");
        }
    }

    #[test]
    fn the_portable_path_matches_the_dispatched_one() {
        for masked in [false, true] {
            // Query by query (5 queries), and blocked (70 queries: two blocks).
            for (s, t) in [(5, 5), (5, 8), (70, 70), (70, 73)] {
                let dims = AttnDims {
                    b: 2,
                    nh: 4,
                    nkv: 2,
                    s,
                    t,
                    d: 18,
                };
                compare(dims, masked);
            }
        }
    }
}
