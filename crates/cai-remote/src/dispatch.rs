//! Spreading requests over endpoints: each worker takes the next request and sends it to the
//! least busy live endpoint (within the per-endpoint concurrency limit). An endpoint whose
//! connections fail or time out rests for a back-off (doubled each time, capped, jittered)
//! while its requests go back in the queue — to the others, or to it once it is back — and is
//! declared dead, reported by name, only after `attempts` such rounds in a row; requests that
//! fail at once in one outage count as one round. Other failures that may pass (429, 5xx)
//! are retried per request with the same back-off. While requests wait on an endpoint with no
//! answer, a progress line says so every `progress_interval`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::endpoint::{Endpoint, Failure};
use crate::error::RemoteError;
use crate::options::{seconds, RemoteOptions};

/// An endpoint and its health.
pub(crate) struct Slot {
    pub url: String,
    pub endpoint: Option<Endpoint>,
    in_flight: AtomicUsize,
    health: Mutex<Health>,
    dead: Mutex<Option<String>>,
}

/// How an endpoint has been doing lately.
#[derive(Default)]
struct Health {
    /// Failed rounds in a row.
    failures: u32,
    /// When the last counted failure was seen: a request sent before it that fails later
    /// failed in the same outage and does not count again.
    last_failure: Option<Instant>,
    /// No request is sent here before this.
    resting_until: Option<Instant>,
    /// Since when requests have been in flight here with no answer (`None`: none in flight).
    quiet_since: Option<Instant>,
    /// When the last progress line about this endpoint was written.
    reported: Option<Instant>,
}

impl Slot {
    /// A live endpoint.
    pub fn live(endpoint: Endpoint) -> Self {
        Self {
            url: endpoint.url.clone(),
            endpoint: Some(endpoint),
            in_flight: AtomicUsize::new(0),
            health: Mutex::new(Health::default()),
            dead: Mutex::new(None),
        }
    }

    /// An endpoint that did not answer when the model was opened.
    pub fn dead(url: &str, reason: String) -> Self {
        Self {
            url: url.to_owned(),
            endpoint: None,
            in_flight: AtomicUsize::new(0),
            health: Mutex::new(Health::default()),
            dead: Mutex::new(Some(reason)),
        }
    }

    /// Why the endpoint was declared dead, if it was.
    pub fn dead_reason(&self) -> Option<String> {
        self.dead.lock().expect("slot lock").clone()
    }

    fn is_live(&self) -> bool {
        self.dead_reason().is_none()
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().expect("health lock")
    }

    /// A request leaves for this endpoint.
    fn send(&self) {
        if self.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
            self.health().quiet_since = Some(Instant::now());
        }
    }

    /// A request came back (answered or failed): the endpoint is not silent.
    fn returned(&self) {
        let left = self.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
        let mut h = self.health();
        h.quiet_since = (left > 0).then(Instant::now);
        h.reported = None;
    }

    /// Whether the endpoint is resting after a failure at `now`.
    fn resting(&self, now: Instant) -> Option<Instant> {
        self.health().resting_until.filter(|&t| t > now)
    }
}

/// The endpoints of one model and the settings to use them with.
pub(crate) struct Pool {
    pub slots: Vec<Slot>,
    pub options: RemoteOptions,
}

/// A request waiting to be sent: its index, the attempts it has used, and when it may go.
struct Pending {
    index: usize,
    attempts: u32,
    not_before: Instant,
}

/// The shared state of one `run`.
struct Call<T> {
    queue: VecDeque<Pending>,
    results: Vec<Option<T>>,
    running: usize,
    error: Option<RemoteError>,
}

impl Pool {
    /// Send every item through `call` and return the answers in order; fails on the first
    /// permanent error, when a request has used its attempts, or when every endpoint is dead.
    pub fn run<R: Sync, T: Send>(
        &self,
        items: &[R],
        call: impl Fn(&Endpoint, &R) -> Result<T, Failure> + Sync,
    ) -> Result<Vec<T>, RemoteError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let now = Instant::now();
        let state = Mutex::new(Call {
            queue: (0..items.len())
                .map(|index| Pending {
                    index,
                    attempts: 0,
                    not_before: now,
                })
                .collect(),
            results: (0..items.len()).map(|_| None).collect(),
            running: 0,
            error: None,
        });
        let changed = Condvar::new();
        let live = self.slots.iter().filter(|s| s.is_live()).count();
        let workers = items
            .len()
            .min(live * self.options.concurrency.max(1))
            .max(1);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| self.work(items, &call, &state, &changed));
            }
            scope.spawn(|| self.watch(&state, &changed));
        });
        let state = state.into_inner().expect("call lock");
        if let Some(e) = state.error {
            return Err(e);
        }
        Ok(state
            .results
            .into_iter()
            .map(|r| r.expect("every request answered"))
            .collect())
    }

    fn work<R, T>(
        &self,
        items: &[R],
        call: &(impl Fn(&Endpoint, &R) -> Result<T, Failure> + Sync),
        state: &Mutex<Call<T>>,
        changed: &Condvar,
    ) {
        loop {
            let pending = {
                let mut s = state.lock().expect("call lock");
                loop {
                    if s.error.is_some() || (s.queue.is_empty() && s.running == 0) {
                        return;
                    }
                    if let Some(p) = s.queue.pop_front() {
                        s.running += 1;
                        break p;
                    }
                    s = changed
                        .wait_timeout(s, Duration::from_millis(100))
                        .expect("call lock")
                        .0;
                }
            };
            let wait = pending.not_before.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            let outcome = match self.pick() {
                None => Err(RemoteError::AllDead(self.obituary())),
                Some(slot) => {
                    let endpoint = slot.endpoint.as_ref().expect("a live slot has an endpoint");
                    let sent = Instant::now();
                    slot.send();
                    let result = call(endpoint, &items[pending.index]);
                    slot.returned();
                    self.settle(slot, pending, sent, result)
                }
            };
            let mut s = state.lock().expect("call lock");
            s.running -= 1;
            match outcome {
                Ok(Settled::Answer(index, value)) => s.results[index] = Some(value),
                Ok(Settled::Again(p)) => s.queue.push_back(p),
                Err(e) => {
                    s.error.get_or_insert(e);
                }
            }
            changed.notify_all();
        }
    }

    /// Until the run ends, write a progress line for each endpoint on which requests have
    /// waited `progress_interval` or more with no answer.
    fn watch<T>(&self, state: &Mutex<Call<T>>, changed: &Condvar) {
        let every = self.options.progress_interval;
        let tick = (every / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        loop {
            {
                let s = state.lock().expect("call lock");
                let (s, _) = changed.wait_timeout(s, tick).expect("call lock");
                if s.error.is_some() || (s.queue.is_empty() && s.running == 0) {
                    return;
                }
            }
            let now = Instant::now();
            for slot in self.slots.iter().filter(|s| s.is_live()) {
                let mut h = slot.health();
                let Some(quiet) = h.quiet_since else { continue };
                let waited = now - quiet;
                let due = h.reported.is_none_or(|r| now - r >= every);
                if waited >= every && due {
                    h.reported = Some(now);
                    tracing::warn!(
                        endpoint = %slot.url,
                        "waiting for {}: {} without an answer, {} request(s) in flight \
                         (each may take up to {}; set CAI_REMOTE_TIMEOUT to change it)",
                        slot.url,
                        seconds(Duration::from_secs_f64(
                            (waited.as_secs_f64() * 10.0).round() / 10.0
                        )),
                        slot.in_flight.load(Ordering::SeqCst),
                        seconds(self.options.request_timeout)
                    );
                }
            }
        }
    }

    /// The live endpoint with the fewest requests in flight, waiting while every live one is
    /// resting after a failure or at the concurrency limit; `None` when none is live.
    fn pick(&self) -> Option<&Slot> {
        loop {
            let now = Instant::now();
            let live: Vec<&Slot> = self.slots.iter().filter(|s| s.is_live()).collect();
            if live.is_empty() {
                return None;
            }
            let ready = live
                .iter()
                .filter(|s| s.resting(now).is_none())
                .min_by_key(|s| s.in_flight.load(Ordering::SeqCst))
                .copied();
            if let Some(best) = ready {
                if best.in_flight.load(Ordering::SeqCst) < self.options.concurrency.max(1) {
                    return Some(best);
                }
            }
            let back = live.iter().filter_map(|s| s.resting(now)).min();
            let wait = back.map_or(Duration::from_millis(2), |t| {
                (t - now).min(Duration::from_millis(50))
            });
            std::thread::sleep(wait.max(Duration::from_millis(1)));
        }
    }

    /// What a call's result means for its request and its endpoint; `sent` is when the
    /// request left.
    fn settle<T>(
        &self,
        slot: &Slot,
        p: Pending,
        sent: Instant,
        result: Result<T, Failure>,
    ) -> Result<Settled<T>, RemoteError> {
        let failure = match result {
            Ok(value) => {
                let mut h = slot.health();
                h.failures = 0;
                h.last_failure = None;
                h.resting_until = None;
                return Ok(Settled::Answer(p.index, value));
            }
            Err(f) => f,
        };
        if !failure.may_pass() {
            return Err(match failure {
                Failure::Status { status, message } => RemoteError::Refused {
                    endpoint: slot.url.clone(),
                    status,
                    message,
                },
                other => RemoteError::Protocol {
                    endpoint: slot.url.clone(),
                    message: other.describe(),
                },
            });
        }
        if matches!(failure, Failure::Connect(_) | Failure::Timeout(_)) {
            self.endpoint_failed(slot, sent, &failure);
            // The endpoint's fault, not the request's: it goes back as it was, to the others
            // or to this endpoint once it has rested.
            return Ok(Settled::Again(Pending {
                not_before: Instant::now(),
                ..p
            }));
        }
        let attempts = p.attempts + 1;
        if attempts >= self.options.attempts {
            return Err(RemoteError::Exhausted {
                endpoint: slot.url.clone(),
                attempts,
                message: failure.describe(),
            });
        }
        let delay = self.options.backoff_after(attempts);
        tracing::warn!(
            endpoint = %slot.url,
            "request failed ({}); retrying in {:.1} s (attempt {} of {})",
            failure.describe(),
            delay.as_secs_f64(),
            attempts + 1,
            self.options.attempts
        );
        Ok(Settled::Again(Pending {
            index: p.index,
            attempts,
            not_before: Instant::now() + delay,
        }))
    }

    /// A request sent at `sent` found the endpoint down or silent. The first such failure of
    /// an outage starts a round: the endpoint rests for a back-off, or is declared dead after
    /// `attempts` rounds in a row.
    fn endpoint_failed(&self, slot: &Slot, sent: Instant, failure: &Failure) {
        let now = Instant::now();
        let mut h = slot.health();
        if h.last_failure.is_some_and(|t| sent < t) {
            return;
        }
        h.failures += 1;
        h.last_failure = Some(now);
        let (failures, attempts) = (h.failures, self.options.attempts);
        if failures >= attempts {
            drop(h);
            self.declare_dead(slot, failure, failures);
            return;
        }
        let wait = self.options.backoff_after(failures);
        h.resting_until = Some(now + wait);
        tracing::warn!(
            endpoint = %slot.url,
            "{} failed ({}); trying it again in {:.1} s (attempt {} of {}; \
             CAI_REMOTE_ATTEMPTS sets how many)",
            slot.url,
            failure.describe(),
            wait.as_secs_f64(),
            failures + 1,
            attempts
        );
    }

    fn declare_dead(&self, slot: &Slot, failure: &Failure, attempts: u32) {
        let mut dead = slot.dead.lock().expect("slot lock");
        if dead.is_none() {
            let reason = format!("{}; {attempts} attempts", failure.describe());
            let others = self.slots.iter().filter(|s| s.is_live_except(slot)).count();
            let next = match others {
                0 => "no other endpoint is live".to_owned(),
                n => format!("its requests go to the {n} other live endpoint(s)"),
            };
            tracing::warn!(
                endpoint = %slot.url,
                "endpoint {} is dead ({reason}); {next}",
                slot.url
            );
            *dead = Some(reason);
        }
    }

    /// Every dead endpoint with its reason, for an error message.
    fn obituary(&self) -> String {
        self.slots
            .iter()
            .filter_map(|s| s.dead_reason().map(|r| format!("{} ({r})", s.url)))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Slot {
    fn is_live_except(&self, other: &Slot) -> bool {
        !std::ptr::eq(self, other) && self.is_live()
    }
}

/// A settled call: an answer for request `index`, or the request back in the queue.
enum Settled<T> {
    Answer(usize, T),
    Again(Pending),
}
