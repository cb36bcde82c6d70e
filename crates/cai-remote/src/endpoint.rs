//! One endpoint: its base URL, the model id it serves, an HTTP agent with the timeouts, and
//! calls whose failures are sorted into what a retry may cure and what it cannot.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::options::{seconds, RemoteOptions};

/// Largest response body read (an echo of a long prompt with alternatives is a few MiB).
const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Failure {
    /// No connection, or the connection was cut: the server may be dead.
    Connect(String),
    /// No answer in time.
    Timeout(String),
    /// An HTTP error status with the server's message.
    Status {
        /// The status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// An answer that is not the expected JSON.
    Protocol(String),
}

impl Failure {
    /// Whether the same request may succeed later (a busy or restarting server).
    pub fn may_pass(&self) -> bool {
        match self {
            Failure::Connect(_) | Failure::Timeout(_) => true,
            Failure::Status { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            Failure::Protocol(_) => false,
        }
    }

    /// Text for the user.
    pub fn describe(&self) -> String {
        match self {
            Failure::Connect(m) => format!("connection failed: {m}"),
            Failure::Timeout(m) => m.clone(),
            Failure::Status { status, message } => format!("HTTP {status}: {message}"),
            Failure::Protocol(m) => m.clone(),
        }
    }
}

/// The OpenAI error body, as far as cai reads it.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorMessage,
}

#[derive(Deserialize)]
struct ErrorMessage {
    message: String,
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelCard>,
}

#[derive(Deserialize)]
struct ModelCard {
    id: String,
    #[serde(default)]
    owned_by: Option<String>,
}

/// A server speaking the OpenAI API under `url` (which ends in `/v1`).
pub(crate) struct Endpoint {
    /// The base URL as given, without a trailing slash.
    pub url: String,
    /// The model id sent in requests.
    pub model: String,
    /// Who serves it (`/models`' `owned_by`: `cai`, `vllm`, …).
    pub owned_by: String,
    /// Completions: the whole request within the request timeout.
    agent: ureq::Agent,
    /// `GET /models`: the answer's first byte within the first-byte timeout.
    lister: ureq::Agent,
    timeouts: Timeouts,
    api_key: Option<String>,
}

/// The timeouts, for messages that name the one that expired.
#[derive(Clone, Copy)]
struct Timeouts {
    connect: Duration,
    first_byte: Duration,
    request: Duration,
}

impl Endpoint {
    /// Connect: read `/models` for the model id (or check that the one asked for is served).
    pub fn open(url: &str, options: &RemoteOptions) -> Result<Endpoint, Failure> {
        let agent = |first_byte: Option<Duration>| -> ureq::Agent {
            ureq::Agent::config_builder()
                .timeout_global(Some(options.request_timeout))
                .timeout_connect(Some(options.connect_timeout))
                .timeout_recv_response(first_byte)
                .http_status_as_error(false)
                .max_idle_connections_per_host(options.concurrency.max(1))
                .build()
                .into()
        };
        let mut endpoint = Endpoint {
            url: url.trim_end_matches('/').to_owned(),
            model: String::new(),
            owned_by: String::new(),
            agent: agent(None),
            lister: agent(Some(options.first_byte_timeout)),
            timeouts: Timeouts {
                connect: options.connect_timeout,
                first_byte: options.first_byte_timeout,
                request: options.request_timeout,
            },
            api_key: options.api_key.clone(),
        };
        let list: ModelList = endpoint.call(None, "/models")?;
        let card = match &options.model {
            Some(wanted) => list
                .data
                .into_iter()
                .find(|m| &m.id == wanted)
                .ok_or_else(|| Failure::Protocol(format!("does not serve the model '{wanted}'")))?,
            None => list
                .data
                .into_iter()
                .next()
                .ok_or_else(|| Failure::Protocol("/models lists no model".into()))?,
        };
        endpoint.model = card.id;
        endpoint.owned_by = card.owned_by.unwrap_or_default();
        Ok(endpoint)
    }

    /// POST `body` to `url + path` and read the JSON answer.
    pub fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, Failure> {
        self.call(Some(body), path)
    }

    fn call<T: DeserializeOwned>(&self, body: Option<&Value>, path: &str) -> Result<T, Failure> {
        let url = format!("{}{path}", self.url);
        let method = if body.is_some() { "POST" } else { "GET" };
        let failed = |e| self.transport_failure(e, method, path);
        let result = match body {
            Some(body) => {
                let mut request = self.agent.post(&url);
                if let Some(key) = &self.api_key {
                    request = request.header("Authorization", format!("Bearer {key}"));
                }
                request.send_json(body)
            }
            None => {
                let mut request = self.lister.get(&url);
                if let Some(key) = &self.api_key {
                    request = request.header("Authorization", format!("Bearer {key}"));
                }
                request.call()
            }
        };
        let mut response = result.map_err(failed)?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_string()
            .map_err(failed)?;
        if status >= 400 {
            let message = serde_json::from_str::<ErrorBody>(&text)
                .map(|b| b.error.message)
                .unwrap_or_else(|_| text.chars().take(500).collect());
            return Err(Failure::Status { status, message });
        }
        serde_json::from_str(&text).map_err(|e| {
            Failure::Protocol(format!("{path} answered JSON that cai cannot read ({e})"))
        })
    }

    /// Sort a transport error: a timeout (naming the one that expired and the setting that
    /// changes it), or a failed or cut connection.
    fn transport_failure(&self, e: ureq::Error, method: &str, path: &str) -> Failure {
        let t = self.timeouts;
        match e {
            ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
                Failure::Timeout(format!(
                    "could not connect within {} (set CAI_REMOTE_CONNECT_TIMEOUT to change it)",
                    seconds(t.connect)
                ))
            }
            ureq::Error::Timeout(ureq::Timeout::RecvResponse) if method == "GET" => {
                Failure::Timeout(format!(
                    "accepted the connection but sent no answer to {method} {path} within {} \
                     (set CAI_REMOTE_FIRST_BYTE_TIMEOUT to change it)",
                    seconds(t.first_byte)
                ))
            }
            ureq::Error::Timeout(_) => Failure::Timeout(format!(
                "no answer to {method} {path} within the request timeout of {} (set \
                 CAI_REMOTE_TIMEOUT to change it)",
                seconds(t.request)
            )),
            ureq::Error::Json(e) => Failure::Protocol(e.to_string()),
            other => Failure::Connect(other.to_string()),
        }
    }
}
