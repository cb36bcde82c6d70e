//! Finding a model: a directory, a GGUF file, or a Hugging Face model id, taken from the
//! local Hugging Face cache or downloaded into it (through cai-hub) when it is not there.
//!
//! `org/name[@revision]` gives a safetensors model folder; `org/name[@revision]:FILE.gguf`
//! (or `:TAG`, such as `:Q4_K_M`, naming the one `.gguf` file whose name holds it) gives a
//! single GGUF file of a repository.

use std::path::{Path, PathBuf};

use cai_hub::{snapshot_files, Hub, Repo, RepoInfo, RepoKind};

use crate::checkpoint::{INDEX_FILE, SINGLE_FILE};
use crate::{ModelError, Result};

/// The files of a model repository cai uses besides the weights, when the repository has
/// them. `config.json` is fetched last: a snapshot that holds it is complete.
const SIDE_FILES: &[&str] = &[
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
];

/// Resolve `spec` to a model directory in Hugging Face layout, or to a GGUF file.
///
/// `spec` is an existing directory or GGUF file (returned as is), or a model id `org/name`
/// (or `name`), optionally followed by `@revision` (a branch, tag, `refs/pr/N` or commit),
/// optionally followed by `:FILE.gguf` or `:TAG` for one GGUF file of the repository.
///
/// A model id is first looked up, without network access, in the Hugging Face cache
/// (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
/// `~/.cache/huggingface/hub`): the snapshot named by `refs/<revision>` (`refs/main` by
/// default, else the newest snapshot) is used when it holds `config.json` and safetensors
/// weights. Otherwise the files cai needs (config, safetensors weights or every shard of the
/// index, tokenizer files, generation config, chat template) are downloaded from
/// `$HF_ENDPOINT` into that cache, with `HF_TOKEN` (or the token file), unless
/// `HF_HUB_OFFLINE` is set.
pub fn resolve_model_dir(spec: &str) -> Result<PathBuf> {
    resolve_with(spec, &Hub::from_env())
}

/// [`resolve_model_dir`] with an explicit Hub client (tests pass their own).
pub fn resolve_with(spec: &str, hub: &Hub) -> Result<PathBuf> {
    let as_path = Path::new(spec);
    if as_path.is_dir() || crate::gguf::is_gguf(as_path) {
        return Ok(as_path.to_path_buf());
    }
    let (id, gguf) = match spec.split_once(':') {
        Some((id, file)) => (id, Some(file)),
        None => (spec, None),
    };
    let repo = Repo::parse(id, RepoKind::Model).map_err(|e| ModelError::NotFound {
        spec: spec.to_owned(),
        searched: format!(
            "it is not a directory or model file, and {e}; pass a model folder, a .gguf file \
             or a Hub id such as Qwen/Qwen2.5-0.5B-Instruct"
        ),
    })?;
    let cached = hub
        .cache(&repo)
        .ok()
        .and_then(|cache| cache.find_snapshot(&repo).ok());
    if let Some(snapshot) = &cached {
        let files = snapshot_files(snapshot);
        match gguf {
            Some(selector) => {
                if let Ok(file) = pick_gguf(spec, &files, selector) {
                    return Ok(snapshot.join(file));
                }
            }
            None if is_complete(snapshot) => return Ok(snapshot.clone()),
            None => {}
        }
    }
    if !repo.id.contains('/') {
        // A bare name is far more often a mistyped folder than one of the Hub's few
        // organisation-less repositories: look in the cache only.
        return Err(ModelError::NotFound {
            spec: spec.to_owned(),
            searched: format!(
                "it is not a directory or model file, and not in the Hugging Face cache \
                 ({}); cai downloads only org/name ids (openai-community/gpt2, not gpt2)",
                cached_place(hub, &repo)
            ),
        });
    }
    if hub.config().offline {
        return Err(hub.offline_error(&repo, gguf).into());
    }
    let info = hub.repo_info(&repo)?;
    if let Some(selector) = gguf {
        let file = pick_gguf(spec, &info.files, selector)?;
        let dir = hub.fetch_files(&repo, &info, std::slice::from_ref(&file))?;
        return Ok(dir.join(file));
    }
    let files = model_files(spec, hub, &repo, &info)?;
    Ok(hub.fetch_files(&repo, &info, &files)?)
}

/// Where the cache keeps `repo`, for messages.
fn cached_place(hub: &Hub, repo: &Repo) -> String {
    hub.cache(repo).map_or_else(
        |e| e.to_string(),
        |cache| cache.repo_dir(repo).display().to_string(),
    )
}

/// A cached snapshot cai can load: `config.json` and safetensors weights (single or index).
fn is_complete(snapshot: &Path) -> bool {
    snapshot.join("config.json").is_file()
        && (snapshot.join(SINGLE_FILE).is_file() || snapshot.join(INDEX_FILE).is_file())
}

/// The files of `info` to download, `config.json` last. The shards of a sharded checkpoint
/// come from its index, which is downloaded first to read them.
fn model_files(spec: &str, hub: &Hub, repo: &Repo, info: &RepoInfo) -> Result<Vec<String>> {
    let has = |name: &str| info.files.iter().any(|f| f == name);
    let refuse = |message: String| ModelError::HubFiles {
        spec: spec.to_owned(),
        message,
    };
    if !has("config.json") {
        let ggufs = gguf_files(&info.files);
        return Err(refuse(if ggufs.is_empty() {
            format!(
                "the repository has no config.json; expected a transformers model \
                 (files: {})",
                list(&info.files)
            )
        } else {
            format!(
                "the repository holds GGUF files, not a transformers model: name one as \
                 {}:FILE.gguf (files: {})",
                repo.id,
                list(&ggufs)
            )
        }));
    }
    let mut files = Vec::new();
    if has(INDEX_FILE) {
        let index_path = hub.download(repo, &info.commit, INDEX_FILE)?;
        files.push(INDEX_FILE.to_owned());
        for shard in index_shards(&index_path)? {
            if !has(&shard) {
                return Err(refuse(format!(
                    "{INDEX_FILE} names the shard {shard}, which the repository does not hold"
                )));
            }
            files.push(shard);
        }
    } else if has(SINGLE_FILE) {
        files.push(SINGLE_FILE.to_owned());
    } else {
        let other: Vec<String> = info
            .files
            .iter()
            .filter(|f| f.ends_with(".bin") || f.ends_with(".pt") || f.ends_with(".gguf"))
            .cloned()
            .collect();
        return Err(refuse(format!(
            "the repository has no {SINGLE_FILE} or {INDEX_FILE}; cai reads safetensors \
             weights (found: {}). Convert the weights to safetensors, or pick a repository \
             that has them{}",
            list(&other),
            if gguf_files(&info.files).is_empty() {
                String::new()
            } else {
                format!(", or load one GGUF file as {}:FILE.gguf", repo.id)
            }
        )));
    }
    files.extend(
        SIDE_FILES
            .iter()
            .filter(|name| has(name))
            .map(|name| name.to_string()),
    );
    files.push("config.json".to_owned());
    Ok(files)
}

/// The distinct shard files an index's `weight_map` names, in order of first mention.
fn index_shards(index_path: &Path) -> Result<Vec<String>> {
    let bad = |message: String| ModelError::Config {
        path: index_path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(index_path).map_err(|source| ModelError::Io {
        path: index_path.to_path_buf(),
        source,
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON ({e})")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no \"weight_map\" object; expected tensor name → shard file".into()))?;
    let mut shards: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .filter(|f| cai_hub::is_safe_file_path(f))
            .ok_or_else(|| {
                bad(format!(
                    "\"weight_map\".\"{tensor}\" is {file}; expected a shard file name"
                ))
            })?;
        if !shards.iter().any(|s| s == file) {
            shards.push(file.to_owned());
        }
    }
    Ok(shards)
}

/// The `.gguf` files among `files`.
fn gguf_files(files: &[String]) -> Vec<String> {
    files
        .iter()
        .filter(|f| f.to_ascii_lowercase().ends_with(".gguf"))
        .cloned()
        .collect()
}

/// The one GGUF file `selector` names: a file name (or path) ending in `.gguf`, or a tag
/// (`Q4_K_M`) that exactly one `.gguf` file's name holds, case-insensitively.
fn pick_gguf(spec: &str, files: &[String], selector: &str) -> Result<String> {
    let ggufs = gguf_files(files);
    let refuse = |message: String| ModelError::HubFiles {
        spec: spec.to_owned(),
        message,
    };
    if selector.to_ascii_lowercase().ends_with(".gguf") {
        return if ggufs.iter().any(|f| f == selector) {
            Ok(selector.to_owned())
        } else {
            Err(refuse(format!(
                "the repository has no file '{selector}'; its GGUF files: {}",
                list(&ggufs)
            )))
        };
    }
    let tag = selector.to_ascii_lowercase();
    let matching: Vec<&String> = ggufs
        .iter()
        .filter(|f| f.to_ascii_lowercase().contains(&tag))
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(refuse(format!(
            "no GGUF file name holds '{selector}'; its GGUF files: {}",
            list(&ggufs)
        ))),
        many => Err(refuse(format!(
            "'{selector}' matches several GGUF files ({}); name one file in full",
            many.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Up to 20 file names, comma-separated.
fn list(files: &[String]) -> String {
    if files.is_empty() {
        return "none".into();
    }
    let mut text = files
        .iter()
        .take(20)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if files.len() > 20 {
        text.push_str(&format!(" and {} more", files.len() - 20));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use cai_hub::fake::{FakeHub, FakeRepo};
    use cai_hub::HubConfig;
    use std::fs;

    fn hub(endpoint: &str, cache: &Path, offline: bool) -> Hub {
        Hub::new(HubConfig {
            endpoint: endpoint.to_owned(),
            token: None,
            token_source: None,
            offline,
            cache: Some(cache.to_path_buf()),
            progress: false,
        })
    }

    /// A cache holding no network: offline, so a lookup can never download.
    fn offline(cache: &Path) -> Hub {
        hub("http://127.0.0.1:9", cache, true)
    }

    /// A fake cache entry `models--{folder}` with complete (or config-less) snapshots.
    fn fake_repo(root: &Path, folder: &str, snapshots: &[(&str, bool)]) -> PathBuf {
        let repo = root.join(format!("models--{folder}"));
        for (hash, complete) in snapshots {
            let dir = repo.join("snapshots").join(hash);
            fs::create_dir_all(&dir).unwrap();
            if *complete {
                fs::write(dir.join("config.json"), "{}").unwrap();
                fs::write(dir.join(SINGLE_FILE), "w").unwrap();
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
        assert_eq!(
            resolve_with(spec, &offline(tmp.path())).unwrap(),
            tmp.path()
        );
    }

    #[test]
    fn refs_name_the_snapshot_and_revisions_name_refs_or_hashes() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = fake_repo(
            tmp.path(),
            "org--m",
            &[("h1", true), ("h2", true), ("h3", true)],
        );
        set_ref(&repo, "main", "h1");
        set_ref(&repo, "refs/pr/7", "h2");
        let hub = offline(tmp.path());
        assert_eq!(
            resolve_with("org/m", &hub).unwrap(),
            repo.join("snapshots/h1")
        );
        assert_eq!(
            resolve_with("org/m@refs/pr/7", &hub).unwrap(),
            repo.join("snapshots/h2")
        );
        assert_eq!(
            resolve_with("org/m@h3", &hub).unwrap(),
            repo.join("snapshots/h3")
        );
        let err = resolve_with("org/m@nope", &hub).unwrap_err().to_string();
        assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
        let err = resolve_with("org/m@../../etc", &hub)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a Hugging Face model id"), "{err}");
    }

    #[test]
    fn without_refs_the_single_snapshot_is_used() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = fake_repo(tmp.path(), "gpt2", &[("abc123", true)]);
        let dir = resolve_with("gpt2", &offline(tmp.path())).unwrap();
        assert_eq!(dir, repo.join("snapshots/abc123"));
    }

    #[test]
    fn an_incomplete_snapshot_is_not_used_offline() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = fake_repo(tmp.path(), "org--m", &[("x", false)]);
        set_ref(&repo, "main", "x");
        fs::write(repo.join("snapshots/x/config.json"), "{}").unwrap();
        let err = resolve_with("org/m", &offline(tmp.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
        assert!(err.contains("huggingface-cli download org/m"), "{err}");
    }

    #[test]
    fn bare_names_are_never_downloaded() {
        let server = FakeHub::start();
        server.add_model("tiny", FakeRepo::new("c", &[("config.json", b"{}")]));
        let tmp = tempfile::tempdir().unwrap();
        let err = resolve_with("tiny", &hub(server.url(), tmp.path(), false)).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("model 'tiny' not found"), "{text}");
        assert!(text.contains("models--tiny"), "{text}");
        assert!(text.contains("only org/name ids"), "{text}");
        assert!(server.requests().is_empty());
    }

    #[test]
    fn paths_that_are_not_model_ids_are_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        for spec in ["./no/such/dir", "a/b/c", "", "org/../x"] {
            let err = resolve_with(spec, &offline(tmp.path())).unwrap_err();
            assert!(
                err.to_string().contains("not a Hugging Face model id"),
                "{spec}: {err}"
            );
        }
    }

    #[test]
    fn a_missing_model_is_downloaded_with_only_the_files_cai_needs() {
        let server = FakeHub::start();
        let index = br#"{"metadata":{},"weight_map":{"a":"model-1.safetensors","b":"model-2.safetensors","c":"model-1.safetensors"}}"#;
        server.add_model(
            "org/sharded",
            FakeRepo::new(
                "c1",
                &[
                    ("config.json", b"{}"),
                    (INDEX_FILE, index),
                    ("model-1.safetensors", b"one"),
                    ("model-2.safetensors", b"two"),
                    ("tokenizer.json", b"{}"),
                    ("pytorch_model.bin", b"not wanted"),
                    ("README.md", b"not wanted"),
                ],
            ),
        );
        let tmp = tempfile::tempdir().unwrap();
        let client = hub(server.url(), tmp.path(), false);
        let dir = resolve_with("org/sharded", &client).unwrap();
        assert_eq!(dir, tmp.path().join("models--org--sharded/snapshots/c1"));
        assert_eq!(
            snapshot_files(&dir),
            [
                "config.json",
                "model-1.safetensors",
                "model-2.safetensors",
                INDEX_FILE,
                "tokenizer.json"
            ]
        );
        // The second time the cache answers: not one request.
        let served = server.requests().len();
        assert_eq!(resolve_with("org/sharded", &client).unwrap(), dir);
        assert_eq!(server.requests().len(), served);
    }

    #[test]
    fn one_gguf_file_is_named_in_full_or_by_tag() {
        let server = FakeHub::start();
        server.add_model(
            "org/gguf",
            FakeRepo::new(
                "g1",
                &[
                    ("m.Q4_K_M.gguf", b"GGUF4"),
                    ("m.Q8_0.gguf", b"GGUF8"),
                    ("README.md", b"x"),
                ],
            ),
        );
        let tmp = tempfile::tempdir().unwrap();
        let client = hub(server.url(), tmp.path(), false);
        let path = resolve_with("org/gguf:q8_0", &client).unwrap();
        assert_eq!(
            path,
            tmp.path()
                .join("models--org--gguf/snapshots/g1/m.Q8_0.gguf")
        );
        assert_eq!(fs::read(&path).unwrap(), b"GGUF8");
        let path = resolve_with("org/gguf@g1:m.Q4_K_M.gguf", &client).unwrap();
        assert_eq!(fs::read(path).unwrap(), b"GGUF4");
        let err = resolve_with("org/gguf:Q", &client).unwrap_err().to_string();
        assert!(err.contains("matches several GGUF files"), "{err}");
        let err = resolve_with("org/gguf", &client).unwrap_err().to_string();
        assert!(err.contains("org/gguf:FILE.gguf"), "{err}");
        assert!(err.contains("m.Q8_0.gguf"), "{err}");
        // Offline, the cached file is found again.
        let path = resolve_with("org/gguf:Q8_0", &offline(tmp.path())).unwrap();
        assert_eq!(fs::read(path).unwrap(), b"GGUF8");
    }

    #[test]
    fn a_repository_without_safetensors_says_what_it_has() {
        let server = FakeHub::start();
        server.add_model(
            "org/bin",
            FakeRepo::new("b1", &[("config.json", b"{}"), ("pytorch_model.bin", b"x")]),
        );
        let tmp = tempfile::tempdir().unwrap();
        let err = resolve_with("org/bin", &hub(server.url(), tmp.path(), false))
            .unwrap_err()
            .to_string();
        assert!(err.contains("model 'org/bin'"), "{err}");
        assert!(err.contains("cai reads safetensors"), "{err}");
        assert!(err.contains("pytorch_model.bin"), "{err}");
    }
}
