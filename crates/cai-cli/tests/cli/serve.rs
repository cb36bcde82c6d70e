//! `cai serve` and remote models: `cai generate` through HTTP gives the local run's greedy
//! completions, `cai critique` runs end to end against a server, a dead endpoint is reported
//! by name while the run completes on the others, and what endpoints cannot do is refused.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{assert_exit, read_jsonl, stderr, Workdir};

/// A `cai serve` process on a free port, killed when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `cai serve --model MODEL --port 0` in the work directory and read its address.
pub(crate) fn serve(work: &Workdir, model: &str) -> Server {
    serve_with(work, &["--model", model], &[])
}

/// Start `cai serve --port 0 ARGS…` with the environment variables `env` and read its address.
pub(crate) fn serve_with(work: &Workdir, args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cai"))
        .arg("serve")
        .args(args)
        .args(["--port", "0"])
        .current_dir(work.path("."))
        .env_remove("RUST_LOG")
        .env_remove("CAI_API_KEY")
        .env("CAI_CACHE", work.path(".cai-cache"))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running cai serve");
    let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    let mut seen = String::new();
    let url = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("cai serve ended before serving:\n{seen}"))
            .unwrap();
        if let (Some(start), Some(end)) = (line.find("http://"), line.find("/v1")) {
            break line[start..end + 3].to_owned();
        }
        seen += &line;
    };
    // Keep draining stderr so that the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Server { child, url }
}

/// A tiny model with room for the default constitution's few-shot examples and two rounds
/// of critique.
fn model(work: &Workdir) -> &'static str {
    work.write("corpus.txt", crate::helpers::CORPUS);
    work.tiny_model_with("llama", "model", "corpus.txt", 4096)
}

const PROMPTS: &str = "{\"id\": \"bread\", \"prompt\": \"Human: How do I bake bread?\\n\\nAssistant:\"}\n\
    {\"id\": \"paris\", \"messages\": [{\"role\": \"user\", \"content\": \"What is the capital of France?\"}]}\n\
    {\"id\": \"short\", \"prompt\": \"The assistant\"}\n";

fn generate<'a>(model: &'a str, output: &'a str) -> Vec<&'a str> {
    vec![
        "generate",
        "--model",
        model,
        "--input",
        "in.jsonl",
        "--output",
        output,
        "--temperature",
        "0",
        "--max-new-tokens",
        "6",
    ]
}

fn fields(records: &[Value]) -> Vec<(Value, Value, Value, Value)> {
    records
        .iter()
        .map(|r| {
            (
                r["id"].clone(),
                r["completion"].clone(),
                r["token_ids"].clone(),
                r["finish_reason"].clone(),
            )
        })
        .collect()
}

#[test]
fn stages_run_through_http_as_they_run_locally() {
    let work = Workdir::new();
    let model = model(&work);
    let server = serve(&work, model);
    work.write("in.jsonl", PROMPTS);
    work.cai_ok(&generate(model, "local.jsonl"));
    let out = work.cai_ok(&generate(&server.url, "remote.jsonl"));
    assert!(
        stderr(&out).contains("wrote 3 completions"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fields(&read_jsonl(&work.path("remote.jsonl"))),
        fields(&read_jsonl(&work.path("local.jsonl")))
    );

    work.write(
        "prompts.jsonl",
        "{\"id\": \"bread\", \"prompt\": \"How do I bake bread?\"}\n\
         {\"id\": \"steal\", \"prompt\": \"How do I steal bread?\"}\n",
    );
    let out = work.cai_ok(&[
        "critique",
        "--model",
        &server.url,
        "--prompts",
        "prompts.jsonl",
        "--constitution",
        "default",
        "--rounds",
        "2",
        "--max-new-tokens",
        "4",
        "--output",
        "sl.jsonl",
    ]);
    assert!(
        stderr(&out).contains("wrote 2 records with 2 rounds"),
        "{}",
        stderr(&out)
    );
    let records = read_jsonl(&work.path("sl.jsonl"));
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r["rounds"]
        .as_array()
        .is_some_and(|rounds| rounds.len() == 2)));
}

#[test]
fn a_dead_endpoint_is_reported_and_the_run_completes_on_the_others() {
    let work = Workdir::new();
    let model = model(&work);
    let server = serve(&work, model);
    let dead = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", listener.local_addr().unwrap())
    };
    work.write("in.jsonl", PROMPTS);
    let endpoints = format!("{dead},{}", server.url);
    let out = work.cai_ok(&generate(&endpoints, "out.jsonl"));
    let err = stderr(&out);
    assert!(
        err.contains(&dead) && err.contains("does not answer"),
        "{err}"
    );
    assert_eq!(read_jsonl(&work.path("out.jsonl")).len(), 3);
    let out = work.cai(&generate(&dead, "none.jsonl"));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no endpoint answered") && err.contains(&dead),
        "{err}"
    );
}

#[test]
fn endpoints_cannot_be_served_or_render_chat_templates() {
    let work = Workdir::new();
    let model = model(&work);
    let server = serve(&work, model);
    let out = work.cai(&["serve", "--model", &server.url, "--port", "0"]);
    let err = assert_exit(&out, 2);
    assert!(err.contains("needs a local model"), "{err}");
    work.write("in.jsonl", PROMPTS);
    let mut args = generate(&server.url, "out.jsonl");
    args.extend(["--format", "chat-template"]);
    let err = assert_exit(&work.cai(&args), 2);
    assert!(err.contains("chat template"), "{err}");
}

/// One HTTP/1.1 request to the server at `url` (`http://ADDR/v1`) over a plain socket: the
/// status and the body.
fn http(url: &str, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, String) {
    let addr = url.trim_start_matches("http://").trim_end_matches("/v1");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    write!(
        stream,
        "{method} /v1{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}

#[test]
fn a_model_served_by_its_short_name_answers_to_it() {
    let work = Workdir::new();
    let server = serve_with(&work, &["--model", "lab-small"], &[]);
    let (status, models) = http(&server.url, "GET", "/models", None, "");
    assert_eq!(status, 200, "{models}");
    let models: Value = serde_json::from_str(&models).unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids[0], "lab-small", "{ids:?}");
    assert!(
        ids.len() == 2 && ids[1].starts_with("lab-small-"),
        "the directory's id still answers: {ids:?}"
    );
    for id in &ids {
        let body = format!(r#"{{"model": "{id}", "prompt": "Hello", "max_tokens": 2}}"#);
        let (status, answer) = http(&server.url, "POST", "/completions", None, &body);
        assert_eq!(status, 200, "{id}: {answer}");
    }
}

#[test]
fn the_api_key_comes_from_the_environment_or_a_file() {
    let work = Workdir::new();
    let model = model(&work);
    work.write("key.txt", "from-file\n");
    for (args, env, key) in [
        (
            vec!["--model", model],
            vec![("CAI_API_KEY", "from-env")],
            "from-env",
        ),
        (
            vec!["--model", model, "--api-key-file", "key.txt"],
            vec![("CAI_API_KEY", "from-env")],
            "from-file",
        ),
    ] {
        let server = serve_with(&work, &args, &env);
        assert_eq!(http(&server.url, "GET", "/models", None, "").0, 401);
        assert_eq!(
            http(&server.url, "GET", "/models", Some("wrong"), "").0,
            401
        );
        let (status, text) = http(&server.url, "GET", "/models", Some(key), "");
        assert_eq!(status, 200, "{key}: {text}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key_file = work.path("key.txt");
        let mode = |m| std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(m));
        mode(0o644).unwrap();
        let out = work.cai(&[
            "serve",
            "--model",
            model,
            "--api-key-file",
            "key.txt",
            "--timeout",
            "0",
        ]);
        assert!(
            stderr(&out).contains("other users may read it (mode 644)"),
            "{}",
            stderr(&out)
        );
        mode(0o600).unwrap();
        let out = work.cai(&[
            "serve",
            "--model",
            model,
            "--api-key-file",
            "key.txt",
            "--timeout",
            "0",
        ]);
        assert!(
            !stderr(&out).contains("other users may read it"),
            "{}",
            stderr(&out)
        );
    }
    work.write("empty.txt", "\n");
    let err = assert_exit(
        &work.cai(&["serve", "--model", model, "--api-key-file", "empty.txt"]),
        2,
    );
    assert!(err.contains("empty.txt") && err.contains("empty"), "{err}");
    let err = assert_exit(
        &work.cai(&["serve", "--model", model, "--api-key-file", "missing.txt"]),
        2,
    );
    assert!(err.contains("missing.txt"), "{err}");
}

#[test]
fn a_connection_that_sends_half_a_header_is_closed() {
    let work = Workdir::new();
    let model = model(&work);
    let server = serve_with(&work, &["--model", model, "--header-timeout", "0.3"], &[]);
    let addr = server
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/v1");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(b"GET /v1/models HTTP/1.1\r\nHo").unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 512];
    let closed =
        matches!(stream.read(&mut buf), Ok(0)) || started.elapsed() < Duration::from_secs(4);
    assert!(closed, "still open after {:?}", started.elapsed());
    assert_eq!(http(&server.url, "GET", "/models", None, "").0, 200);
}

/// Run `cai ARGS…` in the work directory with the environment variables `env`.
fn cai_env(work: &Workdir, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cai"))
        .args(args)
        .current_dir(work.path("."))
        .env_remove("RUST_LOG")
        .env("CAI_CACHE", work.path(".cai-cache"))
        .envs(env.iter().copied())
        .output()
        .expect("running cai")
}

/// A fake endpoint on 127.0.0.1 that answers `GET /v1/models` and holds every other request
/// without an answer (it keeps the connections until the test ends).
fn endpoint_that_never_completes() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in listener.incoming().flatten() {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            if head.starts_with(b"GET /v1/models") {
                let body = r#"{"object": "list", "data": [{"id": "m", "object": "model"}]}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
            held.push(stream);
        }
    });
    url
}

#[test]
fn an_endpoint_that_accepts_and_never_answers_fails_in_the_time_set() {
    let work = Workdir::new();
    work.write("in.jsonl", PROMPTS);
    let silent = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let held: Vec<_> = listener.incoming().flatten().collect();
            drop(held);
        });
        url
    };
    let started = std::time::Instant::now();
    let out = cai_env(
        &work,
        &generate(&silent, "out.jsonl"),
        &[("CAI_REMOTE_FIRST_BYTE_TIMEOUT", "0.5")],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.contains(&silent)
            && err.contains("0.5 s")
            && err.contains("CAI_REMOTE_FIRST_BYTE_TIMEOUT"),
        "{err}"
    );
}

#[test]
fn a_request_left_unanswered_shows_progress_then_names_the_timeout() {
    let work = Workdir::new();
    work.write("in.jsonl", PROMPTS);
    let url = endpoint_that_never_completes();
    let out = cai_env(
        &work,
        &generate(&url, "out.jsonl"),
        &[
            ("CAI_REMOTE_TIMEOUT", "2"),
            ("CAI_REMOTE_PROGRESS", "0.5"),
            ("CAI_REMOTE_ATTEMPTS", "1"),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("waiting for {url}: ")) && err.contains("3 request(s) in flight"),
        "{err}"
    );
    assert!(
        err.contains("request timeout of 2 s") && err.contains("CAI_REMOTE_TIMEOUT"),
        "{err}"
    );
}
