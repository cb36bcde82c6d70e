//! The scheduler: one thread owns the model's compute and runs continuous batching — requests
//! that arrive while others generate are prefilled and join the running batch between decode
//! steps, finished rows leave it, and rows whose client went away are dropped. Other model
//! work (scoring, prompt log-probs) runs on the same thread between steps.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use cai_model::decode_batch::{DecodeBatch, StepToken};
use cai_model::generate::{GenJob, GenOutput, Stopping};
use cai_model::local::LocalModel;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc as tmpsc, oneshot};

use crate::error::ApiError;

/// Scheduler settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineOptions {
    /// Most rows decoded together. 32 is where `bench-6m` decode stops gaining throughput
    /// on a CPU; a request larger than this still runs, alone.
    pub max_batch_rows: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self { max_batch_rows: 32 }
    }
}

/// What a generation request hears back, per choice (one row each).
#[derive(Debug, Clone)]
pub enum Event {
    /// A token was sampled (only sent to streaming requests).
    Token {
        /// The choice (row of the request).
        choice: usize,
        /// The token.
        token: StepToken,
    },
    /// A choice finished.
    Done {
        /// The choice.
        choice: usize,
        /// Its result.
        output: GenOutput,
    },
    /// The model refused the request (e.g. a prompt past the context); no more events follow.
    Rejected(String),
    /// A decode step failed; no more events follow.
    Failed(String),
}

type Job = Box<dyn FnOnce(&LocalModel) + Send>;

enum Work {
    Generate(Generation),
    Run(Job),
}

struct Generation {
    jobs: Vec<GenJob>,
    stream: bool,
    events: tmpsc::UnboundedSender<Event>,
}

/// A handle to the scheduler thread; cheap to clone. The thread ends when every handle is
/// dropped and its batch has finished.
#[derive(Clone)]
pub struct Engine {
    model: Arc<LocalModel>,
    work: Sender<Work>,
}

impl Engine {
    /// Start the scheduler thread over `model`.
    pub fn start(model: LocalModel, options: EngineOptions) -> Self {
        let model = Arc::new(model);
        let (work, inbox) = mpsc::channel();
        let owned = model.clone();
        std::thread::Builder::new()
            .name("cai-scheduler".into())
            .spawn(move || schedule(&owned, &inbox, options))
            .expect("spawning the scheduler thread");
        Self { model, work }
    }

    /// The model (for tokenizing and rendering on the caller's thread).
    pub fn model(&self) -> &LocalModel {
        &self.model
    }

    /// Queue a generation; its events arrive on the returned channel. Dropping the receiver
    /// cancels the rows still running.
    pub fn generate(
        &self,
        jobs: Vec<GenJob>,
        stream: bool,
    ) -> Result<tmpsc::UnboundedReceiver<Event>, ApiError> {
        let (events, rx) = tmpsc::unbounded_channel();
        self.work
            .send(Work::Generate(Generation {
                jobs,
                stream,
                events,
            }))
            .map_err(|_| ApiError::unavailable())?;
        Ok(rx)
    }

    /// Run `f` on the scheduler thread between decode steps and await its result.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&LocalModel) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |model| {
            let _ = tx.send(f(model));
        });
        self.work
            .send(Work::Run(job))
            .map_err(|_| ApiError::unavailable())?;
        rx.await.map_err(|_| ApiError::unavailable())
    }
}

/// A row's owner: the request's event channel and the row's choice index.
struct Owner {
    events: tmpsc::UnboundedSender<Event>,
    stream: bool,
    choice: usize,
}

/// The scheduler loop: wait for work when idle; otherwise take what has arrived, run the
/// one-off jobs, admit waiting generations up to the row limit, drop cancelled rows, step.
fn schedule(model: &LocalModel, inbox: &Receiver<Work>, options: EngineOptions) {
    // A chat client resends the conversation each turn: finished rows' KV is kept and reused.
    let mut batch = DecodeBatch::new(model.decoder()).with_reuse(Some(model.kv_reuse()));
    let mut waiting: VecDeque<Generation> = VecDeque::new();
    let mut owners: HashMap<u64, Owner> = HashMap::new();
    let mut next_id = 0u64;
    let stopping = Stopping {
        tokenizer: Some(model.tokenizer()),
        eos: model.tokenizer().eos_ids(),
    };
    let mut open = true;
    loop {
        if batch.is_empty() && waiting.is_empty() {
            if !open {
                return;
            }
            match inbox.recv() {
                Ok(work) => take(work, model, &mut waiting),
                Err(_) => return,
            }
        }
        loop {
            match inbox.try_recv() {
                Ok(work) => take(work, model, &mut waiting),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        admit(
            &mut batch,
            &mut waiting,
            &mut owners,
            &mut next_id,
            options.max_batch_rows,
        );
        let gone: Vec<u64> = owners
            .iter()
            .filter(|(_, o)| o.events.is_closed())
            .map(|(&id, _)| id)
            .collect();
        if !gone.is_empty() {
            tracing::debug!(rows = gone.len(), "dropping rows whose client went away");
            for id in &gone {
                owners.remove(id);
            }
            if let Err(e) = batch.remove(&gone) {
                fail_all(&mut batch, &mut owners, &e.to_string());
            }
        }
        if batch.is_empty() {
            continue;
        }
        match batch.step(stopping) {
            Ok(step) => {
                for token in step.tokens {
                    if let Some(o) = owners.get(&token.id).filter(|o| o.stream) {
                        let _ = o.events.send(Event::Token {
                            choice: o.choice,
                            token,
                        });
                    }
                }
                for (id, output) in step.finished {
                    if let Some(o) = owners.remove(&id) {
                        let _ = o.events.send(Event::Done {
                            choice: o.choice,
                            output,
                        });
                    }
                }
            }
            Err(e) => fail_all(&mut batch, &mut owners, &e.to_string()),
        }
    }
}

fn take(work: Work, model: &LocalModel, waiting: &mut VecDeque<Generation>) {
    match work {
        Work::Run(job) => job(model),
        Work::Generate(g) => waiting.push_back(g),
    }
}

/// Move waiting generations into the batch while they fit under the row limit (a request
/// larger than the limit runs when the batch is empty), prefilled together in one pass; if
/// that pass fails, each request is tried on its own so that only the faulty one fails.
fn admit(
    batch: &mut DecodeBatch<'_>,
    waiting: &mut VecDeque<Generation>,
    owners: &mut HashMap<u64, Owner>,
    next_id: &mut u64,
    max_rows: usize,
) {
    let mut admitted: Vec<Generation> = Vec::new();
    let mut rows = batch.len();
    while let Some(g) = waiting.front() {
        if g.events.is_closed() {
            waiting.pop_front();
            continue;
        }
        let fits = rows + g.jobs.len() <= max_rows || (rows == 0 && admitted.is_empty());
        if !fits {
            break;
        }
        rows += g.jobs.len();
        admitted.push(waiting.pop_front().expect("front exists"));
    }
    if admitted.is_empty() {
        return;
    }
    let mut ids_of = |g: &Generation| -> Vec<(u64, GenJob)> {
        g.jobs
            .iter()
            .map(|j| {
                *next_id += 1;
                (*next_id, j.clone())
            })
            .collect()
    };
    let all: Vec<Vec<(u64, GenJob)>> = admitted.iter().map(&mut ids_of).collect();
    let together = batch.add(None, all.iter().flatten().cloned().collect());
    let results: Vec<Result<(), String>> = match together {
        Ok(()) => vec![Ok(()); admitted.len()],
        Err(_) if admitted.len() > 1 => all
            .iter()
            .map(|rows| batch.add(None, rows.clone()).map_err(|e| e.to_string()))
            .collect(),
        Err(e) => vec![Err(e.to_string())],
    };
    for ((g, rows), result) in admitted.into_iter().zip(all).zip(results) {
        match result {
            Ok(()) => {
                for (choice, (id, _)) in rows.into_iter().enumerate() {
                    owners.insert(
                        id,
                        Owner {
                            events: g.events.clone(),
                            stream: g.stream,
                            choice,
                        },
                    );
                }
            }
            Err(message) => {
                let _ = g.events.send(Event::Rejected(message));
            }
        }
    }
}

/// A decode step failed: every running request fails with the message, the batch empties.
fn fail_all(batch: &mut DecodeBatch<'_>, owners: &mut HashMap<u64, Owner>, message: &str) {
    tracing::error!(
        error = message,
        "decode step failed; failing the running requests"
    );
    for (_, o) in owners.drain() {
        let _ = o.events.send(Event::Failed(message.to_owned()));
    }
    let ids = batch.ids();
    // Removing every row cannot fail: an empty batch drops its cache without touching it.
    let _ = batch.remove(&ids);
}
