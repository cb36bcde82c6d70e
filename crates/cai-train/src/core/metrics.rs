//! `metrics.jsonl`: one JSON object per logged step, appended crash-safely, trimmed on resume
//! so that the file reads as if the run had never stopped.

use std::path::{Path, PathBuf};

use cai_core::jsonl::{read_complete_records, write_jsonl_atomic, JsonlWriter};
use serde::{Deserialize, Serialize};

use crate::Result;

/// Which data a record was measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The training batches.
    Train,
    /// The evaluation split.
    Eval,
}

/// One line of `metrics.jsonl`; absent measurements are left out of the line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRecord {
    /// Optimiser updates completed when measured.
    pub step: u64,
    /// Train or eval.
    pub split: Split,
    /// Mean loss per loss-bearing token.
    pub loss: f64,
    /// Learning rate of the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Global gradient norm before clipping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// Training throughput (all tokens of the batches, padding excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    /// Fractional epoch (1.5: half-way through the second epoch), as transformers logs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<f64>,
    /// Method-specific measurements (reward, KL, accuracy, …) as further fields.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl MetricRecord {
    /// A record with only step, split and loss.
    pub fn new(step: u64, split: Split, loss: f64) -> Self {
        Self {
            step,
            split,
            loss,
            lr: None,
            grad_norm: None,
            tokens_per_s: None,
            epoch: None,
            extra: serde_json::Map::new(),
        }
    }
}

/// Appends records to a `metrics.jsonl`, each line flushed as written.
#[derive(Debug)]
pub struct MetricsWriter {
    path: PathBuf,
    writer: JsonlWriter,
}

impl MetricsWriter {
    /// Open `path` for appending (created with its directories if needed); a line cut short
    /// by a crash is removed first.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            writer: JsonlWriter::append(path)?,
        })
    }

    /// Open `path` to continue a run resumed from the checkpoint of `step`: records logged
    /// after that step (by the run that went on and then stopped) are dropped, so the file
    /// matches an uninterrupted run. Records without a numeric `step` are kept.
    pub fn resume(path: &Path, step: u64) -> Result<Self> {
        let records = read_complete_records(path)?;
        let kept: Vec<_> = records
            .iter()
            .filter(|r| {
                r.get("step")
                    .and_then(|s| s.as_u64())
                    .is_none_or(|s| s <= step)
            })
            .collect();
        if kept.len() != records.len() {
            tracing::info!(
                dropped = records.len() - kept.len(),
                "metrics: dropping records logged after the resumed checkpoint"
            );
            write_jsonl_atomic(path, &kept)?;
        }
        Self::open(path)
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one record: a [`MetricRecord`], a `serde_json::Value` or any serialisable
    /// struct (it must serialise to a JSON object to keep the file readable as a table).
    pub fn write(&mut self, record: &impl Serialize) -> Result<()> {
        Ok(self.writer.write(record)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_serialise_without_absent_fields() {
        let mut record = MetricRecord::new(3, Split::Train, 2.5);
        record.lr = Some(1e-3);
        record.extra.insert("reward".into(), json!(0.25));
        assert_eq!(
            serde_json::to_value(&record).unwrap(),
            json!({"step": 3, "split": "train", "loss": 2.5, "lr": 1e-3, "reward": 0.25})
        );
        let back: MetricRecord =
            serde_json::from_value(json!({"step": 3, "split": "eval", "loss": 1.0})).unwrap();
        assert_eq!(back, MetricRecord::new(3, Split::Eval, 1.0));
    }

    #[test]
    fn appends_repairs_and_trims_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/metrics.jsonl");
        let mut writer = MetricsWriter::open(&path).unwrap();
        for step in 1..=4 {
            writer
                .write(&MetricRecord::new(step, Split::Train, 1.0))
                .unwrap();
        }
        writer
            .write(&json!({"step": 2, "split": "eval", "loss": 0.5}))
            .unwrap();
        drop(writer);
        // A crash mid-line.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"step\": 5, \"lo");
        std::fs::write(&path, text).unwrap();

        let mut writer = MetricsWriter::resume(&path, 2).unwrap();
        writer
            .write(&MetricRecord::new(3, Split::Train, 0.9))
            .unwrap();
        let steps: Vec<(u64, String)> = read_complete_records(&path)
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["step"].as_u64().unwrap(),
                    r["split"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let expected = [(1, "train"), (2, "train"), (2, "eval"), (3, "train")];
        assert_eq!(
            steps,
            expected.map(|(s, split)| (s, split.to_owned())).to_vec()
        );
    }
}
