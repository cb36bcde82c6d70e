//! Finding a model on disk: a directory, or a model id in the local Hugging Face cache.
//!
//! cai never downloads. A model id (`org/name`, `name`, optionally `@revision`) is looked up in
//! the cache that `huggingface-cli download` fills, laid out as
//! `models--org--name/{refs/<ref>, snapshots/<hash>/...}`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::{ModelError, Result};

/// Resolve `spec` to a model directory in Hugging Face layout.
///
/// `spec` is an existing directory (returned as is) or a model id `org/name` or `name`,
/// optionally followed by `@revision` (a ref under `refs/`, such as `main`, or a snapshot
/// hash). A model id is looked up, without network access, in the Hugging Face cache:
/// `$HF_HUB_CACHE` (or the older `$HUGGINGFACE_HUB_CACHE`), else `$HF_HOME/hub`, else
/// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`. Without a revision the
/// snapshot named by `refs/main` is used; if there is no `refs/main`, the only snapshot or else
/// the most recently modified one. A snapshot counts only if it holds `config.json`.
///
/// Fails with [`ModelError::NotFound`] listing every place looked at.
pub fn resolve_model_dir(spec: &str) -> Result<PathBuf> {
    resolve_model_dir_in(spec, &cache_roots_from_env())
}

/// The Hugging Face hub cache folder named by the environment (see [`resolve_model_dir`]).
fn cache_roots_from_env() -> Vec<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(root) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
        return vec![root];
    }
    if let Some(home) = var("HF_HOME") {
        return vec![home.join("hub")];
    }
    if let Some(xdg) = var("XDG_CACHE_HOME") {
        return vec![xdg.join("huggingface").join("hub")];
    }
    var("HOME")
        .or_else(|| var("USERPROFILE"))
        .map(|home| vec![home.join(".cache").join("huggingface").join("hub")])
        .unwrap_or_default()
}

/// [`resolve_model_dir`] against explicit cache roots, so tests need not touch the environment.
fn resolve_model_dir_in(spec: &str, cache_roots: &[PathBuf]) -> Result<PathBuf> {
    let as_path = Path::new(spec);
    if as_path.is_dir() {
        return Ok(as_path.to_path_buf());
    }
    let mut searched = vec![format!("{spec} (not a directory)")];
    let (repo_id, revision) = match spec.split_once('@') {
        Some((id, rev)) => (id, Some(rev)),
        None => (spec, None),
    };
    if let Some(folder) = cache_folder_name(repo_id) {
        if revision.is_none_or(is_safe_revision) {
            for root in cache_roots {
                let repo_dir = root.join(&folder);
                match find_snapshot(&repo_dir, revision) {
                    Ok(dir) => return Ok(dir),
                    Err(why) => searched.push(format!("{} ({why})", repo_dir.display())),
                }
            }
        } else {
            searched.push(format!(
                "revision '{}' is not a ref name or hash",
                revision.unwrap_or("")
            ));
        }
    } else {
        searched.push(format!(
            "'{repo_id}' is not a Hugging Face model id (org/name)"
        ));
    }
    if cache_roots.is_empty() {
        searched
            .push("no Hugging Face cache folder: HF_HUB_CACHE, HF_HOME and HOME are unset".into());
    }
    Err(ModelError::NotFound {
        spec: spec.to_string(),
        searched: format!(
            "looked at {}. cai never downloads models: run `huggingface-cli download {repo_id}` \
             where there is network access (into this cache), or pass a model directory",
            searched.join("; ")
        ),
    })
}

/// The cache folder of a model id: `org/name` → `models--org--name`; None if not a model id.
fn cache_folder_name(repo_id: &str) -> Option<String> {
    let parts: Vec<&str> = repo_id.split('/').collect();
    let valid = |p: &&str| {
        !p.is_empty()
            && *p != "."
            && *p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    (parts.len() <= 2 && parts.iter().all(valid)).then(|| format!("models--{}", parts.join("--")))
}

/// A revision may name nested refs (`pr/1`) but never climb out of the repository folder.
fn is_safe_revision(rev: &str) -> bool {
    !rev.is_empty()
        && rev
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
}

/// The snapshot directory of one cached repository, or why there is none.
fn find_snapshot(repo_dir: &Path, revision: Option<&str>) -> std::result::Result<PathBuf, String> {
    if !repo_dir.is_dir() {
        return Err("no such folder".into());
    }
    let snapshots = repo_dir.join("snapshots");
    let read_ref = |name: &str| {
        std::fs::read_to_string(repo_dir.join("refs").join(name))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let snapshot = match revision {
        Some(rev) => match read_ref(rev) {
            Some(hash) => snapshots.join(hash),
            None if snapshots.join(rev).is_dir() => snapshots.join(rev),
            None => return Err(format!("no ref or snapshot '{rev}'")),
        },
        None => match read_ref("main") {
            Some(hash) => snapshots.join(hash),
            None => newest_snapshot(&snapshots)?,
        },
    };
    if snapshot.join("config.json").is_file() {
        Ok(snapshot)
    } else {
        Err(format!(
            "snapshot {} has no config.json",
            snapshot.display()
        ))
    }
}

/// The most recently modified folder under `snapshots/` (the only one, usually).
fn newest_snapshot(snapshots: &Path) -> std::result::Result<PathBuf, String> {
    let entries = std::fs::read_dir(snapshots).map_err(|_| "no snapshots folder".to_string())?;
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| {
            let modified = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            (modified, e.path())
        })
        .max()
        .map(|(_, path)| path)
        .ok_or_else(|| "no snapshots and no refs/main".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A fake cache entry `models--{folder}` with the given snapshots; returns the repo folder.
    fn fake_repo(root: &Path, folder: &str, snapshots: &[(&str, bool)]) -> PathBuf {
        let repo = root.join(format!("models--{folder}"));
        for (hash, with_config) in snapshots {
            let dir = repo.join("snapshots").join(hash);
            fs::create_dir_all(&dir).unwrap();
            if *with_config {
                fs::write(dir.join("config.json"), "{}").unwrap();
            }
        }
        repo
    }

    fn set_ref(repo: &Path, name: &str, hash: &str) {
        let path = repo.join("refs").join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, format!("{hash}\n")).unwrap();
    }

    #[test]
    fn an_existing_directory_is_returned_as_is() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = tmp.path().to_str().unwrap();
        assert_eq!(resolve_model_dir_in(spec, &[]).unwrap(), tmp.path());
    }

    #[test]
    fn refs_main_names_the_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = fake_repo(tmp.path(), "org--tiny", &[("aaa", true), ("bbb", true)]);
        set_ref(&repo, "main", "bbb");
        let roots = [tmp.path().to_path_buf()];
        let dir = resolve_model_dir_in("org/tiny", &roots).unwrap();
        assert_eq!(dir, repo.join("snapshots/bbb"));
    }

    #[test]
    fn without_refs_the_single_snapshot_is_used() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = fake_repo(tmp.path(), "gpt2", &[("abc123", true)]);
        let dir = resolve_model_dir_in("gpt2", &[tmp.path().to_path_buf()]).unwrap();
        assert_eq!(dir, repo.join("snapshots/abc123"));
    }

    #[test]
    fn revision_names_a_ref_or_a_hash() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = fake_repo(
            tmp.path(),
            "org--m",
            &[("h1", true), ("h2", true), ("h3", true)],
        );
        set_ref(&repo, "main", "h1");
        set_ref(&repo, "pr/7", "h2");
        let roots = [tmp.path().to_path_buf()];
        assert_eq!(
            resolve_model_dir_in("org/m@pr/7", &roots).unwrap(),
            repo.join("snapshots/h2")
        );
        assert_eq!(
            resolve_model_dir_in("org/m@h3", &roots).unwrap(),
            repo.join("snapshots/h3")
        );
        assert!(resolve_model_dir_in("org/m@nope", &roots).is_err());
        assert!(resolve_model_dir_in("org/m@../../etc", &roots).is_err());
    }

    #[test]
    fn later_roots_are_searched_and_snapshots_need_config_json() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let empty = fake_repo(a.path(), "org--m", &[("x", false)]);
        set_ref(&empty, "main", "x");
        let good = fake_repo(b.path(), "org--m", &[("y", true)]);
        let roots = [a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(
            resolve_model_dir_in("org/m", &roots).unwrap(),
            good.join("snapshots/y")
        );
    }

    #[test]
    fn not_found_lists_the_paths_and_says_cai_never_downloads() {
        let tmp = tempfile::tempdir().unwrap();
        let err = resolve_model_dir_in("org/absent", &[tmp.path().to_path_buf()]).unwrap_err();
        let ModelError::NotFound { spec, searched } = &err else {
            panic!("{err}")
        };
        assert_eq!(spec, "org/absent");
        assert!(searched.contains(&tmp.path().join("models--org--absent").display().to_string()));
        assert!(searched.contains("never downloads"));
        assert!(searched.contains("huggingface-cli download org/absent"));
    }

    #[test]
    fn paths_that_are_not_model_ids_are_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        for spec in ["./no/such/dir", "a/b/c", "", "org/../x"] {
            let err = resolve_model_dir_in(spec, &[tmp.path().to_path_buf()]).unwrap_err();
            assert!(
                err.to_string().contains("not a Hugging Face model id"),
                "{spec}: {err}"
            );
        }
    }
}
