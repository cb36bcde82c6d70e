//! A safety evaluation in one directory, resumable at every step: `samples/red_team.jsonl`
//! and `samples/benign.jsonl` (each snapshot's answer to each prompt, seeded per prompt id),
//! `verdicts.jsonl` (one browsable record per judge, snapshot and prompt: the request, the
//! answer, p(harmful) and p(refusal)), and the figures `safety.json`, `safety.md` and
//! `safety.svg`, written last. `safety_config.json` records the sampling, judges, seed and
//! snapshots; a rerun with the same settings adds only what is missing.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use cai_core::jsonl::{read_complete_records, JsonlWriter};
use cai_core::lock::WriterLock;
use serde::{Deserialize, Serialize};

use super::sets::{request_text, SafetySet, SetKind, SetPrompt};
use crate::eval::judge::{Judge, ResponseQuery};
use crate::eval::samples::{
    check_snapshot_name, read_samples, sample_id, sample_snapshot, SampleRecord, SampleSettings,
    Snapshot,
};
use crate::{PipelineError, Result};

/// The evaluation's settings file.
pub const CONFIG_FILE: &str = "safety_config.json";
/// The per-item verdicts.
pub const VERDICTS_FILE: &str = "verdicts.jsonl";
/// Everything an evaluation writes in its directory (and so may remove on overwrite).
pub const OWN_NAMES: [&str; 6] = [
    "samples",
    VERDICTS_FILE,
    "safety.json",
    "safety.md",
    "safety.svg",
    CONFIG_FILE,
];

/// What a safety evaluation was run with; saved as `safety_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SafetyEvalConfig {
    /// How answers are sampled.
    pub samples: SampleSettings,
    /// The judges' names, in order.
    pub judges: Vec<String>,
    /// The run seed (answers and bootstrap).
    pub seed: u64,
    /// Each snapshot's model, by name.
    pub snapshots: BTreeMap<String, String>,
}

/// One judge's verdict on one snapshot's answer to one prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictRecord {
    /// `"{judge}|{set}|{snapshot}|{prompt_id}"`.
    pub id: String,
    /// The judge's name.
    pub judge: String,
    /// `red_team` or `benign`.
    pub set: String,
    /// The snapshot's name.
    pub snapshot: String,
    /// The prompt's id.
    pub prompt_id: String,
    /// The prompt's category.
    pub category: String,
    /// Whether the prompt should be answered (false for red-team prompts and the unsafe
    /// contrast prompts of an over-refusal set).
    pub safe: bool,
    /// The user's request.
    pub prompt: String,
    /// The answer.
    pub response: String,
    /// p(harmful), where the judge says.
    pub p_harmful: Option<f64>,
    /// p(refusal), where the judge says.
    pub p_refusal: Option<f64>,
}

/// The id of a verdict record.
pub fn verdict_id(judge: &str, set: SetKind, snapshot: &str, prompt_id: &str) -> String {
    format!("{judge}|{}|{snapshot}|{prompt_id}", set.name())
}

/// An open safety evaluation directory, locked for writing.
pub struct SafetyEval {
    dir: PathBuf,
    _lock: WriterLock,
}

impl SafetyEval {
    /// Open `dir` (created if missing) for an evaluation with `config`. With `overwrite`,
    /// what an earlier evaluation wrote there is removed first; otherwise an earlier
    /// evaluation must have used the same sampling, judges and seed, and the same model for
    /// every snapshot name both use (new snapshots are added). Only a directory an
    /// evaluation made (it holds `safety_config.json`) is ever cleared.
    pub fn open(dir: &Path, config: &SafetyEvalConfig, overwrite: bool) -> Result<Self> {
        for name in config.snapshots.keys() {
            check_snapshot_name(name)?;
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| cai_core::Error::Io { path, source }
        };
        let lock = WriterLock::acquire(dir)?;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let config_path = dir.join(CONFIG_FILE);
        if !config_path.exists() {
            let foreign: Vec<&str> = OWN_NAMES
                .into_iter()
                .filter(|name| dir.join(name).exists())
                .collect();
            if !foreign.is_empty() {
                return Err(PipelineError::Config(format!(
                    "{} holds {} but no {CONFIG_FILE}, so it is not a folder cai eval safety \
                     made; cai leaves it as it is: choose another output folder",
                    dir.display(),
                    foreign.join(", ")
                )));
            }
        }
        let mut merged = config.clone();
        if overwrite {
            for name in OWN_NAMES {
                let path = dir.join(name);
                if path.is_dir() {
                    std::fs::remove_dir_all(&path).map_err(io(&path))?;
                } else if path.exists() {
                    std::fs::remove_file(&path).map_err(io(&path))?;
                }
            }
        } else if config_path.exists() {
            let text = std::fs::read_to_string(&config_path).map_err(io(&config_path))?;
            let saved: SafetyEvalConfig = serde_json::from_str(&text).map_err(|e| {
                cai_core::Error::file(
                    &config_path,
                    format!("{e}; expected the settings of an earlier cai eval safety"),
                )
            })?;
            let mut differing = Vec::new();
            if saved.samples != config.samples {
                differing.push("sampling".to_owned());
            }
            if saved.judges != config.judges {
                differing.push(format!(
                    "judges were {}, now {}",
                    saved.judges.join(", "),
                    config.judges.join(", ")
                ));
            }
            if saved.seed != config.seed {
                differing.push(format!("seed was {}, now {}", saved.seed, config.seed));
            }
            for (name, model) in &config.snapshots {
                if let Some(before) = saved.snapshots.get(name).filter(|b| *b != model) {
                    differing.push(format!("snapshot {name} was {before}, now {model}"));
                }
            }
            if !differing.is_empty() {
                return Err(PipelineError::Config(format!(
                    "{} holds an evaluation with other settings ({}; see {}); rerun with the \
                     same settings, pass --overwrite, or choose another directory",
                    dir.display(),
                    differing.join("; "),
                    config_path.display()
                )));
            }
            for (name, model) in saved.snapshots {
                merged.snapshots.entry(name).or_insert(model);
            }
        }
        std::fs::create_dir_all(dir.join("samples")).map_err(io(&dir.join("samples")))?;
        let json = serde_json::to_string_pretty(&merged).expect("configs serialise") + "\n";
        cai_model::write_atomic(&config_path, json.as_bytes())
            .map_err(|e| PipelineError::Config(format!("{}: {e}", config_path.display())))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a set's answers are kept.
    pub fn samples_path(&self, set: SetKind) -> PathBuf {
        self.dir
            .join("samples")
            .join(format!("{}.jsonl", set.name()))
    }

    /// The snapshot's answers to the set's prompts, those not yet sampled added
    /// `batch_size` per call; returns how many were sampled now.
    pub fn sample(
        &self,
        snapshot: &Snapshot<'_>,
        set: &SafetySet,
        settings: &SampleSettings,
        batch_size: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<usize> {
        sample_snapshot(
            snapshot,
            &set.plain_prompts(),
            settings,
            batch_size,
            &self.samples_path(set.kind),
            progress,
        )
    }

    /// Every complete verdict record.
    pub fn verdicts(&self) -> Result<Vec<VerdictRecord>> {
        let path = self.dir.join(VERDICTS_FILE);
        read_complete_records(&path)?
            .into_iter()
            .enumerate()
            .map(|(i, value)| {
                serde_json::from_value(value).map_err(|e| {
                    PipelineError::Config(format!(
                        "{}: record {}: {e}; expected a verdict written by cai eval safety",
                        path.display(),
                        i + 1
                    ))
                })
            })
            .collect()
    }

    /// The answers of `snapshots` to `set` that `judge` has not judged yet (each answer must
    /// have been sampled).
    pub fn missing_verdicts<'s>(
        &self,
        judge: &str,
        set: &'s SafetySet,
        snapshots: &[String],
    ) -> Result<Vec<(&'s SetPrompt, SampleRecord)>> {
        let done: HashSet<String> = self.verdicts()?.into_iter().map(|v| v.id).collect();
        let mut samples = read_samples(&self.samples_path(set.kind))?;
        let mut missing = Vec::new();
        for snapshot in snapshots {
            for p in &set.prompts {
                if done.contains(&verdict_id(judge, set.kind, snapshot, &p.prompt.id)) {
                    continue;
                }
                let sample = samples
                    .remove(&sample_id(snapshot, &p.prompt.id))
                    .ok_or_else(|| {
                        PipelineError::Config(format!(
                            "{}: no answer of {snapshot} to prompt {}; sample before judging",
                            self.samples_path(set.kind).display(),
                            p.prompt.id
                        ))
                    })?;
                missing.push((p, sample));
            }
        }
        Ok(missing)
    }

    /// Judge what `judge` has not judged yet of `snapshots`' answers to `set`,
    /// `batch_size` answers per call, each chunk appended and synced before the next;
    /// `progress` hears how many each chunk finished. Returns how many were judged now.
    pub fn judge(
        &self,
        judge: &dyn Judge,
        set: &SafetySet,
        snapshots: &[String],
        batch_size: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<usize> {
        let name = judge.name();
        let missing = self.missing_verdicts(&name, set, snapshots)?;
        if missing.is_empty() {
            return Ok(0);
        }
        let mut writer = JsonlWriter::append(&self.dir.join(VERDICTS_FILE))?;
        for chunk in missing.chunks(batch_size.max(1)) {
            let queries: Vec<ResponseQuery<'_>> = chunk
                .iter()
                .map(|(_, s)| ResponseQuery {
                    key: &s.id,
                    conversation: &s.conversation,
                    response: &s.response,
                })
                .collect();
            let verdicts = judge.assess(&queries)?;
            crate::eval::judge::check_count(&name, verdicts.len(), chunk.len())?;
            for ((p, s), v) in chunk.iter().zip(verdicts) {
                writer.write(&VerdictRecord {
                    id: verdict_id(&name, set.kind, &s.snapshot, &p.prompt.id),
                    judge: name.clone(),
                    set: set.kind.name().to_owned(),
                    snapshot: s.snapshot.clone(),
                    prompt_id: p.prompt.id.clone(),
                    category: p.category.clone(),
                    safe: set.kind == SetKind::Benign && p.safe,
                    prompt: request_text(&p.prompt.messages).to_owned(),
                    response: s.response.clone(),
                    p_harmful: v.p_harmful,
                    p_refusal: v.p_refusal,
                })?;
            }
            writer.sync()?;
            progress(chunk.len());
        }
        Ok(missing.len())
    }

    /// Write a figure file atomically.
    pub fn write_file(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        cai_model::write_atomic(&path, text.as_bytes())
            .map_err(|e| PipelineError::Config(format!("{}: {e}", path.display())))?;
        Ok(path)
    }
}
