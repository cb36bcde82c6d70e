//! Mixed-precision training on the CPU, as PyTorch's `autocast`: inside a [`Bf16Matmuls`]
//! scope, on this thread, the f32 training products of the linear layers (forward, input and
//! weight gradients of [`crate::kernels::linear_train`], the fused SwiGLU and attention
//! projections) round both operands to bf16 and sum in f32 on AMX tiles. Weights, gradients,
//! optimiser state and every other op stay f32. Where the CPU has no AMX (or a dimension is
//! not a multiple of 32) the products stay f32: the other bf16 kernels are slower than f32
//! GEMM at training's row counts.
//!
//! The scope is per thread, like PyTorch's: a trainer enters it on the thread that runs its
//! forward and backward passes (candle calls an op's kernels on the calling thread), and tests
//! running beside it on other threads are not affected.

use std::cell::Cell;

thread_local! {
    static BF16_MATMULS: Cell<bool> = const { Cell::new(false) };
}

/// While alive, training products on this thread take bf16 operands (see the module docs).
/// Dropping it restores what was in force before.
#[must_use = "the scope ends when the guard is dropped"]
pub struct Bf16Matmuls {
    previous: bool,
}

impl Bf16Matmuls {
    /// Enter the scope on this thread.
    pub fn enter() -> Self {
        let previous = BF16_MATMULS.with(|c| c.replace(true));
        Self { previous }
    }
}

impl Drop for Bf16Matmuls {
    fn drop(&mut self) {
        BF16_MATMULS.with(|c| c.set(self.previous));
    }
}

/// Whether a [`Bf16Matmuls`] scope is in force on this thread.
pub fn bf16_matmuls() -> bool {
    BF16_MATMULS.with(Cell::get)
}

/// Whether training products on this thread run in bf16 on AMX right now: a scope is in force
/// and the CPU and operating system allow AMX.
pub fn bf16_training_products() -> bool {
    bf16_matmuls() && bf16_training_products_available()
}

/// Whether a [`Bf16Matmuls`] scope changes anything on this machine (AMX is available).
pub fn bf16_training_products_available() -> bool {
    crate::kernels::bf16::amx_available()
}
