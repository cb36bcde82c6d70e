//! The AMX kernel. Tiles compute `W xᵀ`: a left tile is 16 rows × 32 inputs of the weight,
//! loaded in place from the `[out, in]` tensor; a right tile is 32 inputs × 16 rows of `x` in
//! AMX's pair layout (`XRows::Tiles`); `tdpbf16ps` adds their product to a 16 outputs × 16
//! rows f32 tile. Rust has no stable AMX intrinsics, so the tile instructions are inline
//! assembly; Linux hands out the tile state only after the process asks for it
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), which [`enabled`] does once.
//!
//! Tiles: 4–5 hold 16 weight rows each (32 outputs), 6–7 16 rows of `x` each; 0–3 accumulate
//! (outputs 0–15 × rows 0–15, 0–15 × 16–31, 16–31 × 0–15, 16–31 × 16–31).

use std::arch::asm;
use std::arch::x86_64::*;
use std::ops::Range;
use std::sync::OnceLock;

use super::{Out, Weight, XRows, BLOCK_K, PAIR_N, TILE};

/// `arch_prctl` request for permission to use an extended state component.
#[cfg(target_os = "linux")]
const ARCH_REQ_XCOMP_PERM: libc::c_ulong = 0x1023;
/// The AMX tile data state component.
#[cfg(target_os = "linux")]
const XFEATURE_XTILEDATA: libc::c_ulong = 18;

/// Whether the CPU has AMX-TILE and AMX-BF16 and the kernel granted this process the tile
/// state (asked once; every thread of the process may then use it). `CAI_NO_AMX` set in the
/// environment turns the AMX path off.
pub(super) fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        // Leaf 7 on a CPU without it reads as zeros: no AMX.
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        let tile = leaf7.edx & (1 << 24) != 0;
        let bf16 = leaf7.edx & (1 << 22) != 0;
        // The tile packing and stores use AVX-512 (every AMX CPU has it).
        let vectors = is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16");
        if !(tile && bf16 && vectors) || std::env::var_os("CAI_NO_AMX").is_some() {
            return false;
        }
        request_tile_state()
    })
}

/// Ask Linux for the tile state; other systems are not asked (the AMX path stays off there).
#[cfg(target_os = "linux")]
fn request_tile_state() -> bool {
    // SAFETY: a plain system call with integer arguments; failure is reported, not UB.
    let granted = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    granted == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tile_state() -> bool {
    false
}

/// The tile configuration: palette 1, all eight tiles 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

fn config() -> TileConfig {
    let mut c = [0u8; 64];
    c[0] = 1;
    for t in 0..8 {
        c[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
        c[48 + t] = 16;
    }
    TileConfig(c)
}

/// One rectangle of the product (see `kernels::bf16::run`).
///
/// # Safety
/// [`enabled`] returned true; `w.k` is a multiple of 32; `xs` is `XRows::Tiles` of the same
/// `k`; no other thread writes this rectangle of `out`.
pub(super) unsafe fn rectangle(
    xs: &XRows,
    w: Weight<'_>,
    rows: Range<usize>,
    outputs: Range<usize>,
    out: &Out,
) {
    let XRows::Tiles { data: xt, k_blocks } = xs else {
        unreachable!("the AMX kernel reads x as tiles");
    };
    let k_blocks = *k_blocks;
    let cfg = config();
    asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
    let w_stride = w.k * 2;
    let x_stride = 64usize;
    let x_tile_bytes = TILE * BLOCK_K * 2;
    let x_base = xt.as_ptr() as *const u8;
    // The last pair of outputs may run past `n`: its weight rows are copied, zero-padded.
    let mut tail: Vec<u16> = Vec::new();
    let mut tmp = [[0f32; TILE * TILE]; 4];
    for o0 in outputs.step_by(PAIR_N) {
        let w0: *const u8 = if o0 + PAIR_N <= w.n {
            w.data.as_ptr().add(o0 * w.k) as *const u8
        } else {
            tail.clear();
            tail.resize(PAIR_N * w.k, 0);
            let have = w.n - o0;
            tail[..have * w.k].copy_from_slice(&w.data[o0 * w.k..w.n * w.k]);
            tail.as_ptr() as *const u8
        };
        let w1 = w0.add(TILE * w_stride);
        let mut r0 = rows.start;
        while r0 < rows.end {
            let two = rows.end - r0 > TILE;
            let x0 = x_base.add((r0 / TILE) * k_blocks * x_tile_bytes);
            asm!("tilezero tmm0", "tilezero tmm2", options(nostack, nomem));
            if two {
                let x1 = x0.add(k_blocks * x_tile_bytes);
                asm!("tilezero tmm1", "tilezero tmm3", options(nostack, nomem));
                for kb in 0..k_blocks {
                    asm!(
                        "tileloadd tmm4, [{w0} + {ws}*1]",
                        "tileloadd tmm5, [{w1} + {ws}*1]",
                        "tileloadd tmm6, [{x0} + {xs}*1]",
                        "tileloadd tmm7, [{x1} + {xs}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        w0 = in(reg) w0.add(kb * 64),
                        w1 = in(reg) w1.add(kb * 64),
                        x0 = in(reg) x0.add(kb * x_tile_bytes),
                        x1 = in(reg) x1.add(kb * x_tile_bytes),
                        ws = in(reg) w_stride,
                        xs = in(reg) x_stride,
                        options(nostack, readonly),
                    );
                }
                asm!(
                    "tilestored [{t0} + {s}*1], tmm0",
                    "tilestored [{t1} + {s}*1], tmm1",
                    "tilestored [{t2} + {s}*1], tmm2",
                    "tilestored [{t3} + {s}*1], tmm3",
                    t0 = in(reg) tmp[0].as_mut_ptr(),
                    t1 = in(reg) tmp[1].as_mut_ptr(),
                    t2 = in(reg) tmp[2].as_mut_ptr(),
                    t3 = in(reg) tmp[3].as_mut_ptr(),
                    s = in(reg) TILE * 4,
                    options(nostack),
                );
            } else {
                for kb in 0..k_blocks {
                    asm!(
                        "tileloadd tmm4, [{w0} + {ws}*1]",
                        "tileloadd tmm5, [{w1} + {ws}*1]",
                        "tileloadd tmm6, [{x0} + {xs}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        w0 = in(reg) w0.add(kb * 64),
                        w1 = in(reg) w1.add(kb * 64),
                        x0 = in(reg) x0.add(kb * x_tile_bytes),
                        ws = in(reg) w_stride,
                        xs = in(reg) x_stride,
                        options(nostack, readonly),
                    );
                }
                asm!(
                    "tilestored [{t0} + {s}*1], tmm0",
                    "tilestored [{t2} + {s}*1], tmm2",
                    t0 = in(reg) tmp[0].as_mut_ptr(),
                    t2 = in(reg) tmp[2].as_mut_ptr(),
                    s = in(reg) TILE * 4,
                    options(nostack),
                );
            }
            // Tile t = 2·a + b holds outputs o0 + 16a + i (its rows) × rows r0 + 16b + j.
            for (t, tile) in tmp.iter().enumerate() {
                let (a, b) = (t / 2, t % 2);
                if b == 1 && !two {
                    continue;
                }
                put_tile(out, r0 + TILE * b, o0 + TILE * a, tile);
            }
            r0 += if two { 2 * TILE } else { TILE };
        }
    }
    asm!("tilerelease", options(nostack, nomem));
}

/// The 16 × 16 transpose of 32-bit elements: `out[c]` is column `c` of the rows `r`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transpose16(r: [__m512i; 16]) -> [__m512i; 16] {
    let mut t = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    let mut u = [_mm512_setzero_si512(); 16];
    for g in 0..4 {
        let a = &t[4 * g..4 * g + 4];
        u[4 * g] = _mm512_unpacklo_epi64(a[0], a[2]);
        u[4 * g + 1] = _mm512_unpackhi_epi64(a[0], a[2]);
        u[4 * g + 2] = _mm512_unpacklo_epi64(a[1], a[3]);
        u[4 * g + 3] = _mm512_unpackhi_epi64(a[1], a[3]);
    }
    let mut v = [_mm512_setzero_si512(); 16];
    for j in 0..4 {
        v[j] = _mm512_shuffle_i32x4::<0x88>(u[j], u[4 + j]);
        v[4 + j] = _mm512_shuffle_i32x4::<0xdd>(u[j], u[4 + j]);
        v[8 + j] = _mm512_shuffle_i32x4::<0x88>(u[8 + j], u[12 + j]);
        v[12 + j] = _mm512_shuffle_i32x4::<0xdd>(u[8 + j], u[12 + j]);
    }
    let mut w = [_mm512_setzero_si512(); 16];
    for j in 0..8 {
        w[j] = _mm512_shuffle_i32x4::<0x88>(v[j], v[8 + j]);
        w[8 + j] = _mm512_shuffle_i32x4::<0xdd>(v[j], v[8 + j]);
    }
    w
}

/// Fill `XRows::Tiles` for rows `mb·16 ..` of `x [m, k]` (`k` a multiple of 32): each row's 32
/// inputs of a block become 16 bf16 pairs (one 32-bit lane each), and a 16 × 16 transpose
/// turns 16 rows of pairs into the tile's 16 pair rows of 16 rows. Rows past `m` stay zero.
///
/// # Safety
/// The CPU supports AVX-512F and AVX-512 BF16; `block` is `k / 32` tiles of 512 values.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn pack_tiles(x: &[f32], m: usize, k: usize, mb: usize, block: &mut [u16]) {
    let rows = TILE.min(m - mb * TILE);
    for kb in 0..k / BLOCK_K {
        let mut pairs = [_mm512_setzero_si512(); 16];
        for (r, p) in pairs.iter_mut().enumerate().take(rows) {
            let src = x.as_ptr().add((mb * TILE + r) * k + kb * BLOCK_K);
            let bf = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src.add(16)), _mm512_loadu_ps(src));
            *p = std::mem::transmute::<__m512bh, __m512i>(bf);
        }
        let cols = transpose16(pairs);
        let dst = block.as_mut_ptr().add(kb * TILE * BLOCK_K) as *mut __m512i;
        for (p, c) in cols.iter().enumerate() {
            _mm512_storeu_si512(dst.add(p), *c);
        }
    }
}

/// Store (or add, when the output accumulates) a 16 outputs × 16 rows f32 tile
/// (`tile[o · 16 + r]`) at rows `r0..` and outputs `o0..` of `out`, transposed, clipped to
/// `[m, n]`.
///
/// # Safety
/// The CPU supports AVX-512F; the caller owns that rectangle of the output.
#[target_feature(enable = "avx512f")]
unsafe fn put_tile(out: &Out, r0: usize, o0: usize, tile: &[f32; TILE * TILE]) {
    let rows = TILE.min(out.m.saturating_sub(r0));
    let outs = TILE.min(out.n.saturating_sub(o0));
    let src: [__m512i; 16] =
        std::array::from_fn(|o| _mm512_loadu_si512(tile.as_ptr().add(o * TILE) as *const _));
    let by_row = transpose16(src);
    let mask: __mmask16 = if outs == TILE {
        0xffff
    } else {
        (1u16 << outs) - 1
    };
    for (r, v) in by_row.iter().enumerate().take(rows) {
        let dst = out.ptr.add((r0 + r) * out.n + o0);
        let v = if out.accumulate {
            let sum = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, dst), _mm512_castsi512_ps(*v));
            _mm512_castps_si512(sum)
        } else {
            *v
        };
        _mm512_mask_storeu_epi32(dst as *mut i32, mask, v);
    }
}
