//! A CPU kernel for `y = x Wᵀ` when `x` has few rows — the decode step of generation, where a
//! general GEMM spends more time packing `W` than multiplying, and where every weight comes
//! from memory once per step.
//!
//! Both layouts of the weight use one scheme: a register block of accumulators that multiplies
//! one operand, broadcast an element at a time, by 16-lane (AVX-512), 8-lane (AVX2) or
//! plain-array (portable) vectors of the other, so each weight element fetched from memory
//! feeds many rows of `x` and no horizontal sums are needed:
//! - [`SmallMatmulT`], weight kept as `[in, out]`: `x` is packed into panels of 8 (AVX2: 6)
//!   rows (`[t][row]`, so a broadcast reads one address); a panel times a strip of 48 (16)
//!   weight columns accumulates in 24 (12) registers. With more than one panel, the weight
//!   goes through cache blocks sized from L1 and L2 and copied contiguous (see `loops`), so
//!   every panel reuses a strip from L1 while the next block streams in.
//! - [`SmallMatmul`], weight `[out, in]`: the roles swap: `x` is packed transposed in groups
//!   of 16–32 (AVX2: 8–16) rows, a register block holds 12 (6) weight rows × those rows of
//!   `x`, each weight element is broadcast once, and the next block's weight rows are
//!   prefetched. A single row of `x` takes 16-lane dot products instead (one lane in 16 of a
//!   broadcast block would do useful work).
//!
//! Each output of the SIMD broadcast blocks is one FMA per `k`, in order, blocked or not —
//! the same bits as the previous `[in, out]` kernel. Threads own disjoint ranges of output
//! columns, so each streams its own part of the weight. Inference only: there is no backward
//! pass, and [`crate::layers::Linear`] uses these kernels only when neither operand tracks
//! gradients.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp2, Layout, Shape};
use rayon::prelude::*;

use crate::kernels::cpu_storage::contiguous_f32;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod loops;
mod portable;
mod prefetch;
#[cfg(test)]
mod tests;

/// Largest row count that takes these kernels rather than candle's GEMM. Measured with
/// `examples/matmul_shapes` on SmolLM2-135M's shapes (Sapphire Rapids, 2 threads, weights from
/// memory): at 64 rows they reach ~150–170 GFLOP/s against GEMM's ~90–130, at 128 rows the two
/// are within noise of each other, so larger batches (prefill, scoring) keep the GEMM.
pub const MAX_ROWS: usize = 64;
/// Below this many multiply-adds a second thread costs more than it saves.
const PARALLEL_WORK: usize = 1 << 20;

/// `x [m, k] · W[n, k]ᵀ -> [m, n]` for f32 CPU tensors (see the module docs).
pub struct SmallMatmul;

impl CustomOp2 for SmallMatmul {
    fn name(&self) -> &'static str {
        "small-m-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name(), "x")?;
        let w = contiguous_f32(s2, l2, self.name(), "w")?;
        let (m, k) = l1.shape().dims2()?;
        let (n, k2) = l2.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("small-m-matmul: inner dimensions {k} and {k2} differ");
        }
        let out = matmul_transposed(x, w, m, n, k);
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// `x [m, k] · Wt[k, n] -> [m, n]` for f32 CPU tensors whose weight is stored transposed
/// (`[in, out]` row-major, see [`crate::decoder::Decoder::prepare_for_inference`]).
pub struct SmallMatmulT;

impl CustomOp2 for SmallMatmulT {
    fn name(&self) -> &'static str {
        "small-m-matmul-t"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name(), "x")?;
        let wt = contiguous_f32(s2, l2, self.name(), "wt")?;
        let (m, k) = l1.shape().dims2()?;
        let (k2, n) = l2.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("small-m-matmul-t: inner dimensions {k} and {k2} differ");
        }
        let out = matmul_weight_t(x, wt, m, n, k);
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

pub use crate::kernels::vector::Isa;

/// The register-block geometry of each instruction set.
impl Isa {
    /// Rows of `x` per packed panel in `columns_t` (the register block's height).
    fn panel_rows(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx512::T_ROWS,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::T_ROWS,
            Isa::Portable => portable::T_ROWS,
        }
    }

    /// Weight columns per register block in `columns_t`.
    fn strip_cols(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx512::T_COLS,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::T_COLS,
            Isa::Portable => portable::T_COLS,
        }
    }

    /// Rows of `x` per packed group in `columns` for `m` rows (a register block's width).
    fn group_rows(self, m: usize) -> usize {
        let lanes = match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => 16,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => 8,
            Isa::Portable => portable::N_COLS,
        };
        if m <= lanes || self == Isa::Portable {
            lanes
        } else {
            2 * lanes
        }
    }
}

/// Data cache sizes in bytes, per core.
#[derive(Clone, Copy, Debug)]
struct Caches {
    l1: usize,
    l2: usize,
}

/// The L1 data and L2 sizes from Linux sysfs, else 32 KiB and 512 KiB (the smallest per-core
/// caches of current x86 and Arm server cores, so blocks sized from them fit everywhere).
fn caches() -> Caches {
    static CACHES: OnceLock<Caches> = OnceLock::new();
    *CACHES.get_or_init(|| {
        let mut caches = Caches {
            l1: 32 << 10,
            l2: 512 << 10,
        };
        for index in 0..8 {
            let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{index}");
            let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok();
            let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size"))
            else {
                continue;
            };
            let Some(bytes) = parse_cache_size(size.trim()) else {
                continue;
            };
            match (level.trim(), kind.trim()) {
                ("1", "Data") => caches.l1 = bytes,
                ("2", "Unified" | "Data") => caches.l2 = bytes,
                _ => {}
            }
        }
        caches
    })
}

/// `"2048K"` -> 2 MiB; `"1M"`, plain bytes.
fn parse_cache_size(s: &str) -> Option<usize> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: usize = digits.parse().ok()?;
    match unit {
        "" => Some(n),
        "K" => Some(n << 10),
        "M" => Some(n << 20),
        _ => None,
    }
}

/// `x [m, k]` -> panels of `rows` rows, `[panel][t][row]`, the last panel zero-padded.
fn pack_panels(x: &[f32], m: usize, k: usize, rows: usize) -> Vec<f32> {
    let panels = m.div_ceil(rows);
    let mut packed = vec![0f32; panels * rows * k];
    for (i, xr) in x.chunks_exact(k).enumerate() {
        let base = (i / rows) * rows * k + i % rows;
        for (t, &v) in xr.iter().enumerate() {
            packed[base + t * rows] = v;
        }
    }
    packed
}

/// Raw output pointer shared by threads that write disjoint column ranges.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every thread writes a disjoint set of columns of the output.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not the raw field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Run `f(j0, j1)` over column ranges of `[0, n)` that are multiples of `align`, one per
/// thread when the work (`m · n · k` multiply-adds) is worth it.
fn split_columns(m: usize, n: usize, k: usize, align: usize, f: impl Fn(usize, usize) + Sync) {
    let threads = rayon::current_num_threads();
    if threads > 1 && m * n * k >= PARALLEL_WORK {
        let cols = n.div_ceil(threads).next_multiple_of(align);
        (0..n.div_ceil(cols))
            .into_par_iter()
            .for_each(|c| f(c * cols, ((c + 1) * cols).min(n)));
    } else {
        f(0, n);
    }
}

/// `x [m, k] · W[n, k]ᵀ` as a row-major `[m, n]` vector.
pub fn matmul_transposed(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    matmul_transposed_on(Isa::detect(), x, w, m, n, k)
}

/// [`matmul_transposed`] on a given instruction set (benchmarks, tests).
/// Shapes: x `[m, k]`, w `[n, k]` -> `[m, n]`.
///
/// # Panics
/// If the CPU does not support `isa` (see [`Isa::available`]).
pub fn matmul_transposed_on(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
) -> Vec<f32> {
    assert!(isa.available(), "{isa:?} is not supported by this CPU");
    assert_eq!(x.len(), m * k);
    assert_eq!(w.len(), n * k);
    let mut out = vec![0f32; m * n];
    if m == 0 || n == 0 || k == 0 {
        return out;
    }
    let ptr = OutPtr(out.as_mut_ptr());
    if m == 1 {
        split_columns(m, n, k, 16, |j0, j1| {
            // SAFETY: `out` is `1 × n`, column ranges are disjoint between calls, `x` is
            // `[1, k]`, `w` is `n × k`; the ISA was checked above.
            unsafe {
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => avx512::dot_rows(x, w, ptr.get(), k, j0, j1),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => avx2::dot_rows(x, w, ptr.get(), k, j0, j1),
                    Isa::Portable => portable::dot_rows(x, w, ptr.get(), k, j0, j1),
                }
            }
        });
        return out;
    }
    // Up to 8 rows fill an AVX2 register; in 16 AVX-512 lanes half the FMA work would be
    // padding (every AVX-512 CPU has AVX2 and FMA).
    #[cfg(target_arch = "x86_64")]
    let isa = if isa == Isa::Avx512 && m <= 8 && Isa::Avx2.available() {
        Isa::Avx2
    } else {
        isa
    };
    let group = isa.group_rows(m);
    let xg = pack_panels(x, m, k, group);
    split_columns(m, n, k, 16, |j0, j1| {
        // SAFETY: `out` is `m × n`, column ranges are disjoint between calls, `xg` holds
        // `m` rows packed in groups of `group`, `w` is `n × k`; the ISA was checked above.
        unsafe {
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => avx512::columns(&xg, group, w, ptr.get(), m, n, k, j0, j1),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => avx2::columns(&xg, group, w, ptr.get(), m, n, k, j0, j1),
                Isa::Portable => portable::columns(&xg, w, ptr.get(), m, n, k, j0, j1),
            }
        }
    });
    out
}

/// `x [m, k] · Wt[k, n]` as a row-major `[m, n]` vector.
pub fn matmul_weight_t(x: &[f32], wt: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    matmul_weight_t_on(Isa::detect(), x, wt, m, n, k)
}

/// [`matmul_weight_t`] on a given instruction set (benchmarks, tests).
/// Shapes: x `[m, k]`, wt `[k, n]` -> `[m, n]`.
///
/// # Panics
/// If the CPU does not support `isa` (see [`Isa::available`]).
pub fn matmul_weight_t_on(
    isa: Isa,
    x: &[f32],
    wt: &[f32],
    m: usize,
    n: usize,
    k: usize,
) -> Vec<f32> {
    if m == 1 {
        return single_row(isa, x, wt, n, k);
    }
    let (kc, nc) = weight_block(k, n, isa.strip_cols(), isa.panel_rows());
    matmul_weight_t_with(isa, x, wt, m, n, k, kc, nc)
}

/// Output columns per accumulator block of [`single_row`] (4 KiB: stays in L1).
const ROW_BLOCK: usize = 1024;

/// One row times `[k, n]` weights: per block of output columns, an axpy of each weight row's
/// slice into an accumulator that stays in L1. At one row the packed kernel's block copies
/// cost more than they save (bench-6m generate, batch 1: 1,385 against 1,134 tok/s).
/// Shapes: x `[k]`, wt `[k, n]` -> `[n]`.
fn single_row(isa: Isa, x: &[f32], wt: &[f32], n: usize, k: usize) -> Vec<f32> {
    assert!(isa.available(), "{isa:?} is not supported by this CPU");
    assert_eq!(x.len(), k);
    assert_eq!(wt.len(), k * n);
    let mut out = vec![0f32; n];
    let ptr = OutPtr(out.as_mut_ptr());
    split_columns(1, n, k, 16, |j0, j1| {
        // SAFETY: `out` holds `n` floats and column ranges are disjoint between calls.
        let cols = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(j0), j1 - j0) };
        for (b, acc) in cols.chunks_mut(ROW_BLOCK).enumerate() {
            let c0 = j0 + b * ROW_BLOCK;
            crate::kernels::vector::row_times(isa, x, &wt[c0..], n, acc);
        }
    });
    out
}

/// The cache block of the weight in `columns_t`, `kc` rows × `nc` columns: a packed strip
/// (`kc × strip_cols`) and a panel of `x` (`kc × panel_rows`) fill at most ¾ of L1, so every
/// panel reuses the strip from L1; the block fills at most 1/16 of L2, so it, the next one
/// (packed while this one computes) and the rows prefetched for it stay well inside L2 (on a
/// 2 MiB L2, 192-column blocks of SmolLM2's projections ran 20 % faster than 864-column ones,
/// the quarter of L2 that the first version used).
fn weight_block(k: usize, n: usize, strip_cols: usize, panel_rows: usize) -> (usize, usize) {
    let Caches { l1, l2 } = caches();
    let kc = (l1 * 3 / 4 / (4 * (strip_cols + panel_rows))).max(16);
    let kc = if kc >= k {
        k.max(1)
    } else {
        // Even blocks, so the last one is not a sliver.
        k.div_ceil(k.div_ceil(kc))
    };
    let nc = (l2 / 16 / (4 * kc) / strip_cols).max(1) * strip_cols;
    (kc, nc.min(n.next_multiple_of(strip_cols)))
}

/// [`matmul_weight_t`] on a given instruction set (which the CPU must support), the weight in
/// cache blocks of `kc` rows × `nc` columns. Shapes: x `[m, k]`, wt `[k, n]` -> `[m, n]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_weight_t_with(
    isa: Isa,
    x: &[f32],
    wt: &[f32],
    m: usize,
    n: usize,
    k: usize,
    kc: usize,
    nc: usize,
) -> Vec<f32> {
    assert!(isa.available(), "{isa:?} is not supported by this CPU");
    assert_eq!(x.len(), m * k);
    assert_eq!(wt.len(), k * n);
    assert!(kc > 0 && nc > 0);
    let mut out = vec![0f32; m * n];
    if m == 0 || n == 0 || k == 0 {
        return out;
    }
    let blocking = loops::Blocking {
        panel_rows: isa.panel_rows(),
        strip_cols: isa.strip_cols(),
        kc,
        nc,
    };
    let kernels = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => loops::Kernels {
            strip: avx512::strip_block,
            pack: avx512::pack,
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => loops::Kernels {
            strip: avx2::strip_block,
            pack: avx2::pack,
        },
        Isa::Portable => loops::Kernels {
            strip: portable::strip_block,
            pack: portable::pack,
        },
    };
    let xp = pack_panels(x, m, k, blocking.panel_rows);
    let ptr = OutPtr(out.as_mut_ptr());
    split_columns(m, n, k, 16, |j0, j1| {
        // SAFETY: `out` is `m × n`, column ranges are disjoint between calls, `xp` holds `m`
        // rows packed in panels of the ISA's height, `wt` is `k × n`; the ISA was checked
        // above.
        unsafe { loops::columns_t(&xp, wt, ptr.get(), (m, n, k), (j0, j1), blocking, kernels) }
    });
    out
}
