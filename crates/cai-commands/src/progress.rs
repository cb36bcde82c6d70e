//! Progress on stderr (indicatif): a bar over records for long jobs, a spinner for waits of
//! unknown length. Both stay silent when stderr is not a terminal (pipes, CI, tests).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `total` records of which `done` are already finished (a resumed run).
pub fn records_bar(total: usize, done: usize, what: &str) -> ProgressBar {
    let style =
        ProgressStyle::with_template("{msg} [{bar:40.cyan/blue}] {pos}/{len} {per_sec} eta {eta}")
            .expect("a valid progress template")
            .progress_chars("=> ");
    let bar = ProgressBar::new(total as u64)
        .with_style(style)
        .with_message(what.to_owned());
    bar.set_position(done as u64);
    bar.reset_eta();
    bar
}

/// A spinner showing `message` while something of unknown length runs.
pub fn spinner(message: impl Into<String>) -> ProgressBar {
    let style = ProgressStyle::with_template("{spinner} {msg} {elapsed}")
        .expect("a valid progress template");
    let bar = ProgressBar::new_spinner()
        .with_style(style)
        .with_message(message.into());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
