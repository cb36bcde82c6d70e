//! Downloads from a fake Hub on 127.0.0.1: the cache layout, resume after a cut, offline
//! mode, gated and missing repositories, a network that is not there, and bytes damaged on
//! the way (caught by the sha256 the Hub announces).

use std::path::Path;

use cai_hub::fake::{sha256_of, FakeHub, FakeRepo};
use cai_hub::{Hub, HubConfig, HubError, Repo, RepoKind};

fn config(endpoint: &str, cache: &Path) -> HubConfig {
    HubConfig {
        endpoint: endpoint.to_owned(),
        token: None,
        token_source: None,
        offline: false,
        cache: Some(cache.to_path_buf()),
        progress: false,
    }
}

fn big(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// Every file under `dir` whose name ends with `.incomplete` or holds `.tmp`.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in walk(dir) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".incomplete") || name.contains(".tmp") {
            out.push(entry.display().to_string());
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn files_land_in_the_cache_layout_and_are_not_fetched_twice() {
    let hub = FakeHub::start();
    let weights = big(5000);
    hub.add_model(
        "org/tiny",
        FakeRepo::new(
            "c0ffee",
            &[("config.json", b"{}"), ("model.safetensors", &weights)],
        ),
    );
    let tmp = tempfile::tempdir().unwrap();
    let client = Hub::new(config(hub.url(), tmp.path()));
    let repo = Repo::parse("org/tiny", RepoKind::Model).unwrap();
    let info = client.repo_info(&repo).unwrap();
    assert_eq!(info.commit, "c0ffee");
    assert_eq!(info.files, ["config.json", "model.safetensors"]);
    let dir = client.fetch_files(&repo, &info, &info.files).unwrap();
    assert_eq!(dir, tmp.path().join("models--org--tiny/snapshots/c0ffee"));
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        weights
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("models--org--tiny/refs/main")).unwrap(),
        "c0ffee"
    );
    let link = std::fs::read_link(dir.join("model.safetensors")).unwrap();
    assert!(link.starts_with("../../blobs"), "{link:?}");
    // The large file came from the CDN route the Hub redirected to.
    assert!(hub.requests().iter().any(|r| r.starts_with("GET /cdn/")));
    let before = hub.requests().len();
    client.fetch_files(&repo, &info, &info.files).unwrap();
    assert_eq!(hub.requests().len(), before, "{:?}", hub.requests());
    assert!(leftovers(tmp.path()).is_empty());
}

#[test]
fn an_interrupted_download_resumes_with_a_range() {
    let hub = FakeHub::start();
    let weights = big(20_000);
    hub.add_model(
        "org/m",
        FakeRepo::new("abc", &[("model.safetensors", &weights)]),
    );
    hub.cut_next_download("model.safetensors", 7000);
    let tmp = tempfile::tempdir().unwrap();
    let client = Hub::new(config(hub.url(), tmp.path()));
    let repo = Repo::parse("org/m", RepoKind::Model).unwrap();
    let err = client
        .download(&repo, "abc", "model.safetensors")
        .unwrap_err();
    assert!(matches!(err, HubError::Network { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("7000 of 20000 bytes are kept"), "{text}");
    assert!(
        text.contains("run the same command again to resume"),
        "{text}"
    );
    // Nothing under a real name: only the .incomplete part.
    let snapshot = tmp.path().join("models--org--m/snapshots/abc");
    assert!(!snapshot.join("model.safetensors").exists());
    let parts = leftovers(tmp.path());
    assert_eq!(parts.len(), 1, "{parts:?}");
    assert!(parts[0].ends_with(".incomplete"));

    let path = client.download(&repo, "abc", "model.safetensors").unwrap();
    assert_eq!(std::fs::read(path).unwrap(), weights);
    assert!(
        hub.requests()
            .iter()
            .any(|r| r.ends_with("range=bytes=7000-")),
        "{:?}",
        hub.requests()
    );
    assert!(leftovers(tmp.path()).is_empty());
}

#[test]
fn offline_mode_uses_the_cache_and_never_the_network() {
    let hub = FakeHub::start();
    hub.add_model(
        "org/m",
        FakeRepo::new("abc", &[("config.json", b"{\"a\":1}")]),
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut offline = config(hub.url(), tmp.path());
    offline.offline = true;
    let repo = Repo::parse("org/m", RepoKind::Model).unwrap();
    let err = Hub::new(offline.clone()).repo_info(&repo).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("HF_HUB_OFFLINE"), "{text}");
    assert!(text.contains("huggingface-cli download org/m"), "{text}");
    let err = Hub::new(offline.clone())
        .download(&repo, "abc", "config.json")
        .unwrap_err();
    assert!(matches!(err, HubError::Offline { .. }), "{err}");
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());

    Hub::new(config(hub.url(), tmp.path()))
        .download(&repo, "abc", "config.json")
        .unwrap();
    let served = hub.requests().len();
    let path = Hub::new(offline)
        .download(&repo, "abc", "config.json")
        .unwrap();
    assert_eq!(std::fs::read_to_string(path).unwrap(), "{\"a\":1}");
    assert_eq!(hub.requests().len(), served);
}

#[test]
fn gated_repositories_need_the_token() {
    let hub = FakeHub::start();
    let mut repo_files = FakeRepo::new("abc", &[("config.json", b"{}")]);
    repo_files.token = Some("hf_secret".into());
    hub.add_model("org/gated", repo_files);
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::parse("org/gated", RepoKind::Model).unwrap();
    let err = Hub::new(config(hub.url(), tmp.path()))
        .repo_info(&repo)
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, HubError::Unauthorized { status: 401, .. }),
        "{text}"
    );
    assert!(text.contains("model org/gated"), "{text}");
    assert!(text.contains("GatedRepo"), "{text}");
    assert!(text.contains("accept its licence"), "{text}");
    assert!(text.contains("HF_TOKEN"), "{text}");

    let mut wrong = config(hub.url(), tmp.path());
    wrong.token = Some("hf_wrong".into());
    wrong.token_source = Some("HF_TOKEN".into());
    let text = Hub::new(wrong).repo_info(&repo).unwrap_err().to_string();
    assert!(
        text.contains("the token from HF_TOKEN was refused"),
        "{text}"
    );

    let mut right = config(hub.url(), tmp.path());
    right.token = Some("hf_secret".into());
    let client = Hub::new(right);
    let info = client.repo_info(&repo).unwrap();
    client.fetch_files(&repo, &info, &info.files).unwrap();
}

#[test]
fn missing_repositories_revisions_and_files_say_what_to_check() {
    let hub = FakeHub::start();
    hub.add_model("org/m", FakeRepo::new("abc", &[("config.json", b"{}")]));
    let tmp = tempfile::tempdir().unwrap();
    let client = Hub::new(config(hub.url(), tmp.path()));
    let unknown = Repo::parse("org/nope", RepoKind::Model).unwrap();
    let text = client.repo_info(&unknown).unwrap_err().to_string();
    assert!(text.contains("model org/nope"), "{text}");
    assert!(text.contains("check the name"), "{text}");
    let bad_rev = Repo::parse("org/m@v9", RepoKind::Model).unwrap();
    let text = client.repo_info(&bad_rev).unwrap_err().to_string();
    assert!(text.contains("HTTP 404, RevisionNotFound"), "{text}");
    assert!(text.contains("check the revision 'v9'"), "{text}");
    let repo = Repo::parse("org/m", RepoKind::Model).unwrap();
    let text = client
        .download(&repo, "abc", "tokenizer.json")
        .unwrap_err()
        .to_string();
    assert!(text.contains("has no file 'tokenizer.json'"), "{text}");
    assert!(walk(tmp.path()).is_empty(), "{:?}", walk(tmp.path()));
}

#[test]
fn no_network_is_an_error_naming_the_url_and_leaves_no_file() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    let client = Hub::new(config(&format!("http://127.0.0.1:{port}"), tmp.path()));
    let repo = Repo::parse("org/m", RepoKind::Model).unwrap();
    let err = client.repo_info(&repo).unwrap_err();
    assert!(matches!(err, HubError::Network { .. }), "{err}");
    assert!(err
        .to_string()
        .contains(&format!("127.0.0.1:{port}/api/models/org/m")));
    let err = client.download(&repo, "abc", "config.json").unwrap_err();
    assert!(matches!(err, HubError::Network { .. }), "{err}");
    assert!(walk(tmp.path()).is_empty());
}

#[test]
fn datasets_use_their_own_routes_and_folders() {
    let hub = FakeHub::start();
    hub.add_dataset(
        "org/d",
        FakeRepo::new(
            "d1",
            &[("harmless-base/train.jsonl", b"{\"prompt\":\"hi\"}\n")],
        ),
    );
    let tmp = tempfile::tempdir().unwrap();
    let client = Hub::new(config(hub.url(), tmp.path()));
    let repo = Repo::parse("org/d", RepoKind::Dataset).unwrap();
    let info = client.repo_info(&repo).unwrap();
    let dir = client.fetch_files(&repo, &info, &info.files).unwrap();
    assert_eq!(dir, tmp.path().join("datasets--org--d/snapshots/d1"));
    assert!(dir.join("harmless-base/train.jsonl").is_file());
    assert!(hub
        .requests()
        .iter()
        .any(|r| r == "GET /api/datasets/org/d/revision/main"));
}

#[test]
fn a_cut_before_any_byte_claims_nothing_kept() {
    let hub = FakeHub::start();
    hub.add_model(
        "org/m",
        FakeRepo::new("abc", &[("model.safetensors", &big(3000))]),
    );
    hub.cut_next_download("model.safetensors", 0);
    let tmp = tempfile::tempdir().unwrap();
    let client = Hub::new(config(hub.url(), tmp.path()));
    let repo = Repo::parse("org/m", RepoKind::Model).unwrap();
    let text = client
        .download(&repo, "abc", "model.safetensors")
        .unwrap_err()
        .to_string();
    assert!(text.contains("the network failed"), "{text}");
    assert!(!text.contains("kept"), "{text}");
    assert!(!tmp.path().join("models--org--m/snapshots").exists());
    client.download(&repo, "abc", "model.safetensors").unwrap();
}

#[test]
fn a_corrupted_download_is_deleted_and_named_with_both_digests() {
    let hub = FakeHub::start();
    let weights = big(5000);
    hub.add_model(
        "org/tiny",
        FakeRepo::new(
            "c0ffee",
            &[("config.json", b"{}"), ("model.safetensors", &weights)],
        ),
    );
    hub.corrupt_next_download("model.safetensors");
    let tmp = tempfile::tempdir().unwrap();
    let client = Hub::new(config(hub.url(), tmp.path()));
    let repo = Repo::parse("org/tiny", RepoKind::Model).unwrap();
    let expected = sha256_of(&weights);
    let err = client
        .download(&repo, "c0ffee", "model.safetensors")
        .unwrap_err();
    let HubError::Checksum {
        expected: announced,
        got,
        ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(announced, &expected);
    assert_ne!(got, &expected);
    let text = err.to_string();
    for part in [
        "model org/tiny file model.safetensors",
        expected.as_str(),
        got.as_str(),
        "run the same command again",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
    // Nothing is kept: no partial file, no blob, no snapshot link.
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
    let repo_dir = tmp.path().join("models--org--tiny");
    assert!(!repo_dir.join("blobs").join(&expected).exists());
    assert!(!repo_dir.join("snapshots/c0ffee/model.safetensors").exists());
    // The retry downloads it whole, and it checks out.
    let path = client
        .download(&repo, "c0ffee", "model.safetensors")
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), weights);
}

#[test]
fn a_damaged_partial_file_is_caught_after_the_resume() {
    let hub = FakeHub::start();
    let weights = big(6000);
    hub.add_model("org/tiny", FakeRepo::new("c1", &[("w.bin", &weights)]));
    hub.cut_next_download("w.bin", 2500);
    let tmp = tempfile::tempdir().unwrap();
    let client = Hub::new(config(hub.url(), tmp.path()));
    let repo = Repo::parse("org/tiny", RepoKind::Model).unwrap();
    client.download(&repo, "c1", "w.bin").unwrap_err();
    let part = tmp
        .path()
        .join("models--org--tiny/blobs")
        .join(format!("{}.incomplete", sha256_of(&weights)));
    let mut kept = std::fs::read(&part).unwrap();
    assert_eq!(kept.len(), 2500);
    kept[100] ^= 0xff;
    std::fs::write(&part, &kept).unwrap();
    let err = client.download(&repo, "c1", "w.bin").unwrap_err();
    assert!(matches!(err, HubError::Checksum { .. }), "{err:?}");
    assert!(!part.exists());
    assert_eq!(
        std::fs::read(client.download(&repo, "c1", "w.bin").unwrap()).unwrap(),
        weights
    );
}
