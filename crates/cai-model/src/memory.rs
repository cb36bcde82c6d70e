//! Memory before allocation: the bytes a model's weights take against the bytes the machine
//! (or its cgroup) can give, so a model too large is refused with its sizes instead of the
//! process aborting on a failed allocation.

use std::path::Path;

use candle_core::Device;

use crate::{ModelError, Result};

/// Memory that can be allocated now, and where that figure comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Available {
    /// Bytes.
    pub bytes: u128,
    /// The source, for messages (`MemAvailable + SwapFree in /proc/meminfo`, …).
    pub basis: String,
}

/// Memory available to this process: `MemAvailable + SwapFree` from `/proc/meminfo`, lowered
/// to the cgroup's `memory.max - memory.current` where a limit is set. `None` where neither
/// can be read (not Linux): then nothing is refused.
pub fn available() -> Option<Available> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let system = meminfo
        .as_deref()
        .and_then(parse_meminfo)
        .map(|bytes| Available {
            bytes,
            basis: "MemAvailable + SwapFree in /proc/meminfo".into(),
        });
    let cgroup = cgroup_dir().and_then(|dir| cgroup_room(&dir));
    match (system, cgroup) {
        (Some(s), Some(c)) if c.bytes < s.bytes => Some(c),
        (Some(s), _) => Some(s),
        (None, c) => c,
    }
}

/// `MemAvailable + SwapFree` in bytes from the text of `/proc/meminfo`.
fn parse_meminfo(text: &str) -> Option<u128> {
    let field = |name: &str| -> Option<u128> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u128 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    };
    Some(field("MemAvailable:")? + field("SwapFree:").unwrap_or(0))
}

/// This process's cgroup v2 folder.
fn cgroup_dir() -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    Some(if dir.join("memory.max").exists() {
        dir
    } else {
        Path::new("/sys/fs/cgroup").to_path_buf()
    })
}

/// Room under a cgroup's memory limit, if it has one.
fn cgroup_room(dir: &Path) -> Option<Available> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let max: u128 = read("memory.max")?.trim().parse().ok()?;
    let current: u128 = read("memory.current")?.trim().parse().ok()?;
    Some(Available {
        bytes: max.saturating_sub(current),
        basis: format!(
            "memory.max - memory.current of the cgroup {}",
            dir.display()
        ),
    })
}

/// Fail with [`ModelError::Memory`] when `needed` bytes on `device` exceed what is available.
/// Only host memory is checked: an accelerator's allocator reports a failure as an error.
/// `what` describes the model (called only to build the error).
pub fn check(device: &Device, needed: u128, what: impl FnOnce() -> String) -> Result<()> {
    if !device.is_cpu() {
        return Ok(());
    }
    match available() {
        Some(room) => check_against(needed, room, what),
        None => Ok(()),
    }
}

/// [`check`] against a given figure.
pub fn check_against(needed: u128, room: Available, what: impl FnOnce() -> String) -> Result<()> {
    if needed <= room.bytes {
        return Ok(());
    }
    Err(ModelError::Memory {
        what: what(),
        needed,
        available: room.bytes,
        basis: room.basis,
    })
}

/// Bytes in decimal units with one decimal: `"40.0 GB"`, megabytes below a gigabyte,
/// terabytes from a thousand gigabytes.
pub fn gigabytes(bytes: u128) -> String {
    let b = bytes as f64;
    if b < 1e9 {
        format!("{:.1} MB", b / 1e6)
    } else if b < 1e12 {
        format!("{:.1} GB", b / 1e9)
    } else {
        format!("{:.1} TB", b / 1e12)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_counts_available_memory_and_free_swap() {
        let text = "MemTotal:       16000000 kB\nMemFree:         1000000 kB\n\
                    MemAvailable:    8000000 kB\nSwapTotal:       2000000 kB\nSwapFree:        1000000 kB\n";
        assert_eq!(parse_meminfo(text), Some(9_000_000 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn more_than_available_is_refused_with_both_figures() {
        let room = Available {
            bytes: 12_300_000_000,
            basis: "test".into(),
        };
        check_against(12_300_000_000, room.clone(), || unreachable!()).unwrap();
        let err = check_against(40_000_000_000, room, || "a llama model".into()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a llama model needs 40.0 GB of memory but only 12.3 GB is available (test); \
             choose smaller sizes or a smaller dtype, or free memory"
        );
        assert_eq!(gigabytes(5_500_000), "5.5 MB");
        assert_eq!(gigabytes(16_126_237_200_000), "16.1 TB");
    }

    #[test]
    fn this_machine_reports_some_memory() {
        let room = available().expect("Linux has /proc/meminfo");
        assert!(room.bytes > 0, "{room:?}");
    }
}
