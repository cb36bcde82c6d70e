//! The Hub's HTTP routes: a repository's file list (`api/{models,datasets}/{id}/revision/…`)
//! and its files (`{id}/resolve/{commit}/{file}`), downloaded resumably into the cache.
//!
//! A file lands in three steps, so the cache never holds a half-written file under a real
//! name: bytes go to `blobs/<etag>.incomplete` (locked, resumed with an HTTP `Range` after a
//! failure), which is renamed to `blobs/<etag>` once its size is the announced one — and, for
//! a large (LFS) file, whose etag is the sha256 of its content, once its bytes have that
//! sha256 (a mismatch deletes them) — and only then linked into `snapshots/<commit>/<file>`.

use std::fs::OpenOptions;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::cache::Cache;
use crate::config::HubConfig;
use crate::error::{header, header_message, io, status_error};
use crate::repo::{encode, is_safe_file_path, Repo};
use crate::{HubError, Result};

/// A revision's commit and file list, from the Hub's API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoInfo {
    /// The commit hash the revision points to.
    pub commit: String,
    /// Every file of that commit (`config.json`, `data/train-00000-of-00001.parquet`).
    pub files: Vec<String>,
}

#[derive(Deserialize)]
struct ApiRepo {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<ApiSibling>,
}

#[derive(Deserialize)]
struct ApiSibling {
    rfilename: String,
}

/// A client of one Hub with one cache.
#[derive(Debug)]
pub struct Hub {
    config: HubConfig,
    /// Redirects are answers to read (`Location`, `X-Linked-Etag`), not to follow.
    head_agent: ureq::Agent,
    /// Downloads follow redirects (to the CDN, for large files).
    get_agent: ureq::Agent,
}

/// Bytes read per write to the `.incomplete` file.
const CHUNK: usize = 1 << 18;

impl Hub {
    /// A client with the settings of the environment ([`HubConfig::from_env`]).
    pub fn from_env() -> Self {
        Self::new(HubConfig::from_env())
    }

    /// A client with these settings.
    pub fn new(config: HubConfig) -> Self {
        let agent = |redirects: u32| -> ureq::Agent {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(redirects)
                .max_redirects_will_error(false)
                .timeout_connect(Some(Duration::from_secs(30)))
                .timeout_recv_response(Some(Duration::from_secs(60)))
                .user_agent(format!("cai/{}", env!("CARGO_PKG_VERSION")))
                .build()
                .into()
        };
        Self {
            config,
            head_agent: agent(0),
            get_agent: agent(10),
        }
    }

    /// The settings.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The cache, or [`HubError::NoCache`] naming `repo`.
    pub fn cache(&self, repo: &Repo) -> Result<Cache> {
        self.config
            .cache
            .clone()
            .map(Cache::new)
            .ok_or_else(|| HubError::NoCache {
                what: repo.describe(),
            })
    }

    /// The [`HubError::Offline`] for `repo` (and `file`).
    pub fn offline_error(&self, repo: &Repo, file: Option<&str>) -> HubError {
        HubError::Offline {
            what: match file {
                Some(file) => format!("{} file {file}", repo.describe()),
                None => repo.describe(),
            },
            cache: self.config.cache.clone().unwrap_or_default(),
            cli_args: repo.cli_args(file),
        }
    }

    /// The commit of `repo`'s revision and its files; an [`HubError::Offline`] when offline.
    pub fn repo_info(&self, repo: &Repo) -> Result<RepoInfo> {
        if self.config.offline {
            return Err(self.offline_error(repo, None));
        }
        let url = format!(
            "{}/{}/revision/{}",
            self.config.endpoint,
            repo.api_path(),
            encode(repo.revision(), false)
        );
        let mut response = self
            .authorized(self.get_agent.get(&url), &url)
            .call()
            .map_err(|e| network(&url, e, String::new()))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(status_error(
                &self.config,
                repo,
                None,
                &url,
                status,
                response.headers(),
            ));
        }
        let info: ApiRepo = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_json()
            .map_err(|e| HubError::Protocol {
                url: url.clone(),
                message: format!("expected the Hub's JSON repository info ({e})"),
            })?;
        let commit = info.sha.ok_or_else(|| HubError::Protocol {
            url: url.clone(),
            message: "the repository info has no \"sha\" (commit)".into(),
        })?;
        let mut files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
        files.sort();
        Ok(RepoInfo { commit, files })
    }

    /// The path of `file` of `repo` at `commit` in the cache, downloaded first when it is
    /// not there (resuming an earlier partial download). Progress goes to a bar on stderr.
    pub fn download(&self, repo: &Repo, commit: &str, file: &str) -> Result<PathBuf> {
        let cache = self.cache(repo)?;
        if !is_safe_file_path(file) {
            return Err(HubError::Protocol {
                url: format!("{}/{}", self.config.endpoint, repo.url_path()),
                message: format!("'{file}' is not a file path inside the repository"),
            });
        }
        let target = cache.snapshot_dir(repo, commit).join(file);
        if target.is_file() {
            return Ok(target);
        }
        if self.config.offline {
            return Err(self.offline_error(repo, Some(file)));
        }
        let mut url = format!(
            "{}/{}/resolve/{}/{}",
            self.config.endpoint,
            repo.url_path(),
            encode(commit, false),
            encode(file, true)
        );
        // HEAD, following only the Hub's own (relative) redirects: a renamed repository.
        let head = loop {
            let response = self
                .authorized(self.head_agent.head(&url), &url)
                .header("Accept-Encoding", "identity")
                .call()
                .map_err(|e| network(&url, e, String::new()))?;
            let status = response.status().as_u16();
            let location = header(response.headers(), "location");
            match (status, location) {
                (301..=308, Some(loc)) if loc.starts_with('/') => {
                    url = format!("{}{loc}", self.config.endpoint);
                }
                (200..=299 | 301..=308, _) => break response,
                _ => {
                    return Err(status_error(
                        &self.config,
                        repo,
                        Some(file),
                        &url,
                        status,
                        response.headers(),
                    ))
                }
            }
        };
        let headers = head.headers();
        let etag = header(headers, "x-linked-etag")
            .or_else(|| header(headers, "etag"))
            .map(|e| e.trim_start_matches("W/").trim_matches('"').to_owned())
            .filter(|e| is_safe_file_path(e) && !e.contains('/'))
            .ok_or_else(|| HubError::Protocol {
                url: url.clone(),
                message: "the Hub's answer has no ETag naming the file's content".into(),
            })?;
        let size = header(headers, "x-linked-size")
            .or_else(|| header(headers, "content-length"))
            .and_then(|s| s.parse::<u64>().ok());
        let get_url = match header(headers, "location") {
            Some(loc) if loc.starts_with('/') => format!("{}{loc}", self.config.endpoint),
            Some(loc) => loc,
            None => url.clone(),
        };
        let blob = cache.blob_path(repo, &etag);
        if !blob.is_file() {
            let fetch = Fetch {
                size,
                sha256: is_sha256(&etag).then(|| etag.to_ascii_lowercase()),
                label: format!("{} {file}", repo.id),
                what: format!("{} file {file}", repo.describe()),
            };
            self.fetch_blob(&get_url, &blob, &fetch)?;
        }
        cache.link(repo, commit, file, &etag)
    }

    /// Download `files` of `info`'s commit in the order given, then point `refs/<revision>`
    /// at that commit; returns the snapshot folder. Put the file whose presence marks a
    /// complete snapshot (a model's `config.json`) last.
    pub fn fetch_files(&self, repo: &Repo, info: &RepoInfo, files: &[String]) -> Result<PathBuf> {
        for file in files {
            self.download(repo, &info.commit, file)?;
        }
        let cache = self.cache(repo)?;
        cache.set_ref(repo, repo.revision(), &info.commit)?;
        Ok(cache.snapshot_dir(repo, &info.commit))
    }

    /// Download `url` into `blob` through `blob.incomplete`, resuming what is there; with a
    /// sha256 to check, the whole file must have it before the rename (else the partial file
    /// is deleted and the error names both digests).
    fn fetch_blob(&self, url: &str, blob: &Path, fetch: &Fetch) -> Result<()> {
        let (size, label) = (fetch.size, fetch.label.as_str());
        let folder = blob.parent().expect("a blob has a folder");
        std::fs::create_dir_all(folder).map_err(io(folder))?;
        let name = blob
            .file_name()
            .expect("a blob has a name")
            .to_string_lossy();
        let part_path = blob.with_file_name(format!("{name}.incomplete"));
        let mut part = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&part_path)
            .map_err(io(&part_path))?;
        // Another process downloading the same blob: wait for it, then use its result.
        part.lock().map_err(io(&part_path))?;
        if blob.is_file() {
            drop(part);
            let _ = std::fs::remove_file(&part_path);
            return Ok(());
        }
        let mut have = part.metadata().map_err(io(&part_path))?.len();
        if size.is_some_and(|size| have > size) {
            part.set_len(0).map_err(io(&part_path))?;
            have = 0;
        }
        // The digest of what is there, then of each chunk as it arrives.
        let mut digest = fetch.sha256.as_ref().map(|_| Sha256::new());
        if let Some(digest) = digest.as_mut().filter(|_| have > 0) {
            hash_prefix(&mut part, have, digest).map_err(io(&part_path))?;
        }
        let kept = |have: u64| {
            if have == 0 {
                return String::new();
            }
            let of = size.map_or_else(String::new, |s| format!(" of {s}"));
            format!(
                "; {have}{of} bytes are kept in {}: run the same command again to resume",
                part_path.display()
            )
        };
        if size != Some(have) {
            let mut request = self
                .authorized(self.get_agent.get(url), url)
                .header("Accept-Encoding", "identity");
            if have > 0 {
                request = request.header("Range", format!("bytes={have}-"));
            }
            let response = request.call().map_err(|e| network(url, e, kept(have)))?;
            match response.status().as_u16() {
                206 if have > 0 => {}
                200 => {
                    // The server sent the whole file (it ignored the range): start over.
                    part.set_len(0).map_err(io(&part_path))?;
                    have = 0;
                    digest = fetch.sha256.as_ref().map(|_| Sha256::new());
                }
                status => {
                    return Err(HubError::Http {
                        url: url.to_owned(),
                        status,
                        message: header_message(response.headers()),
                    })
                }
            }
            tracing::info!(
                "downloading {label}{}",
                size.map_or_else(String::new, |s| format!(" ({s} bytes)"))
            );
            let bar = self.progress_bar(label, size, have);
            let mut reader = response.into_body().into_reader();
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = part.sync_all();
                        bar.abandon();
                        return Err(HubError::Network {
                            url: url.to_owned(),
                            message: e.to_string(),
                            kept: kept(have),
                        });
                    }
                };
                part.write_all(&buf[..n]).map_err(io(&part_path))?;
                if let Some(digest) = digest.as_mut() {
                    digest.update(&buf[..n]);
                }
                have += n as u64;
                bar.set_position(have);
            }
            bar.finish_and_clear();
            part.sync_all().map_err(io(&part_path))?;
        }
        if let Some(size) = size {
            if have != size {
                return Err(HubError::Network {
                    url: url.to_owned(),
                    message: format!("the connection closed after {have} of {size} bytes"),
                    kept: kept(have),
                });
            }
        }
        if let (Some(expected), Some(digest)) = (&fetch.sha256, digest) {
            let got = format!("{:x}", digest.finalize());
            if &got != expected {
                // Deleted while still locked: a process waiting for the lock starts afresh.
                let _ = std::fs::remove_file(&part_path);
                return Err(HubError::Checksum {
                    what: fetch.what.clone(),
                    url: url.to_owned(),
                    expected: expected.clone(),
                    got,
                });
            }
        }
        std::fs::rename(&part_path, blob).map_err(io(blob))
    }

    /// A byte progress bar on stderr (indicatif draws nothing when stderr is no terminal).
    fn progress_bar(&self, label: &str, size: Option<u64>, have: u64) -> indicatif::ProgressBar {
        if !self.config.progress {
            return indicatif::ProgressBar::hidden();
        }
        let bar =
            indicatif::ProgressBar::with_draw_target(size, indicatif::ProgressDrawTarget::stderr());
        let style = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(label.to_owned());
        bar.set_position(have);
        bar
    }

    /// Add the token to a request for the Hub itself (never to another host: the CDN's
    /// redirect URLs carry their own signature).
    fn authorized<B>(
        &self,
        request: ureq::RequestBuilder<B>,
        url: &str,
    ) -> ureq::RequestBuilder<B> {
        match &self.config.token {
            Some(token) if same_origin(url, &self.config.endpoint) => {
                request.header("Authorization", format!("Bearer {token}"))
            }
            _ => request,
        }
    }
}

/// What [`Hub::fetch_blob`] fetches.
struct Fetch {
    /// The announced size, if any.
    size: Option<u64>,
    /// The sha256 the content must have (lowercase hex), when the etag is one.
    sha256: Option<String>,
    /// `org/name file`, for the progress bar.
    label: String,
    /// `model org/name file f`, for errors.
    what: String,
}

/// Whether an etag is a sha256 (64 hex digits): the Hub's name for an LFS file's content.
/// A small file's etag is its git blob hash (40 digits), which is not checked.
fn is_sha256(etag: &str) -> bool {
    etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Feed the first `len` bytes of `file` (open for reading and appending) to `digest`.
fn hash_prefix(file: &mut std::fs::File, len: u64, digest: &mut Sha256) -> std::io::Result<()> {
    file.seek(std::io::SeekFrom::Start(0))?;
    let mut reader = Read::by_ref(file).take(len);
    let mut buf = vec![0u8; CHUNK];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => digest.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether `url` is on the host (and scheme and port) of `endpoint`.
fn same_origin(url: &str, endpoint: &str) -> bool {
    let origin = |u: &str| {
        let rest = u.split_once("://").map_or(u, |(_, r)| r);
        let host = rest.split('/').next().unwrap_or("");
        let scheme = u.split_once("://").map_or("", |(s, _)| s);
        format!("{scheme}://{host}")
    };
    origin(url) == origin(endpoint)
}

/// A transport failure (no answer, or an answer cut off) as a [`HubError::Network`].
fn network(url: &str, e: ureq::Error, kept: String) -> HubError {
    HubError::Network {
        url: url.to_owned(),
        message: e.to_string(),
        kept,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_sha256_etag_is_checked() {
        let sha = "a".repeat(64);
        assert!(is_sha256(&sha) && is_sha256(&sha.to_ascii_uppercase()));
        assert!(!is_sha256(&"a".repeat(40)), "a git blob hash");
        assert!(!is_sha256(&"g".repeat(64)));
    }

    #[test]
    fn tokens_go_to_the_hub_only() {
        assert!(same_origin(
            "https://huggingface.co/a/resolve/x/f",
            "https://huggingface.co"
        ));
        assert!(!same_origin(
            "https://cdn-lfs.hf.co/x",
            "https://huggingface.co"
        ));
        assert!(!same_origin("http://127.0.0.1:81/x", "http://127.0.0.1:80"));
    }
}
