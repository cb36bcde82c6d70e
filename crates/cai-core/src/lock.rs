//! Exclusive writer locks: one cai process at a time writes an output file, a checkpoint
//! folder or a run directory; a second writer fails at once and names the holder's PID.
//!
//! The lock is an OS file lock (`flock` on Unix) on a small sidecar file next to the target,
//! `.{name}.cai-lock`, holding the holder's PID. The operating system releases it when the
//! process ends, however it ends (a SIGKILL included), so a stale sidecar never blocks a
//! later run; a lock released normally also removes its sidecar.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::Error;

/// An exclusive lock on one output (a file or a folder, which need not exist yet), held
/// until dropped or until the process ends.
#[derive(Debug)]
pub struct WriterLock {
    target: PathBuf,
    lock_path: PathBuf,
    file: File,
}

impl WriterLock {
    /// Lock `target` for writing. Fails with [`Error::Locked`] at once, without waiting,
    /// when another process (or another lock in this one) holds it. Creates the target's
    /// parent folder when it is missing.
    pub fn acquire(target: &Path) -> Result<Self, Error> {
        let lock_path = lock_path(target)?;
        if let Some(parent) = lock_path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        // A released lock removes its sidecar; if that happened between our open and our
        // lock, we hold a lock on a file no longer in the folder: open it again.
        for _ in 0..100 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&lock_path)
                .map_err(io(&lock_path))?;
            match file.try_lock() {
                Ok(()) => {
                    if !same_file(&file, &lock_path) {
                        continue;
                    }
                    file.set_len(0).map_err(io(&lock_path))?;
                    file.seek(SeekFrom::Start(0)).map_err(io(&lock_path))?;
                    writeln!(file, "{}", std::process::id()).map_err(io(&lock_path))?;
                    return Ok(Self {
                        target: target.to_path_buf(),
                        lock_path,
                        file,
                    });
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(Error::Locked {
                        target: target.to_path_buf(),
                        pid: holder_pid(&mut file),
                    })
                }
                Err(TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
            }
        }
        Err(Error::Invalid(format!(
            "{}: could not take the writer lock {} (it kept being replaced)",
            target.display(),
            lock_path.display()
        )))
    }

    /// The locked output.
    pub fn target(&self) -> &Path {
        &self.target
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        // Remove the sidecar while still holding the lock; the lock goes with the handle.
        let _ = std::fs::remove_file(&self.lock_path);
        let _ = self.file.unlock();
    }
}

/// Where the lock of `target` lives: `.{name}.cai-lock` in the target's folder.
pub fn lock_path(target: &Path) -> Result<PathBuf, Error> {
    let absolute;
    let target = if target.file_name().is_some() {
        target
    } else {
        absolute = std::fs::canonicalize(target)
            .or_else(|_| std::path::absolute(target))
            .map_err(io(target))?;
        absolute.as_path()
    };
    let normal = target.components().collect::<PathBuf>();
    let (Some(name), parent) = (normal.file_name(), normal.parent()) else {
        return Err(Error::Invalid(format!(
            "{}: expected a file or folder to write, not the root",
            target.display()
        )));
    };
    let mut lock_name = std::ffi::OsString::from(".");
    lock_name.push(name);
    lock_name.push(".cai-lock");
    Ok(parent.unwrap_or(Path::new("")).join(lock_name))
}

/// The PID written in a held lock's sidecar, if it can be read. The holder writes it just
/// after taking the lock, so an empty sidecar is read again a few times.
fn holder_pid(file: &mut File) -> Option<u32> {
    for _ in 0..20 {
        let mut text = String::new();
        if file.seek(SeekFrom::Start(0)).is_ok() && file.read_to_string(&mut text).is_ok() {
            if let Ok(pid) = text.trim().parse() {
                return Some(pid);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    None
}

/// Whether the open `file` is still the file at `path`.
#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.jsonl");
        let held = WriterLock::acquire(&out).unwrap();
        let err = WriterLock::acquire(&out).unwrap_err();
        match &err {
            Error::Locked { target, pid } => {
                assert_eq!(target, &out);
                assert_eq!(*pid, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("out.jsonl"), "{text}");
        assert!(text.contains(&std::process::id().to_string()), "{text}");
        drop(held);
        assert!(!dir.path().join(".out.jsonl.cai-lock").exists());
        let again = WriterLock::acquire(&out).unwrap();
        assert_eq!(again.target(), out);
    }

    #[test]
    fn a_stale_sidecar_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        std::fs::write(dir.path().join(".run.cai-lock"), "999999\n").unwrap();
        let lock = WriterLock::acquire(&out).unwrap();
        let text = std::fs::read_to_string(dir.path().join(".run.cai-lock")).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(lock);
    }

    #[test]
    fn different_targets_do_not_conflict_and_parents_are_created() {
        let dir = tempfile::tempdir().unwrap();
        let a = WriterLock::acquire(&dir.path().join("x/a.jsonl")).unwrap();
        let b = WriterLock::acquire(&dir.path().join("x/b.jsonl")).unwrap();
        let d = WriterLock::acquire(&dir.path().join("x")).unwrap();
        assert!(dir.path().join("x/.a.jsonl.cai-lock").exists());
        assert!(dir.path().join(".x.cai-lock").exists());
        drop((a, b, d));
    }

    #[test]
    fn lock_paths_of_relative_and_dotted_targets() {
        assert_eq!(
            lock_path(Path::new("out.jsonl")).unwrap(),
            Path::new(".out.jsonl.cai-lock")
        );
        assert_eq!(
            lock_path(Path::new("a/b/")).unwrap(),
            Path::new("a/.b.cai-lock")
        );
        let here = lock_path(Path::new(".")).unwrap();
        assert!(here.is_absolute(), "{}", here.display());
    }
}
