//! Shared helpers: a tiny Llama with a trained tokenizer in a temp directory, a server over
//! it on a free loopback port, and JSON requests that return the status with the body.

use std::path::{Path, PathBuf};

use cai_model::init::{init_model, ModelShape, TokenizerSource};
use cai_model::local::{LoadOptions, LocalModel};
use cai_model::weights::{random_decoder, save_decoder};
use cai_server::{
    router, BackgroundServer, ConnectionTimeouts, Engine, EngineOptions, ServerOptions,
};
use candle_core::{DType, Device};
use serde_json::Value;
use tempfile::TempDir;

/// Text the tiny tokenizer is trained on.
pub const CORPUS: &str = "The assistant should be helpful, honest and harmless.\n\
    Human: How do I bake bread?\nAssistant: Mix flour, water, salt and yeast, then bake it.\n\
    Human: What is the capital of France?\nAssistant: The capital of France is Paris.\n\
    The answer is: (A) or (B).\n";

/// The served model's name.
pub const NAME: &str = "tiny";

/// A tiny Llama (hidden 32, 2 layers, `positions` positions) whose random weights are scaled
/// up so that its logits have clear maxima, in `dir/model`.
pub fn tiny_model(dir: &Path, seed: u64, positions: usize) -> PathBuf {
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, CORPUS).unwrap();
    let path = dir.join("model");
    let shape = ModelShape {
        hidden_size: 32,
        num_layers: 2,
        num_heads: 4,
        intermediate_size: 64,
        vocab_size: 300,
        max_position_embeddings: positions,
        ..ModelShape::default()
    };
    let config = init_model(
        &shape,
        TokenizerSource::Train(corpus),
        seed,
        DType::F32,
        &path,
    )
    .unwrap();
    let mut decoder = random_decoder(config, seed, DType::F32, &Device::Cpu).unwrap();
    decoder
        .visit_params(&mut |_, t| {
            *t = t.affine(6.0, 0.0)?;
            Ok(())
        })
        .unwrap();
    save_decoder(&decoder, &path, DType::F32).unwrap();
    path
}

/// Load the model at `path`.
pub fn load(path: &Path) -> LocalModel {
    LocalModel::load(path.to_str().unwrap(), &LoadOptions::default()).unwrap()
}

/// A running server over a tiny model, and the directory holding the model.
pub struct Served {
    pub server: BackgroundServer,
    pub model: PathBuf,
    _dir: TempDir,
}

impl Served {
    /// The base URL (`http://127.0.0.1:PORT/v1`).
    pub fn url(&self) -> String {
        self.server.url()
    }
}

/// Serve a tiny model of 128 positions with the default options changed by `change`.
pub fn serve_with(change: impl FnOnce(&mut ServerOptions)) -> Served {
    serve_model(128, change)
}

/// Serve a tiny model of `positions` positions with the options changed by `change`.
pub fn serve_model(positions: usize, change: impl FnOnce(&mut ServerOptions)) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), 7, positions);
    let mut options = ServerOptions::new(NAME);
    change(&mut options);
    let engine = Engine::start(load(&model), EngineOptions::default());
    let timeouts = ConnectionTimeouts::of(&options);
    let server =
        BackgroundServer::start_with(router(engine, options).unwrap(), "127.0.0.1:0", timeouts)
            .unwrap();
    Served {
        server,
        model,
        _dir: dir,
    }
}

/// Serve a tiny model with the default options.
pub fn serve() -> Served {
    serve_with(|_| {})
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// POST raw bytes; the status and the body parsed as JSON (`Value::Null` if it is not).
pub fn post_raw(url: &str, body: &[u8], key: Option<&str>) -> (u16, Value) {
    let mut request = agent().post(url).header("Content-Type", "application/json");
    if let Some(key) = key {
        request = request.header("Authorization", format!("Bearer {key}"));
    }
    let mut response = request.send(body).unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// POST JSON to `base + path`.
pub fn post(base: &str, path: &str, body: &Value) -> (u16, Value) {
    post_raw(&format!("{base}{path}"), body.to_string().as_bytes(), None)
}

/// GET `url`; the status and the body as text.
pub fn get(url: &str, key: Option<&str>) -> (u16, String) {
    let mut request = agent().get(url);
    if let Some(key) = key {
        request = request.header("Authorization", format!("Bearer {key}"));
    }
    let mut response = request.call().unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

/// Assert an OpenAI-style error body with this status and type; returns the error object.
pub fn assert_error(status: u16, body: &Value, expected_status: u16, kind: &str) -> Value {
    assert_eq!(status, expected_status, "{body}");
    let error = &body["error"];
    assert_eq!(error["type"], kind, "{body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        error.get("param").is_some() && error.get("code").is_some(),
        "{body}"
    );
    error.clone()
}
