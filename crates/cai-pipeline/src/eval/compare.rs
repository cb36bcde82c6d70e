//! Pairwise comparisons: for each prompt, the answers of every pair of snapshots judged on
//! one axis, appended to a JSONL file chunk by chunk and resumed by id. Which snapshot's
//! answer is shown first is drawn per (seed, prompt, pair), so a judge's position bias does
//! not favour a snapshot; the id names the pair in sorted order, so listing the snapshots in
//! another order, or adding one, reuses every comparison already made.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use cai_core::jsonl::{read_complete_records, JsonlWriter};
use cai_core::prompts::Prompt;
use cai_core::rng::{derive_seed, rng_from_seed};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::judge::{Judge, PairQuery};
use super::samples::{sample_id, SampleRecord};
use super::Axis;
use crate::{PipelineError, Result};

/// One judged pair of answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonRecord {
    /// `"{prompt_id}|{x}|{y}"` with the two snapshot names sorted (see [`comparison_id`]).
    pub id: String,
    /// The prompt's id.
    pub prompt_id: String,
    /// What was compared.
    pub axis: Axis,
    /// The snapshot whose answer was shown first.
    pub snapshot_a: String,
    /// The snapshot whose answer was shown second.
    pub snapshot_b: String,
    /// The judge's probability that the first answer is better.
    pub p_a: f64,
    /// The user's request.
    pub prompt: String,
    /// The first answer.
    pub response_a: String,
    /// The second answer.
    pub response_b: String,
}

/// The id of the comparison of two snapshots on a prompt, whatever their order.
pub fn comparison_id(prompt_id: &str, x: &str, y: &str) -> String {
    let (x, y) = if x <= y { (x, y) } else { (y, x) };
    format!("{prompt_id}|{x}|{y}")
}

/// Every complete record of a comparisons file (none when it does not exist yet).
pub fn read_comparisons(path: &Path) -> Result<Vec<ComparisonRecord>> {
    read_complete_records(path)?
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            serde_json::from_value(value).map_err(|e| {
                PipelineError::Config(format!(
                    "{}: record {}: {e}; expected a comparison written by cai eval (delete the \
                     file, or choose another output directory)",
                    path.display(),
                    i + 1
                ))
            })
        })
        .collect()
}

/// A comparison still to make: the prompt, and the two samples in the order shown.
struct Job<'s> {
    id: String,
    prompt: &'s Prompt,
    a: &'s SampleRecord,
    b: &'s SampleRecord,
}

/// What to compare: every pair of `snapshots` on each of `prompts`, on `axis`, from their
/// answers in `samples` (by [`sample_id`]), each pair shown in an order drawn from `seed`.
#[derive(Debug, Clone, Copy)]
pub struct Pairings<'a> {
    /// What the judge is asked.
    pub axis: Axis,
    /// The prompts.
    pub prompts: &'a [Prompt],
    /// The snapshots, at least two.
    pub snapshots: &'a [String],
    /// Their answers, by [`sample_id`].
    pub samples: &'a HashMap<String, SampleRecord>,
    /// Seed of the order each pair is shown in.
    pub seed: u64,
}

/// Judge the `pairings`, appending to the file at `path` the comparisons it does not hold
/// yet, `batch_size` pairs per judge call. `progress` hears how many comparisons each call
/// finished; returns how many were made now.
pub fn compare_snapshots(
    judge: &dyn Judge,
    pairings: &Pairings<'_>,
    batch_size: usize,
    path: &Path,
    progress: &mut dyn FnMut(usize),
) -> Result<usize> {
    let Pairings {
        axis,
        prompts,
        snapshots,
        samples,
        seed,
    } = *pairings;
    if batch_size == 0 {
        return Err(PipelineError::Config(
            "batch size 0: expected at least 1 comparison per judge call".into(),
        ));
    }
    let done: HashSet<String> = read_comparisons(path)?.into_iter().map(|c| c.id).collect();
    let sample = |snapshot: &str, prompt: &Prompt| {
        samples
            .get(&sample_id(snapshot, &prompt.id))
            .ok_or_else(|| {
                PipelineError::Config(format!(
                    "no answer of snapshot {snapshot} to prompt {} (line {}); sample it before \
                     comparing",
                    prompt.id, prompt.line
                ))
            })
    };
    let mut jobs = Vec::new();
    for prompt in prompts {
        for (i, x) in snapshots.iter().enumerate() {
            for y in &snapshots[i + 1..] {
                let id = comparison_id(&prompt.id, x, y);
                if done.contains(&id) {
                    continue;
                }
                let (first, second) = if x <= y { (x, y) } else { (y, x) };
                let flip = rng_from_seed(derive_seed(seed, &["eval-order", &id])).random_bool(0.5);
                let (a, b) = if flip {
                    (second, first)
                } else {
                    (first, second)
                };
                jobs.push(Job {
                    id,
                    prompt,
                    a: sample(a, prompt)?,
                    b: sample(b, prompt)?,
                });
            }
        }
    }
    if jobs.is_empty() {
        return Ok(0);
    }
    let mut writer = JsonlWriter::append(path)?;
    for chunk in jobs.chunks(batch_size) {
        let queries: Vec<PairQuery<'_>> = chunk
            .iter()
            .map(|job| PairQuery {
                key: &job.id,
                conversation: &job.prompt.messages,
                response_a: &job.a.response,
                response_b: &job.b.response,
                axis,
            })
            .collect();
        let p = judge.prefer(&queries)?;
        super::judge::check_count(&judge.name(), p.len(), chunk.len())?;
        for (job, p_a) in chunk.iter().zip(p) {
            if !(0.0..=1.0).contains(&p_a) {
                return Err(PipelineError::judge(
                    &judge.name(),
                    std::io::Error::other(format!(
                        "p(first better) {p_a} for {}; expected a probability in [0, 1]",
                        job.id
                    )),
                ));
            }
            writer.write(&ComparisonRecord {
                id: job.id.clone(),
                prompt_id: job.prompt.id.clone(),
                axis,
                snapshot_a: job.a.snapshot.clone(),
                snapshot_b: job.b.snapshot.clone(),
                p_a,
                prompt: job.prompt.request().to_owned(),
                response_a: job.a.response.clone(),
                response_b: job.b.response.clone(),
            })?;
        }
        writer.sync()?;
        progress(chunk.len());
    }
    Ok(jobs.len())
}

#[cfg(test)]
pub(crate) mod tests {
    use cai_core::FinishReason;

    use super::*;
    use crate::eval::samples::tests::prompts;

    /// A judge that prefers the longer answer, counting its calls.
    pub(crate) struct Longer(pub std::sync::atomic::AtomicUsize);

    impl Judge for Longer {
        fn name(&self) -> String {
            "longer".into()
        }

        fn prefer(&self, pairs: &[PairQuery<'_>]) -> Result<Vec<f64>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(pairs
                .iter()
                .map(|p| match p.response_a.len().cmp(&p.response_b.len()) {
                    std::cmp::Ordering::Greater => 1.0,
                    std::cmp::Ordering::Less => 0.0,
                    std::cmp::Ordering::Equal => 0.5,
                })
                .collect())
        }
    }

    pub(crate) fn sample(snapshot: &str, prompt: &Prompt, response: &str) -> SampleRecord {
        SampleRecord {
            id: sample_id(snapshot, &prompt.id),
            snapshot: snapshot.into(),
            prompt_id: prompt.id.clone(),
            prompt: prompt.request().into(),
            conversation: prompt.messages.clone(),
            response: response.into(),
            finish_reason: FinishReason::Eos,
        }
    }

    #[test]
    fn every_pair_is_judged_once_in_a_seeded_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("comparisons.jsonl");
        let prompts = prompts(4);
        let mut samples = HashMap::new();
        for p in &prompts {
            for (name, answer) in [("short", "a"), ("mid", "aa"), ("long", "aaa")] {
                let s = sample(name, p, answer);
                samples.insert(s.id.clone(), s);
            }
        }
        let judge = Longer(0.into());
        let two = ["short".to_owned(), "long".to_owned()];
        let pairings = |snapshots| Pairings {
            axis: Axis::Helpfulness,
            prompts: &prompts,
            snapshots,
            samples: &samples,
            seed: 0,
        };
        let n = compare_snapshots(&judge, &pairings(&two), 3, &path, &mut |_| {}).unwrap();
        assert_eq!(n, 4);
        // Adding a snapshot (listed first) makes only its new pairs.
        let three = ["mid".to_owned(), "long".to_owned(), "short".to_owned()];
        let n = compare_snapshots(&judge, &pairings(&three), 3, &path, &mut |_| {}).unwrap();
        assert_eq!(n, 8);
        let records = read_comparisons(&path).unwrap();
        assert_eq!(records.len(), 12);
        for r in &records {
            let longer_first = r.response_a.len() > r.response_b.len();
            assert_eq!(r.p_a, if longer_first { 1.0 } else { 0.0 }, "{r:?}");
            assert_eq!(
                r.id,
                comparison_id(&r.prompt_id, &r.snapshot_a, &r.snapshot_b)
            );
        }
        // Both orders occur.
        assert!(records.iter().any(|r| r.snapshot_a < r.snapshot_b));
        assert!(records.iter().any(|r| r.snapshot_a > r.snapshot_b));
        // A missing answer is named.
        samples.remove("mid|p3");
        std::fs::remove_file(&path).unwrap();
        let pairings = Pairings {
            axis: Axis::Helpfulness,
            prompts: &prompts,
            snapshots: &three,
            samples: &samples,
            seed: 0,
        };
        let err = compare_snapshots(&judge, &pairings, 3, &path, &mut |_| {}).unwrap_err();
        assert!(
            err.to_string().contains("snapshot mid to prompt p3"),
            "{err}"
        );
    }
}
