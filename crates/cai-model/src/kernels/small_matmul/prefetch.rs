//! Software prefetch of the next weight block, spread over the steps of the current one, so
//! the weights stream from memory while the current block computes from cache. On other
//! architectures than x86-64 the prefetches are no-ops (the hardware prefetcher remains).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1};

/// Prefetches `rows` rows of `cols` floats, `stride` floats apart, one row every `every`
/// calls to [`Prefetch::step`].
#[derive(Clone, Copy)]
pub(super) struct Prefetch {
    next: *const f32,
    stride: usize,
    rows: usize,
    cols: usize,
    done: usize,
    every: usize,
    countdown: usize,
}

impl Prefetch {
    /// Nothing to prefetch.
    pub(super) fn idle() -> Prefetch {
        Prefetch {
            next: std::ptr::null(),
            stride: 0,
            rows: 0,
            cols: 0,
            done: 0,
            every: usize::MAX,
            countdown: usize::MAX,
        }
    }

    /// Prefetch the block at `next` (`rows × cols`, row stride `stride`) over `steps` steps.
    pub(super) fn new(
        next: *const f32,
        stride: usize,
        rows: usize,
        cols: usize,
        steps: usize,
    ) -> Prefetch {
        let every = (steps / rows.max(1)).max(1);
        Prefetch {
            next,
            stride,
            rows,
            cols,
            done: 0,
            every,
            countdown: every,
        }
    }

    /// One step of the current block: every `every` steps, ask for the next row's lines in L2.
    ///
    /// # Safety
    /// `next` and the block it starts must lie inside one allocation (prefetches do not fault,
    /// but the pointer arithmetic must stay in bounds).
    #[inline(always)]
    pub(super) unsafe fn step(&mut self) {
        self.countdown -= 1;
        if self.countdown == 0 {
            self.countdown = self.every;
            if self.done < self.rows {
                // SAFETY: row `done` < `rows` of the block, which the caller keeps in bounds.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    let p = self.next.add(self.done * self.stride);
                    let mut c = 0;
                    while c < self.cols {
                        _mm_prefetch::<_MM_HINT_T1>(p.add(c).cast());
                        c += 16;
                    }
                    _mm_prefetch::<_MM_HINT_T1>(p.add(self.cols - 1).cast());
                }
                self.done += 1;
            }
        }
    }
}

/// Ask for the cache line holding `p` in L1.
///
/// # Safety
/// `p` must be in bounds of an allocation (prefetches do not fault; the caller's pointer
/// arithmetic must still be valid).
#[inline(always)]
pub(super) unsafe fn line(p: *const f32) {
    // SAFETY: a prefetch has no architectural effect; `p` is in bounds per the contract.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        _mm_prefetch::<_MM_HINT_T0>(p.cast())
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
