//! The `cai` binary: parses the command line, sets up the process and logging, runs the
//! command from the `cai-commands` library, and maps failures to exit codes.

// The error line, like every line `cai` prints, is dropped rather than panicking when stderr
// has gone (the library's print macros explain why).
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use std::process::ExitCode;

use cai_commands::cli::Cli;
use cai_commands::usage::UsageError;
use clap::Parser;

fn main() -> ExitCode {
    cai_commands::prepare_process();
    // Exits with clap's usage status (2) on bad arguments, 0 for --help and --version.
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match cai_commands::run(cli.command) {
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
