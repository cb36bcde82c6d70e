//! The lab's shipped base models, embedded in the binary so that `--model lab` and
//! `--model lab-small` work from any directory: on first use each is written once into the
//! cache (`$CAI_CACHE`, else `$XDG_CACHE_HOME/cai`, else `~/.cache/cai`) and loaded from there
//! like any Hugging Face model directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cai_lab::pretrain::LabSize;

/// One shipped model: its size and its files.
struct Shipped {
    size: LabSize,
    files: &'static [(&'static str, &'static [u8])],
}

macro_rules! shipped_files {
    ($dir:literal) => {
        &[
            (
                "config.json",
                include_bytes!(concat!("../../../models/", $dir, "/config.json")),
            ),
            (
                "model.safetensors",
                include_bytes!(concat!("../../../models/", $dir, "/model.safetensors")),
            ),
            (
                "tokenizer.json",
                include_bytes!(concat!("../../../models/", $dir, "/tokenizer.json")),
            ),
            (
                "tokenizer_config.json",
                include_bytes!(concat!("../../../models/", $dir, "/tokenizer_config.json")),
            ),
            (
                "generation_config.json",
                include_bytes!(concat!("../../../models/", $dir, "/generation_config.json")),
            ),
            (
                "lab_model.json",
                include_bytes!(concat!("../../../models/", $dir, "/lab_model.json")),
            ),
        ]
    };
}

static SHIPPED: [Shipped; 2] = [
    Shipped {
        size: LabSize::Base,
        files: shipped_files!("lab"),
    },
    Shipped {
        size: LabSize::Small,
        files: shipped_files!("lab-small"),
    },
];

/// The directory of the model `spec` names: a directory in Hugging Face layout (one with a
/// `config.json`, even when it is called `lab`), a shipped lab model's alias (`lab`), a GGUF
/// file, or a Hub model id (from the Hugging Face cache, else downloaded into it).
pub fn resolve_model_dir(spec: &str) -> anyhow::Result<PathBuf> {
    let is_model_dir = Path::new(spec).join("config.json").is_file();
    if !is_model_dir {
        if let Some(shipped) = SHIPPED.iter().find(|s| s.size.alias() == spec) {
            return extract(shipped);
        }
        if let Some(size) = LabSize::ALL.into_iter().find(|s| s.alias() == spec) {
            anyhow::bail!(
                "'{spec}' is not shipped (only {} are: the repository keeps shipped weights \
                 small); make it with `cai lab pretrain --size {} --output DIR` and pass \
                 --model DIR",
                SHIPPED
                    .iter()
                    .map(|s| s.size.alias())
                    .collect::<Vec<_>>()
                    .join(", "),
                size.name()
            );
        }
    }
    cai_model::hub::resolve_model_dir(spec).with_context(|| format!("finding model '{spec}'"))
}

/// The cache directory holding `shipped`'s files, written there first if needed.
fn extract(shipped: &Shipped) -> anyhow::Result<PathBuf> {
    let root = cache_root().join("models");
    let dir = root.join(format!(
        "{}-{:016x}",
        shipped.size.alias(),
        content_hash(shipped.files)
    ));
    if dir.join("model.safetensors").exists() {
        return Ok(dir);
    }
    // Written beside its final name and renamed, so that a crash or a concurrent first use
    // never leaves a half-written model under the final name.
    let partial = root.join(format!(
        ".{}-partial-{}",
        shipped.size.alias(),
        std::process::id()
    ));
    std::fs::create_dir_all(&partial)
        .with_context(|| format!("creating the model cache {}", partial.display()))?;
    for (name, bytes) in shipped.files {
        let path = partial.join(name);
        if let Err(e) = std::fs::write(&path, bytes) {
            // A full disk must not leave a half-written copy behind.
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e).with_context(|| format!("writing {}", path.display()));
        }
    }
    if let Err(e) = std::fs::rename(&partial, &dir) {
        // Another process got there first: its copy is identical.
        let _ = std::fs::remove_dir_all(&partial);
        if !dir.join("model.safetensors").exists() {
            return Err(e).with_context(|| format!("moving the model into {}", dir.display()));
        }
    }
    Ok(dir)
}

/// Where cai keeps files it writes for itself.
pub(crate) fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("CAI_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("cai");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache/cai"),
        None => std::env::temp_dir().join("cai-cache"),
    }
}

/// FNV-1a over every file's name and bytes: a new build with other weights gets its own
/// cache directory.
fn content_hash(files: &[(&str, &[u8])]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, bytes) in files {
        for &b in name.as_bytes().iter().chain(*bytes) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_sees_names_and_bytes() {
        let a = content_hash(&[("a", b"xy")]);
        assert_eq!(a, content_hash(&[("a", b"xy")]));
        assert_ne!(a, content_hash(&[("a", b"xz")]));
        assert_ne!(a, content_hash(&[("b", b"xy")]));
    }
}
