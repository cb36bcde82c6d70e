//! The `cai` binary: process setup, logging, dispatch to the subcommands, and exit codes.

mod cli;
mod commands;
mod human;
mod model_args;
mod progress;
mod resume;
mod usage;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::usage::UsageError;

/// mimalloc keeps freed pages for reuse; with the system allocator every large activation is
/// a fresh mmap whose pages the kernel must fault in and zero (measured: 12% of scoring time
/// in `clear_page_erms` on `bench-6m`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    use_all_cores_for_rayon();
    // Exits with clap's usage status (2) on bad arguments, 0 for --help and --version.
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if err.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::InitModel(args) => commands::init_model::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Score(args) => commands::score::run(args),
        Command::Chat(args) => commands::chat::run(args),
        Command::Bench(args) => commands::bench::run(args),
    }
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
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
