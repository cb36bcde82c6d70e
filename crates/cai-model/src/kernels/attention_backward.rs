//! The backward pass of [`crate::kernels::decode_attention::DecodeAttention`], so training on
//! the CPU runs causal attention as one op each way instead of a dozen element-wise passes over
//! the `[b, heads, s, t]` score tensor. Probabilities are recomputed row by row from q and k
//! (as flash attention does) rather than stored.
//!
//! With `S = scale · q kᵀ + mask`, `P = softmax(S)`, `O = P v` and `G = ∂L/∂O`:
//! `dP = G vᵀ`, `D_i = G_i · O_i`, `dS = P ⊙ (dP − D)`, `∂L/∂q = scale · dS k`,
//! `∂L/∂k = scale · dSᵀ q`, `∂L/∂v = Pᵀ G`.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use crate::kernels::vector::Avx512;
use crate::kernels::vector::{Kernels, Scalar};

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
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX-512F is available.
                return unsafe { group_avx512(&inputs, task, out) };
            }
            group::<Scalar>(&inputs, task, out)
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
            let mut sum = 0f32;
            for pj in &mut p[..visible] {
                *pj = (*pj - max).exp();
                sum += *pj;
            }
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

    #[test]
    fn the_portable_path_matches_the_dispatched_one() {
        let dims = AttnDims {
            b: 2,
            nh: 4,
            nkv: 2,
            s: 5,
            t: 5,
            d: 18,
        };
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
        let inputs = Inputs {
            q: &q,
            k: &k,
            v: &v,
            o: &o,
            grad: &g,
            mask: None,
            scale: 0.25,
            dims,
        };
        let (dq, dk, dv) = attention_backward(&q, &k, &v, &o, &g, None, 0.25, dims);
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
            assert!(close(&pq, &dq[q0..q0 + pq.len()]));
            assert!(close(&pk, &dk[k0..k0 + pk.len()]));
            assert!(close(&pv, &dv[k0..k0 + pv.len()]));
        }
    }
}
