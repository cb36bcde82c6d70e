//! `cai lab eval` as a library call: measure any [`LanguageModel`] — local or remote — on
//! the world's held-out prompt sets, judged by the [`Oracle`]. The lab is a model, data and
//! a judge; nothing here depends on how the model runs.
//!
//! Measures (each over at most [`EvalOptions::max_items`] items):
//! - red-team held-out prompts, rendered `"\n\nHuman: {prompt}\n\nAssistant:"`: the shares
//!   of harmful, harmless-helpful and evasive answers, without context, and the share of
//!   harmful answers with the HHH context as the request's prefix;
//! - benign held-out prompts: the share of helpful answers;
//! - critiques: the world's own harmful answer to a red-team prompt, followed by a critique
//!   request of the lab constitution; the share of critiques that name the harm;
//! - multiple choice: comparisons on held-out prompts labelled by the oracle, answered by
//!   comparing the log-probabilities of `" (A)"` and `" (B)"`; the share that agree.

mod measures;
#[cfg(test)]
mod tests;

use cai_core::{LanguageModel, Sampling};
use serde::{Deserialize, Serialize};

use crate::context::hhh_context;
use crate::multiple_choice::McLayout;
use crate::oracle::Oracle;
use crate::prompt_sets::{prompt_set, PromptRecord, PromptSet};
use crate::responses::ResponseKind;
use crate::world::World;
use crate::LabError;

/// The default token budget of an answer or a critique.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 96;

/// Strings that end an answer or a critique: the next turn of the paper's transcripts.
pub const STOP_STRINGS: [&str; 4] = [
    "\n\nHuman:",
    "\n\nAssistant:",
    "\n\nCritiqueRequest:",
    "\n\nRevisionRequest:",
];

/// Distinct requests per held-out task when the prompt sets are built from the world (as
/// `cai lab generate` does by default).
pub const DEFAULT_PROMPTS_PER_TASK: usize = 4;

/// What to evaluate on and how to sample.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Red-team (harmful) held-out prompts.
    pub red_team: Vec<PromptRecord>,
    /// Benign held-out prompts.
    pub benign: Vec<PromptRecord>,
    /// The HHH context put in front of the prompts of `harmful_rate_with_context`.
    pub context: String,
    /// Token budget of each answer and critique.
    pub max_new_tokens: usize,
    /// Strings that end an answer or a critique.
    pub stop: Vec<String>,
    /// How answers and critiques are sampled (greedy by default).
    pub sampling: Sampling,
    /// Run seed: each request's sampler and each item's made-up answers derive from it.
    pub seed: u64,
    /// At most this many items per measure (`None`: every prompt), spread over the set.
    pub max_items: Option<usize>,
    /// Requests per generation or scoring call.
    pub batch_size: usize,
    /// Layout of the multiple-choice questions.
    pub mc_layout: McLayout,
}

impl EvalOptions {
    /// The defaults for `world`: its held-out prompt sets ([`DEFAULT_PROMPTS_PER_TASK`] per
    /// task), its HHH context, [`DEFAULT_MAX_NEW_TOKENS`], [`STOP_STRINGS`], greedy
    /// decoding, seed 0 and no cap.
    pub fn new(world: &World) -> Self {
        Self {
            red_team: prompt_set(world, PromptSet::RedTeamHeldOut, DEFAULT_PROMPTS_PER_TASK),
            benign: prompt_set(world, PromptSet::BenignHeldOut, DEFAULT_PROMPTS_PER_TASK),
            context: hhh_context(world),
            max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
            stop: STOP_STRINGS.iter().map(|s| (*s).to_owned()).collect(),
            sampling: Sampling::greedy(),
            seed: 0,
            max_items: None,
            batch_size: 32,
            mc_layout: McLayout::Plain,
        }
    }

    fn validate(&self) -> Result<(), LabError> {
        let bad = |what: &str| Err(LabError::Config(what.to_owned()));
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens 0: expected at least 1");
        }
        if self.batch_size == 0 {
            return bad("batch_size 0: expected at least 1");
        }
        if self.max_items == Some(0) {
            return bad("max_items 0: expected at least 1 item per measure");
        }
        if self.red_team.is_empty() || self.benign.is_empty() {
            return bad("empty prompt sets: expected red-team and benign held-out prompts");
        }
        Ok(())
    }
}

/// The figures of one evaluation; every rate is in [0, 1] (0 where a measure has no items).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabReport {
    /// The world's seed.
    pub world_seed: u64,
    /// Share of red-team prompts answered harmfully, without context.
    pub harmful_rate: f64,
    /// Share of red-team prompts answered harmfully after the HHH context.
    pub harmful_rate_with_context: f64,
    /// Share of red-team prompts answered harmless-helpfully, without context.
    pub harmless_helpful_rate: f64,
    /// Share of red-team prompts answered evasively, without context.
    pub evasive_rate: f64,
    /// Share of benign prompts answered helpfully.
    pub helpful_rate: f64,
    /// Share of critiques of harmful answers that name the harm.
    pub critique_hit_rate: f64,
    /// Share of multiple-choice comparisons where the model prefers the oracle's choice.
    pub mc_accuracy: f64,
    /// Red-team prompts answered without context.
    pub red_team_items: usize,
    /// Red-team prompts answered after the HHH context.
    pub red_team_with_context_items: usize,
    /// Benign prompts answered.
    pub benign_items: usize,
    /// Critiques generated.
    pub critique_items: usize,
    /// Multiple-choice comparisons scored.
    pub mc_items: usize,
}

/// Measure `model` on the held-out sets of `opts`, judged by the oracle of `world`.
pub fn evaluate(
    model: &dyn LanguageModel,
    world: &World,
    opts: &EvalOptions,
) -> Result<LabReport, LabError> {
    opts.validate()?;
    let oracle = Oracle::new(world);
    let red_team = pick(&opts.red_team, opts.max_items);
    let benign = pick(&opts.benign, opts.max_items);
    let run = measures::Runner { model, opts };

    let answers = run.answers(&red_team, "")?;
    let kinds = measures::judge_all(&oracle, &red_team, &answers)?;
    let with_context = run.answers(&red_team, &opts.context)?;
    let context_kinds = measures::judge_all(&oracle, &red_team, &with_context)?;
    let benign_answers = run.answers(&benign, "")?;
    let benign_kinds = measures::judge_all(&oracle, &benign, &benign_answers)?;
    let critique_hits = run.critiques(world, &oracle, &red_team)?;
    let mc_items: Vec<PromptRecord> = interleave(&opts.red_team, &opts.benign);
    let mc_hits = run.multiple_choice(world, &oracle, &pick(&mc_items, opts.max_items))?;

    use ResponseKind::*;
    Ok(LabReport {
        world_seed: world.seed(),
        harmful_rate: share(&kinds, Harmful),
        harmful_rate_with_context: share(&context_kinds, Harmful),
        harmless_helpful_rate: share(&kinds, HarmlessHelpful),
        evasive_rate: share(&kinds, Evasive),
        helpful_rate: share(&benign_kinds, Helpful),
        critique_hit_rate: hit_rate(&critique_hits),
        mc_accuracy: hit_rate(&mc_hits),
        red_team_items: kinds.len(),
        red_team_with_context_items: context_kinds.len(),
        benign_items: benign_kinds.len(),
        critique_items: critique_hits.len(),
        mc_items: mc_hits.len(),
    })
}

/// Share of answers of `kind` (0 for none).
fn share(kinds: &[ResponseKind], kind: ResponseKind) -> f64 {
    let hits: Vec<bool> = kinds.iter().map(|k| *k == kind).collect();
    hit_rate(&hits)
}

/// Share of `true`s (0 for none).
fn hit_rate(hits: &[bool]) -> f64 {
    if hits.is_empty() {
        return 0.0;
    }
    hits.iter().filter(|h| **h).count() as f64 / hits.len() as f64
}

/// At most `max` records, evenly spaced over `records` (so that a cap still covers many
/// tasks: the sets list each task's prompts together).
fn pick(records: &[PromptRecord], max: Option<usize>) -> Vec<PromptRecord> {
    let n = max.map_or(records.len(), |m| m.min(records.len()));
    (0..n)
        .map(|i| records[i * records.len() / n].clone())
        .collect()
}

/// `a[0], b[0], a[1], b[1], …`, then the rest of the longer list.
fn interleave(a: &[PromptRecord], b: &[PromptRecord]) -> Vec<PromptRecord> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    for i in 0..a.len().max(b.len()) {
        out.extend(a.get(i).cloned());
        out.extend(b.get(i).cloned());
    }
    out
}
