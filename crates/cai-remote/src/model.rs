//! [`RemoteModel`]: the `LanguageModel` trait over one or more OpenAI-compatible endpoints.

use cai_core::{Error, GenerateRequest, Generation, LanguageModel, Score, ScoreRequest};

use crate::dispatch::{Pool, Slot};
use crate::endpoint::{Endpoint, Failure};
use crate::error::RemoteError;
use crate::openai::{self, ScoreWay};
use crate::options::RemoteOptions;

/// A model behind HTTP endpoints (`http(s)://host:port/v1`, several comma-separated).
pub struct RemoteModel {
    pool: Pool,
    /// How each endpoint gives prompt log-probabilities, found on first use.
    score_ways: Vec<ScoreWay>,
}

/// Whether a `--model` value names endpoints rather than a local model.
pub fn is_remote_spec(spec: &str) -> bool {
    spec.starts_with("http://") || spec.starts_with("https://")
}

/// Open one endpoint; a refused or cut connection (a server restarting) or an answer that
/// may pass (503 while a server loads its model, 429) is tried again after a back-off, up to
/// the attempts setting. A silent endpoint already had the first-byte timeout and is not
/// waited on again.
fn open_with_retries(url: &str, options: &RemoteOptions) -> Result<Endpoint, Failure> {
    let mut attempt = 1;
    loop {
        match Endpoint::open(url, options) {
            Err(f @ (Failure::Connect(_) | Failure::Status { .. }))
                if f.may_pass() && attempt < options.attempts =>
            {
                let wait = options.backoff_after(attempt);
                tracing::warn!(
                    endpoint = url,
                    "{url} is not ready ({}); trying again in {:.1} s (attempt {} of {})",
                    f.describe(),
                    wait.as_secs_f64(),
                    attempt + 1,
                    options.attempts
                );
                std::thread::sleep(wait);
                attempt += 1;
            }
            Err(Failure::Connect(m)) => {
                return Err(Failure::Connect(format!("{m}; {attempt} attempts")));
            }
            other => return other,
        }
    }
}

impl RemoteModel {
    /// Open the endpoints of `spec` (`URL` or `URL1,URL2,…`): each one's `/models` is read
    /// for the model id. An endpoint that does not answer is reported and left out; one that
    /// answers with an error (a wrong key, a model it does not serve) fails the open.
    pub fn open(spec: &str, options: RemoteOptions) -> Result<Self, RemoteError> {
        let urls: Vec<&str> = spec.split(',').map(str::trim).collect();
        if let Some(bad) = urls.iter().find(|u| !is_remote_spec(u)) {
            return Err(RemoteError::Spec(format!(
                "'{bad}' in '{spec}' is not an endpoint; expected http(s)://host:port/v1, \
                 several separated by commas"
            )));
        }
        if options.concurrency == 0 || options.attempts == 0 {
            return Err(RemoteError::Spec(
                "the concurrency and attempts settings must be at least 1".into(),
            ));
        }
        let mut slots = Vec::with_capacity(urls.len());
        for url in urls {
            match open_with_retries(url, &options) {
                Ok(endpoint) => {
                    tracing::info!(endpoint = url, model = %endpoint.model, server = %endpoint.owned_by, "endpoint ready");
                    slots.push(Slot::live(endpoint));
                }
                Err(f @ (Failure::Connect(_) | Failure::Timeout(_))) => {
                    tracing::warn!(
                        endpoint = url,
                        "endpoint {url} does not answer ({}); going on without it",
                        f.describe()
                    );
                    slots.push(Slot::dead(url, f.describe()));
                }
                Err(Failure::Status { status, message }) => {
                    return Err(RemoteError::Refused {
                        endpoint: url.to_owned(),
                        status,
                        message,
                    })
                }
                Err(f) => {
                    return Err(RemoteError::Protocol {
                        endpoint: url.to_owned(),
                        message: f.describe(),
                    })
                }
            }
        }
        if slots.iter().all(|s| s.endpoint.is_none()) {
            let reasons = slots
                .iter()
                .map(|s| format!("{} ({})", s.url, s.dead_reason().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(RemoteError::NoEndpoint(reasons));
        }
        let score_ways = slots.iter().map(|_| ScoreWay::new()).collect();
        Ok(Self {
            pool: Pool { slots, options },
            score_ways,
        })
    }

    /// The endpoints' URLs, as given.
    pub fn endpoints(&self) -> Vec<String> {
        self.pool.slots.iter().map(|s| s.url.clone()).collect()
    }

    /// The endpoints declared dead so far, each with the reason.
    pub fn dead_endpoints(&self) -> Vec<(String, String)> {
        self.pool
            .slots
            .iter()
            .filter_map(|s| s.dead_reason().map(|r| (s.url.clone(), r)))
            .collect()
    }

    /// The model id each live endpoint was opened with.
    pub fn model_ids(&self) -> Vec<String> {
        self.pool
            .slots
            .iter()
            .filter_map(|s| s.endpoint.as_ref().map(|e| e.model.clone()))
            .collect()
    }

    /// The reward of each text from endpoints serving a preference model (`cai serve` of a
    /// `cai train-pm` output answers `/score` with `score_type: "reward"`): the model's score
    /// of the whole text. Dispatched, retried and failed over like generation.
    pub fn rewards(&self, texts: &[String]) -> Result<Vec<f32>, RemoteError> {
        self.pool.run(texts, |endpoint, text| {
            let body = serde_json::json!({
                "model": endpoint.model,
                "items": [{"prompt": text, "continuation": ""}],
            });
            let response: serde_json::Value = endpoint.post("/score", &body)?;
            if response["score_type"] != "reward" {
                return Err(Failure::Protocol(format!(
                    "/score answered {} scores; expected the rewards of a preference model",
                    response["score_type"]
                )));
            }
            response["data"][0]["score"]
                .as_f64()
                .map(|s| s as f32)
                .ok_or_else(|| Failure::Protocol("/score returned no \"score\"".into()))
        })
    }

    /// The index of an endpoint in the pool (for its scoring way).
    fn slot_of(&self, endpoint: &Endpoint) -> usize {
        self.pool
            .slots
            .iter()
            .position(|s| {
                s.endpoint
                    .as_ref()
                    .is_some_and(|e| std::ptr::eq(e, endpoint))
            })
            .expect("the endpoint is one of the pool's")
    }
}

impl LanguageModel for RemoteModel {
    fn generate(&self, requests: &[GenerateRequest]) -> Result<Vec<Generation>, Error> {
        Ok(self.pool.run(requests, openai::generate)?)
    }

    fn score(&self, requests: &[ScoreRequest]) -> Result<Vec<Score>, Error> {
        Ok(self.pool.run(requests, |endpoint, r| {
            openai::score(endpoint, &self.score_ways[self.slot_of(endpoint)], r)
        })?)
    }
}
