//! [`RemoteOptions`]: how hard the remote backend pushes and how long it waits, each default
//! with its reason. The `cai` CLI reads them from `CAI_REMOTE_*` environment variables, which
//! the error messages name.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of a [`crate::RemoteModel`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteOptions {
    /// Requests in flight per endpoint at once: 16 keeps a continuously batching server's
    /// batch full without queueing deep behind it.
    pub concurrency: usize,
    /// A request that has not been answered after this long counts as failed: ten minutes
    /// outlasts any single completion cai asks for (`CAI_REMOTE_TIMEOUT`).
    pub request_timeout: Duration,
    /// Time allowed to open a connection: a live server on a reachable host accepts within
    /// seconds (`CAI_REMOTE_CONNECT_TIMEOUT`).
    pub connect_timeout: Duration,
    /// Time allowed for the first byte of an endpoint's answer to `GET /models`, when the
    /// model is opened: any live server answers it at once, so 30 s tells a listener that
    /// accepts and never answers from a busy server (`CAI_REMOTE_FIRST_BYTE_TIMEOUT`). A
    /// completion's answer starts only when it is generated, so completions wait for the
    /// request timeout instead, with a progress line every `progress_interval`.
    pub first_byte_timeout: Duration,
    /// Attempts per request on failures that may pass (429, 5xx), and failed rounds in a
    /// row (connections refused or cut, timeouts) before an endpoint is declared dead and
    /// its work goes to the others (`CAI_REMOTE_ATTEMPTS`). With the default back-off, 4
    /// rides out about 3.5 s of a restarting server.
    pub attempts: u32,
    /// Wait before the second attempt, doubled for each later one up to `max_backoff`; each
    /// wait is drawn between half and all of that, so that many clients do not retry in step.
    pub backoff: Duration,
    /// The longest wait between two attempts: 30 s.
    pub max_backoff: Duration,
    /// While requests wait on an endpoint without an answer, a progress line says so this
    /// often: 10 s (`CAI_REMOTE_PROGRESS`).
    pub progress_interval: Duration,
    /// The model id to request (`None`: the first one each endpoint's `/models` lists).
    pub model: Option<String>,
    /// Sent as `Authorization: Bearer <api_key>`.
    #[serde(skip_serializing)]
    pub api_key: Option<String>,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        Self {
            concurrency: 16,
            request_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(30),
            attempts: 4,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            progress_interval: Duration::from_secs(10),
            model: None,
            api_key: None,
        }
    }
}

impl RemoteOptions {
    /// The wait before attempt `attempt + 1` after `attempt` failures (1-based): `backoff`
    /// doubled per earlier failure, capped at `max_backoff`, then drawn between half and all
    /// of it.
    pub fn backoff_after(&self, attempt: u32) -> Duration {
        let doubled = self
            .backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        let full = doubled.min(self.max_backoff);
        full.mul_f64(0.5 + 0.5 * unit_random())
    }
}

/// A number in [0, 1) that differs between calls and processes (std's hasher keys are
/// random), enough to spread retries apart.
fn unit_random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Seconds for a message: `0.3 s`, `600 s`.
pub(crate) fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_is_capped_and_jittered() {
        let o = RemoteOptions {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            ..RemoteOptions::default()
        };
        for (attempt, full) in [(1, 100), (2, 200), (3, 350), (9, 350), (40, 350)] {
            let waits: Vec<Duration> = (0..50).map(|_| o.backoff_after(attempt)).collect();
            let full = Duration::from_millis(full);
            assert!(
                waits.iter().all(|w| *w >= full / 2 && *w <= full),
                "attempt {attempt}: {waits:?}"
            );
            assert!(
                waits.iter().any(|w| *w != waits[0]),
                "attempt {attempt}: no jitter"
            );
        }
        assert_eq!(seconds(Duration::from_millis(300)), "0.3 s");
    }
}
