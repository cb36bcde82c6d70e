//! [`ServerOptions`]: the served name, limits and access control of a server, each default
//! with its reason.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ServerError;

/// How a server behaves; saved with nothing (a server writes no outputs) but serialisable so
/// that a wrapper can log or store it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerOptions {
    /// The model id clients send in `model`, first in `/v1/models` and echoed in answers.
    pub model_name: String,
    /// Other names clients may send in `model` (the name the server was started with, when
    /// it differs from the model's id); `/v1/models` lists them after `model_name`.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// When set, every route but `/health` needs `Authorization: Bearer <api_key>`.
    pub api_key: Option<String>,
    /// Largest request body accepted, in bytes: 4 MiB holds prompts far longer than any
    /// context cai runs, and stops a runaway client from filling memory.
    pub max_body_bytes: usize,
    /// Largest `max_tokens` a request may ask for (`None`: the model's context length).
    pub max_tokens_cap: Option<usize>,
    /// `max_tokens` of a completion request that gives none: OpenAI's default, 16.
    pub default_max_tokens: usize,
    /// A request still running after this long is answered 408 and its rows leave the batch:
    /// ten minutes outlasts any generation cai's models do on a CPU.
    #[serde(with = "seconds")]
    pub request_timeout: Duration,
    /// Most rows (prompts × `n`) one request may add.
    pub max_rows_per_request: usize,
    /// A connection has this long to send a request's headers, and an idle keep-alive
    /// connection is closed after it: 30 s (hyper's default) outlasts any live client, and a
    /// client that opens connections and sends nothing cannot hold them.
    #[serde(with = "seconds")]
    pub header_timeout: Duration,
    /// After its headers, a request's body must arrive within this long: 60 s carries the
    /// 4 MiB default limit over a 1 Mbit/s link with room to spare.
    #[serde(with = "seconds")]
    pub body_timeout: Duration,
    /// A client that takes none of the answer for this long — a stream it no longer reads —
    /// is disconnected and its rows leave the batch: 60 s, as for the body.
    #[serde(with = "seconds")]
    pub write_timeout: Duration,
}

impl ServerOptions {
    /// Defaults for a model served as `model_name`.
    pub fn new(model_name: impl Into<String>) -> Self {
        Self {
            model_name: model_name.into(),
            aliases: Vec::new(),
            api_key: None,
            max_body_bytes: 4 << 20,
            max_tokens_cap: None,
            default_max_tokens: 16,
            request_timeout: Duration::from_secs(600),
            max_rows_per_request: 128,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
        }
    }

    /// Check the options.
    pub fn validate(&self) -> Result<(), ServerError> {
        let fail = |m: &str| Err(ServerError::Options(m.into()));
        if self.names().any(|n| n.trim().is_empty()) {
            return fail("a served model name is empty");
        }
        if self.api_key.as_deref().is_some_and(str::is_empty) {
            return fail("the API key is empty; give a key or none");
        }
        if self.max_body_bytes == 0 || self.max_rows_per_request == 0 {
            return fail("the body limit and the rows per request must be at least 1");
        }
        if self.max_tokens_cap == Some(0) || self.default_max_tokens == 0 {
            return fail("the max_tokens cap and default must be at least 1");
        }
        for (what, timeout) in [
            ("request", self.request_timeout),
            ("header", self.header_timeout),
            ("body", self.body_timeout),
            ("write", self.write_timeout),
        ] {
            if timeout.is_zero() {
                return Err(ServerError::Options(format!(
                    "the {what} timeout must be longer than 0 s"
                )));
            }
        }
        Ok(())
    }

    /// Every name clients may send in `model`: `model_name`, then the aliases.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.model_name.as_str()).chain(self.aliases.iter().map(String::as_str))
    }
}

/// A `Duration` as fractional seconds in JSON.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let x = f64::deserialize(d)?;
        Duration::try_from_secs_f64(x).map_err(serde::de::Error::custom)
    }
}
