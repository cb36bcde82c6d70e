//! The equivalent `cai` command of a job, as words and as a shell line: text for people (and
//! for a stage's fingerprint), never parsed back.

use std::path::Path;

use super::{DeviceFlags, TrainingFlags};

/// The words of a command, built flag by flag.
#[derive(Debug, Default)]
pub(crate) struct Words(pub Vec<String>);

impl Words {
    /// The subcommand's words (`["lab", "generate"]`).
    pub fn new(command: &[&str]) -> Self {
        Self(command.iter().map(|w| w.to_string()).collect())
    }

    /// `--flag value`.
    pub fn flag(&mut self, flag: &str, value: impl ToString) -> &mut Self {
        self.0.push(flag.into());
        self.0.push(value.to_string());
        self
    }

    /// `--flag path`.
    pub fn path(&mut self, flag: &str, path: &Path) -> &mut Self {
        self.flag(flag, path.display())
    }

    /// `--flag value` when the value is set.
    pub fn opt<T: ToString>(&mut self, flag: &str, value: Option<T>) -> &mut Self {
        if let Some(v) = value {
            self.flag(flag, v);
        }
        self
    }

    /// `--flag path` when the path is set.
    pub fn opt_path(&mut self, flag: &str, path: Option<&Path>) -> &mut Self {
        self.opt(flag, path.map(|p| p.display()))
    }

    /// `--flag` when `on`.
    pub fn switch(&mut self, flag: &str, on: bool) -> &mut Self {
        if on {
            self.0.push(flag.into());
        }
        self
    }

    /// `--device D [--dtype T]`.
    pub fn device(&mut self, d: &DeviceFlags) -> &mut Self {
        self.flag("--device", &d.device)
            .opt("--dtype", d.dtype.as_ref())
    }

    /// The shared training flags.
    pub fn training(&mut self, t: &TrainingFlags) -> &mut Self {
        self.opt("--learning-rate", t.learning_rate)
            .opt("--epochs", t.epochs)
            .opt("--max-steps", t.max_steps)
            .opt("--batch-size", t.batch_size)
            .opt("--save-every", t.save_every)
    }

    /// A recipe's `args = [...]`, as given.
    pub fn extra(&mut self, args: &[String]) -> &mut Self {
        self.0.extend(args.iter().cloned());
        self
    }

    /// The words.
    pub fn done(&mut self) -> Vec<String> {
        std::mem::take(&mut self.0)
    }
}

/// `cai` followed by the words, quoted for a POSIX shell.
pub fn command_line(words: &[String]) -> String {
    let mut all = vec!["cai".to_owned()];
    all.extend(words.iter().cloned());
    shell_words(&all)
}

/// Words joined for a POSIX shell, quoted where needed.
pub fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_quote_only_when_needed() {
        let words = ["cai".to_owned(), "a b".to_owned(), "--x=1".to_owned()];
        assert_eq!(shell_words(&words), "cai 'a b' --x=1");
    }
}
