//! Serving throughput on `bench-6m` (docs/BENCH.md): new tokens per second that clients get from
//! an in-process server when one client sends requests one after another, and when 16
//! clients send at once — continuous batching should turn the concurrency into batch rows.
//! Each request is docs/BENCH.md's generate job: 32 random prompt tokens, 64 greedy new tokens,
//! end-of-sequence ignored. The engine's own decode rate at batch 1 and 16 is printed beside.
//!
//! ```text
//! cargo run --release -p cai-server --example serve_bench [-- RUNS]
//! ```

use std::time::Instant;

use cai_model::bench::bench_generate;
use cai_model::init::{init_model, ModelShape, TokenizerSource};
use cai_model::local::{LoadOptions, LocalModel};
use cai_server::{router, BackgroundServer, Engine, EngineOptions, ServerOptions};
use candle_core::DType;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const PROMPT_TOKENS: usize = 32;
const NEW_TOKENS: usize = 64;
/// Requests each client sends per timed run: enough that the batch spends most of the run
/// full rather than filling up or draining.
const REQUESTS_PER_CLIENT: usize = 8;

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let runs: usize = std::env::args().nth(1).map_or(Ok(3), |a| a.parse())?;
    // The thread settings the cai binary makes (see its main.rs), so numbers compare.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() && threads <= 4 {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let dir = tempfile::tempdir()?;
    let model_dir = bench_model(dir.path())?;
    let model = LocalModel::load(model_dir.to_str().expect("UTF-8"), &LoadOptions::default())?;
    let vocab = model.decoder().config().vocab_size;
    let engine_b1 = bench_generate(model.decoder(), 1, PROMPT_TOKENS, NEW_TOKENS, runs)?;
    let engine_b16 = bench_generate(model.decoder(), 16, PROMPT_TOKENS, NEW_TOKENS, runs)?;
    let engine = Engine::start(model, EngineOptions::default());
    let server = BackgroundServer::start(
        router(engine, ServerOptions::new("bench-6m"))?,
        "127.0.0.1:0",
    )?;
    let url = format!("{}/completions", server.url());
    // The two settings alternate, so that a change in the machine's load hits both alike.
    clients_run(&url, 16, vocab, 1)?;
    let mut best = [0f64; 2];
    for r in 0..runs.max(1) {
        for (i, clients) in [1usize, 16].into_iter().enumerate() {
            let tok_s = clients_run(&url, clients, vocab, 100 + r as u64)?;
            eprintln!("run {r}: {clients:>2} client(s) {tok_s:>7.0} new tok/s");
            best[i] = best[i].max(tok_s);
        }
    }
    let rows = [(1, best[0]), (16, best[1])];
    println!("bench-6m, prompt {PROMPT_TOKENS}, {NEW_TOKENS} new tokens, greedy, best of {runs}");
    println!(
        "engine alone      batch 1: {:>7.0} new tok/s   batch 16: {:>7.0} new tok/s",
        engine_b1.tok_s(),
        engine_b16.tok_s()
    );
    for (clients, tok_s) in &rows {
        println!("server, {clients:>2} client(s): {tok_s:>7.0} new tok/s");
    }
    println!("16 clients / 1 client: {:.2}×", rows[1].1 / rows[0].1);
    server.stop()?;
    Ok(())
}

/// `bench-6m` with a byte-level BPE trained on seeded random words, in `dir/model`.
fn bench_model(
    dir: &std::path::Path,
) -> Result<std::path::PathBuf, Box<dyn std::error::Error + Send + Sync>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let words: Vec<String> = (0..60_000)
        .map(|_| {
            let n = rng.random_range(2..9);
            (0..n)
                .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
                .collect()
        })
        .collect();
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, words.join(" "))?;
    let path = dir.join("model");
    init_model(
        &ModelShape::default(),
        TokenizerSource::Train(corpus),
        0,
        DType::F32,
        &path,
    )?;
    Ok(path)
}

/// `clients` threads each send `REQUESTS_PER_CLIENT` requests in turn; new tokens per second
/// over the whole run.
fn clients_run(
    url: &str,
    clients: usize,
    vocab: usize,
    seed: u64,
) -> Result<f64, Box<dyn std::error::Error + Send + Sync>> {
    let started = Instant::now();
    let tokens = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                scope.spawn(
                    move || -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
                        let mut rng =
                            rand_chacha::ChaCha8Rng::seed_from_u64(seed * 1000 + c as u64);
                        let mut tokens = 0;
                        for _ in 0..REQUESTS_PER_CLIENT {
                            let prompt: Vec<u32> = (0..PROMPT_TOKENS)
                                .map(|_| rng.random_range(1..vocab as u32))
                                .collect();
                            let answer: Value = ureq::post(url)
                                .send_json(json!({
                                    "model": "bench-6m", "prompt": prompt, "max_tokens": NEW_TOKENS,
                                    "temperature": 0, "ignore_eos": true,
                                }))?
                                .body_mut()
                                .read_json()?;
                            tokens += answer["usage"]["completion_tokens"]
                                .as_u64()
                                .ok_or("no usage in the answer")?
                                as usize;
                        }
                        Ok(tokens)
                    },
                )
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .sum::<Result<usize, _>>()
    })?;
    Ok(tokens as f64 / started.elapsed().as_secs_f64())
}
