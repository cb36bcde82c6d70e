//! The bf16 kernel for CPUs without bf16 instructions: each weight row is widened to f32 once
//! per call and dotted with every row of `x` (already rounded to bf16), 16 partial sums at a
//! time so the compiler vectorises it — for AVX2 + FMA when the CPU has them.

use std::ops::Range;

use super::{from_bf16, Out, Weight, XRows};

/// Partial sums per dot product (two AVX2 vectors).
const LANES: usize = 16;

/// One rectangle of the product (see `kernels::bf16::run`), compiled for the baseline target.
///
/// # Safety
/// `xs` is `XRows::F32` of `w.k` inputs; no other thread writes this rectangle of `out`.
pub(super) unsafe fn rectangle(
    xs: &XRows,
    w: Weight<'_>,
    rows: Range<usize>,
    outputs: Range<usize>,
    out: &Out,
) {
    rectangle_impl::<false>(xs, w, rows, outputs, out)
}

/// [`rectangle`] compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU supports AVX2 and FMA; otherwise as [`rectangle`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn rectangle_avx2(
    xs: &XRows,
    w: Weight<'_>,
    rows: Range<usize>,
    outputs: Range<usize>,
    out: &Out,
) {
    rectangle_impl::<true>(xs, w, rows, outputs, out)
}

/// The rectangle with fused multiply-adds (`FMA`: the CPU has them) or a multiply and an add
/// (without hardware FMA, `mul_add` would be a slow library call).
#[inline(always)]
unsafe fn rectangle_impl<const FMA: bool>(
    xs: &XRows,
    w: Weight<'_>,
    rows: Range<usize>,
    outputs: Range<usize>,
    out: &Out,
) {
    let XRows::F32 { data: x, k } = xs else {
        unreachable!("the portable kernel reads x as f32 rows");
    };
    let k = *k;
    let mut wide = vec![0f32; k];
    for o in outputs {
        for (d, &b) in wide.iter_mut().zip(w.row(o)) {
            *d = from_bf16(b);
        }
        for r in rows.clone() {
            let xr = &x[r * k..(r + 1) * k];
            let mut acc = [0f32; LANES];
            let (wc, xc) = (wide.chunks_exact(LANES), xr.chunks_exact(LANES));
            let (wt, xt) = (wc.remainder(), xc.remainder());
            for (a, b) in wc.zip(xc) {
                for l in 0..LANES {
                    acc[l] = if FMA {
                        a[l].mul_add(b[l], acc[l])
                    } else {
                        acc[l] + a[l] * b[l]
                    };
                }
            }
            let tail: f32 = wt.iter().zip(xt).map(|(a, b)| a * b).sum();
            out.set(r, o, acc.iter().sum::<f32>() + tail);
        }
    }
}
