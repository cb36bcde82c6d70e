//! cai-server: an OpenAI-compatible HTTP API over a local model. [`router`] returns the axum
//! `Router` (`/v1/models`, `/v1/completions`, `/v1/chat/completions`, `/v1/score`,
//! `/health`) over an [`Engine`], the scheduler thread that batches concurrent requests
//! continuously; [`serve`] runs it with graceful shutdown. `cai serve` and the tests use the
//! same functions.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use cai_model::local::{LoadOptions, LocalModel};
//! use cai_server::{router, BackgroundServer, Engine, EngineOptions, ServerOptions};
//!
//! let model = LocalModel::load("path/to/model", &LoadOptions::default())?;
//! let engine = Engine::start(model, EngineOptions::default());
//! let server = BackgroundServer::start(router(engine, ServerOptions::new("my-model"))?, "127.0.0.1:0")?;
//! println!("serving on {}", server.url());
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod app;
mod chat;
mod completions;
pub mod engine;
pub mod error;
mod generation;
mod logprobs;
pub mod options;
pub mod protocol;
mod score;
pub mod serve;
mod stream;

pub use app::{reward_router, router};
pub use engine::{Engine, EngineOptions};
pub use error::{ApiError, ServerError};
pub use options::ServerOptions;
pub use serve::{serve, BackgroundServer, ConnectionTimeouts};
