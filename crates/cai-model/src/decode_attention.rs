//! A CPU attention kernel for few new queries (decode steps): for each (row, head) it takes
//! dot products with the cached keys, a masked softmax and a weighted sum of the cached values,
//! reading the cache in place instead of launching a dozen small tensor ops and batched GEMMs.
//! Inference only (no backward); [`crate::decoder`] uses it when nothing tracks gradients.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape};
use rayon::prelude::*;

/// Most new queries per row for which the kernel is used.
pub const MAX_QUERIES: usize = 16;
/// Below this many multiply-adds the work stays on one thread.
const PARALLEL_WORK: usize = 1 << 16;

/// `softmax(q kᵀ · scale + mask) v` with grouped-query heads.
///
/// Shapes: q `[b, heads, s, d]`, k and v `[b, kv_heads, t, d]` (any strides with a unit last
/// stride, e.g. a view of the KV cache), mask `[b, s, t]` additive -> `[b, heads, s, d]`.
pub struct DecodeAttention {
    /// `1 / sqrt(d)`.
    pub scale: f32,
    /// Additive mask, row-major `[b, s, t]`, or `None` when every key is visible.
    pub mask: Option<std::sync::Arc<Vec<f32>>>,
}

struct View<'a> {
    data: &'a [f32],
    offset: usize,
    strides: [usize; 4],
}

impl View<'_> {
    #[inline]
    fn row(&self, b: usize, h: usize, t: usize, d: usize) -> &[f32] {
        let start = self.offset + b * self.strides[0] + h * self.strides[1] + t * self.strides[2];
        &self.data[start..start + d]
    }
}

fn view<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<View<'a>> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("decode-attention: {what} must be f32");
    };
    let st = l.stride();
    if st.len() != 4 || st[3] != 1 {
        candle_core::bail!("decode-attention: {what} must be rank 4 with a unit last stride");
    }
    Ok(View { data, offset: l.start_offset(), strides: [st[0], st[1], st[2], st[3]] })
}

impl CustomOp3 for DecodeAttention {
    fn name(&self) -> &'static str {
        "decode-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, nh, s, d) = l1.shape().dims4()?;
        let (_, nkv, t, _) = l2.shape().dims4()?;
        let (q, k, v) = (view(s1, l1, "q")?, view(s2, l2, "k")?, view(s3, l3, "v")?);
        let rep = nh / nkv;
        let mut out = vec![0f32; b * nh * s * d];
        let work = |bh: usize, chunk: &mut [f32]| {
            let (row, head) = (bh / nh, bh % nh);
            let g = head / rep;
            let mut scores = vec![0f32; t];
            for i in 0..s {
                let qi = q.row(row, head, i, d);
                for (j, sc) in scores.iter_mut().enumerate() {
                    *sc = dot(qi, k.row(row, g, j, d)) * self.scale;
                }
                if let Some(m) = &self.mask {
                    let mr = &m[(row * s + i) * t..(row * s + i + 1) * t];
                    for (sc, mv) in scores.iter_mut().zip(mr) {
                        *sc += mv;
                    }
                }
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for sc in scores.iter_mut() {
                    *sc = (*sc - max).exp();
                    sum += *sc;
                }
                let o = &mut chunk[i * d..(i + 1) * d];
                for (j, &p) in scores.iter().enumerate() {
                    axpy(p / sum, v.row(row, g, j, d), o);
                }
            }
        };
        if b * nh * s * t * d >= PARALLEL_WORK && rayon::current_num_threads() > 1 {
            out.par_chunks_mut(s * d).enumerate().for_each(|(bh, c)| work(bh, c));
        } else {
            out.chunks_mut(s * d).enumerate().for_each(|(bh, c)| work(bh, c));
        }
        Ok((CpuStorage::F32(out), Shape::from((b, nh, s, d))))
    }
}

/// `a · b`.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is available.
        return unsafe { simd::dot(a, b) };
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `y += alpha · x`.
#[inline]
fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is available.
        return unsafe { simd::axpy(alpha, x, y) };
    }
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let mut acc = _mm512_setzero_ps();
        let mut o = 0;
        while o < n {
            let rem = n - o;
            let mask: __mmask16 = if rem >= 16 { 0xffff } else { (1u16 << rem) - 1 };
            let x = _mm512_maskz_loadu_ps(mask, a.as_ptr().add(o));
            let y = _mm512_maskz_loadu_ps(mask, b.as_ptr().add(o));
            acc = _mm512_fmadd_ps(x, y, acc);
            o += 16;
        }
        _mm512_reduce_add_ps(acc)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let a = _mm512_set1_ps(alpha);
        let mut o = 0;
        while o < n {
            let rem = n - o;
            let mask: __mmask16 = if rem >= 16 { 0xffff } else { (1u16 << rem) - 1 };
            let xv = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(o));
            let yv = _mm512_maskz_loadu_ps(mask, y.as_ptr().add(o));
            _mm512_mask_storeu_ps(y.as_mut_ptr().add(o), mask, _mm512_fmadd_ps(a, xv, yv));
            o += 16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor, D};

    #[test]
    fn matches_softmax_attention_with_gqa_mask_and_strided_cache() {
        let dev = Device::Cpu;
        let (b, nh, nkv, s, t, d) = (2, 4, 2, 2, 5, 20);
        let q = Tensor::randn(0f32, 1.0, (b, nh, s, d), &dev).unwrap();
        // k and v as views into a larger cache, like the KV cache hands out.
        let kc = Tensor::randn(0f32, 1.0, (b, nkv, t + 3, d), &dev).unwrap();
        let vc = Tensor::randn(0f32, 1.0, (b, nkv, t + 3, d), &dev).unwrap();
        let (k, v) = (kc.narrow(2, 0, t).unwrap(), vc.narrow(2, 0, t).unwrap());
        let mut mask = vec![0f32; b * s * t];
        mask[1] = -1e30; // row 0, query 0 cannot see key 1
        mask[(s + 1) * t - 1] = -1e30; // row 1, query 1 cannot see key 4
        let op = DecodeAttention { scale: 0.3, mask: Some(std::sync::Arc::new(mask.clone())) };
        let got = q.apply_op3_no_bwd(&k, &v, &op).unwrap();

        let rep = nh / nkv;
        let kr = k.unsqueeze(2).unwrap().repeat((1, 1, rep, 1, 1)).unwrap().reshape((b, nh, t, d)).unwrap();
        let vr = v.unsqueeze(2).unwrap().repeat((1, 1, rep, 1, 1)).unwrap().reshape((b, nh, t, d)).unwrap();
        let m = Tensor::from_vec(mask, (b, 1, s, t), &dev).unwrap();
        let scores = (q.matmul(&kr.t().unwrap()).unwrap() * 0.3).unwrap().broadcast_add(&m).unwrap();
        let want = candle_nn::ops::softmax(&scores, D::Minus1).unwrap().matmul(&vr).unwrap();
        let diff: f32 = (got - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
        assert!(diff < 1e-5, "max difference {diff}");
    }
}
