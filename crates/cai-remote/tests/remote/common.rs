//! Shared helpers: a tiny Llama with a trained tokenizer in a temp directory and servers
//! over it on free loopback ports, optionally behind a layer that watches the requests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use cai_model::init::{init_model, ModelShape, TokenizerSource};
use cai_model::local::{LoadOptions, LocalModel};
use cai_model::weights::{random_decoder, save_decoder};
use cai_remote::RemoteOptions;
use cai_server::{router, BackgroundServer, Engine, EngineOptions, ServerOptions};
use candle_core::{DType, Device};
use tempfile::TempDir;

/// Text the tiny tokenizer is trained on.
const CORPUS: &str = "The assistant should be helpful, honest and harmless.\n\
    Human: How do I bake bread?\nAssistant: Mix flour, water, salt and yeast, then bake it.\n\
    Human: What is the capital of France?\nAssistant: The capital of France is Paris.\n\
    The answer is: (A) or (B).\n";

/// A tiny Llama (hidden 32, 2 layers, 256 positions) whose random weights are scaled up so
/// that its logits have clear maxima; the directory lives as long as the returned `TempDir`.
pub fn tiny_model() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(&corpus, CORPUS).unwrap();
    let path = dir.path().join("model");
    let shape = ModelShape {
        hidden_size: 32,
        num_layers: 2,
        num_heads: 4,
        intermediate_size: 64,
        vocab_size: 300,
        max_position_embeddings: 256,
        ..ModelShape::default()
    };
    let config = init_model(
        &shape,
        TokenizerSource::Train(corpus),
        11,
        DType::F32,
        &path,
    )
    .unwrap();
    let mut decoder = random_decoder(config, 11, DType::F32, &Device::Cpu).unwrap();
    decoder
        .visit_params(&mut |_, t| {
            *t = t.affine(6.0, 0.0)?;
            Ok(())
        })
        .unwrap();
    save_decoder(&decoder, &path, DType::F32).unwrap();
    (dir, path)
}

/// Load the model at `path`.
pub fn load(path: &Path) -> LocalModel {
    LocalModel::load(path.to_str().unwrap(), &LoadOptions::default()).unwrap()
}

/// The router over the model at `path`, served as `tiny`.
pub fn app(path: &Path) -> Router {
    router(
        Engine::start(load(path), EngineOptions::default()),
        ServerOptions::new("tiny"),
    )
    .unwrap()
}

/// Serve `app` on a free loopback port.
pub fn serve(app: Router) -> BackgroundServer {
    BackgroundServer::start(app, "127.0.0.1:0").unwrap()
}

/// Options for tests: short back-off, so that retries do not slow the tests down.
pub fn options() -> RemoteOptions {
    RemoteOptions {
        backoff: Duration::from_millis(10),
        concurrency: 4,
        ..RemoteOptions::default()
    }
}

/// Answer `after` completion requests, then hold every later one and ring `alarm` each time.
pub fn stalling(app: Router, after: usize, alarm: mpsc::Sender<()>) -> Router {
    let seen = Arc::new(AtomicUsize::new(0));
    app.layer(middleware::from_fn(move |request: Request, next: Next| {
        let (seen, alarm) = (seen.clone(), alarm.clone());
        async move {
            if request.uri().path().ends_with("/completions")
                && seen.fetch_add(1, Ordering::SeqCst) >= after
            {
                let _ = alarm.send(());
                return std::future::pending::<Response>().await;
            }
            next.run(request).await
        }
    }))
}
