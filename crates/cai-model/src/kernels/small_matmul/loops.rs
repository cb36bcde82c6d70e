//! The loop nest of `columns_t`, shared by every instruction set.
//!
//! A thread's columns of the `[k, n]` weight go in cache blocks of `kc` rows × `nc` columns.
//! Each block is copied into a contiguous buffer, strip by strip (`[strip][t][strip_cols]`,
//! the last strip zero-padded), and the register blocks read it from there: the rows of a
//! `[in, out]` weight are `n` floats apart, and when `4n` is a multiple of a large power of two
//! (a 49,152-token output layer: 3 · 2¹⁶ bytes) every row of a strip falls into the same cache
//! set, so a strip read in place would not stay in cache from one panel of `x` to the next.
//! A strip (`kc × strip_cols`) and a panel of `x` fit in L1, so every panel reuses the strip
//! from L1; the block and the next one fit in a small part of L2. While a strip computes, a
//! slice of the next block's rows is prefetched (spread over the strip's steps), and copied
//! after the following strip, so the weights stream from memory while the FMAs run.

use std::cell::RefCell;
use std::ops::Range;

use super::prefetch::Prefetch;

/// Block sizes of `columns_t`: the register block (`panel_rows` × `strip_cols`, from the
/// instruction set) and the cache block of the weight (`kc` rows × `nc` columns).
#[derive(Clone, Copy, Debug)]
pub(super) struct Blocking {
    pub(super) panel_rows: usize,
    pub(super) strip_cols: usize,
    pub(super) kc: usize,
    pub(super) nc: usize,
}

/// One call of a register block: `c[r, :width] (+)= Σ_t a[t][r] · b[t][:width]` for the
/// panel's `rows` valid rows, over `kb` steps.
pub(super) struct StripBlock {
    /// The packed panel of `x` at the block's first step, `[kb][panel_rows]`.
    pub(super) a: *const f32,
    /// The strip of the weight, `[kb][ldb]`: packed (`ldb = strip_cols`, zero past `width`)
    /// or in place (`ldb = n`, read only up to `width`).
    pub(super) b: *const f32,
    pub(super) ldb: usize,
    /// Row stride of the output.
    pub(super) n: usize,
    pub(super) kb: usize,
    /// Valid columns of the strip, at most the instruction set's `strip_cols`.
    pub(super) width: usize,
    /// The output at (the panel's first row, first column).
    pub(super) c: *mut f32,
    /// Valid rows of `x` in the panel.
    pub(super) rows: usize,
    /// Start from zero (the first k-block), else from what `c` holds.
    pub(super) first: bool,
}

/// The code of one instruction set: a register block, and [`pack_rows`] for its strip width
/// compiled with its vector moves.
#[derive(Clone, Copy)]
pub(super) struct Kernels {
    pub(super) strip: unsafe fn(&StripBlock, &mut Prefetch),
    pub(super) pack: unsafe fn(&[f32], usize, CacheBlock, Range<usize>, &mut [f32]),
}

/// A cache block of the weight: rows `k0..k0 + kb`, columns `jc..jc + wc`.
#[derive(Clone, Copy)]
pub(super) struct CacheBlock {
    k0: usize,
    kb: usize,
    jc: usize,
    wc: usize,
}

thread_local! {
    /// The packed current and next cache blocks, kept between calls.
    static BUFFERS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Fill `out[:, j0..j1]` with `x · Wt[:, j0..j1]`, calling `kernels.strip` for every register
/// block.
///
/// Shapes: `xp` packed `[panels][k][panel_rows]`, `wt` `[k, n]`, `out` `[m, n]`.
///
/// # Safety
/// `kernels` run on this CPU and `blk.strip_cols` is their strip width; `out` points to an `m × n` buffer of which no other thread writes
/// columns `j0..j1`; `j1 <= n`.
pub(super) unsafe fn columns_t(
    xp: &[f32],
    wt: &[f32],
    out: *mut f32,
    (m, n, k): (usize, usize, usize),
    (j0, j1): (usize, usize),
    blk: Blocking,
    kernels: Kernels,
) {
    let Blocking {
        panel_rows,
        strip_cols: sc,
        kc,
        nc,
    } = blk;
    let panels = m.div_ceil(panel_rows);
    assert!(xp.len() >= panels * panel_rows * k && wt.len() == k * n && j1 <= n);
    assert!(kc > 0 && nc > 0 && panel_rows > 0 && sc > 0);
    let mut blocks = Vec::new();
    for jc in (j0..j1).step_by(nc) {
        for k0 in (0..k).step_by(kc) {
            let (kb, wc) = ((k - k0).min(kc), (j1 - jc).min(nc));
            blocks.push(CacheBlock { k0, kb, jc, wc });
        }
    }
    let Some(&first) = blocks.first() else {
        return;
    };
    if panels == 1 {
        // Each weight element is used once: stream the strips in place, no copies.
        return direct(xp, wt, out, (m, n, k), (j0, j1), sc, kernels.strip);
    }
    let size = kc.min(k) * nc.next_multiple_of(sc);
    BUFFERS.with_borrow_mut(|(cur_buf, next_buf)| {
        for buf in [&mut *cur_buf, &mut *next_buf] {
            if buf.len() < size + 16 {
                buf.resize(size + 16, 0.0);
            }
        }
        // Strips start on a cache line, so no vector load of a strip straddles two.
        let mut cur = aligned(cur_buf, size);
        let mut next = aligned(next_buf, size);
        (kernels.pack)(wt, n, first, 0..first.kb, &mut *cur);
        // Step `i` (a strip of a block, in order) computes, then copies `jobs[i]`: its share
        // of the next block's rows. Those rows were prefetched during step `i - 1`, a whole
        // strip earlier, so the copy finds them in cache.
        let jobs = pack_jobs(&blocks, sc);
        let mut step = 0;
        for b in &blocks {
            let strips = b.wc.div_ceil(sc);
            for s in 0..strips {
                let mut pf = match jobs.get(step + 1) {
                    Some((f, rows)) if !rows.is_empty() => Prefetch::new(
                        // SAFETY: row `k0 + rows.start < k`, column `jc < n`: inside `wt`.
                        wt.as_ptr().add((f.k0 + rows.start) * n + f.jc),
                        n,
                        rows.len(),
                        f.wc,
                        panels * b.kb,
                    ),
                    _ => Prefetch::idle(),
                };
                let j = b.jc + s * sc;
                for p in 0..panels {
                    let block = StripBlock {
                        a: xp.as_ptr().add(p * panel_rows * k + b.k0 * panel_rows),
                        b: cur.as_ptr().add(s * b.kb * sc),
                        ldb: sc,
                        n,
                        kb: b.kb,
                        width: (b.jc + b.wc - j).min(sc),
                        c: out.add(p * panel_rows * n + j),
                        rows: (m - p * panel_rows).min(panel_rows),
                        first: b.k0 == 0,
                    };
                    (kernels.strip)(&block, &mut pf);
                }
                if let Some((f, rows)) = jobs.get(step) {
                    (kernels.pack)(wt, n, *f, rows.clone(), &mut *next);
                }
                step += 1;
            }
            std::mem::swap(&mut cur, &mut next);
        }
    });
}

/// For every strip of every block, in order, the rows of the following block copied after it:
/// the following block's rows split evenly over this block's strips (none after the last).
fn pack_jobs(blocks: &[CacheBlock], sc: usize) -> Vec<(CacheBlock, Range<usize>)> {
    let mut jobs = Vec::new();
    for (bi, b) in blocks.iter().enumerate() {
        let strips = b.wc.div_ceil(sc);
        let Some(&f) = blocks.get(bi + 1) else {
            break;
        };
        let share = f.kb.div_ceil(strips);
        for s in 0..strips {
            jobs.push((f, (s * share).min(f.kb)..((s + 1) * share).min(f.kb)));
        }
    }
    jobs
}

/// The first `len` floats of `buf` from its first 64-byte boundary (`buf` holds `len + 16`).
fn aligned(buf: &mut [f32], len: usize) -> &mut [f32] {
    let skip = buf.as_ptr().align_offset(64).min(16);
    &mut buf[skip..skip + len]
}

/// Rows ahead of the current one that [`direct`] prefetches: enough lines in flight to cover
/// the memory latency, few enough that rows mapping to one cache set (a power-of-two row
/// stride) do not evict each other before use.
const AHEAD: usize = 16;

/// `columns_t` for a single panel of `x` (at most `panel_rows` rows): every strip over the
/// whole inner dimension, read in place, `AHEAD` rows prefetched ahead.
///
/// # Safety
/// As for [`columns_t`], with `m <= panel_rows`.
unsafe fn direct(
    xp: &[f32],
    wt: &[f32],
    out: *mut f32,
    (m, n, k): (usize, usize, usize),
    (j0, j1): (usize, usize),
    sc: usize,
    strip: unsafe fn(&StripBlock, &mut Prefetch),
) {
    for j in (j0..j1).step_by(sc) {
        let width = (j1 - j).min(sc);
        let b = wt.as_ptr().add(j);
        let mut pf = if k > AHEAD {
            // SAFETY: row `AHEAD < k`, column `j < n`: inside `wt`.
            Prefetch::new(b.add(AHEAD * n), n, k - AHEAD, width, k - AHEAD)
        } else {
            Prefetch::idle()
        };
        let block = StripBlock {
            a: xp.as_ptr(),
            b,
            ldb: n,
            n,
            kb: k,
            width,
            c: out.add(j),
            rows: m,
            first: true,
        };
        strip(&block, &mut pf);
    }
}

/// Copy rows `rows` (relative to the block) of cache block `b` into `buf`, laid out
/// `[strip][t][SC]` with the last strip zero-padded. Inlined into each instruction set's
/// `pack`, so the copies of `SC` floats become its vector moves.
#[inline(always)]
pub(super) fn pack_rows<const SC: usize>(
    wt: &[f32],
    n: usize,
    b: CacheBlock,
    rows: Range<usize>,
    buf: &mut [f32],
) {
    for t in rows {
        let src = &wt[(b.k0 + t) * n + b.jc..][..b.wc];
        let (full, tail) = src.as_chunks::<SC>();
        for (s, part) in full.iter().enumerate() {
            let dst: &mut [f32; SC] = (&mut buf[(s * b.kb + t) * SC..][..SC])
                .try_into()
                .expect("SC floats");
            *dst = *part;
        }
        if !tail.is_empty() {
            let dst = &mut buf[(full.len() * b.kb + t) * SC..][..SC];
            dst[..tail.len()].copy_from_slice(tail);
            dst[tail.len()..].fill(0.0);
        }
    }
}
