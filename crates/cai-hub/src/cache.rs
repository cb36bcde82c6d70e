//! The Hugging Face cache layout, shared with `huggingface-cli` and transformers:
//! `{models,datasets}--org--name/{blobs/<etag>, refs/<revision>, snapshots/<commit>/<file>}`,
//! where a snapshot's files are relative symlinks to their blobs.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::io;
use crate::repo::Repo;
use crate::Result;

/// One cache folder (`~/.cache/huggingface/hub`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The cache rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cache folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `root/models--org--name` (or `datasets--...`).
    pub fn repo_dir(&self, repo: &Repo) -> PathBuf {
        self.root.join(repo.cache_folder())
    }

    /// The folder of one commit's files.
    pub fn snapshot_dir(&self, repo: &Repo, commit: &str) -> PathBuf {
        self.repo_dir(repo).join("snapshots").join(commit)
    }

    /// The commit a revision names in the cache: `refs/<revision>` if written, else the
    /// revision itself when a snapshot has that name (a commit hash).
    pub fn commit_of(&self, repo: &Repo, revision: &str) -> Option<String> {
        let repo_dir = self.repo_dir(repo);
        if let Ok(text) = std::fs::read_to_string(repo_dir.join("refs").join(revision)) {
            let hash = text.trim();
            if !hash.is_empty() {
                return Some(hash.to_owned());
            }
        }
        repo_dir
            .join("snapshots")
            .join(revision)
            .is_dir()
            .then(|| revision.to_owned())
    }

    /// The snapshot for `repo`'s revision, or why there is none: with a revision, the
    /// snapshot its ref (or hash) names; without one, `refs/main`'s, else the most recently
    /// modified snapshot.
    pub fn find_snapshot(&self, repo: &Repo) -> std::result::Result<PathBuf, String> {
        let repo_dir = self.repo_dir(repo);
        if !repo_dir.is_dir() {
            return Err(format!("{}: no such folder", repo_dir.display()));
        }
        let snapshots = repo_dir.join("snapshots");
        let found = match (&repo.revision, self.commit_of(repo, repo.revision())) {
            (_, Some(commit)) => snapshots.join(commit),
            (Some(rev), None) => {
                return Err(format!(
                    "{}: no ref or snapshot '{rev}'",
                    repo_dir.display()
                ))
            }
            (None, None) => newest_snapshot(&snapshots)?,
        };
        if found.is_dir() {
            Ok(found)
        } else {
            Err(format!("{}: no such snapshot", found.display()))
        }
    }

    /// Write `refs/<revision>` = `commit` (atomically), unless the revision is the commit.
    pub fn set_ref(&self, repo: &Repo, revision: &str, commit: &str) -> Result<()> {
        if revision == commit {
            return Ok(());
        }
        let path = self.repo_dir(repo).join("refs").join(revision);
        write_atomic(&path, commit.as_bytes())
    }

    /// Put the blob `blobs/<etag>` at `snapshots/<commit>/<file>` as a relative symlink
    /// (a copy where symlinks are unavailable); the link appears atomically.
    pub fn link(&self, repo: &Repo, commit: &str, file: &str, etag: &str) -> Result<PathBuf> {
        let target = self.snapshot_dir(repo, commit).join(file);
        let parent = target.parent().expect("a snapshot file has a folder");
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let blob = self.blob_path(repo, etag);
        let tmp = temp_name(&target);
        let _ = std::fs::remove_file(&tmp);
        #[cfg(unix)]
        {
            // From snapshots/<commit>/<dirs…>/ up to the repository folder.
            let depth = 2 + file.matches('/').count();
            let mut relative = PathBuf::new();
            for _ in 0..depth {
                relative.push("..");
            }
            relative.push("blobs");
            relative.push(etag);
            std::os::unix::fs::symlink(&relative, &tmp).map_err(io(&tmp))?;
        }
        #[cfg(not(unix))]
        std::fs::copy(&blob, &tmp).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &target).map_err(io(&target))?;
        debug_assert!(blob.is_file());
        Ok(target)
    }

    /// `blobs/<etag>`.
    pub fn blob_path(&self, repo: &Repo, etag: &str) -> PathBuf {
        self.repo_dir(repo).join("blobs").join(etag)
    }
}

/// Every file under a snapshot folder, as repository paths (`data/train.parquet`), sorted.
pub fn snapshot_files(snapshot: &Path) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if path.is_dir() {
                walk(&path, &rel, out);
            } else if path.is_file() {
                out.push(rel);
            }
        }
    }
    let mut files = Vec::new();
    walk(snapshot, "", &mut files);
    files.sort();
    files
}

/// The most recently modified folder under `snapshots/` (the only one, usually).
fn newest_snapshot(snapshots: &Path) -> std::result::Result<PathBuf, String> {
    let entries = std::fs::read_dir(snapshots)
        .map_err(|_| format!("{}: no snapshots folder", snapshots.display()))?;
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
        .ok_or_else(|| format!("{}: no snapshots and no refs/main", snapshots.display()))
}

/// A sibling name for writing `path` before renaming it into place.
fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Write a small file whole, through a temporary sibling and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path.parent().expect("a cache file has a folder");
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = temp_name(path);
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::RepoKind;
    use std::fs;

    #[test]
    fn refs_name_snapshots_and_links_point_at_blobs() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path());
        let repo = Repo::parse("org/m", RepoKind::Model).unwrap();
        assert!(cache
            .find_snapshot(&repo)
            .unwrap_err()
            .contains("no such folder"));
        let blob = cache.blob_path(&repo, "e1");
        fs::create_dir_all(blob.parent().unwrap()).unwrap();
        fs::write(&blob, "{}").unwrap();
        let linked = cache
            .link(&repo, "c1", "sub/dir/config.json", "e1")
            .unwrap();
        assert_eq!(fs::read_to_string(&linked).unwrap(), "{}");
        #[cfg(unix)]
        assert_eq!(
            fs::read_link(&linked).unwrap(),
            Path::new("../../../../blobs/e1")
        );
        cache.set_ref(&repo, "main", "c1").unwrap();
        assert_eq!(
            cache.find_snapshot(&repo).unwrap(),
            cache.snapshot_dir(&repo, "c1")
        );
        assert_eq!(
            snapshot_files(&cache.snapshot_dir(&repo, "c1")),
            vec!["sub/dir/config.json".to_string()]
        );
        let pinned = Repo::parse("org/m@c1", RepoKind::Model).unwrap();
        assert_eq!(
            cache.find_snapshot(&pinned).unwrap(),
            cache.snapshot_dir(&repo, "c1")
        );
        let other = Repo::parse("org/m@dev", RepoKind::Model).unwrap();
        assert!(cache
            .find_snapshot(&other)
            .unwrap_err()
            .contains("no ref or snapshot 'dev'"));
    }
}
