//! Dataset source specs: the text given to `--prompts`/`--data` (a file, or a Hub dataset),
//! with options after `?`: `split`, `subset`, `limit`, and column renames `FIELD=COLUMN`.
//!
//! ```text
//! prompts.jsonl                               a file (JSONL, .jsonl.gz, .json or .parquet)
//! harmful.parquet?prompt=question             its "question" column read as "prompt"
//! Anthropic/hh-rlhf?subset=harmless-base      a Hub dataset (split train by default)
//! hf://datasets/org/name@v1/data/x.parquet    one file of a Hub dataset at revision v1
//! hf://datasets/org/name?split=test&limit=100 the first 100 rows of its test split
//! ```

use std::path::{Path, PathBuf};

use cai_hub::{Repo, RepoKind};

/// Where a dataset's rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local file.
    File(PathBuf),
    /// A Hub dataset repository, optionally one file (or folder) of it.
    Hub {
        /// The repository and revision.
        repo: Repo,
        /// A file or folder inside the repository; None for the whole dataset.
        path: Option<String>,
    },
}

/// A parsed dataset source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSpec {
    /// The text as given, for messages.
    pub text: String,
    /// Where the rows are.
    pub location: Location,
    /// The split of a Hub dataset (`train` by default, when the dataset has one).
    pub split: Option<String>,
    /// The subset (configuration) of a Hub dataset: a folder of its files.
    pub subset: Option<String>,
    /// Read at most this many rows.
    pub limit: Option<usize>,
    /// `(field, column)`: the record's `field` is taken from the row's `column`.
    pub renames: Vec<(String, String)>,
}

/// The file endings cai reads.
pub const FILE_ENDINGS: &[&str] = &[".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet"];

impl DataSpec {
    /// Parse a source. An existing file is always taken as it is named (whatever it
    /// contains, `?` included). Otherwise the text is `BASE[?OPTIONS]`, where `BASE` is a
    /// file, `hf://datasets/ORG/NAME[@REV][/PATH]` or a bare `ORG/NAME` that is no file and
    /// has no file ending, and `OPTIONS` are `KEY=VALUE` pairs joined by `&`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut spec = Self {
            text: text.to_owned(),
            location: Location::File(PathBuf::from(text)),
            split: None,
            subset: None,
            limit: None,
            renames: Vec::new(),
        };
        if Path::new(text).is_file() {
            return Ok(spec);
        }
        let (base, query) = match text.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (text, None),
        };
        if let Some(query) = query {
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let Some((key, value)) = pair.split_once('=') else {
                    return Err(format!(
                        "option '{pair}' has no '='; expected KEY=VALUE (split=, subset=, \
                         limit=, or FIELD=COLUMN to read a column under another name)"
                    ));
                };
                let (key, value) = (key.trim(), value.trim());
                if key.is_empty() || value.is_empty() {
                    return Err(format!("option '{pair}' has an empty key or value"));
                }
                match key {
                    "split" => spec.split = Some(value.to_owned()),
                    "subset" => spec.subset = Some(value.to_owned()),
                    "limit" => {
                        let n = value.parse::<usize>().ok().filter(|&n| n > 0);
                        spec.limit = Some(n.ok_or_else(|| {
                            format!("limit={value}: expected a whole number of rows above 0")
                        })?);
                    }
                    _ => {
                        if spec.renames.iter().any(|(field, _)| field == key) {
                            return Err(format!("field '{key}' is renamed twice"));
                        }
                        spec.renames.push((key.to_owned(), value.to_owned()));
                    }
                }
            }
        }
        spec.location = location(base)?;
        if matches!(spec.location, Location::File(_))
            && (spec.split.is_some() || spec.subset.is_some())
        {
            return Err(format!(
                "split= and subset= choose files of a Hub dataset; '{base}' is a local file"
            ));
        }
        Ok(spec)
    }

    /// This Hub source at `commit`: `hf://datasets/ORG/NAME@COMMIT[/PATH][?OPTIONS]`, the
    /// options as given; None for a file.
    pub fn at_commit(&self, commit: &str) -> Option<String> {
        let Location::Hub { repo, path } = &self.location else {
            return None;
        };
        let mut text = format!("hf://datasets/{}@{commit}", repo.id);
        if let Some(path) = path {
            text.push('/');
            text.push_str(path);
        }
        if let Some((_, options)) = self.text.split_once('?') {
            text.push('?');
            text.push_str(options);
        }
        Some(text)
    }

    /// The renames as text (`prompt=question`), for messages.
    pub fn describe_renames(&self) -> String {
        self.renames
            .iter()
            .map(|(f, c)| format!("{f}={c}"))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// The location `base` names.
fn location(base: &str) -> Result<Location, String> {
    if let Some(rest) = base.strip_prefix("hf://") {
        let Some(rest) = rest.strip_prefix("datasets/") else {
            return Err(format!(
                "'{base}': expected hf://datasets/ORG/NAME (models are given to --model)"
            ));
        };
        let mut parts = rest.splitn(3, '/');
        let (org, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = parts.next().filter(|p| !p.is_empty()).map(str::to_owned);
        let id = format!("{org}/{}", name.replace("%2F", "/").replace("%2f", "/"));
        let repo = Repo::parse(&id, RepoKind::Dataset).map_err(|e| e.to_string())?;
        if let Some(path) = &path {
            if !cai_hub::is_safe_file_path(path.trim_end_matches('/')) {
                return Err(format!(
                    "'{path}' is not a path inside the dataset repository"
                ));
            }
        }
        return Ok(Location::Hub { repo, path });
    }
    let lower = base.to_ascii_lowercase();
    let looks_like_id = base.matches('/').count() == 1
        && !base.starts_with('.')
        && !base.starts_with('/')
        && !FILE_ENDINGS.iter().any(|e| lower.ends_with(e))
        && !Path::new(base).exists();
    if looks_like_id {
        if let Ok(repo) = Repo::parse(base, RepoKind::Dataset) {
            return Ok(Location::Hub { repo, path: None });
        }
    }
    Ok(Location::File(PathBuf::from(base)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(spec: &DataSpec) -> (&Repo, Option<&str>) {
        match &spec.location {
            Location::Hub { repo, path } => (repo, path.as_deref()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn files_keep_their_names() {
        let tmp = tempfile::tempdir().unwrap();
        let odd = tmp.path().join("a?b=c.jsonl");
        std::fs::write(&odd, "").unwrap();
        let spec = DataSpec::parse(odd.to_str().unwrap()).unwrap();
        assert_eq!(spec.location, Location::File(odd));
        assert!(spec.renames.is_empty());
        let spec = DataSpec::parse("in/prompts.jsonl").unwrap();
        assert_eq!(spec.location, Location::File("in/prompts.jsonl".into()));
        let spec = DataSpec::parse("x.parquet?prompt=question&limit=5").unwrap();
        assert_eq!(spec.location, Location::File("x.parquet".into()));
        assert_eq!(
            spec.renames,
            [("prompt".to_string(), "question".to_string())]
        );
        assert_eq!(spec.limit, Some(5));
    }

    #[test]
    fn hub_datasets_with_revision_path_split_and_subset() {
        let spec = DataSpec::parse("Anthropic/hh-rlhf?subset=harmless-base").unwrap();
        let (repo, path) = hub(&spec);
        assert_eq!(
            (repo.id.as_str(), repo.revision(), path),
            ("Anthropic/hh-rlhf", "main", None)
        );
        assert_eq!(spec.subset.as_deref(), Some("harmless-base"));
        let spec = DataSpec::parse("hf://datasets/org/d@v1/data/x.parquet?split=test").unwrap();
        let (repo, path) = hub(&spec);
        assert_eq!(repo.revision(), "v1");
        assert_eq!(path, Some("data/x.parquet"));
        assert_eq!(spec.split.as_deref(), Some("test"));
        let spec = DataSpec::parse("hf://datasets/org/d@refs%2Fconvert%2Fparquet").unwrap();
        assert_eq!(hub(&spec).0.revision(), "refs/convert/parquet");
    }

    #[test]
    fn a_hub_source_at_a_commit_keeps_its_path_and_options() {
        let spec = DataSpec::parse("Anthropic/hh-rlhf?subset=red-team-attempts&limit=5").unwrap();
        let pinned = spec.at_commit("c0ffee").unwrap();
        assert_eq!(
            pinned,
            "hf://datasets/Anthropic/hh-rlhf@c0ffee?subset=red-team-attempts&limit=5"
        );
        let again = DataSpec::parse(&pinned).unwrap();
        assert_eq!(hub(&again).0.revision(), "c0ffee");
        assert_eq!(again.subset.as_deref(), Some("red-team-attempts"));
        assert_eq!(again.limit, Some(5));
        let spec = DataSpec::parse("hf://datasets/org/d@v1/data/x.parquet").unwrap();
        assert_eq!(
            spec.at_commit("abc").unwrap(),
            "hf://datasets/org/d@abc/data/x.parquet"
        );
        assert_eq!(
            DataSpec::parse("x.parquet?prompt=q")
                .unwrap()
                .at_commit("a"),
            None
        );
    }

    #[test]
    fn bad_specs_say_what_was_expected() {
        for (text, wanted) in [
            ("a/b?limit=0", "above 0"),
            ("a/b?split", "expected KEY=VALUE"),
            ("a/b?prompt=x&prompt=y", "renamed twice"),
            ("hf://models/a/b", "expected hf://datasets/ORG/NAME"),
            ("hf://datasets/a/../x", "not a Hugging Face dataset id"),
            ("x.jsonl?split=train", "is a local file"),
        ] {
            let err = DataSpec::parse(text).unwrap_err();
            assert!(err.contains(wanted), "{text}: {err}");
        }
    }
}
