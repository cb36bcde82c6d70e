//! The training products' operands in the AMX kernel's layouts, with AVX-512 (every AMX CPU
//! has it): f32 rounded to bf16, f32 transposed into bf16 rows, and the pair-layout tiles of
//! an operand stored K-major (`[k][rows]`, a gradient `G` read as `Gᵀ`), so neither needs a
//! scalar pass. Rounding is `vcvtneps2bf16`'s (to nearest even), as [`super::amx`]'s packing.

use crate::kernels::vector::tail_mask as lanes;
use std::arch::x86_64::*;

use super::amx::transpose16;
use super::{BLOCK_K, TILE};

/// 16 f32 rounded to bf16.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn round16(v: __m512) -> __m256i {
    std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v))
}

/// `dst[i] = bf16(src[i])`.
///
/// # Safety
/// The CPU supports AVX-512F, BW, VL and BF16; `dst` is at least as long as `src`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(super) unsafe fn convert(src: &[f32], dst: &mut [u16]) {
    debug_assert!(dst.len() >= src.len());
    for i in (0..src.len()).step_by(16) {
        let mask = lanes(src.len() - i);
        let v = round16(_mm512_maskz_loadu_ps(mask, src.as_ptr().add(i)));
        _mm256_mask_storeu_epi16(dst.as_mut_ptr().add(i) as *mut i16, mask, v);
    }
}

/// Rows `c0..c0 + 16` of the transpose of `src` `[rows, cols]`, rounded to bf16, into `dst`
/// (those 16 rows of `stride ≥ rows` elements; the elements past `rows` are not written).
///
/// # Safety
/// The CPU supports AVX-512F, BW, VL and BF16; `dst` holds `min(16, cols − c0)` rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(super) unsafe fn transpose_block(
    src: &[f32],
    (rows, cols): (usize, usize),
    c0: usize,
    dst: &mut [u16],
    stride: usize,
) {
    let width = TILE.min(cols - c0);
    debug_assert!(dst.len() >= (width - 1) * stride + rows);
    let col_mask = lanes(width);
    for r0 in (0..rows).step_by(TILE) {
        let height = TILE.min(rows - r0);
        let block: [__m512i; 16] = std::array::from_fn(|r| {
            if r < height {
                let row = src.as_ptr().add((r0 + r) * cols + c0);
                _mm512_castps_si512(_mm512_maskz_loadu_ps(col_mask, row))
            } else {
                _mm512_setzero_si512()
            }
        });
        let columns = transpose16(block);
        let row_mask = lanes(height);
        for (c, column) in columns.iter().enumerate().take(width) {
            let v = round16(_mm512_castsi512_ps(*column));
            let out = dst.as_mut_ptr().add(c * stride + r0) as *mut i16;
            _mm256_mask_storeu_epi16(out, row_mask, v);
        }
    }
}

/// Block `rb` (rows `16·rb..`) of the AMX right operand for `Aᵀ` where `a` is `[k, rows]`
/// row-major: for every 32 of `k` (zero past `k`), 16 pairs × 16 rows × 2 bf16 — the layout
/// `XRows::Tiles` holds, made without transposing `a`.
///
/// # Safety
/// The CPU supports AVX-512F, BW and BF16; `block` holds `k.div_ceil(32)` tiles.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn pack_k_major(
    a: &[f32],
    (k, rows): (usize, usize),
    rb: usize,
    block: &mut [u16],
) {
    let r0 = rb * TILE;
    let mask = lanes(rows - r0);
    // Lane 2j takes element j of the first row, lane 2j + 1 element j of the second.
    let interleave = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4,
        19, 3, 18, 2, 17, 1, 16, 0,
    );
    let load = |t: usize| {
        if t < k {
            _mm512_maskz_loadu_ps(mask, a.as_ptr().add(t * rows + r0))
        } else {
            _mm512_setzero_ps()
        }
    };
    for kb in 0..k.div_ceil(BLOCK_K) {
        let dst = block.as_mut_ptr().add(kb * TILE * BLOCK_K) as *mut __m512i;
        for p in 0..TILE {
            let t = kb * BLOCK_K + 2 * p;
            let both = _mm512_cvtne2ps_pbh(load(t + 1), load(t));
            let pairs = _mm512_permutexvar_epi16(
                interleave,
                std::mem::transmute::<__m512bh, __m512i>(both),
            );
            _mm512_storeu_si512(dst.add(p), pairs);
        }
    }
}
