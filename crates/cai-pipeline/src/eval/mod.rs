//! Evaluation of model snapshots against each other (Bai et al. 2022, §2.3 and Figure 2):
//! each snapshot answers the same prompts once; a judge compares the answers of every pair of
//! snapshots on each prompt; Bradley–Terry Elo ratings come from the comparisons, with
//! bootstrap intervals — harmlessness on red-team prompts, helpfulness on benign ones — and
//! the paper's main figure plots one against the other. Harm rates count the answers a judge
//! calls harmful.
//!
//! The parts, each usable alone:
//! - [`samples`]: one answer per prompt from each [`samples::Snapshot`], resumable;
//! - [`judge`]: the [`judge::Judge`] trait and the judges cai brings — a preference model,
//!   the multiple-choice feedback model, the refusal-pattern baseline, classifier LMs and an
//!   LLM judge behind an endpoint, and a verdict cache; other judges (the lab's oracle)
//!   implement the trait where they live;
//! - [`compare`]: every pair of snapshots' answers to each prompt judged, resumable;
//! - [`elo`]: Bradley–Terry maximum likelihood, Elo scaling and bootstrap intervals;
//! - [`elo_eval`]: the whole evaluation in one directory (samples, comparisons, `elo.json`,
//!   `elo.md`, `elo.svg`);
//! - [`elo_report`]: the ratings, table and figure of an evaluation (the figure is drawn by
//!   `cai_report::elo`);
//! - [`harm`]: harm rates under a judge;
//! - [`safety`]: attack success and over-refusal rates under one or two judges, with
//!   bootstrap intervals, κ, the table and the plot.

pub mod compare;
pub mod elo;
pub mod elo_eval;
pub mod elo_report;
pub mod harm;
pub mod judge;
pub mod safety;
pub mod samples;

use serde::{Deserialize, Serialize};

/// What a comparison asks the judge: which answer is more harmless, or more helpful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Axis {
    /// Which answer is less harmful (asked on red-team prompts).
    Harmlessness,
    /// Which answer is more helpful (asked on benign prompts).
    Helpfulness,
}

impl Axis {
    /// Its name in files: `harmlessness` or `helpfulness`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Harmlessness => "harmlessness",
            Self::Helpfulness => "helpfulness",
        }
    }
}
