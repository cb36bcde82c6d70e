//! The two vector primitives the CPU attention kernels need — dot product and axpy — as a
//! portable version and an AVX-512 one that is only inlined into functions compiled with
//! that feature (selected at run time).

/// The two vector primitives attention needs.
pub(crate) trait Kernels {
    /// `a · b`.
    fn dot(a: &[f32], b: &[f32]) -> f32;
    /// `y += alpha · x`.
    fn axpy(alpha: f32, x: &[f32], y: &mut [f32]);
}

pub(crate) struct Scalar;

impl Kernels for Scalar {
    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[inline(always)]
    fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
        for (yi, xi) in y.iter_mut().zip(x) {
            *yi += alpha * xi;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// AVX-512 primitives; only ever inlined into functions that enable the feature.
    pub(crate) struct Avx512;

    #[inline(always)]
    fn tail_mask(rem: usize) -> __mmask16 {
        if rem >= 16 {
            0xffff
        } else {
            (1u16 << rem) - 1
        }
    }

    impl super::Kernels for Avx512 {
        #[inline(always)]
        fn dot(a: &[f32], b: &[f32]) -> f32 {
            let n = a.len().min(b.len());
            // SAFETY: callers run on a CPU with AVX-512F (callers are `#[target_feature(enable = "avx512f")]`); masked loads
            // never read past `n`.
            unsafe {
                let mut acc = _mm512_setzero_ps();
                let mut o = 0;
                while o < n {
                    let m = tail_mask(n - o);
                    let x = _mm512_maskz_loadu_ps(m, a.as_ptr().add(o));
                    let y = _mm512_maskz_loadu_ps(m, b.as_ptr().add(o));
                    acc = _mm512_fmadd_ps(x, y, acc);
                    o += 16;
                }
                _mm512_reduce_add_ps(acc)
            }
        }

        #[inline(always)]
        fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
            let n = x.len().min(y.len());
            // SAFETY: as in `dot`; masked stores never write past `n`.
            unsafe {
                let a = _mm512_set1_ps(alpha);
                let mut o = 0;
                while o < n {
                    let m = tail_mask(n - o);
                    let xv = _mm512_maskz_loadu_ps(m, x.as_ptr().add(o));
                    let yv = _mm512_maskz_loadu_ps(m, y.as_ptr().add(o));
                    _mm512_mask_storeu_ps(y.as_mut_ptr().add(o), m, _mm512_fmadd_ps(a, xv, yv));
                    o += 16;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use simd::Avx512;
