//! Every `cai` command as library code: its typed arguments (clap `Args` structs), what they
//! become, and its run, including the pipeline runner (plan, run, manifest, resume, status,
//! report). The `cai` binary (crate `cai-cli`) is a thin shell over this crate: it parses the
//! command line into [`cli::Cli`], prepares the process ([`prepare_process`]) and calls
//! [`run`]. A program runs a command, or a whole recipe ([`commands::pipeline::run_recipe`]),
//! the same way without any command line.
//!
//! Errors are `anyhow` chains, as in the binary: this crate is the application layer whose
//! errors are read by a person at the end of a run; the reusable crates below it (cai-core,
//! cai-model, cai-train, cai-pipeline, …) return typed errors.

// Printing that never kills work in progress. std's `print!` family panics when the other end
// of a pipe has gone (`cai pipeline status | head -c1`, `| true`), which would stop a running
// stage midway and leave it marked `running`. These macros, defined before the modules so
// that they shadow std's in the whole crate, drop text that can no longer be delivered and
// let the work finish; the exit status and the files written are what count.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
macro_rules! print {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout();
        let _ = write!(out, $($arg)*).and_then(|()| out.flush());
    }};
}
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
macro_rules! eprint {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

mod backend;
pub mod cli;
pub mod commands;
mod human;
mod interrupt;
mod lab_models;
mod model_args;
mod progress;
mod resume;
mod train_flags;
mod train_output;
mod train_progress;
pub mod usage;

use std::process::ExitCode;

use crate::cli::Command;

/// Run a subcommand; its exit status on success (0, or 130 for a training run stopped by
/// Ctrl-C after saving a checkpoint).
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    let done = match command {
        Command::Sft(args) => return commands::sft::run(*args),
        Command::TrainPm(args) => return commands::train_pm::run(*args),
        Command::Rl(args) => return commands::rl::run(*args),
        Command::Distill(args) => return commands::distill::run(*args),
        Command::Lab(args) => return commands::lab::run(args),
        Command::Pipeline(args) => return commands::pipeline::run(*args),
        Command::MergeLora(args) => commands::merge_lora::run(args),
        Command::Convert(args) => commands::convert::run(args),
        Command::InitModel(args) => commands::init_model::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Score(args) => commands::score::run(args),
        Command::Chat(args) => commands::chat::run(args),
        Command::Critique(args) => commands::critique::run(*args),
        Command::Label(args) => commands::label::run(*args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Bench(args) => commands::bench::run(args),
    };
    done.map(|()| ExitCode::SUCCESS)
}

/// Process-wide settings `cai` makes before any work (call it first thing in `main`, before
/// any other thread exists): freed memory is kept for reuse, rayon and candle's pools are
/// sized for this machine unless `RAYON_NUM_THREADS`/`CANDLE_NUM_THREADS` say otherwise.
pub fn prepare_process() {
    keep_freed_memory();
    use_all_cores_for_rayon();
    size_candle_pool();
}

/// Pin rayon's pool size unless the user chose one. Without `RAYON_NUM_THREADS`, candle asks
/// for the core count on every matmul, and that re-reads /proc/cpuinfo each time: measured at
/// 11% of generation time on `bench-6m`. Setting it here, before any thread exists, makes
/// the answer a cheap environment lookup.
fn use_all_cores_for_rayon() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}

/// Keep freed memory in the process instead of returning it to the kernel. Every forward and
/// backward pass frees and re-allocates activations of the same sizes; with glibc's defaults
/// each large one is a fresh mmap whose pages the kernel faults in and zeroes again (measured
/// on `bench-6m` training: 46% of the time in the kernel's `clear_page_erms`; with this,
/// train 8 × 256 went from ~1,900 to ~3,500 tok/s and peak memory fell). Must run before
/// the first large allocation.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; called once, before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

/// Give the kernel back the freed memory that [`keep_freed_memory`] keeps (glibc's
/// `malloc_trim`): between pipeline stages, so one stage's freed buffers do not count in the
/// next stage's resident memory.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Pin candle's element-wise thread pool to the calling thread on small machines unless the
/// user chose a size. candle runs its own pool beside rayon's (which the matmuls use); on
/// 2 cores the two pools' spinning threads fight over the cores (measured on `bench-6m`
/// training: 33% of the time spinning in candle's `BarrierGuard::drop`, 1,033 → 2,390 tok/s
/// with one element-wise thread).
fn size_candle_pool() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() && threads <= 4 {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}
