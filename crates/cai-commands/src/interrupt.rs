//! Ctrl-C during a training command: the first asks the trainer to save a checkpoint and stop, the
//! second quits at once; and the command line that resumes the run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context;
use indicatif::ProgressBar;

/// The exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
pub(crate) const INTERRUPTED: u8 = 130;

/// The flag and progress bar of the training command running now (`None` between commands).
type Current = Option<(Arc<AtomicBool>, ProgressBar)>;

static CURRENT: Mutex<Current> = Mutex::new(None);
static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
static RESUME_HINT: OnceLock<String> = OnceLock::new();

/// Raise the returned flag on the first Ctrl-C (the trainer then saves a checkpoint and
/// stops); exit at once on the second. One handler serves every training command of the
/// process (`cai pipeline` runs several in turn).
pub(crate) fn stop_on_ctrl_c(bar: ProgressBar) -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = Some((Arc::clone(&stop), bar));
    INSTALLED
        .get_or_init(|| ctrlc::set_handler(on_ctrl_c).map_err(|e| e.to_string()))
        .clone()
        .map_err(anyhow::Error::msg)
        .context("installing the Ctrl-C handler")?;
    Ok(stop)
}

/// After a training command: Ctrl-C quits at once again, as it does without a handler.
pub(crate) fn release_ctrl_c() {
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

fn on_ctrl_c() {
    let current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    let Some((flag, bar)) = current.as_ref() else {
        eprintln!();
        std::process::exit(i32::from(INTERRUPTED));
    };
    if flag.swap(true, Ordering::SeqCst) {
        bar.abandon();
        eprintln!("\nstopped without saving; the last saved checkpoint is kept");
        std::process::exit(i32::from(INTERRUPTED));
    }
    bar.suspend(|| {
        eprintln!("\nstopping after this step to save a checkpoint (Ctrl-C again to quit at once)")
    });
}

/// Make [`resume_command`] print `command` (a command that runs other commands resumes as
/// a whole).
pub(crate) fn set_resume_command(command: String) {
    let _ = RESUME_HINT.set(command);
}

/// This command line with `--resume` (and without `--overwrite`), quoted for a POSIX shell.
pub(crate) fn resume_command() -> String {
    if let Some(command) = RESUME_HINT.get() {
        return command.clone();
    }
    let mut words = vec!["cai".to_owned()];
    words.extend(
        std::env::args()
            .skip(1)
            .filter(|a| a != "--overwrite" && a != "--resume"),
    );
    words.push("--resume".into());
    words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// This command line at learning rate `lr`: resuming, allowing the change (`--resume
/// --learning-rate LR --allow-config-change learning_rate` in place of any such flags
/// given; other allowed changes are kept), or starting again (`--overwrite --learning-rate
/// LR`). `None` when this process runs other commands (`cai pipeline`): its resume command is
/// its own.
pub(crate) fn lower_rate_command(lr: f64, resume: bool) -> Option<String> {
    if RESUME_HINT.get().is_some() {
        return None;
    }
    Some(
        with_lower_rate(std::env::args().skip(1), lr, resume)
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// `cai` and `args` less `--overwrite`, `--resume`, `--learning-rate` and
/// `--allow-config-change` (in either `--flag value` or `--flag=value` form), then
/// `--resume --learning-rate lr --allow-config-change` with `learning_rate` added to the
/// names given before (or, not resuming, `--overwrite --learning-rate lr`).
fn with_lower_rate(args: impl Iterator<Item = String>, lr: f64, resume: bool) -> Vec<String> {
    let mut words = vec!["cai".to_owned()];
    let mut allowed: Vec<String> = Vec::new();
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            "--overwrite" | "--resume" => {}
            "--learning-rate" | "--allow-config-change" => {
                let value = inline.or_else(|| args.next()).unwrap_or_default();
                if flag == "--allow-config-change" {
                    allowed.extend(value.split(',').map(str::to_owned));
                }
            }
            _ => words.push(arg),
        }
    }
    if !resume {
        words.extend([
            "--overwrite".to_owned(),
            "--learning-rate".to_owned(),
            format!("{lr:e}"),
        ]);
        return words;
    }
    if !allowed.iter().any(|a| a == "learning_rate") {
        allowed.push("learning_rate".into());
    }
    words.extend([
        "--resume".to_owned(),
        "--learning-rate".to_owned(),
        format!("{lr:e}"),
        "--allow-config-change".to_owned(),
        allowed.join(","),
    ]);
    words
}

/// `w` as one word for a POSIX shell.
fn shell_quote(w: &str) -> String {
    let plain = !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c));
    if plain {
        w.to_owned()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(
            shell_quote("--lora-targets=q_proj,v_proj"),
            "--lora-targets=q_proj,v_proj"
        );
        assert_eq!(shell_quote("my data.jsonl"), "'my data.jsonl'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn the_lower_rate_command_replaces_the_rate_and_keeps_other_allowances() {
        let args = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let sft = args(&[
            "sft",
            "--learning-rate",
            "1e6",
            "--resume",
            "--data",
            "d.jsonl",
        ]);
        let words = with_lower_rate(sft.clone().into_iter(), 1e5, true);
        assert_eq!(
            words.join(" "),
            "cai sft --data d.jsonl --resume --learning-rate 1e5 --allow-config-change \
             learning_rate"
        );
        // Without a checkpoint: start again.
        let words = with_lower_rate(sft.into_iter(), 1e5, false);
        assert_eq!(
            words.join(" "),
            "cai sft --data d.jsonl --overwrite --learning-rate 1e5"
        );
        let rl = args(&[
            "rl",
            "--learning-rate=0.1",
            "--allow-config-change=data",
            "--overwrite",
        ]);
        let words = with_lower_rate(rl.into_iter(), 0.01, true);
        assert_eq!(
            words.join(" "),
            "cai rl --resume --learning-rate 1e-2 --allow-config-change data,learning_rate"
        );
    }
}
