//! The `cai` binary: process setup, logging, dispatch to the subcommands, and exit codes.

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
mod cli;
mod commands;
mod human;
mod interrupt;
mod lab_models;
mod model_args;
mod progress;
mod resume;
mod train_flags;
mod train_output;
mod train_progress;
mod usage;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::usage::UsageError;

fn main() -> ExitCode {
    keep_freed_memory();
    use_all_cores_for_rayon();
    size_candle_pool();
    // Exits with clap's usage status (2) on bad arguments, 0 for --help and --version.
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", error_chain(&err));
            if err.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Run a subcommand; its exit status on success (0, or 130 for a training run stopped by
/// Ctrl-C after saving a checkpoint).
fn run(command: Command) -> anyhow::Result<ExitCode> {
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

/// Log to stderr: `RUST_LOG` if set, else warnings, raised by each `-v` (info, debug, trace).
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr)
        .log_internal_errors(false)
        .with_target(false)
        .init();
}

/// stderr for log lines: like the print macros above, a line that stderr can no longer take
/// (`cai … 2>&1 | head -c1`) is dropped instead of stopping the work.
struct LossyStderr;

impl std::io::Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// The error and its causes joined by ": ", as `{:#}` prints them, but without a cause whose
/// text the message before it already includes: library errors often show their source in
/// their own message too, and the chain would otherwise say the same thing two or three times.
fn error_chain(err: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut last = String::new();
    for cause in err.chain() {
        let message = cause.to_string();
        if !last.is_empty() && last.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text += ": ";
        }
        text += &message;
        last = message;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that shows its source in its own message, as many library errors do.
    #[derive(Debug)]
    struct Repeats(std::io::Error);

    impl std::fmt::Display for Repeats {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "model backend: {}", self.0)
        }
    }

    impl std::error::Error for Repeats {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn causes_already_in_a_message_are_printed_once() {
        let io = std::io::Error::other("context too long");
        let err = anyhow::Error::new(Repeats(io)).context("writing out.jsonl");
        assert_eq!(
            error_chain(&err),
            "writing out.jsonl: model backend: context too long"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_chain(&plain), "outer: inner");
    }
}
