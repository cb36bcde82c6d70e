//! The vector primitives the CPU kernels need — dot product, axpy and a shifted exponential —
//! as a portable version, an AVX2 + FMA one and an AVX-512 one, each only inlined into
//! functions compiled with that feature (selected at run time; see [`exp_shifted_sum`]).

/// The vector primitives attention and the softmaxes need.
pub(crate) trait Kernels {
    /// `a · b`.
    fn dot(a: &[f32], b: &[f32]) -> f32;
    /// `y += alpha · x`.
    fn axpy(alpha: f32, x: &[f32], y: &mut [f32]);
    /// `x ← exp(x − shift)` for every element; returns the sum of the results. An element of
    /// `−∞` becomes 0. The vector versions agree with `f32::exp` to a few ulp.
    fn exp_sum(xs: &mut [f32], shift: f32) -> f32;
    /// `Σ exp(x − shift)` without writing (a log-sum-exp's sum).
    fn sum_exp(xs: &[f32], shift: f32) -> f32;
}

/// The instruction set a call runs on: the widest the CPU has, or a forced one (benchmarks,
/// tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// 16-lane AVX-512F.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// 8-lane AVX2 with FMA (e.g. AMD Zen 2/3, older Intel).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Plain Rust the compiler vectorises for the baseline target.
    Portable,
}

impl Isa {
    /// The widest instruction set this CPU supports.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Whether this CPU can run `self`.
    pub fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            Isa::Portable => true,
        }
    }
}

/// `acc[c] += Σ_t x[t] · w[t · stride + c]` for every `c < acc.len()`: one row times a block
/// of columns of a row-major matrix, as axpys of its rows. The CPU must support `isa`.
/// Shapes: x `[k]`, w `[k, stride]` (from the block's first column) -> acc `[cols]`.
pub(crate) fn row_times(isa: Isa, x: &[f32], w: &[f32], stride: usize, acc: &mut [f32]) {
    assert!(x.is_empty() || (x.len() - 1) * stride + acc.len() <= w.len());
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller checked that the CPU has AVX-512F.
        Isa::Avx512 => unsafe { simd::row_times_avx512(x, w, stride, acc) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller checked that the CPU has AVX2 and FMA.
        Isa::Avx2 => unsafe { simd::row_times_avx2(x, w, stride, acc) },
        _ => row_times_with::<Scalar>(x, w, stride, acc),
    }
}

#[inline(always)]
fn row_times_with<K: Kernels>(x: &[f32], w: &[f32], stride: usize, acc: &mut [f32]) {
    let cols = acc.len();
    for (t, &xv) in x.iter().enumerate() {
        K::axpy(xv, &w[t * stride..t * stride + cols], acc);
    }
}

/// Elements summed in f32 lanes before the partial sum joins an f64 total.
const SUM_BLOCK: usize = 1024;

/// `x ← exp(x − shift)` in place with the widest vectors available; returns the sum
/// (accumulated in f64 across blocks, so a 50,000-token vocabulary loses no precision).
pub(crate) fn exp_shifted_sum(xs: &mut [f32], shift: f32) -> f32 {
    let isa = Isa::detect();
    let total: f64 = xs
        .chunks_mut(SUM_BLOCK)
        .map(|c| exp_sum_block(isa, c, shift) as f64)
        .sum();
    total as f32
}

fn exp_sum_block(isa: Isa, xs: &mut [f32], shift: f32) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX-512F.
        Isa::Avx512 => unsafe { simd::exp_sum_avx512(xs, shift) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX2 and FMA.
        Isa::Avx2 => unsafe { simd::exp_sum_avx2(xs, shift) },
        _ => Scalar::exp_sum(xs, shift),
    }
}

/// `Σ exp(x − shift)` with the widest vectors available (accumulated as in
/// [`exp_shifted_sum`]).
pub(crate) fn sum_exp_shifted(xs: &[f32], shift: f32) -> f64 {
    let isa = Isa::detect();
    xs.chunks(SUM_BLOCK)
        .map(|c| sum_exp_block(isa, c, shift) as f64)
        .sum()
}

fn sum_exp_block(isa: Isa, xs: &[f32], shift: f32) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX-512F.
        Isa::Avx512 => unsafe { simd::sum_exp_avx512(xs, shift) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX2 and FMA.
        Isa::Avx2 => unsafe { simd::sum_exp_avx2(xs, shift) },
        _ => Scalar::sum_exp(xs, shift),
    }
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

    #[inline(always)]
    fn exp_sum(xs: &mut [f32], shift: f32) -> f32 {
        let mut sum = 0f32;
        for x in xs {
            *x = (*x - shift).exp();
            sum += *x;
        }
        sum
    }

    #[inline(always)]
    fn sum_exp(xs: &[f32], shift: f32) -> f32 {
        xs.iter().map(|x| (x - shift).exp()).sum()
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// AVX-512 primitives; only ever inlined into functions that enable the feature.
    pub(crate) struct Avx512;

    /// Lanes `0..rem` of 16 (all for `rem ≥ 16`): the mask of a vector's valid tail.
    #[inline(always)]
    pub(crate) fn tail_mask(rem: usize) -> __mmask16 {
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

        #[inline(always)]
        fn exp_sum(xs: &mut [f32], shift: f32) -> f32 {
            let n = xs.len();
            // SAFETY: as in `axpy`.
            unsafe {
                let s = _mm512_set1_ps(shift);
                let mut acc = _mm512_setzero_ps();
                let mut o = 0;
                while o < n {
                    let m = tail_mask(n - o);
                    let x = _mm512_maskz_loadu_ps(m, xs.as_ptr().add(o));
                    let e = _mm512_maskz_mov_ps(m, exp512(_mm512_sub_ps(x, s)));
                    _mm512_mask_storeu_ps(xs.as_mut_ptr().add(o), m, e);
                    acc = _mm512_add_ps(acc, e);
                    o += 16;
                }
                _mm512_reduce_add_ps(acc)
            }
        }

        #[inline(always)]
        fn sum_exp(xs: &[f32], shift: f32) -> f32 {
            let n = xs.len();
            // SAFETY: as in `dot`.
            unsafe {
                let s = _mm512_set1_ps(shift);
                let mut acc = _mm512_setzero_ps();
                let mut o = 0;
                while o < n {
                    let m = tail_mask(n - o);
                    let x = _mm512_maskz_loadu_ps(m, xs.as_ptr().add(o));
                    let e = _mm512_maskz_mov_ps(m, exp512(_mm512_sub_ps(x, s)));
                    acc = _mm512_add_ps(acc, e);
                    o += 16;
                }
                _mm512_reduce_add_ps(acc)
            }
        }
    }

    // The exponential's constants (Cephes' `expf`): `exp(x) = 2ⁿ · exp(r)` with
    // `n = round(x · log₂e)`, `r = x − n · ln 2` in two parts, and a degree-6 polynomial for
    // `exp(r)` on `|r| ≤ ln 2 / 2`.
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_2e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ];

    /// `exp` of 16 lanes; `−∞` gives 0 and NaN stays NaN.
    #[inline(always)]
    unsafe fn exp512(x: __m512) -> __m512 {
        // MAXPS/MINPS return the second operand when either is NaN: NaN passes through.
        let x = _mm512_max_ps(_mm512_set1_ps(-104.0), x);
        let x = _mm512_min_ps(_mm512_set1_ps(88.72), x);
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(P[0]);
        for c in &P[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
        }
        let y = _mm512_fmadd_ps(
            _mm512_mul_ps(p, r),
            r,
            _mm512_add_ps(r, _mm512_set1_ps(1.0)),
        );
        _mm512_scalef_ps(y, n)
    }

    /// `exp` of 8 lanes; below −87.3 (and `−∞`) gives 0, above 88 saturates at e⁸⁸, NaN stays
    /// NaN.
    #[inline(always)]
    unsafe fn exp256(x: __m256) -> __m256 {
        let under = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(-87.3));
        let x = _mm256_max_ps(_mm256_set1_ps(-87.3), x);
        let x = _mm256_min_ps(_mm256_set1_ps(88.0), x);
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(P[0]);
        for c in &P[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        let y = _mm256_fmadd_ps(
            _mm256_mul_ps(p, r),
            r,
            _mm256_add_ps(r, _mm256_set1_ps(1.0)),
        );
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_andnot_ps(under, _mm256_mul_ps(y, _mm256_castsi256_ps(bits)))
    }

    /// AVX2 + FMA primitives; only ever inlined into functions that enable those features.
    pub(crate) struct Avx2;

    /// Lanes `o..o + 8` of `v`, zero past its end.
    #[inline(always)]
    unsafe fn load8(v: &[f32], o: usize) -> __m256 {
        if o + 8 <= v.len() {
            _mm256_loadu_ps(v.as_ptr().add(o))
        } else {
            let mut tmp = [0f32; 8];
            tmp[..v.len() - o].copy_from_slice(&v[o..]);
            _mm256_loadu_ps(tmp.as_ptr())
        }
    }

    /// Store lanes of `x` to `v[o..]`, as many as fit.
    #[inline(always)]
    unsafe fn store8(v: &mut [f32], o: usize, x: __m256) {
        if o + 8 <= v.len() {
            _mm256_storeu_ps(v.as_mut_ptr().add(o), x)
        } else {
            let mut tmp = [0f32; 8];
            _mm256_storeu_ps(tmp.as_mut_ptr(), x);
            let rest = v.len() - o;
            v[o..].copy_from_slice(&tmp[..rest]);
        }
    }

    #[inline(always)]
    unsafe fn hsum8(x: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    impl super::Kernels for Avx2 {
        #[inline(always)]
        fn dot(a: &[f32], b: &[f32]) -> f32 {
            let n = a.len().min(b.len());
            let (a, b) = (&a[..n], &b[..n]);
            // SAFETY: callers are `#[target_feature(enable = "avx2,fma")]`; loads stay in bounds.
            unsafe {
                let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let mut o = 0;
                while o + 16 <= n {
                    acc0 = _mm256_fmadd_ps(load8(a, o), load8(b, o), acc0);
                    acc1 = _mm256_fmadd_ps(load8(a, o + 8), load8(b, o + 8), acc1);
                    o += 16;
                }
                while o < n {
                    acc0 = _mm256_fmadd_ps(load8(a, o), load8(b, o), acc0);
                    o += 8;
                }
                hsum8(_mm256_add_ps(acc0, acc1))
            }
        }

        #[inline(always)]
        fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
            let n = x.len().min(y.len());
            let (x, y) = (&x[..n], &mut y[..n]);
            // SAFETY: as in `dot`; stores stay in bounds.
            unsafe {
                let a = _mm256_set1_ps(alpha);
                let mut o = 0;
                while o < n {
                    store8(y, o, _mm256_fmadd_ps(a, load8(x, o), load8(y, o)));
                    o += 8;
                }
            }
        }

        #[inline(always)]
        fn exp_sum(xs: &mut [f32], shift: f32) -> f32 {
            let n = xs.len();
            // SAFETY: as in `axpy`; lanes past the end are computed but neither stored nor
            // summed.
            unsafe {
                let s = _mm256_set1_ps(shift);
                let mut acc = _mm256_setzero_ps();
                let mut o = 0;
                while o + 8 <= n {
                    let e = exp256(_mm256_sub_ps(load8(xs, o), s));
                    store8(xs, o, e);
                    acc = _mm256_add_ps(acc, e);
                    o += 8;
                }
                let mut sum = hsum8(acc);
                for x in &mut xs[o..] {
                    *x = (*x - shift).exp();
                    sum += *x;
                }
                sum
            }
        }

        #[inline(always)]
        fn sum_exp(xs: &[f32], shift: f32) -> f32 {
            let n = xs.len();
            // SAFETY: as in `dot`.
            unsafe {
                let s = _mm256_set1_ps(shift);
                let mut acc = _mm256_setzero_ps();
                let mut o = 0;
                while o + 8 <= n {
                    acc = _mm256_add_ps(acc, exp256(_mm256_sub_ps(load8(xs, o), s)));
                    o += 8;
                }
                hsum8(acc) + xs[o..].iter().map(|x| (x - shift).exp()).sum::<f32>()
            }
        }
    }

    /// [`super::row_times`] for AVX-512F: 64 columns at a time in four registers, the weight
    /// rows streamed once.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `w` holds `(x.len() − 1) · stride + acc.len()` floats.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn row_times_avx512(x: &[f32], w: &[f32], stride: usize, acc: &mut [f32]) {
        let cols = acc.len();
        let mut c = 0;
        while c < cols {
            let masks: [__mmask16; 4] =
                std::array::from_fn(|v| tail_mask(cols.saturating_sub(c + 16 * v)));
            let mut a = [_mm512_setzero_ps(); 4];
            for (t, &xv) in x.iter().enumerate() {
                let xv = _mm512_set1_ps(xv);
                let row = w.as_ptr().add(t * stride + c);
                for (v, a) in a.iter_mut().enumerate() {
                    let wv = _mm512_maskz_loadu_ps(masks[v], row.add(16 * v));
                    *a = _mm512_fmadd_ps(xv, wv, *a);
                }
            }
            for (v, a) in a.iter().enumerate() {
                let out = acc.as_mut_ptr().add(c + 16 * v);
                let sum = _mm512_add_ps(_mm512_maskz_loadu_ps(masks[v], out), *a);
                _mm512_mask_storeu_ps(out, masks[v], sum);
            }
            c += 64;
        }
    }

    /// [`super::row_times`] for AVX2 + FMA: 32 columns at a time in four registers (a ragged
    /// last block through the axpy kernel).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `w` as for [`row_times_avx512`].
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn row_times_avx2(x: &[f32], w: &[f32], stride: usize, acc: &mut [f32]) {
        let cols = acc.len();
        let full = cols / 32 * 32;
        let mut c = 0;
        while c < full {
            let mut a = [_mm256_setzero_ps(); 4];
            for (t, &xv) in x.iter().enumerate() {
                let xv = _mm256_set1_ps(xv);
                let row = w.as_ptr().add(t * stride + c);
                for (v, a) in a.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(xv, _mm256_loadu_ps(row.add(8 * v)), *a);
                }
            }
            for (v, a) in a.iter().enumerate() {
                let out = acc.as_mut_ptr().add(c + 8 * v);
                _mm256_storeu_ps(out, _mm256_add_ps(_mm256_loadu_ps(out), *a));
            }
            c += 32;
        }
        if full < cols {
            super::row_times_with::<Avx2>(x, &w[full..], stride, &mut acc[full..]);
        }
    }

    /// [`super::Kernels::exp_sum`] compiled for AVX-512F.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn exp_sum_avx512(xs: &mut [f32], shift: f32) -> f32 {
        <Avx512 as super::Kernels>::exp_sum(xs, shift)
    }

    /// [`super::Kernels::sum_exp`] compiled for AVX-512F.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn sum_exp_avx512(xs: &[f32], shift: f32) -> f32 {
        <Avx512 as super::Kernels>::sum_exp(xs, shift)
    }

    /// [`super::Kernels::exp_sum`] compiled for AVX2 + FMA.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn exp_sum_avx2(xs: &mut [f32], shift: f32) -> f32 {
        <Avx2 as super::Kernels>::exp_sum(xs, shift)
    }

    /// [`super::Kernels::sum_exp`] compiled for AVX2 + FMA.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn sum_exp_avx2(xs: &[f32], shift: f32) -> f32 {
        <Avx2 as super::Kernels>::sum_exp(xs, shift)
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use simd::{tail_mask, Avx2, Avx512};

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs across the exponential's range, with −∞, the clamps' edges and odd lengths.
    fn inputs(n: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..n)
            .map(|i| -90.0 + 170.0 * i as f32 / n as f32)
            .collect();
        v.extend([f32::NEG_INFINITY, -87.0, -0.0, 1e-8, 0.346, -0.347, 87.9]);
        v
    }

    fn check<K: Kernels>(name: &str) {
        for n in [0usize, 1, 7, 8, 15, 16, 17, 33, 1001] {
            let xs = inputs(n);
            for shift in [0.0f32, 3.5] {
                let mut got = xs.clone();
                let sum = K::exp_sum(&mut got, shift);
                let mut want_sum = 0f64;
                for (g, x) in got.iter().zip(&xs) {
                    let w = ((x - shift) as f64).exp();
                    want_sum += w;
                    let tol = 4.0 * f32::EPSILON as f64 * w + 1e-37;
                    assert!(
                        (*g as f64 - w).abs() <= tol,
                        "{name}: exp({x} - {shift}) = {g}, want {w}"
                    );
                }
                let rel = (sum as f64 - want_sum).abs() / want_sum.max(1e-30);
                assert!(rel < 1e-5, "{name}: sum {sum} vs {want_sum}");
                let sum2 = K::sum_exp(&xs, shift);
                let rel2 = (sum2 as f64 - want_sum).abs() / want_sum.max(1e-30);
                assert!(rel2 < 1e-5, "{name}: sum_exp {sum2} vs {want_sum}");
            }
        }
        let mut nan = vec![f32::NAN; 3];
        assert!(
            K::exp_sum(&mut nan, 0.0).is_nan(),
            "{name}: NaN must not vanish"
        );
    }

    #[test]
    fn every_exponential_matches_f64_within_a_few_ulp() {
        check::<Scalar>("scalar");
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                #[target_feature(enable = "avx512f")]
                unsafe fn run() {
                    check::<Avx512>("avx512")
                }
                // SAFETY: the CPU has AVX-512F.
                unsafe { run() }
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn run() {
                    check::<Avx2>("avx2")
                }
                // SAFETY: the CPU has AVX2 and FMA.
                unsafe { run() }
            }
        }
    }

    #[test]
    fn the_dispatched_sums_match_f64_over_a_vocabulary() {
        let xs: Vec<f32> = (0..49_152)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0)
            .collect();
        let want: f64 = xs.iter().map(|&x| ((x - 5.0) as f64).exp()).sum();
        let got = sum_exp_shifted(&xs, 5.0);
        assert!((got - want).abs() / want < 1e-6, "{got} vs {want}");
        let mut ys = xs.clone();
        let got = exp_shifted_sum(&mut ys, 5.0) as f64;
        assert!((got - want).abs() / want < 1e-6, "{got} vs {want}");
        assert!((ys[3] as f64 - ((xs[3] - 5.0) as f64).exp()).abs() < 1e-6);
    }

    #[test]
    fn row_times_matches_the_naive_product_on_every_instruction_set() {
        let (k, stride) = (7, 150);
        let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.7).sin()).collect();
        let w: Vec<f32> = (0..k * stride).map(|i| (i as f32 * 0.013).cos()).collect();
        for cols in [1usize, 15, 16, 31, 64, 65, 97, 143] {
            let want: Vec<f32> = (0..cols)
                .map(|c| 0.5 + (0..k).map(|t| x[t] * w[t * stride + 3 + c]).sum::<f32>())
                .collect();
            for isa in [Isa::Portable, Isa::detect()] {
                #[cfg(target_arch = "x86_64")]
                let isas = [isa, Isa::Avx2];
                #[cfg(not(target_arch = "x86_64"))]
                let isas = [isa];
                for isa in isas.into_iter().filter(|i| i.available()) {
                    let mut acc = vec![0.5f32; cols];
                    row_times(isa, &x, &w[3..], stride, &mut acc);
                    for (a, b) in acc.iter().zip(&want) {
                        assert!((a - b).abs() < 1e-5, "{isa:?}, {cols} columns: {a} vs {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn dot_and_axpy_agree_across_instruction_sets() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        for n in [0usize, 1, 8, 9, 16, 31, 37] {
            let want = Scalar::dot(&a[..n], &b[..n]);
            let mut y0 = b[..n].to_vec();
            Scalar::axpy(0.7, &a[..n], &mut y0);
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn run(a: &[f32], b: &[f32]) -> (f32, Vec<f32>) {
                    let mut y = b.to_vec();
                    Avx2::axpy(0.7, a, &mut y);
                    (Avx2::dot(a, b), y)
                }
                // SAFETY: the CPU has AVX2 and FMA.
                let (d, y) = unsafe { run(&a[..n], &b[..n]) };
                assert!((d - want).abs() < 1e-5, "n {n}: {d} vs {want}");
                for (p, q) in y.iter().zip(&y0) {
                    assert!((p - q).abs() < 1e-6);
                }
            }
        }
    }
}
