//! Models and datasets from a fake Hugging Face Hub on 127.0.0.1: `--model org/name`
//! downloads into the cache (resuming a cut download, offline afterwards), gated and missing
//! repositories fail with the fix, and `--input` reads a Hub dataset's Parquet split.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use cai_hub::fake::{FakeHub, FakeRepo};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use crate::helpers::{assert_exit, read_jsonl, stderr, Workdir};

/// Run `cai` in `work` against `hub` with the cache in `work/hf`; no HF variable of the
/// machine running the tests leaks in.
fn cai_hub(work: &Workdir, hub: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cai"));
    command
        .args(args)
        .current_dir(work.path(""))
        .env_remove("RUST_LOG")
        .env("CAI_CACHE", work.path(".cai-cache"));
    for name in [
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE",
        "HF_HOME",
        "HUGGINGFACE_HUB_CACHE",
    ] {
        command.env_remove(name);
    }
    command
        .env("HF_ENDPOINT", hub)
        .env("HF_HUB_CACHE", work.path("hf"))
        .env("HOME", work.path("home"));
    command.envs(env.iter().copied());
    command.output().expect("running cai")
}

fn generate<'a>(model: &'a str, input: &'a str) -> Vec<&'a str> {
    vec![
        "generate",
        "--model",
        model,
        "--input",
        input,
        "--output",
        "out.jsonl",
        "--temperature",
        "0",
        "--max-new-tokens",
        "3",
    ]
}

fn ok(output: &Output) {
    assert!(output.status.success(), "{}", stderr(output));
}

/// A fake Hub serving the tiny model made in `work/model` as `org/tiny`.
fn hub_with_tiny_model(work: &Workdir, token: Option<&str>) -> FakeHub {
    let model = work.tiny_model();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(work.path(model)).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            files.push((name, std::fs::read(&path).unwrap()));
        }
    }
    files.push(("README.md".into(), b"# not needed".to_vec()));
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let hub = FakeHub::start();
    let mut repo = FakeRepo::new("0123abcd", &refs);
    repo.token = token.map(str::to_owned);
    hub.add_model("org/tiny", repo);
    hub
}

/// Every file of the cache whose name shows a download in progress.
fn partial_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            out.extend(partial_files(&path));
        } else if path.to_string_lossy().ends_with(".incomplete") {
            out.push(path.display().to_string());
        }
    }
    out
}

#[test]
fn a_model_id_is_downloaded_once_then_used_offline() {
    let work = Workdir::new();
    let hub = hub_with_tiny_model(&work, None);
    work.write("in.jsonl", "{\"prompt\": \"How do I bake bread?\"}\n");
    ok(&cai_hub(
        &work,
        hub.url(),
        &[],
        &generate("org/tiny", "in.jsonl"),
    ));
    let first = work.read("out.jsonl");
    let snapshot = work.path("hf/models--org--tiny/snapshots/0123abcd");
    assert!(snapshot.join("config.json").is_file());
    assert!(snapshot.join("model.safetensors").is_file());
    assert!(
        !snapshot.join("README.md").exists(),
        "only the files cai needs"
    );
    assert_eq!(work.read("hf/models--org--tiny/refs/main"), "0123abcd");

    let served = hub.requests().len();
    std::fs::remove_file(work.path("out.jsonl")).unwrap();
    std::fs::remove_file(work.path("out.config.json")).unwrap();
    let offline = [("HF_HUB_OFFLINE", "1")];
    ok(&cai_hub(
        &work,
        hub.url(),
        &offline,
        &generate("org/tiny", "in.jsonl"),
    ));
    assert_eq!(work.read("out.jsonl"), first);
    assert_eq!(hub.requests().len(), served, "offline asks nothing");
}

#[test]
fn a_download_cut_off_midway_fails_cleanly_and_the_next_run_resumes() {
    let work = Workdir::new();
    let hub = hub_with_tiny_model(&work, None);
    work.write("in.jsonl", "{\"prompt\": \"hi\"}\n");
    hub.cut_next_download("model.safetensors", 5000);
    let output = cai_hub(&work, hub.url(), &[], &generate("org/tiny", "in.jsonl"));
    let err = assert_exit(&output, 1);
    assert!(err.contains("the network failed"), "{err}");
    assert!(err.contains("5000 of"), "{err}");
    assert!(
        err.contains("run the same command again to resume"),
        "{err}"
    );
    let snapshot = work.path("hf/models--org--tiny/snapshots/0123abcd");
    assert!(!snapshot.join("model.safetensors").exists());
    assert!(!snapshot.join("config.json").exists());
    assert_eq!(partial_files(&work.path("hf")).len(), 1);
    assert!(!work.path("out.jsonl").exists());

    ok(&cai_hub(
        &work,
        hub.url(),
        &[],
        &generate("org/tiny", "in.jsonl"),
    ));
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.ends_with("range=bytes=5000-")));
    assert!(partial_files(&work.path("hf")).is_empty());
    assert_eq!(read_jsonl(&work.path("out.jsonl")).len(), 1);
}

#[test]
fn gated_missing_and_unreachable_models_say_what_to_do() {
    let work = Workdir::new();
    let hub = hub_with_tiny_model(&work, Some("hf_right"));
    work.write("in.jsonl", "{\"prompt\": \"hi\"}\n");
    let err = assert_exit(
        &cai_hub(&work, hub.url(), &[], &generate("org/tiny", "in.jsonl")),
        1,
    );
    assert!(err.contains("model org/tiny"), "{err}");
    assert!(err.contains("accept its licence"), "{err}");
    assert!(err.contains("HF_TOKEN"), "{err}");
    let token = [("HF_TOKEN", "hf_right")];
    ok(&cai_hub(
        &work,
        hub.url(),
        &token,
        &generate("org/tiny", "in.jsonl"),
    ));

    let err = assert_exit(
        &cai_hub(&work, hub.url(), &[], &generate("org/absent", "in.jsonl")),
        1,
    );
    assert!(err.contains("model org/absent"), "{err}");
    assert!(err.contains("check the name"), "{err}");

    let offline = [("HF_HUB_OFFLINE", "1")];
    let err = assert_exit(
        &cai_hub(
            &work,
            hub.url(),
            &offline,
            &generate("org/other", "in.jsonl"),
        ),
        1,
    );
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    assert!(err.contains("huggingface-cli download org/other"), "{err}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let err = assert_exit(
        &cai_hub(&work, &url, &[], &generate("org/elsewhere", "in.jsonl")),
        1,
    );
    assert!(err.contains("the network failed"), "{err}");
    assert!(!work.path("hf/models--org--elsewhere").exists());
}

/// A snappy Parquet file with one UTF-8 column.
fn parquet_column(name: &str, values: &[&str]) -> Vec<u8> {
    let schema = parse_message_type(&format!(
        "message schema {{ REQUIRED BYTE_ARRAY {name} (UTF8); }}"
    ))
    .unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut out = Vec::new();
    let mut writer =
        SerializedFileWriter::new(&mut out, Arc::new(schema), Arc::new(props)).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let mut column = group.next_column().unwrap().unwrap();
    let cells: Vec<ByteArray> = values.iter().map(|v| ByteArray::from(*v)).collect();
    column
        .typed::<ByteArrayType>()
        .write_batch(&cells, None, None)
        .unwrap();
    column.close().unwrap();
    group.close().unwrap();
    writer.close().unwrap();
    out
}

#[test]
fn a_hub_dataset_split_is_read_with_a_column_mapping() {
    let work = Workdir::new();
    let hub = hub_with_tiny_model(&work, None);
    let train = parquet_column("question", &["How do I bake bread?", "What is Paris?"]);
    let test = parquet_column("question", &["Unused?"]);
    hub.add_dataset(
        "org/questions",
        FakeRepo::new(
            "d0",
            &[
                ("data/train-00000-of-00001.parquet", &train),
                ("data/test-00000-of-00001.parquet", &test),
            ],
        ),
    );
    let input = "hf://datasets/org/questions?split=train&prompt=question";
    ok(&cai_hub(
        &work,
        hub.url(),
        &[],
        &generate("org/tiny", input),
    ));
    let records = read_jsonl(&work.path("out.jsonl"));
    assert_eq!(records.len(), 2);
    assert_eq!(records[1]["prompt"], "What is Paris?");
    assert_eq!(records[1]["id"], "1");

    let wrong = "org/questions?split=train&prompt=text";
    std::fs::remove_file(work.path("out.jsonl")).unwrap();
    std::fs::remove_file(work.path("out.config.json")).unwrap();
    let err = assert_exit(
        &cai_hub(&work, hub.url(), &[], &generate("org/tiny", wrong)),
        1,
    );
    assert!(err.contains("train-00000-of-00001.parquet"), "{err}");
    assert!(err.contains("text: no such column"), "{err}");
    assert!(err.contains("the file's columns are question"), "{err}");
}

/// `cai eval mc --data` takes a Hub dataset of Hugging Face's multiple-choice rows
/// (`{"input", "targets": {"choices", "labels"}}`, as `hhh_alignment` holds them), and a
/// bad row is named by its file and line.
#[test]
fn eval_mc_reads_multiple_choice_rows_from_a_hub_dataset() {
    let work = Workdir::new();
    let hub = hub_with_tiny_model(&work, None);
    let row = |q: &str, good: &str, bad: &str| {
        serde_json::json!({"input": q, "targets": {"choices": [good, bad], "labels": [1, 0]}})
            .to_string()
    };
    let rows = [
        row("How do I bake bread?", "Mix flour and water.", "No."),
        row("What is the capital of France?", "Paris.", "Bread."),
    ]
    .join("\n")
        + "\n";
    let broken = r#"{"input": "Q?", "targets": {"choices": ["a"]}}"#.to_owned() + "\n";
    hub.add_dataset(
        "org/hhh",
        FakeRepo::new(
            "d1",
            &[
                ("harmless/test.jsonl", rows.as_bytes()),
                ("broken/test.jsonl", broken.as_bytes()),
            ],
        ),
    );
    let mc = |data: &str| {
        let args = [
            "eval", "mc", "--model", "org/tiny", "--data", data, "--json",
        ];
        cai_hub(&work, hub.url(), &[], &args)
    };
    let output = mc("org/hhh?subset=harmless&split=test");
    ok(&output);
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim()).unwrap();
    assert_eq!(report["n"], 2, "{report}");
    let err = assert_exit(&mc("org/hhh?subset=broken&split=test"), 1);
    assert!(
        err.contains("broken/test.jsonl:1") && err.contains("labels"),
        "{err}"
    );
}

/// Opt-in (`CAI_REAL_DIR` holding `SmolLM2-135M-Instruct.Q4_1.gguf`): the real GGUF served
/// by the fake Hub, named by its quantisation tag, downloads and generates.
#[test]
fn a_real_gguf_file_is_fetched_by_tag_and_loaded() {
    let Some(dir) = std::env::var_os("CAI_REAL_DIR") else {
        return;
    };
    let name = "SmolLM2-135M-Instruct.Q4_1.gguf";
    let Ok(bytes) = std::fs::read(Path::new(&dir).join(name)) else {
        return;
    };
    let work = Workdir::new();
    let hub = FakeHub::start();
    hub.add_model(
        "org/smol-gguf",
        FakeRepo::new("9f", &[(name, &bytes), ("README.md", b"card")]),
    );
    work.write(
        "in.jsonl",
        "{\"prompt\": \"What is the capital of France?\"}\n",
    );
    let output = cai_hub(
        &work,
        hub.url(),
        &[],
        &generate("org/smol-gguf:q4_1", "in.jsonl"),
    );
    ok(&output);
    let records = read_jsonl(&work.path("out.jsonl"));
    assert!(records[0]["completion"].is_string(), "{}", records[0]);
    let cached = work
        .path("hf/models--org--smol-gguf/snapshots/9f")
        .join(name);
    assert_eq!(std::fs::metadata(cached).unwrap().len(), bytes.len() as u64);
}
