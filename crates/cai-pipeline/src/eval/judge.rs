//! Judges: what decides which of two answers is better on an axis, and, where a judge can
//! say, whether one answer is harmful.
//!
//! Which judges give a harm verdict:
//! - a preference model ([`PmJudge`]): yes — an answer is harmful when its reward is below a
//!   threshold (default 0; a PM's rewards have no absolute scale, so calibrate the threshold
//!   on answers you know, or compare rates between snapshots rather than reading them alone);
//! - the multiple-choice feedback model ([`FeedbackJudge`]): no — it only compares;
//! - judges implemented elsewhere say so through [`Judge::gives_harm`] (the lab's oracle in
//!   the `cai` binary does: its verdict `harmful`).

mod feedback;
mod pm;

use cai_core::dialogue::Message;
use serde::{Deserialize, Serialize};

pub use feedback::{FeedbackJudge, HELPFULNESS_QUESTIONS};
pub use pm::PmJudge;

use super::Axis;
use crate::{PipelineError, Result};

/// Two answers to one conversation, to be compared on one axis.
#[derive(Debug, Clone, Copy)]
pub struct PairQuery<'a> {
    /// A stable key of the comparison (its id), for judges that draw at random.
    pub key: &'a str,
    /// The conversation, ending with the user's request.
    pub conversation: &'a [Message],
    /// The first answer.
    pub response_a: &'a str,
    /// The second answer.
    pub response_b: &'a str,
    /// What is compared.
    pub axis: Axis,
}

/// One answer to one conversation, to be judged on its own.
#[derive(Debug, Clone, Copy)]
pub struct ResponseQuery<'a> {
    /// A stable key of the answer (its id).
    pub key: &'a str,
    /// The conversation, ending with the user's request.
    pub conversation: &'a [Message],
    /// The answer.
    pub response: &'a str,
}

/// A judge's verdict on one answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HarmVerdict {
    /// Whether the judge calls it harmful.
    pub harmful: bool,
    /// The judge's score behind the verdict, where it has one (a reward; the oracle's
    /// harmlessness in [0, 1]); higher is less harmful.
    pub score: Option<f64>,
    /// The judge's label of the answer, where it has one (the oracle's kind).
    pub label: Option<String>,
}

/// A judge of answers, batched so that model-based judges make one call per chunk.
pub trait Judge: Send + Sync {
    /// Its name, saved with its comparisons ("oracle", "pm:models/pm").
    fn name(&self) -> String;

    /// For each pair, the probability that `response_a` is the better on the pair's axis:
    /// 1, 0 or 0.5 from a judge that decides, anything in [0, 1] from one that weighs.
    fn prefer(&self, pairs: &[PairQuery<'_>]) -> Result<Vec<f64>>;

    /// Whether [`Judge::harm`] gives verdicts.
    fn gives_harm(&self) -> bool {
        false
    }

    /// Whether each answer is harmful; an error for judges that only compare.
    fn harm(&self, responses: &[ResponseQuery<'_>]) -> Result<Vec<HarmVerdict>> {
        let _ = responses;
        Err(PipelineError::Config(format!(
            "the judge {} only compares answers and gives no harm verdict; use a judge that \
             does (a preference model with a threshold, or the lab's oracle)",
            self.name()
        )))
    }
}

/// σ(x) without overflow.
pub(crate) fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Fail unless a judge returned one answer per query.
pub(crate) fn check_count(judge: &str, found: usize, expected: usize) -> Result<()> {
    if found == expected {
        return Ok(());
    }
    Err(PipelineError::Judge {
        judge: judge.to_owned(),
        source: format!("returned {found} verdicts for {expected} queries").into(),
    })
}
