//! The outcome of an Elo evaluation (`elo.json`): every snapshot's rating per prompt set and
//! its harm rate, as a Markdown table (`elo.md`) and the harmlessness-against-helpfulness
//! figure (`elo.svg`).

use std::fmt::Write as _;

use cai_report::elo::{elo_svg, PlotPoint};
use serde::{Deserialize, Serialize};

use super::elo::{whole_elo, EloSettings, Rating};
use super::harm::HarmSummary;
use super::Axis;
use crate::{PipelineError, Result};

/// One snapshot's rating on one axis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRating {
    /// The snapshot.
    pub snapshot: String,
    /// Its rating.
    #[serde(flatten)]
    pub rating: Rating,
}

/// The ratings on one prompt set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AxisRatings {
    /// The set.
    pub set: String,
    /// What its comparisons asked.
    pub axis: Axis,
    /// Prompts with at least one comparison.
    pub prompts: usize,
    /// Comparisons used.
    pub comparisons: usize,
    /// Every snapshot's rating, in the snapshots' order.
    pub ratings: Vec<SnapshotRating>,
}

/// A snapshot's harm rate on a harmlessness set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotHarm {
    /// The snapshot.
    pub snapshot: String,
    /// The set.
    pub set: String,
    /// Its harm rate.
    #[serde(flatten)]
    pub summary: HarmSummary,
}

/// The outcome of an evaluation: `elo.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EloReport {
    /// The judge's name.
    pub judge: String,
    /// The snapshot at 0 Elo.
    pub reference: String,
    /// The snapshots, in the order given.
    pub snapshots: Vec<String>,
    /// How the ratings were fitted.
    pub settings: EloSettings,
    /// The ratings per set.
    pub axes: Vec<AxisRatings>,
    /// Harm rates on the harmlessness sets (empty when the judge gives no harm verdict).
    pub harm: Vec<SnapshotHarm>,
}

impl EloReport {
    /// The rating of `snapshot` on the first set of `axis`.
    pub fn rating(&self, axis: Axis, snapshot: &str) -> Option<&Rating> {
        self.axes
            .iter()
            .find(|a| a.axis == axis)?
            .ratings
            .iter()
            .find(|r| r.snapshot == snapshot)
            .map(|r| &r.rating)
    }

    /// The table: one row per snapshot, a column per set with Elo and interval, and the harm
    /// rate where there is one.
    pub fn markdown(&self) -> String {
        let level = (self.settings.confidence * 100.0).round();
        let mut text = format!(
            "# Elo of {} snapshots\n\nJudge: {}. Bradley–Terry maximum likelihood, {} at 0; \
             {level} % intervals from {} bootstrap resamples of the prompts.\n\n",
            self.snapshots.len(),
            self.judge,
            self.reference,
            self.settings.bootstrap
        );
        let mut header = "| snapshot |".to_owned();
        let mut rule = "|---|".to_owned();
        for axis in &self.axes {
            let _ = write!(
                header,
                " {} Elo ({}, {} prompts) | win rate |",
                axis.axis.name(),
                axis.set,
                axis.prompts
            );
            rule.push_str("---:|---:|");
        }
        let harm_sets: Vec<&str> = self
            .axes
            .iter()
            .filter(|a| self.harm.iter().any(|h| h.set == a.set))
            .map(|a| a.set.as_str())
            .collect();
        for set in &harm_sets {
            let _ = write!(header, " harm rate ({set}) |");
            rule.push_str("---:|");
        }
        let _ = writeln!(text, "{header}\n{rule}");
        for snapshot in &self.snapshots {
            let mut row = format!("| {snapshot} |");
            for axis in &self.axes {
                let rating = axis.ratings.iter().find(|r| &r.snapshot == snapshot);
                match rating.map(|r| &r.rating) {
                    Some(r) => {
                        let interval = match (r.lo, r.hi) {
                            (Some(lo), Some(hi)) => {
                                format!(" [{:.0}, {:.0}]", whole_elo(lo), whole_elo(hi))
                            }
                            _ => String::new(),
                        };
                        let win = r
                            .win_rate
                            .map_or("–".into(), |w| format!("{:.1} %", 100.0 * w));
                        let _ = write!(row, " {:.0}{interval} | {win} |", whole_elo(r.elo));
                    }
                    None => row.push_str(" – | – |"),
                }
            }
            for set in &harm_sets {
                match self
                    .harm
                    .iter()
                    .find(|h| &h.set == set && &h.snapshot == snapshot)
                {
                    Some(h) => {
                        let _ = write!(
                            row,
                            " {:.1} % ({}/{}) |",
                            100.0 * h.summary.harm_rate,
                            h.summary.harmful,
                            h.summary.responses
                        );
                    }
                    None => row.push_str(" – |"),
                }
            }
            let _ = writeln!(text, "{row}");
        }
        for axis in &self.axes {
            let _ = write!(
                text,
                "\n{} comparisons on {} ({}).",
                axis.comparisons,
                axis.set,
                axis.axis.name()
            );
        }
        text.push('\n');
        text
    }

    /// The harmlessness-against-helpfulness figure, when both axes were rated.
    pub fn svg(&self) -> Result<Option<String>> {
        let (Some(_), Some(_)) = (
            self.axes.iter().find(|a| a.axis == Axis::Helpfulness),
            self.axes.iter().find(|a| a.axis == Axis::Harmlessness),
        ) else {
            return Ok(None);
        };
        let points: Vec<PlotPoint> = self
            .snapshots
            .iter()
            .filter_map(|s| {
                let plotted = |axis| {
                    let r: &Rating = self.rating(axis, s)?;
                    Some(cai_report::elo::Rating {
                        elo: r.elo,
                        lo: r.lo,
                        hi: r.hi,
                    })
                };
                Some(PlotPoint {
                    name: s.clone(),
                    helpfulness: plotted(Axis::Helpfulness)?,
                    harmlessness: plotted(Axis::Harmlessness)?,
                })
            })
            .collect();
        let title = format!("Harmlessness vs helpfulness Elo (judge: {})", self.judge);
        elo_svg(&points, &title)
            .map(Some)
            .map_err(|message| PipelineError::Plot {
                figure: "elo.svg".into(),
                message,
            })
    }
}
