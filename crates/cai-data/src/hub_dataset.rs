//! The files of a Hub dataset that a spec chooses (a path inside it, a subset folder, a
//! split), downloaded into the Hugging Face cache, or found there when offline.
//!
//! Splits follow the `datasets` library's file naming: a file belongs to split `S` when a
//! folder of its path is named `S` or its name holds `S` between delimiters (`-`, `.`, ` `,
//! digits): `train.jsonl.gz`, `data/train-00000-of-00002.parquet`, `test/0000.parquet`.
//! A subset (configuration) is a folder: `harmless-base/train.jsonl.gz`.

use std::path::PathBuf;

use cai_hub::{snapshot_files, Hub, HubError, Repo};

use crate::spec::FILE_ENDINGS;

/// The usual split names, to tell a dataset with splits from one without.
const KNOWN_SPLITS: &[&str] = &["train", "test", "validation", "valid", "dev", "eval"];

/// The local paths of the data files `repo` (at `path`, `subset`, `split`) gives.
pub fn dataset_files(
    hub: &Hub,
    repo: &Repo,
    path: Option<&str>,
    subset: Option<&str>,
    split: Option<&str>,
) -> Result<Vec<PathBuf>, HubOrChoice> {
    if hub.config().offline {
        let cache = hub.cache(repo)?;
        let snapshot = cache
            .find_snapshot(repo)
            .map_err(|_| hub.offline_error(repo, path))?;
        let chosen = choose_files(&snapshot_files(&snapshot), path, subset, split)
            .map_err(HubOrChoice::Choice)?;
        return Ok(chosen.iter().map(|f| snapshot.join(f)).collect());
    }
    let info = hub.repo_info(repo)?;
    let chosen = choose_files(&info.files, path, subset, split).map_err(HubOrChoice::Choice)?;
    let dir = hub.fetch_files(repo, &info, &chosen)?;
    Ok(chosen.iter().map(|f| dir.join(f)).collect())
}

/// A failure to get a dataset's files: the Hub's, or no file fits the choice.
#[derive(Debug)]
pub enum HubOrChoice {
    /// The Hub or cache failed.
    Hub(HubError),
    /// No file (or no single set of files) fits path, subset and split.
    Choice(String),
}

impl From<HubError> for HubOrChoice {
    fn from(e: HubError) -> Self {
        HubOrChoice::Hub(e)
    }
}

/// Whether `file` is a data file cai reads (not hidden, a known ending).
fn is_data_file(file: &str) -> bool {
    let lower = file.to_ascii_lowercase();
    !file.split('/').any(|p| p.starts_with('.')) && FILE_ENDINGS.iter().any(|e| lower.ends_with(e))
}

/// Whether `file` belongs to split `split` (see the module doc).
fn in_split(file: &str, split: &str) -> bool {
    let (folders, name) = file.rsplit_once('/').unwrap_or(("", file));
    folders.split('/').any(|f| f == split)
        || name
            .split(|c: char| "-. ".contains(c) || c.is_ascii_digit())
            .any(|token| token == split)
}

/// Whether a folder or name token of `file` is a usual split name, or one with a suffix or
/// prefix after `_` (`train_sft`, `test_prefs`).
fn names_a_split(file: &str) -> bool {
    file.split(|c: char| "-. /".contains(c) || c.is_ascii_digit())
        .any(|token| {
            KNOWN_SPLITS.iter().any(|s| {
                token == *s
                    || token.starts_with(&format!("{s}_"))
                    || token.ends_with(&format!("_{s}"))
            })
        })
}

/// The data files among `files` for `path`, `subset` and `split`; the message says what the
/// repository offers when nothing fits.
pub fn choose_files(
    files: &[String],
    path: Option<&str>,
    subset: Option<&str>,
    split: Option<&str>,
) -> Result<Vec<String>, String> {
    let shown = |list: &[&String]| {
        let mut text = list
            .iter()
            .take(20)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if list.len() > 20 {
            text.push_str(&format!(" and {} more", list.len() - 20));
        }
        if text.is_empty() {
            text.push_str("none");
        }
        text
    };
    let mut data: Vec<&String> = files.iter().filter(|f| is_data_file(f)).collect();
    if let Some(path) = path {
        let folder = format!("{}/", path.trim_end_matches('/'));
        if files.iter().any(|f| f == path) {
            return if is_data_file(path) {
                Ok(vec![path.to_owned()])
            } else {
                Err(format!(
                    "'{path}' is not a data file cai reads (expected one of {})",
                    FILE_ENDINGS.join(", ")
                ))
            };
        }
        data.retain(|f| f.starts_with(&folder));
        if data.is_empty() {
            let all: Vec<&String> = files.iter().collect();
            return Err(format!(
                "the dataset has no data file '{path}' or under '{folder}'; its files: {}",
                shown(&all)
            ));
        }
    }
    if data.is_empty() {
        let all: Vec<&String> = files.iter().collect();
        return Err(format!(
            "the dataset has no data files ({}); its files: {}",
            FILE_ENDINGS.join(", "),
            shown(&all)
        ));
    }
    if let Some(subset) = subset {
        let before = data.clone();
        data.retain(|f| {
            f.rsplit_once('/')
                .is_some_and(|(dirs, _)| dirs.split('/').any(|d| d == subset))
        });
        if data.is_empty() {
            let mut folders: Vec<String> = before
                .iter()
                .filter_map(|f| f.split_once('/').map(|(d, _)| d.to_owned()))
                .collect();
            folders.dedup();
            return Err(format!(
                "the dataset has no subset '{subset}' (a folder of data files); its folders: {}",
                if folders.is_empty() {
                    "none (choose no subset)".to_owned()
                } else {
                    folders.join(", ")
                }
            ));
        }
    }
    let wanted = split.unwrap_or("train");
    let in_wanted: Vec<&String> = data
        .iter()
        .copied()
        .filter(|f| in_split(f, wanted))
        .collect();
    if !in_wanted.is_empty() {
        return Ok(in_wanted.into_iter().cloned().collect());
    }
    let has_splits = data.iter().any(|f| names_a_split(f));
    if split.is_none() && !has_splits {
        return Ok(data.into_iter().cloned().collect());
    }
    Err(format!(
        "no data file of split '{wanted}'{}; choose a split with ?split=NAME. Data files: {}",
        if split.is_none() {
            " (the default)"
        } else {
            ""
        },
        shown(&data)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hh_rlhf_layout_subsets_and_splits() {
        let repo = files(&[
            ".gitattributes",
            "README.md",
            "harmless-base/test.jsonl.gz",
            "harmless-base/train.jsonl.gz",
            "helpful-base/test.jsonl.gz",
            "helpful-base/train.jsonl.gz",
        ]);
        assert_eq!(
            choose_files(&repo, None, None, None).unwrap(),
            [
                "harmless-base/train.jsonl.gz",
                "helpful-base/train.jsonl.gz"
            ]
        );
        assert_eq!(
            choose_files(&repo, None, Some("harmless-base"), Some("test")).unwrap(),
            ["harmless-base/test.jsonl.gz"]
        );
        let err = choose_files(&repo, None, Some("red-team"), None).unwrap_err();
        assert!(err.contains("no subset 'red-team'"), "{err}");
        assert!(err.contains("harmless-base, helpful-base"), "{err}");
        let err = choose_files(&repo, None, None, Some("validation")).unwrap_err();
        assert!(err.contains("no data file of split 'validation'"), "{err}");
    }

    #[test]
    fn parquet_shards_named_splits_and_single_file_datasets() {
        let repo = files(&[
            "data/train_sft-00000-of-00001.parquet",
            "data/train_prefs-00000-of-00002.parquet",
            "data/train_prefs-00001-of-00002.parquet",
            "data/test_sft-00000-of-00001.parquet",
        ]);
        assert_eq!(
            choose_files(&repo, None, None, Some("train_prefs")).unwrap(),
            [
                "data/train_prefs-00000-of-00002.parquet",
                "data/train_prefs-00001-of-00002.parquet"
            ]
        );
        // "train_sft" is one name: the default split "train" matches no file.
        let err = choose_files(&repo, None, None, None).unwrap_err();
        assert!(err.contains("split 'train' (the default)"), "{err}");
        let single = files(&["harmbench.jsonl", "README.md"]);
        assert_eq!(
            choose_files(&single, None, None, None).unwrap(),
            ["harmbench.jsonl"]
        );
        let converted = files(&["default/train/0000.parquet", "default/test/0000.parquet"]);
        assert_eq!(
            choose_files(&converted, None, Some("default"), None).unwrap(),
            ["default/train/0000.parquet"]
        );
    }

    #[test]
    fn a_path_names_a_file_or_a_folder() {
        let repo = files(&["a/x.parquet", "a/y.parquet", "b/z.jsonl", "notes.txt"]);
        assert_eq!(
            choose_files(&repo, Some("b/z.jsonl"), None, None).unwrap(),
            ["b/z.jsonl"]
        );
        assert_eq!(
            choose_files(&repo, Some("a"), None, None).unwrap(),
            ["a/x.parquet", "a/y.parquet"]
        );
        let err = choose_files(&repo, Some("notes.txt"), None, None).unwrap_err();
        assert!(err.contains("not a data file"), "{err}");
        let err = choose_files(&repo, Some("c"), None, None).unwrap_err();
        assert!(err.contains("no data file 'c'"), "{err}");
    }
}
