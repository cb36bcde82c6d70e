//! The AVX-512 BF16 kernel: `vdpbf16ps` dot products over 32 inputs at a time, in register
//! blocks of 4 weight rows × 4 rows of `x` (16 accumulators, 8 loads per 16 products), summed
//! across lanes at the end. The last partial block of inputs is loaded under a mask.

use std::arch::x86_64::*;
use std::ops::Range;

use super::{Out, Weight, XRows};

/// Weight rows and rows of `x` per register block.
const B: usize = 4;

/// One rectangle of the product (see `kernels::bf16::run`).
///
/// # Safety
/// The CPU supports AVX-512F, AVX-512BW and AVX-512 BF16; `xs` is `XRows::Bf16` of `w.k`
/// inputs; no other thread writes this rectangle of `out`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn rectangle(
    xs: &XRows,
    w: Weight<'_>,
    rows: Range<usize>,
    outputs: Range<usize>,
    out: &Out,
) {
    let XRows::Bf16 { data: x, k } = xs else {
        unreachable!("the AVX-512 BF16 kernel reads x as bf16 rows");
    };
    let k = *k;
    let m = x.len() / k.max(1);
    let (full, rem) = (k / 32, k % 32);
    let tail_mask: __mmask32 = if rem == 0 { 0 } else { (1u32 << rem) - 1 };
    for o0 in outputs.clone().step_by(B) {
        // Rows past the end repeat the last one; their outputs are not written.
        let wp: [*const u16; B] =
            std::array::from_fn(|i| w.row((o0 + i).min(outputs.end - 1)).as_ptr());
        for r0 in rows.clone().step_by(B) {
            let xp: [*const u16; B] =
                std::array::from_fn(|j| x.as_ptr().add((r0 + j).min(m - 1) * k));
            let mut acc = [[_mm512_setzero_ps(); B]; B];
            for c in 0..full {
                let wv: [__m512bh; B] = std::array::from_fn(|i| {
                    std::mem::transmute(_mm512_loadu_si512(wp[i].add(32 * c) as *const _))
                });
                for j in 0..B {
                    let xv: __m512bh =
                        std::mem::transmute(_mm512_loadu_si512(xp[j].add(32 * c) as *const _));
                    for i in 0..B {
                        acc[i][j] = _mm512_dpbf16_ps(acc[i][j], wv[i], xv);
                    }
                }
            }
            if rem > 0 {
                let wv: [__m512bh; B] = std::array::from_fn(|i| {
                    std::mem::transmute(_mm512_maskz_loadu_epi16(
                        tail_mask,
                        wp[i].add(32 * full) as *const i16,
                    ))
                });
                for j in 0..B {
                    let xv: __m512bh = std::mem::transmute(_mm512_maskz_loadu_epi16(
                        tail_mask,
                        xp[j].add(32 * full) as *const i16,
                    ));
                    for i in 0..B {
                        acc[i][j] = _mm512_dpbf16_ps(acc[i][j], wv[i], xv);
                    }
                }
            }
            for (i, row) in acc.iter().enumerate() {
                if o0 + i >= outputs.end {
                    break;
                }
                for (j, a) in row.iter().enumerate() {
                    if r0 + j < rows.end {
                        out.set(r0 + j, o0 + i, _mm512_reduce_add_ps(*a));
                    }
                }
            }
        }
    }
}
