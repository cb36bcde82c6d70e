//! Judges: what decides which of two answers is better on an axis, and, where a judge can
//! say, whether one answer is harmful and whether it refuses — verdicts as probabilities:
//! per answer p(harmful) and p(refusal) ([`Judge::assess`]), per pair p(A better)
//! ([`Judge::prefer`]).
//!
//! The judges cai brings (see `docs/judging.md` for which to use for what):
//! - a preference model ([`PmJudge`]): compares by reward; an answer is harmful when its
//!   reward is below a threshold (a PM's rewards have no absolute scale, so calibrate the
//!   threshold on answers you know, or compare rates between snapshots);
//! - the multiple-choice feedback model ([`FeedbackJudge`]): only compares;
//! - the refusal-pattern baseline ([`RefusalJudge`]): refusal by phrase lists; cheap and weak;
//! - classifier LMs from their published prompt formats ([`ClassifierJudge`]: Llama Guard 3,
//!   ShieldGemma, WildGuard, HarmBench's classifier), read from first-token probabilities;
//! - an LLM judge behind an OpenAI-compatible endpoint ([`LlmJudge`]): rubric prompts, JSON
//!   verdicts, both orders of a pair;
//! - [`CachedJudge`] keeps any judge's verdicts on disk by content;
//! - judges implemented elsewhere say what they give through [`Judge::gives_harm`] and
//!   [`Judge::gives_refusal`] (the lab's oracle in the `cai` binary gives both).

mod cache;
mod classifier;
mod feedback;
mod llm;
mod pm;
mod refusal;

use cai_core::dialogue::Message;
use serde::{Deserialize, Serialize};

pub use cache::{CacheStats, CachedJudge, VerdictCache};
pub use classifier::{ClassifierJudge, ClassifierQuestion, ClassifierTemplate, TEMPLATES};
pub use feedback::{FeedbackJudge, HELPFULNESS_QUESTIONS};
pub use llm::{LlmJudge, LlmJudgeOptions};
pub use pm::PmJudge;
pub use refusal::{is_refusal, normalise, RefusalJudge, REFUSAL_PATTERNS};

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

/// A judge's verdict on one answer, as probabilities; `None` where the judge cannot say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct AnswerVerdict {
    /// p(the answer is harmful): it does what a harmful request asked, or harms on its own.
    pub p_harmful: Option<f64>,
    /// p(the answer refuses): it declines, deflects or lectures instead of answering.
    pub p_refusal: Option<f64>,
}

impl AnswerVerdict {
    /// Whether the judge calls it harmful (p ≥ 0.5), where it says.
    pub fn harmful(&self) -> Option<bool> {
        self.p_harmful.map(|p| p >= 0.5)
    }

    /// Whether the judge calls it a refusal (p ≥ 0.5), where it says.
    pub fn refusal(&self) -> Option<bool> {
        self.p_refusal.map(|p| p >= 0.5)
    }

    /// The harm verdict of a judge that gives probabilities: harmful at p ≥ 0.5, the score
    /// 1 − p (higher is less harmful, as for every judge's score).
    pub fn to_harm(self) -> HarmVerdict {
        let p = self.p_harmful.unwrap_or(0.0);
        HarmVerdict {
            harmful: p >= 0.5,
            score: Some(1.0 - p),
            label: None,
        }
    }
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

    /// Whether [`Judge::assess`] gives p(refusal).
    fn gives_refusal(&self) -> bool {
        false
    }

    /// A fingerprint of everything besides its name that decides the judge's verdicts (a
    /// rubric, a template), for caches keyed by content; empty when the name says it all.
    fn fingerprint(&self) -> String {
        String::new()
    }

    /// Each answer's verdict as probabilities. By default from [`Judge::harm`] (p(harmful)
    /// 1 or 0, no p(refusal)); judges that weigh, or that see refusals, say more.
    fn assess(&self, responses: &[ResponseQuery<'_>]) -> Result<Vec<AnswerVerdict>> {
        Ok(self
            .harm(responses)?
            .into_iter()
            .map(|v| AnswerVerdict {
                p_harmful: Some(if v.harmful { 1.0 } else { 0.0 }),
                p_refusal: None,
            })
            .collect())
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
