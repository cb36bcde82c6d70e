//! A Hub served from 127.0.0.1 for tests: the `resolve/` and `api/` routes with the real
//! Hub's headers (`X-Repo-Commit`, `ETag`, `X-Linked-Etag` — the sha256 of a large (LFS)
//! file, as on the Hub — `X-Linked-Size` and a redirect to a CDN route for large files),
//! ranges, gated repositories, connections cut mid-file and bytes damaged on the way.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// One repository of the fake Hub.
#[derive(Debug, Clone, Default)]
pub struct FakeRepo {
    /// The commit every revision (`main` included) resolves to.
    pub commit: String,
    /// Files by repository path.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Answer 401 `GatedRepo` unless this token is sent.
    pub token: Option<String>,
}

impl FakeRepo {
    /// A repository at `commit` holding `files`.
    pub fn new(commit: &str, files: &[(&str, &[u8])]) -> Self {
        Self {
            commit: commit.to_owned(),
            files: files
                .iter()
                .map(|(name, bytes)| (name.to_string(), bytes.to_vec()))
                .collect(),
            token: None,
        }
    }
}

#[derive(Default)]
struct State {
    repos: BTreeMap<String, FakeRepo>,
    /// (file name, bytes): the next GET of that file sends this many bytes, then hangs up.
    cut: Option<(String, usize)>,
    /// File name: the next GET of that file sends its bytes with one of them changed.
    corrupt: Option<String>,
    /// Every request as "METHOD path [range]".
    log: Vec<String>,
}

/// The server; it stops serving when dropped (its thread ends with the test process).
pub struct FakeHub {
    url: String,
    state: Arc<Mutex<State>>,
}

/// Files at least this large are served the LFS way: a redirect to `/cdn/<etag>`.
pub const LFS_THRESHOLD: usize = 1024;

impl FakeHub {
    /// Start serving on a free port of 127.0.0.1.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let base = url.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (state, base) = (shared.clone(), base.clone());
                std::thread::spawn(move || serve(stream, &state, &base));
            }
        });
        Self { url, state }
    }

    /// The endpoint, for `HF_ENDPOINT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Add a model repository (`org/name`).
    pub fn add_model(&self, id: &str, repo: FakeRepo) {
        self.state.lock().unwrap().repos.insert(id.to_owned(), repo);
    }

    /// Add a dataset repository (`org/name`).
    pub fn add_dataset(&self, id: &str, repo: FakeRepo) {
        let key = format!("datasets/{id}");
        self.state.lock().unwrap().repos.insert(key, repo);
    }

    /// Make the next download of `file` break off after `bytes` bytes.
    pub fn cut_next_download(&self, file: &str, bytes: usize) {
        self.state.lock().unwrap().cut = Some((file.to_owned(), bytes));
    }

    /// Make the next download of `file` arrive damaged: whole, but with one byte changed.
    pub fn corrupt_next_download(&self, file: &str) {
        self.state.lock().unwrap().corrupt = Some(file.to_owned());
    }

    /// The requests served so far, as "METHOD path" plus " range=…" when one was asked.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }
}

/// The sha256 of `bytes`, hex: the Hub's `X-Linked-Etag` of an LFS file.
pub fn sha256_of(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// A stable content hash, hex, 24 digits (a stand-in for the git blob hash that names a
/// small file on the Hub: not a sha256, so the client does not check it as one).
pub fn etag_of(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    format!("{hash:016x}{:08x}", bytes.len())
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes, then hang up.
    cut: Option<usize>,
}

impl Answer {
    fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            cut: None,
        }
    }
    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
    fn error(status: u16, code: &str) -> Self {
        Self::new(status)
            .header("X-Error-Code", code)
            .header("X-Error-Message", format!("fake hub: {code}"))
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>, base: &str) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let range = headers.get("range").cloned();
    {
        let mut state = state.lock().unwrap();
        let entry = match &range {
            Some(r) => format!("{method} {path} range={r}"),
            None => format!("{method} {path}"),
        };
        state.log.push(entry);
    }
    let auth = headers.get("authorization").cloned();
    let answer = route(
        state,
        base,
        &method,
        &path,
        range.as_deref(),
        auth.as_deref(),
    );
    write_answer(stream, &method, answer);
}

fn route(
    state: &Mutex<State>,
    base: &str,
    method: &str,
    path: &str,
    range: Option<&str>,
    auth: Option<&str>,
) -> Answer {
    let mut state = state.lock().unwrap();
    if let Some(etag) = path.strip_prefix("/cdn/") {
        let found = state
            .repos
            .values()
            .flat_map(|r| r.files.iter())
            .find(|(_, bytes)| bytes.len() >= LFS_THRESHOLD && sha256_of(bytes) == etag)
            .map(|(name, bytes)| (name.clone(), bytes.clone()));
        return match found {
            Some((name, bytes)) => send_bytes(&mut state, &name, bytes, range),
            None => Answer::new(404),
        };
    }
    let (key, rest, api) = if let Some(rest) = path.strip_prefix("/api/models/") {
        match rest.split_once("/revision/") {
            Some((id, rev)) => (id.to_owned(), rev.to_owned(), true),
            None => return Answer::new(404),
        }
    } else if let Some(rest) = path.strip_prefix("/api/datasets/") {
        match rest.split_once("/revision/") {
            Some((id, rev)) => (format!("datasets/{id}"), rev.to_owned(), true),
            None => return Answer::new(404),
        }
    } else {
        match path.trim_start_matches('/').split_once("/resolve/") {
            Some((key, rest)) => (key.to_owned(), rest.to_owned(), false),
            None => return Answer::new(404),
        }
    };
    let Some(repo) = state.repos.get(&key).cloned() else {
        return Answer::error(401, "RepoNotFound");
    };
    if let Some(token) = &repo.token {
        if auth != Some(&format!("Bearer {token}")) {
            return Answer::error(401, "GatedRepo");
        }
    }
    let (rev, file) = match rest.split_once('/') {
        Some((rev, file)) if !api => (decode(rev), decode(file)),
        _ => (decode(&rest), String::new()),
    };
    if rev != "main" && rev != repo.commit {
        return Answer::error(404, "RevisionNotFound");
    }
    if api {
        let siblings: Vec<serde_json::Value> = repo
            .files
            .keys()
            .map(|f| serde_json::json!({ "rfilename": f }))
            .collect();
        let body = serde_json::json!({ "id": key, "sha": repo.commit, "siblings": siblings });
        let mut answer = Answer::new(200).header("Content-Type", "application/json");
        answer.body = body.to_string().into_bytes();
        return answer;
    }
    let Some(bytes) = repo.files.get(&file).cloned() else {
        return Answer::error(404, "EntryNotFound");
    };
    if bytes.len() >= LFS_THRESHOLD {
        let etag = sha256_of(&bytes);
        return Answer::new(302)
            .header("Location", format!("{base}/cdn/{etag}"))
            .header("X-Repo-Commit", repo.commit.clone())
            .header("X-Linked-Etag", format!("\"{etag}\""))
            .header("X-Linked-Size", bytes.len().to_string())
            .header("ETag", "\"git-pointer\"");
    }
    let etag = etag_of(&bytes);
    let answer = if method == "HEAD" {
        let mut a = Answer::new(200);
        a.headers
            .push(("Content-Length".into(), bytes.len().to_string()));
        a
    } else {
        send_bytes(&mut state, &file, bytes, range)
    };
    answer
        .header("X-Repo-Commit", repo.commit.clone())
        .header("ETag", format!("\"{etag}\""))
}

fn send_bytes(state: &mut State, name: &str, bytes: Vec<u8>, range: Option<&str>) -> Answer {
    let start = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|s| s.parse::<usize>().ok());
    let total = bytes.len();
    let mut answer = match start {
        Some(start) if start < total => {
            let mut a = Answer::new(206).header(
                "Content-Range",
                format!("bytes {start}-{}/{total}", total - 1),
            );
            a.body = bytes[start..].to_vec();
            a
        }
        Some(_) => return Answer::new(416),
        None => {
            let mut a = Answer::new(200);
            a.body = bytes;
            a
        }
    };
    if state.cut.as_ref().is_some_and(|(file, _)| file == name) {
        answer.cut = state.cut.take().map(|(_, n)| n);
    }
    if state.corrupt.as_deref() == Some(name) && !answer.body.is_empty() {
        state.corrupt = None;
        let middle = answer.body.len() / 2;
        answer.body[middle] ^= 0xff;
    }
    answer
}

fn write_answer(mut stream: TcpStream, method: &str, answer: Answer) {
    let mut head = format!("HTTP/1.1 {} FAKE\r\nConnection: close\r\n", answer.status);
    let has_length = answer.headers.iter().any(|(k, _)| k == "Content-Length");
    for (k, v) in &answer.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_length {
        head.push_str(&format!("Content-Length: {}\r\n", answer.body.len()));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    if method != "HEAD" {
        let body = match answer.cut {
            Some(n) => &answer.body[..n.min(answer.body.len())],
            None => &answer.body[..],
        };
        let _ = stream.write_all(body);
    }
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}
