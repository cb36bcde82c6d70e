//! Usage errors: arguments that parse but do not make sense together. `main` exits with
//! status 2 for them, as clap does for arguments that do not parse.

use std::fmt;

/// A bad combination or value of command-line arguments; the message says what to pass.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Fail with a [`UsageError`] unless `ok`.
pub fn ensure(ok: bool, message: impl FnOnce() -> String) -> Result<(), UsageError> {
    if ok {
        Ok(())
    } else {
        Err(UsageError(message()))
    }
}
