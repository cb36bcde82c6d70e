//! Writing model files whole: into a temporary file beside the target, created as any new
//! file is (so it gets the umask's mode, 0644 under the usual 022), synced, then renamed over
//! the target. A reader or a crash sees the old file or the new one, never a torn one.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::{ModelError, Result};

/// Write `bytes` to `path` atomically (the parent folder must exist).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |out| out.write_all(bytes))
}

/// Write `path` atomically with `write`, which gets a buffered writer on the temporary file.
/// On any failure the temporary file is removed and `path` is left as it was.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = temp_path(path)?;
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        write(&mut out).map_err(|e| ModelError::io(&tmp, e))?;
        let file = out
            .into_inner()
            .map_err(|e| ModelError::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| ModelError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
    })();
    if result.is_err() {
        // Best effort: the error being returned matters more than a failed clean-up.
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// `.{name}.tmp.{pid}` beside `path`: hidden, and unique to this process.
pub(crate) fn temp_path(path: &Path) -> Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| ModelError::Config {
        path: path.to_path_buf(),
        message: "expected a file path, not a folder".into(),
    })?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".tmp.{}", std::process::id()));
    Ok(path.with_file_name(tmp))
}

/// Flush a folder's entries (a rename into it) to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| ModelError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config.json");
        write_atomic(&path, b"old").unwrap();
        let err = write_atomic_with(&path, |out| {
            out.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }
}
