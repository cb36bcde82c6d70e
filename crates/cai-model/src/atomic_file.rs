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
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
        let mut prefix = std::ffi::OsString::from(".");
        prefix.push(name);
        prefix.push(".tmp.");
        remove_stale(dir, &prefix.to_string_lossy(), |p| std::fs::remove_file(p));
    }
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

/// Remove what a killed cai left in `dir` under `{prefix}{pid}` (a temporary file or folder
/// named for its target and its writer's process id) with `remove`: only where that process
/// is provably gone (Linux's `/proc` has no entry for it), so a running writer's file and a
/// name that merely looks alike under another system are kept. Best effort: a failure to
/// clean up never fails the write.
pub(crate) fn remove_stale(
    dir: &Path,
    prefix: &str,
    remove: impl Fn(&Path) -> std::io::Result<()>,
) {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .filter(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if pid != std::process::id().to_string() && !proc.join(pid).exists() {
            let _ = remove(&entry.path());
        }
    }
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

    #[test]
    fn a_write_removes_the_temporaries_of_killed_writers_only() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("model.safetensors");
        // A process id above Linux's largest (2^22) is never running; ours is.
        let dead = tmp.path().join(".model.safetensors.tmp.99999999");
        let running = tmp.path().join(".model.safetensors.tmp.1");
        let not_a_pid = tmp.path().join(".model.safetensors.tmp.notapid");
        let other = tmp.path().join(".config.json.tmp.99999999");
        for p in [&dead, &running, &not_a_pid, &other] {
            std::fs::write(p, "x").unwrap();
        }
        write_atomic(&path, b"weights").unwrap();
        assert!(!dead.exists(), "a dead writer's temporary is removed");
        assert!(running.exists(), "PID 1 is running: its file stays");
        assert!(not_a_pid.exists() && other.exists(), "other names stay");
    }
}
