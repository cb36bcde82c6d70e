//! The `Router`: routes, shared state, the bearer-token check, request logs, the body limit
//! and timeout, a JSON extractor whose failures are OpenAI-style errors naming the field at
//! fault, and the small routes (`/v1/models`, `/health`).

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
    /// Bytes of the longest vocabulary entry: no token covers more text than this (twice
    /// it, for normalisers that shorten text), which bounds the text a context can hold.
    pub max_token_bytes: usize,
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
        if self.options.names().any(|n| n == model) {
            Ok(())
        } else {
            let names: Vec<&str> = self.options.names().collect();
            Err(ApiError::unknown_model(model, &names))
        }
    }

    /// Refuse text longer than the model's context can hold before tokenizing it, so that a
    /// body of megabytes never becomes a tokenizer's gigabyte: `what` names the field.
    pub fn check_text_fits(&self, what: &str, bytes: usize) -> Result<(), ApiError> {
        let context = self.context();
        let most = context
            .saturating_mul(2 * self.max_token_bytes)
            .saturating_add(1024);
        if bytes > most {
            return Err(ApiError::invalid(format!(
                "{what} is {bytes} bytes of text: more than this model's context of {context} \
                 tokens can hold (at most {most} bytes); shorten it"
            ))
            .param(what.split(['[', '.', ' ']).next().unwrap_or(what))
            .code("context_length_exceeded"));
        }
        Ok(())
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
    let tokenizer = engine.model().tokenizer();
    let max_token_bytes = (0..tokenizer.vocab_size() as u32)
        .filter_map(|id| tokenizer.id_to_token(id).map(|t| t.len()))
        .max()
        .unwrap_or(1)
        .max(1);
    let state: Shared = Arc::new(AppState {
        engine,
        options,
        created: unix_now(),
        reward_head,
        max_token_bytes,
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

/// One card per name the server answers to, the model's own id first.
async fn models(State(state): State<Shared>) -> Json<ModelList> {
    Json(ModelList {
        object: "list".into(),
        data: state
            .options
            .names()
            .map(|name| ModelCard {
                id: name.to_owned(),
                object: "model".into(),
                created: state.created,
                owned_by: "cai".into(),
                max_model_len: Some(state.context()),
            })
            .collect(),
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

/// Bodies at least this large hand the memory their parsing took back to the system once
/// answered.
const LARGE_BODY: u64 = 1 << 20;

/// One log line per request: method, path, status and time taken.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let large = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n >= LARGE_BODY);
    let started = Instant::now();
    let response = next.run(request).await;
    if large {
        tokio::task::spawn_blocking(release_freed_memory);
    }
    let status = response.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if status >= 500 {
        tracing::warn!(%method, path, status, ms, "request");
    } else {
        tracing::info!(%method, path, status, ms, "request");
    }
    response
}

/// A JSON body whose every failure (too large, too slow, unreadable, not JSON, wrong fields)
/// is an OpenAI-style error. A declared length over the limit is refused before the body is
/// read, and the body must arrive within the body timeout.
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Shared> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Shared) -> Result<Self, Self::Rejection> {
        let limit = state.options.max_body_bytes;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::too_large(limit));
        }
        let timeout = state.options.body_timeout;
        let bytes = tokio::time::timeout(timeout, Bytes::from_request(request, state))
            .await
            .map_err(|_| ApiError::body_timeout(timeout.as_secs_f64()))?
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::too_large(limit)
                } else {
                    ApiError::invalid(format!(
                        "Could not read the request body: {}",
                        e.body_text()
                    ))
                }
            })?;
        parse(&bytes).map(ApiJson)
    }
}

/// Deserialise a request straight from its bytes (no intermediate JSON tree); a wrong field
/// is named by its path (`messages[0].content: invalid type: integer `12`, expected a string
/// or a list of content parts`) with the top-level field as the error's `param`.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let syntax = |e: serde_json::Error| {
        ApiError::invalid(format!(
            "The body is not a valid request: {e}; expected a JSON object as in OpenAI's API"
        ))
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let param = e.path().iter().next().and_then(|segment| match segment {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            _ => None,
        });
        let inner = e.into_inner();
        if !inner.is_data() {
            return syntax(inner);
        }
        let at = if path == "." {
            String::new()
        } else {
            format!("{path}: ")
        };
        let error = ApiError::invalid(format!(
            "The body is not a valid request: {at}{inner}; see OpenAI's API for the fields"
        ));
        match param {
            Some(p) => error.param(&p),
            None => error,
        }
    })?;
    de.end().map_err(syntax)?;
    Ok(value)
}

/// Return freed heap memory to the system. glibc keeps what a thread freed in that thread's
/// arena, so the megabytes a large body took to parse would stay resident for good.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's own heaps to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
