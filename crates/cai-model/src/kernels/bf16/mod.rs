//! bf16 weights under f32 inference on the CPU: `y = x Wᵀ` with `W` a plain bf16 `[out, in]`
//! tensor (as checkpoints store it) and `x` f32, rounded to bf16 on the way in, every product
//! summed in f32 — what `--dtype bf16` means on the CPU. Activations between the matmuls (the
//! residual stream, norms, attention, the KV cache) stay f32.
//!
//! Three kernels, chosen at run time:
//! - [`Bf16Isa::Amx`] (Intel Sapphire Rapids and later): AMX tiles compute `(x Wᵀ)ᵀ = W xᵀ`,
//!   so 16 rows of `W` load straight from the weight as the left operand and `x` is the one
//!   operand re-laid per call (`amx`); up to 32 outputs × 32 rows per step in four f32 tiles;
//! - [`Bf16Isa::Avx512Bf16`] (AMD Zen 4 and later, Intel Cooper Lake): `vdpbf16ps` dot
//!   products over 32 inputs, register blocks of 4 weight rows × 4 rows of `x` (`avx512`);
//! - [`Bf16Isa::Avx2`] / [`Bf16Isa::Portable`] (everything else): each weight row widened to
//!   f32 once per call and dotted with every row of `x`, in Rust the compiler vectorises
//!   (`portable`). They still halve the bytes a decode step streams from memory.
//!
//! Every path multiplies the same bf16 values exactly (a product of two bf16 numbers is exact
//! in f32) and sums in f32; only the order of the sums differs, so results agree to f32
//! rounding across CPUs.

use std::ops::Range;
use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp2, Layout, Shape};
use rayon::prelude::*;

use crate::kernels::cpu_storage::contiguous_f32;

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod operands;
mod portable;
#[cfg(test)]
mod tests;
pub(crate) mod train;

/// Inputs per AMX tile row (64 bytes of bf16).
const BLOCK_K: usize = 32;
/// Rows per AMX tile, and outputs per weight tile.
const TILE: usize = 16;
/// Outputs per task unit: every kernel works on 32 outputs (two weight tiles) at a time.
const PAIR_N: usize = 2 * TILE;
/// Rows of `x` per task: a block of rows in bf16 stays in L2 while the weight streams past.
const ROW_BLOCK: usize = 256;

/// The kernel a product runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Isa {
    /// AMX tiles (`tdpbf16ps`).
    #[cfg(target_arch = "x86_64")]
    Amx,
    /// AVX-512 BF16 dot products (`vdpbf16ps`).
    #[cfg(target_arch = "x86_64")]
    Avx512Bf16,
    /// bf16 widened to f32, vectorised for AVX2 + FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// bf16 widened to f32 in plain Rust.
    Portable,
}

impl Bf16Isa {
    /// The fastest kernel this CPU (and, for AMX, the operating system) supports.
    pub fn detect() -> Bf16Isa {
        static ISA: OnceLock<Bf16Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            for isa in [Bf16Isa::Amx, Bf16Isa::Avx512Bf16, Bf16Isa::Avx2] {
                if isa.available() {
                    return isa;
                }
            }
            Bf16Isa::Portable
        })
    }

    /// Whether this machine can run `self`.
    pub fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Bf16Isa::Amx => amx::enabled(),
            #[cfg(target_arch = "x86_64")]
            Bf16Isa::Avx512Bf16 => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512bf16")
            }
            #[cfg(target_arch = "x86_64")]
            Bf16Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            Bf16Isa::Portable => true,
        }
    }

    /// A short name for reports (`amx`, `avx512-bf16`, `avx2`, `portable`).
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Bf16Isa::Amx => "amx",
            #[cfg(target_arch = "x86_64")]
            Bf16Isa::Avx512Bf16 => "avx512-bf16",
            #[cfg(target_arch = "x86_64")]
            Bf16Isa::Avx2 => "avx2",
            Bf16Isa::Portable => "portable",
        }
    }

    /// Whether `self` handles `k` inputs: AMX loads weight rows 32 inputs at a time and so
    /// needs `k` to be a multiple of 32 (every hidden size of the supported families is);
    /// the others take any `k`.
    fn handles(self, k: usize) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Bf16Isa::Amx => k.is_multiple_of(BLOCK_K),
            _ => true,
        }
    }
}

/// Whether this CPU and operating system run the AMX kernel (`CAI_NO_AMX=1` turns it off).
pub fn amx_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        Bf16Isa::Amx.available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x` rounded to bf16, to nearest with ties to even; a NaN stays a (quiet) NaN.
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// The f32 value of a bf16.
#[inline(always)]
pub fn from_bf16(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// A row-major bf16 weight `[n, k]` (`n` outputs, `k` inputs), borrowed.
#[derive(Clone, Copy)]
pub struct Weight<'a> {
    /// `n · k` values.
    pub data: &'a [u16],
    /// Outputs.
    pub n: usize,
    /// Inputs.
    pub k: usize,
}

impl Weight<'_> {
    /// Output row `o`.
    fn row(&self, o: usize) -> &[u16] {
        &self.data[o * self.k..(o + 1) * self.k]
    }
}

/// `x Wᵀ` on the fastest kernel for this weight. Shapes: x `[m, k]` row-major, w `[n, k]` ->
/// `[m, n]` row-major.
pub fn matmul(x: &[f32], m: usize, w: Weight<'_>) -> Vec<f32> {
    let mut isa = Bf16Isa::detect();
    if !isa.handles(w.k) {
        isa = fallback(w.k);
    }
    matmul_on(isa, x, m, w)
}

/// The fastest kernel other than AMX (for `k` AMX does not handle).
fn fallback(k: usize) -> Bf16Isa {
    #[cfg(target_arch = "x86_64")]
    for isa in [Bf16Isa::Avx512Bf16, Bf16Isa::Avx2] {
        if isa.available() && isa.handles(k) {
            return isa;
        }
    }
    Bf16Isa::Portable
}

/// [`matmul`] on a given kernel, which this machine must support and which must handle `k`.
pub fn matmul_on(isa: Bf16Isa, x: &[f32], m: usize, w: Weight<'_>) -> Vec<f32> {
    let (n, k) = (w.n, w.k);
    assert_eq!(x.len(), m * k, "x is not [m, k]");
    assert_eq!(w.data.len(), n * k, "w is not [n, k]");
    assert!(isa.available(), "{} is not available here", isa.name());
    assert!(isa.handles(k), "{} does not handle {k} inputs", isa.name());
    if m == 0 || n == 0 {
        return vec![0f32; m * n];
    }
    let xs = XRows::pack(isa, x, m, k);
    run_packed(isa, &xs, m, w)
}

/// `x Wᵀ` with `x` `[m, k]` already in `isa`'s layout (checked by the caller).
fn run_packed(isa: Bf16Isa, xs: &XRows, m: usize, w: Weight<'_>) -> Vec<f32> {
    let n = w.n;
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: f32 has no invalid bit patterns, and `run_packed_into` writes every element of
    // `[m, n]` before anything reads the result (zero-filling first was 9 % of a bf16 SmolLM2
    // scoring pass: the output layer's logits are 33 MB a chunk).
    #[allow(clippy::uninit_vec)]
    unsafe {
        out.set_len(m * n)
    };
    run_packed_into(isa, xs, m, w, &mut out, false);
    out
}

/// `out = x Wᵀ`, or `out += x Wᵀ` when `accumulate`, with `x` `[m, k]` already in `isa`'s
/// layout (checked by the caller). Shapes: out `[m, n]` row-major.
fn run_packed_into(
    isa: Bf16Isa,
    xs: &XRows,
    m: usize,
    w: Weight<'_>,
    out: &mut [f32],
    accumulate: bool,
) {
    let n = w.n;
    assert_eq!(out.len(), m * n, "the output is not [m, n]");
    let threads = rayon::current_num_threads().max(1);
    let out_ptr = SendPtr(out.as_mut_ptr());
    tasks(m, n, threads)
        .into_par_iter()
        .for_each(|(rows, outputs)| {
            let out = Out {
                ptr: out_ptr.get(),
                m,
                n,
                accumulate,
            };
            // SAFETY: tasks cover every (row, output) of `out` in disjoint rectangles, and
            // `out` outlives the parallel loop; `isa` is available and handles `k` (checked
            // by the caller).
            unsafe { run(isa, xs, w, rows, outputs, &out) };
        });
}

/// Rectangles of work: blocks of rows times ranges of outputs (multiples of 32), enough for
/// every thread to stream its own part of the weight.
fn tasks(m: usize, n: usize, threads: usize) -> Vec<(Range<usize>, Range<usize>)> {
    let row_blocks: Vec<Range<usize>> = (0..m)
        .step_by(ROW_BLOCK)
        .map(|r| r..(r + ROW_BLOCK).min(m))
        .collect();
    let pairs = n.div_ceil(PAIR_N);
    let want = (4 * threads).div_ceil(row_blocks.len()).max(1);
    let per = pairs.div_ceil(want).max(1) * PAIR_N;
    let mut tasks = Vec::new();
    for rows in &row_blocks {
        for o in (0..n).step_by(per) {
            tasks.push((rows.clone(), o..(o + per).min(n)));
        }
    }
    tasks
}

/// One rectangle on `isa`.
///
/// # Safety
/// `isa` is available and handles `w.k`; no other thread writes this rectangle of `out`.
unsafe fn run(
    isa: Bf16Isa,
    xs: &XRows,
    w: Weight<'_>,
    rows: Range<usize>,
    outputs: Range<usize>,
    out: &Out,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Bf16Isa::Amx => amx::rectangle(xs, w, rows, outputs, out),
        #[cfg(target_arch = "x86_64")]
        Bf16Isa::Avx512Bf16 => avx512::rectangle(xs, w, rows, outputs, out),
        #[cfg(target_arch = "x86_64")]
        Bf16Isa::Avx2 => portable::rectangle_avx2(xs, w, rows, outputs, out),
        Bf16Isa::Portable => portable::rectangle(xs, w, rows, outputs, out),
    }
}

/// `x [m, k]` rounded to bf16 in the layout its kernel reads.
enum XRows {
    /// AMX's right operand: per block of 16 rows and 32 inputs, a 1 KiB tile of 16 input
    /// pairs × 16 rows × 2 (`[row block][input block][pair][row][2]`), zero-padded.
    Tiles { data: Vec<u16>, k_blocks: usize },
    /// Rows of bf16 values (`[m][k]`).
    Bf16 { data: Vec<u16>, k: usize },
    /// Rows of bf16-rounded values as f32 (`[m][k]`).
    F32 { data: Vec<f32>, k: usize },
}

impl XRows {
    fn pack(isa: Bf16Isa, x: &[f32], m: usize, k: usize) -> Self {
        let big = m * k >= 1 << 16;
        match isa {
            #[cfg(target_arch = "x86_64")]
            Bf16Isa::Amx => {
                let k_blocks = k / BLOCK_K;
                let tile = TILE * BLOCK_K;
                let mut data = vec![0u16; m.div_ceil(TILE) * k_blocks * tile];
                // SAFETY: the AMX kernel is available only with AVX-512F and AVX-512 BF16;
                // each block is `k_blocks` tiles.
                let fill = |(mb, block): (usize, &mut [u16])| unsafe {
                    amx::pack_tiles(x, m, k, mb, block)
                };
                if big {
                    data.par_chunks_mut(k_blocks * tile)
                        .enumerate()
                        .for_each(fill);
                } else {
                    data.chunks_mut(k_blocks * tile).enumerate().for_each(fill);
                }
                XRows::Tiles { data, k_blocks }
            }
            #[cfg(target_arch = "x86_64")]
            Bf16Isa::Avx512Bf16 => XRows::Bf16 {
                data: x.iter().map(|&v| to_bf16(v)).collect(),
                k,
            },
            _ => XRows::F32 {
                data: x.iter().map(|&v| from_bf16(to_bf16(v))).collect(),
                k,
            },
        }
    }
}

/// The output `[m, n]`, written (or added to, when `accumulate`) by disjoint rectangles from
/// many threads.
struct Out {
    ptr: *mut f32,
    m: usize,
    n: usize,
    accumulate: bool,
}

impl Out {
    /// Write (or add to) element `(r, o)`, unless it lies outside `[m, n]` (padding).
    ///
    /// # Safety
    /// The caller owns that element of the output.
    #[inline(always)]
    unsafe fn set(&self, r: usize, o: usize, v: f32) {
        if r < self.m && o < self.n {
            let p = self.ptr.add(r * self.n + o);
            *p = if self.accumulate { *p + v } else { v };
        }
    }
}

/// A raw pointer the parallel loop may share (see the SAFETY note where it is used).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);

impl SendPtr {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: only used for disjoint writes, each by one task.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// `x Wᵀ` for an f32 `x` and a bf16 weight as a candle op (inference: no backward pass).
/// Shapes: x `[m, k]` f32, w `[n, k]` bf16 (both contiguous) -> `[m, n]` f32.
pub struct Bf16Matmul;

impl CustomOp2 for Bf16Matmul {
    fn name(&self) -> &'static str {
        "bf16-weight-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name(), "x")?;
        let CpuStorage::BF16(w) = s2 else {
            candle_core::bail!("bf16-weight-matmul: the weight must be bf16");
        };
        let Some((start, end)) = l2.contiguous_offsets() else {
            candle_core::bail!("bf16-weight-matmul: the weight must be contiguous");
        };
        let (m, k) = l1.shape().dims2()?;
        let (n, k2) = l2.shape().dims2()?;
        if k != k2 {
            candle_core::bail!(
                "bf16-weight-matmul: x has {k} features but the weight [{n}, {k2}] takes {k2}"
            );
        }
        let w = &w[start..end];
        // SAFETY: `half::bf16` is a `repr(transparent)` wrapper of `u16`.
        let bits: &[u16] = unsafe { std::slice::from_raw_parts(w.as_ptr().cast(), w.len()) };
        let out = matmul(x, m, Weight { data: bits, n, k });
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}
