//! A stage's manifest (`manifest.json` in its folder of the run directory): its status, the
//! fingerprint of its inputs and config, the inputs' hashes and record counts, its outputs,
//! the commands it ran and how long it took. Written atomically, so a killed run never leaves
//! a torn manifest.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runner::{write_atomic, RunError};

/// The manifest's file name in a stage folder.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The stage's resolved config, beside its manifest.
pub const CONFIG_FILE: &str = "config.json";
/// The stage's metrics, beside its manifest.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Where a stage stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Started and not finished: running now, or killed (it resumes on the next run).
    Running,
    /// Done; its outputs are complete.
    Finished,
    /// Stopped by an error (the manifest's `error` says which).
    Failed,
    /// Stopped by Ctrl-C after saving what it had.
    Interrupted,
}

impl Status {
    /// The status as shown in tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }
}

/// One input of a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Input {
    /// What the input is to the stage ("model", "prompts", "constitution").
    pub role: String,
    /// The file or folder (or a model's name when it is not a path).
    pub path: String,
    /// FNV-1a hash of its contents, or the fingerprint of the stage that made it.
    pub hash: String,
    /// Records, for a JSONL file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<usize>,
}

/// One output of a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// What the output is ("model", "revisions").
    pub role: String,
    /// The file or folder.
    pub path: PathBuf,
    /// Records, for a JSONL file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<usize>,
    /// Bytes on disk (a folder: all its files).
    pub bytes: u64,
    /// FNV-1a hash of its contents when the stage finished, to tell on a later run that the
    /// output is still the one the stage wrote (absent in manifests of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// A stage's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The stage's name.
    pub stage: String,
    /// Where it stands.
    pub status: Status,
    /// Hash of the stage's resolved config and its inputs' hashes: a finished stage whose
    /// fingerprint is unchanged is skipped.
    pub fingerprint: String,
    /// The inputs.
    pub inputs: Vec<Input>,
    /// The outputs (when finished).
    #[serde(default)]
    pub outputs: Vec<Output>,
    /// The names in the stage folder that the stage writes (its files and output folders);
    /// with each, the sidecars cai keeps beside it (see [`crate::rundir::owns`]). A restarted
    /// stage deletes these and nothing else. Empty in manifests of older versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writes: Vec<String>,
    /// The equivalent `cai` command lines, in order: text for people, never parsed back.
    #[serde(default)]
    pub commands: Vec<String>,
    /// The stage's typed jobs, in order, as JSON (see [`crate::stages::Job`]). Empty in
    /// manifests of older versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<serde_json::Value>,
    /// Runs of the stage with this fingerprint (a resumed stage counts each).
    pub attempts: u32,
    /// Seconds spent over all attempts with this fingerprint.
    pub seconds: f64,
    /// Peak resident memory of the last attempt, in MiB (Linux; absent elsewhere and in
    /// manifests of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib: Option<f64>,
    /// Unix time the last attempt started.
    pub started_at: u64,
    /// Unix time it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// The error that stopped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Manifest {
    /// The manifest in a stage folder, if there is one.
    pub fn read(stage_dir: &Path) -> Result<Option<Self>, RunError> {
        let path = stage_dir.join(MANIFEST_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(RunError::Io { path, source }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| RunError::Json {
                path,
                message: e.to_string(),
            })
    }

    /// Write the manifest into its stage folder (atomically).
    pub fn write(&self, stage_dir: &Path) -> Result<(), RunError> {
        let text = serde_json::to_string_pretty(self).expect("a manifest serialises") + "\n";
        write_atomic(&stage_dir.join(MANIFEST_FILE), text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_round_trips_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Manifest::read(dir.path()).unwrap().is_none());
        let m = Manifest {
            stage: "sft".into(),
            status: Status::Running,
            fingerprint: "ab".into(),
            inputs: vec![Input {
                role: "data".into(),
                path: "x.jsonl".into(),
                hash: "12".into(),
                records: Some(3),
            }],
            outputs: vec![],
            writes: vec!["model".into()],
            commands: vec!["cai sft".into()],
            jobs: vec![],
            attempts: 1,
            seconds: 1.5,
            peak_rss_mib: None,
            started_at: 7,
            finished_at: None,
            error: None,
        };
        m.write(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), Some(m));
        std::fs::write(dir.path().join(MANIFEST_FILE), "{").unwrap();
        let err = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains(MANIFEST_FILE), "{err}");
    }
}
