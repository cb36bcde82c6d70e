//! Repository ids (`org/name@revision`), their kind (model or dataset), and where each lives
//! on the Hub and in the cache.

use crate::{HubError, Result};

/// A model or a dataset repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    /// `models--org--name` in the cache, `/{id}/resolve/...` on the Hub.
    Model,
    /// `datasets--org--name` in the cache, `/datasets/{id}/resolve/...` on the Hub.
    Dataset,
}

impl RepoKind {
    /// "model" or "dataset".
    pub fn name(self) -> &'static str {
        match self {
            RepoKind::Model => "model",
            RepoKind::Dataset => "dataset",
        }
    }
}

/// One revision of one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    /// `org/name` (or a bare `name` for the oldest repositories).
    pub id: String,
    /// Model or dataset.
    pub kind: RepoKind,
    /// A branch, tag, `refs/...` name or commit hash; None means `main`.
    pub revision: Option<String>,
}

impl Repo {
    /// Parse `org/name` or `org/name@revision`. Each part of the id is letters, digits, `-`,
    /// `_` and `.` (never `.` or `..` alone); a revision may hold `/` (`refs/pr/1`) but no
    /// empty, `.` or `..` part.
    pub fn parse(spec: &str, kind: RepoKind) -> Result<Self> {
        let invalid = |message: String| HubError::InvalidId {
            spec: spec.to_owned(),
            kind: kind.name(),
            message,
        };
        let (id, revision) = match spec.split_once('@') {
            Some((id, rev)) => (id, Some(rev)),
            None => (spec, None),
        };
        let parts: Vec<&str> = id.split('/').collect();
        let valid = |p: &&str| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if parts.len() > 2 || !parts.iter().all(valid) {
            return Err(invalid(
                "expected org/name (letters, digits, '-', '_' and '.'), optionally followed \
                 by @revision"
                    .into(),
            ));
        }
        if let Some(rev) = revision {
            if !is_safe_revision(rev) {
                return Err(invalid(format!(
                    "revision '{rev}' is not a branch, tag or commit hash"
                )));
            }
        }
        Ok(Self {
            id: id.to_owned(),
            kind,
            revision: revision.map(str::to_owned),
        })
    }

    /// The revision asked for, `main` when none was.
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// The repository's folder in the cache: `models--org--name` or `datasets--org--name`.
    pub fn cache_folder(&self) -> String {
        let prefix = match self.kind {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        };
        format!("{prefix}--{}", self.id.replace('/', "--"))
    }

    /// The repository's path on the Hub's web routes: `org/name` or `datasets/org/name`.
    pub fn url_path(&self) -> String {
        match self.kind {
            RepoKind::Model => self.id.clone(),
            RepoKind::Dataset => format!("datasets/{}", self.id),
        }
    }

    /// The repository's API route: `api/models/org/name` or `api/datasets/org/name`.
    pub fn api_path(&self) -> String {
        let kind = match self.kind {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        };
        format!("api/{kind}/{}", self.id)
    }

    /// How messages name it: "model org/name" or "dataset org/name@rev".
    pub fn describe(&self) -> String {
        match &self.revision {
            Some(rev) => format!("{} {}@{rev}", self.kind.name(), self.id),
            None => format!("{} {}", self.kind.name(), self.id),
        }
    }

    /// `huggingface-cli download` arguments that fetch this repository (or one file of it).
    pub fn cli_args(&self, file: Option<&str>) -> String {
        let mut args = self.id.clone();
        if let Some(file) = file {
            args.push(' ');
            args.push_str(file);
        }
        if self.kind == RepoKind::Dataset {
            args.push_str(" --repo-type dataset");
        }
        if let Some(rev) = &self.revision {
            args.push_str(&format!(" --revision {rev}"));
        }
        args
    }
}

/// A revision may name nested refs (`refs/pr/1`) but never climb out of the repository folder.
fn is_safe_revision(rev: &str) -> bool {
    !rev.is_empty()
        && rev
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
}

/// A file path inside a repository (`data/train-00000.parquet`): relative, no empty, `.` or
/// `..` part, so it stays inside the snapshot folder.
pub fn is_safe_file_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
}

/// Percent-encode a path segment or revision for a URL (`refs/pr/1` → `refs%2Fpr%2F1`).
pub(crate) fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        let plain =
            byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) || (keep_slash && byte == b'/');
        if plain {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_revisions_and_folders() {
        let repo = Repo::parse("org/m@refs/pr/7", RepoKind::Model).unwrap();
        assert_eq!(repo.id, "org/m");
        assert_eq!(repo.revision(), "refs/pr/7");
        assert_eq!(repo.cache_folder(), "models--org--m");
        assert_eq!(repo.url_path(), "org/m");
        let data = Repo::parse("Anthropic/hh-rlhf", RepoKind::Dataset).unwrap();
        assert_eq!(data.revision(), "main");
        assert_eq!(data.cache_folder(), "datasets--Anthropic--hh-rlhf");
        assert_eq!(data.url_path(), "datasets/Anthropic/hh-rlhf");
        assert_eq!(data.api_path(), "api/datasets/Anthropic/hh-rlhf");
        assert_eq!(
            data.cli_args(Some("a.jsonl")),
            "Anthropic/hh-rlhf a.jsonl --repo-type dataset"
        );
        assert_eq!(
            Repo::parse("gpt2", RepoKind::Model).unwrap().cache_folder(),
            "models--gpt2"
        );
    }

    #[test]
    fn bad_ids_are_refused() {
        for spec in [
            "",
            "a/b/c",
            "org/../x",
            "./x",
            "org/m@",
            "org/m@../../etc",
            "o rg/m",
        ] {
            let err = Repo::parse(spec, RepoKind::Model).unwrap_err();
            assert!(
                err.to_string().contains("is not a Hugging Face model id"),
                "{spec}: {err}"
            );
        }
    }

    #[test]
    fn file_paths_stay_inside_and_urls_are_encoded() {
        assert!(is_safe_file_path("data/train-0.parquet"));
        for bad in ["", "/etc/passwd", "a/../b", "a//b", "..", "a\\b"] {
            assert!(!is_safe_file_path(bad), "{bad}");
        }
        assert_eq!(encode("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(encode("a b/c.json", true), "a%20b/c.json");
    }
}
