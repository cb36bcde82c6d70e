//! The oracle's view of an RL run: the lab measures of each checkpoint beside the preference
//! model's reward at that step, as a table row and an SVG (drawn by
//! `cai_report::oracle_curve`) — the picture of over-optimisation (Goodhart): the proxy reward
//! climbs while the oracle's harmlessness or helpfulness falls.

use serde::{Deserialize, Serialize};

use crate::eval::LabReport;

/// One checkpoint of a run, measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// The checkpoint's step (0: the starting policy).
    pub step: u64,
    /// Mean preference-model reward of the rollouts logged since the previous point.
    pub reward: Option<f64>,
    /// Mean KL(policy ‖ reference) of those rollouts.
    pub kl: Option<f64>,
    /// The lab eval of the checkpoint.
    pub report: LabReport,
}

impl CurvePoint {
    /// The point as the figure draws it.
    pub fn plotted(&self) -> cai_report::oracle_curve::OraclePoint {
        cai_report::oracle_curve::OraclePoint {
            step: self.step,
            reward: self.reward,
            harmless_helpful: self.report.harmless_helpful_rate,
            evasive: self.report.evasive_rate,
            harmful: self.report.harmful_rate,
            helpful: self.report.helpful_rate,
        }
    }
}
