//! Errors: [`ApiError`], an HTTP status with an OpenAI-style body
//! (`{"error": {"message", "type", "param", "code"}}`), and [`ServerError`] for starting the
//! server.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

/// An error answered to a client: the status and the body OpenAI's clients parse.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body's `error` object.
    pub body: ErrorBody,
}

/// The `error` object of an OpenAI error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and what to do about it.
    pub message: String,
    /// The class: `invalid_request_error`, `authentication_error`, `not_found_error`,
    /// `timeout_error`, `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// A machine-readable code (`invalid_api_key`, `model_not_found`, …), if one applies.
    pub code: Option<String>,
}

/// The whole error response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    pub error: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                message: message.into(),
                kind: kind.into(),
                param: None,
                code: None,
            },
        }
    }

    /// Name the request field at fault.
    pub fn param(mut self, param: &str) -> Self {
        self.body.param = Some(param.into());
        self
    }

    /// Set the machine-readable code.
    pub fn code(mut self, code: &str) -> Self {
        self.body.code = Some(code.into());
        self
    }

    /// 400: the request is malformed or asks for something invalid.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 401: no bearer token, or the wrong one.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", message).code("invalid_api_key")
    }

    /// 404: the model the request names is not served here; `served` are the names it
    /// answers to.
    pub fn unknown_model(asked: &str, served: &[&str]) -> Self {
        let served = served
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(" or ");
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model '{asked}' does not exist; this server serves {served}"),
        )
        .param("model")
        .code("model_not_found")
    }

    /// 404: no such route.
    pub fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!(
                "No route {path}; routes: /v1/models, /v1/completions, /v1/chat/completions, \
                 /v1/score, /health"
            ),
        )
    }

    /// 405: the route exists but not for this method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "Method not allowed on this route (the /v1 routes take POST, /v1/models and /health GET)",
        )
    }

    /// 408: the request ran past the server's per-request timeout.
    pub fn timeout(seconds: f64) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout_error",
            format!("The request took longer than the server's limit of {seconds} s"),
        )
        .code("timeout")
    }

    /// 408: the body did not arrive within the server's body timeout.
    pub fn body_timeout(seconds: f64) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout_error",
            format!(
                "The request body did not arrive within the server's limit of {seconds} s \
                 after its headers; send the whole body at once"
            ),
        )
        .code("timeout")
    }

    /// 413: the body is larger than the server accepts.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("The request body is larger than the server's limit of {limit} bytes"),
        )
        .code("request_too_large")
    }

    /// 500: the model failed on a valid request.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// 503: the model's scheduler has stopped (the server is shutting down).
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "The model's scheduler has stopped; the server is shutting down",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorResponse {
                error: self.body.clone(),
            }),
        )
            .into_response()
    }
}

/// Errors from starting or running the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The address could not be bound or the connection loop failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done (`binding 127.0.0.1:8000`).
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The options are inconsistent.
    #[error("{0}")]
    Options(String),
}
