//! What a request body at the size limit costs the server in memory: an in-process server
//! over a tiny model gets bodies of each shape just under the 4 MiB default limit — one at a
//! time, then four at once — and the process's resident memory (VmRSS) is printed after each
//! and again when the server is idle, so that memory held after the answers shows.
//!
//! ```text
//! cargo run --release -p cai-server --example body_rss [-- ROUNDS]
//! ```

use std::time::Duration;

use cai_model::init::{init_model, ModelShape, TokenizerSource};
use cai_model::local::{LoadOptions, LocalModel};
use cai_server::{router, BackgroundServer, Engine, EngineOptions, ServerOptions};
use candle_core::DType;

const LIMIT: usize = 4 << 20;

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(2), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        "The assistant should be helpful, honest and harmless.\n\
         Human: How do I bake bread?\nAssistant: Mix flour, water, salt and yeast.\n",
    )?;
    let path = dir.path().join("model");
    let shape = ModelShape {
        hidden_size: 32,
        num_layers: 2,
        num_heads: 4,
        intermediate_size: 64,
        vocab_size: 300,
        max_position_embeddings: 2048,
        ..ModelShape::default()
    };
    init_model(&shape, TokenizerSource::Train(corpus), 1, DType::F32, &path)?;
    let model = LocalModel::load(path.to_str().expect("UTF-8"), &LoadOptions::default())?;
    let engine = Engine::start(model, EngineOptions::default());
    let server = BackgroundServer::start(router(engine, ServerOptions::new("m"))?, "127.0.0.1:0")?;
    let base = server.url();
    println!(
        "{:<34} {:>9} {:>9} {:>9}",
        "body", "after 1", "after 4", "idle"
    );
    println!("{:<34} {:>9}", "(start)", rss_mib());
    for (name, route, body) in bodies() {
        assert!(body.len() <= LIMIT, "{name}: {} bytes", body.len());
        let url = format!("{base}{route}");
        let mut status = 0;
        for _ in 0..rounds {
            status = post(&url, &body);
        }
        let one = rss_mib();
        for _ in 0..rounds {
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| post(&url, &body));
                }
            });
        }
        let four = rss_mib();
        std::thread::sleep(Duration::from_millis(500));
        let idle = rss_mib();
        println!("{name:<28} ({status}) {one:>9} {four:>9} {idle:>9}");
    }
    Ok(())
}

/// The bodies: (what, route, bytes), each just under the limit.
fn bodies() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let fill = |head: &str, item: &str, sep: &str, tail: &str| {
        let mut body = head.to_owned();
        let mut first = true;
        while body.len() + item.len() + sep.len() + tail.len() < LIMIT - 64 {
            if !first {
                body.push_str(sep);
            }
            body.push_str(item);
            first = false;
        }
        body.push_str(tail);
        body.into_bytes()
    };
    let words = "How do I bake bread? ";
    vec![
        (
            "one text prompt",
            "/completions",
            fill(
                r#"{"model":"m","max_tokens":1,"prompt":""#,
                words,
                "",
                r#""}"#,
            ),
        ),
        (
            "token-id prompt",
            "/completions",
            fill(r#"{"model":"m","max_tokens":1,"prompt":["#, "7", ",", "]}"),
        ),
        (
            "many text prompts",
            "/completions",
            fill(
                r#"{"model":"m","max_tokens":1,"prompt":["#,
                r#""a""#,
                ",",
                "]}",
            ),
        ),
        (
            "many token-id prompts",
            "/completions",
            fill(
                r#"{"model":"m","max_tokens":1,"prompt":["#,
                "[7]",
                ",",
                "]}",
            ),
        ),
        (
            "many stop strings",
            "/completions",
            fill(
                r#"{"model":"m","max_tokens":1,"prompt":"hi","stop":["#,
                r#""a""#,
                ",",
                "]}",
            ),
        ),
        (
            "unknown field",
            "/completions",
            fill(
                r#"{"model":"m","max_tokens":1,"prompt":"hi","junk":["#,
                "[]",
                ",",
                "]}",
            ),
        ),
        (
            "one long message",
            "/chat/completions",
            fill(
                r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":""#,
                words,
                "",
                r#""}]}"#,
            ),
        ),
        (
            "many messages",
            "/chat/completions",
            fill(
                r#"{"model":"m","max_tokens":1,"messages":["#,
                r#"{"role":"user","content":"a"}"#,
                ",",
                "]}",
            ),
        ),
        (
            "many content parts",
            "/chat/completions",
            fill(
                r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":["#,
                r#"{"type":"text","text":"a"}"#,
                ",",
                "]}]}",
            ),
        ),
        (
            "many score items",
            "/score",
            fill(
                r#"{"model":"m","items":["#,
                r#"{"prompt":"a","continuation":"b"}"#,
                ",",
                "]}",
            ),
        ),
    ]
}

fn post(url: &str, body: &[u8]) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    match agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body)
    {
        Ok(mut r) => {
            let _ = r.body_mut().read_to_string();
            r.status().as_u16()
        }
        Err(_) => 0,
    }
}

/// The process's resident memory in MiB, from /proc/self/status.
fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}
