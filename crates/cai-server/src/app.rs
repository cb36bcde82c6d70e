//! The `Router`: routes, shared state, the bearer-token check, request logs, the body limit,
//! a JSON extractor whose failures are OpenAI-style errors, and the small routes
//! (`/v1/models`, `/health`).

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use crate::engine::Engine;
use crate::error::{ApiError, ServerError};
use crate::options::ServerOptions;
use crate::protocol::{ModelCard, ModelList};
use crate::{chat, completions, score};

/// What every handler sees.
pub(crate) struct AppState {
    pub engine: Engine,
    pub options: ServerOptions,
    /// Unix time the router was built.
    pub created: u64,
    /// A preference model's scalar head `[1, hidden]`: the engine's decoder is then the
    /// preference model's, `/v1/score` answers rewards and generation is refused.
    pub reward_head: Option<candle_core::Tensor>,
}

pub(crate) type Shared = Arc<AppState>;

impl AppState {
    /// The model's context length in tokens.
    pub fn context(&self) -> usize {
        self.engine
            .model()
            .decoder()
            .config()
            .max_position_embeddings
    }

    /// The largest `max_tokens` a request may ask for.
    pub fn max_tokens_cap(&self) -> usize {
        self.options.max_tokens_cap.unwrap_or(self.context())
    }

    /// Refuse a request for another model.
    pub fn check_model(&self, model: &str) -> Result<(), ApiError> {
        if model == self.options.model_name {
            Ok(())
        } else {
            Err(ApiError::unknown_model(model, &self.options.model_name))
        }
    }

    /// Refuse generation when the served model is a preference model.
    pub fn check_generates(&self) -> Result<(), ApiError> {
        if self.reward_head.is_some() {
            return Err(ApiError::invalid(format!(
                "'{}' is a preference model: it answers /v1/score with rewards and does not \
                 generate",
                self.options.model_name
            )));
        }
        Ok(())
    }
}

/// The OpenAI-compatible API over `engine`'s model: `GET /v1/models`, `POST /v1/completions`,
/// `POST /v1/chat/completions`, `POST /v1/score`, `GET /health`. The CLI's `cai serve` and
/// the tests serve the same router.
pub fn router(engine: Engine, options: ServerOptions) -> Result<Router, ServerError> {
    build(engine, options, None)
}

/// The same API over a preference model: `engine`'s decoder is the preference model's trunk
/// and `head` `[1, hidden]` its scalar head. `POST /v1/score` answers each item's reward —
/// the preference model's score of `prefix + prompt + continuation`, read at its last token —
/// with `score_type: "reward"`; the completion routes refuse to generate.
pub fn reward_router(
    engine: Engine,
    options: ServerOptions,
    head: candle_core::Tensor,
) -> Result<Router, ServerError> {
    build(engine, options, Some(head))
}

fn build(
    engine: Engine,
    options: ServerOptions,
    reward_head: Option<candle_core::Tensor>,
) -> Result<Router, ServerError> {
    options.validate()?;
    let limit = options.max_body_bytes;
    let state: Shared = Arc::new(AppState {
        engine,
        options,
        created: unix_now(),
        reward_head,
    });
    Ok(Router::new()
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions::handle))
        .route("/v1/chat/completions", post(chat::handle))
        .route("/v1/score", post(score::handle))
        .route("/health", get(health))
        .fallback(|request: Request| async move { ApiError::not_found(request.uri().path()) })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(log_request))
        .with_state(state))
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn models(State(state): State<Shared>) -> Json<ModelList> {
    Json(ModelList {
        object: "list".into(),
        data: vec![ModelCard {
            id: state.options.model_name.clone(),
            object: "model".into(),
            created: state.created,
            owned_by: "cai".into(),
            max_model_len: Some(state.context()),
        }],
    })
}

async fn health() -> StatusCode {
    StatusCode::OK
}

/// With an API key set, every route but `/health` needs `Authorization: Bearer <key>`.
async fn authorize(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let Some(key) = &state.options.api_key else {
        return next.run(request).await;
    };
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(token) if constant_time_eq(token.as_bytes(), key.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => ApiError::unauthorized("Incorrect API key provided").into_response(),
        None => ApiError::unauthorized(
            "Missing API key: send the header 'Authorization: Bearer <key>' with the key the \
             server was started with",
        )
        .into_response(),
    }
}

/// Compare without an early exit, so the time taken does not reveal a key's prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One log line per request: method, path, status and time taken.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if status >= 500 {
        tracing::warn!(%method, path, status, ms, "request");
    } else {
        tracing::info!(%method, path, status, ms, "request");
    }
    response
}

/// A JSON body whose every failure (too large, unreadable, not JSON, wrong fields) is an
/// OpenAI-style error.
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Shared> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Shared) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(state.options.max_body_bytes)
            } else {
                ApiError::invalid(format!(
                    "Could not read the request body: {}",
                    e.body_text()
                ))
            }
        })?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            ApiError::invalid(format!(
                "The body is not a valid request: {e}; expected a JSON object as in OpenAI's API"
            ))
        })
    }
}
