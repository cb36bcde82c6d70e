//! The output directory of a training command (`cai sft`, `cai distill`): what an earlier run
//! left there, and what `--resume` and `--overwrite` do about it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use cai_core::lock::WriterLock;
use cai_model::lora::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
use cai_train::core::checkpoint::{latest_checkpoint, TRAINING_CONFIG_FILE};
use cai_train::core::resume::CHANGEABLE;
use cai_train::TrainError;
use serde_json::Value;

use crate::interrupt::lower_rate_command;

use crate::usage::{ensure, UsageError};

/// Where the trainers keep their resumable checkpoints, inside `--output`.
pub(crate) const CHECKPOINTS_DIR: &str = "checkpoints";
/// The trainers' log of every step, inside `--output`.
pub(crate) const METRICS_FILE: &str = "metrics.jsonl";

/// A training command's output directory and what it writes there.
pub(crate) struct TrainOutput<'a> {
    /// `--output`.
    pub output: &'a Path,
    /// The model trained from (never the output).
    pub model_dir: &'a Path,
    /// The key of the method's settings in a checkpoint's training config (`"sft"`).
    pub method: &'static str,
    /// The method's settings now, to compare with a checkpoint's.
    pub settings: Value,
    /// The resolved config the trainer writes beside its outputs (`sft_config.json`).
    pub config_file: &'static str,
    /// Further files of the method, removed by `--overwrite` (`teacher_samples.jsonl`).
    pub extra_files: &'static [&'static str],
    /// The settings (and `data`) a resume may change: `--allow-config-change`.
    pub allow_changes: &'a [String],
}

impl TrainOutput<'_> {
    /// Take the output directory's writer lock, held for the whole run (so a second
    /// trainer on the same `--output` fails at once, naming this process), then run
    /// `--resume`/`--overwrite` against the directory: see [`prepare_output`].
    pub(crate) fn prepare(&self, earlier: Earlier) -> anyhow::Result<(Plan, WriterLock)> {
        let lock = WriterLock::acquire(self.output)?;
        Ok((prepare_output(self, earlier)?, lock))
    }
}

/// A trainer's error for the user: a divergence gets the command that goes on at a lower
/// learning rate than `lr`. From the last good checkpoint, that is the rate the checkpoint was
/// trained with (read from its settings under `method`) when that was lower, else a tenth of
/// `lr`; without one, the command starts again at a tenth of `lr`.
pub(crate) fn explain(err: TrainError, method: &str, lr: f64) -> anyhow::Error {
    let TrainError::Diverged { last_good, .. } = &err else {
        return err.into();
    };
    let Some(dir) = last_good else {
        return match lower_rate_command(lr / 10.0, false) {
            Some(command) => {
                anyhow::anyhow!("{err}\nto start again at a tenth of the rate: {command}")
            }
            None => err.into(),
        };
    };
    let trained_with = std::fs::read_to_string(dir.join(TRAINING_CONFIG_FILE))
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|config| config.get(method)?.get("learning_rate")?.as_f64())
        .filter(|&saved| saved < lr);
    let (lower, why) = match trained_with {
        Some(saved) => (saved, "at the rate that trained well"),
        None => (lr / 10.0, "at a tenth of the rate"),
    };
    match lower_rate_command(lower, true) {
        Some(command) => anyhow::anyhow!("{err}\nto resume {why}: {command}"),
        None => err.into(),
    }
}

/// What to do about an earlier run in `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Earlier {
    /// Refuse to touch an earlier run (neither flag).
    Keep,
    /// `--resume`.
    Resume,
    /// `--overwrite`.
    Overwrite,
}

/// What an earlier run left in the output directory.
struct OutputState {
    /// The finished model's weights file, if the run finished.
    finished: Option<&'static str>,
    /// The newest complete checkpoint.
    checkpoint: Option<PathBuf>,
    /// Whether a run started here (it logged metrics or saved its config).
    started: bool,
}

impl OutputState {
    fn read(output: &Path, config_file: &str) -> anyhow::Result<Self> {
        let finished = ["model.safetensors", ADAPTER_WEIGHTS_FILE]
            .into_iter()
            .find(|name| output.join(name).is_file());
        let checkpoint = latest_checkpoint(&output.join(CHECKPOINTS_DIR))?;
        let started = output.join(METRICS_FILE).exists() || output.join(config_file).exists();
        Ok(Self {
            finished,
            checkpoint,
            started,
        })
    }
}

/// What to do before training.
pub(crate) enum Plan {
    /// Train (afresh, or from a checkpoint when resuming).
    Train,
    /// `--resume` of a run that already finished: nothing to do.
    AlreadyFinished(&'static str),
}

/// Check `--output` against what is already there and the `--resume`/`--overwrite` choice;
/// with `--overwrite`, delete what an earlier run wrote.
fn prepare_output(target: &TrainOutput, earlier: Earlier) -> anyhow::Result<Plan> {
    let output = target.output;
    if let (Ok(a), Ok(b)) = (output.canonicalize(), target.model_dir.canonicalize()) {
        ensure(a != b, || {
            format!(
                "--output {} is the --model directory; choose another directory",
                output.display()
            )
        })?;
    }
    let state = OutputState::read(output, target.config_file)?;
    match earlier {
        Earlier::Overwrite => {
            remove_earlier_run(target)?;
            Ok(Plan::Train)
        }
        Earlier::Resume => match (&state.checkpoint, state.finished) {
            (_, Some(weights)) => Ok(Plan::AlreadyFinished(weights)),
            (Some(checkpoint), None) => {
                check_same_settings(checkpoint, target)?;
                Ok(Plan::Train)
            }
            (None, None) if state.started => Err(UsageError(format!(
                "{} holds no checkpoint to resume from ({}/ is empty; set --save-every to \
                 checkpoint during a run); pass --overwrite to start again",
                output.display(),
                output.join(CHECKPOINTS_DIR).display()
            ))
            .into()),
            (None, None) => {
                eprintln!(
                    "no checkpoint in {}; starting a new run",
                    output.join(CHECKPOINTS_DIR).display()
                );
                Ok(Plan::Train)
            }
        },
        Earlier::Keep => match (&state.checkpoint, state.finished) {
            (_, Some(weights)) => Err(UsageError(format!(
                "{} already holds a fine-tuned model ({weights}); pass --overwrite to replace \
                 it, or choose another --output",
                output.display()
            ))
            .into()),
            (Some(checkpoint), None) => Err(UsageError(format!(
                "{} holds an unfinished run (newest checkpoint {}); pass --resume to continue \
                 it, or --overwrite to start again",
                output.display(),
                checkpoint.display()
            ))
            .into()),
            (None, None) if state.started => Err(UsageError(format!(
                "{} holds the logs of an earlier run ({METRICS_FILE}); pass --overwrite to \
                 start again, or choose another --output",
                output.display()
            ))
            .into()),
            (None, None) => Ok(Plan::Train),
        },
    }
}

/// Refuse to resume with other settings than the checkpoint's, naming those that differ (the
/// trainer refuses too, but without saying which).
fn check_same_settings(checkpoint: &Path, target: &TrainOutput) -> anyhow::Result<()> {
    let path = checkpoint.join(TRAINING_CONFIG_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let saved: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let (Some(Value::Object(saved)), Value::Object(now)) =
        (saved.get(target.method), &target.settings)
    else {
        return Ok(());
    };
    let keys: BTreeSet<&String> = saved.keys().chain(now.keys()).collect();
    let show = |v: Option<&Value>| v.map_or_else(|| "unset".to_owned(), Value::to_string);
    let differing: Vec<&String> = keys
        .into_iter()
        .filter(|k| saved.get(*k) != now.get(*k))
        .filter(|k| !target.allow_changes.contains(k))
        .collect();
    let changes: Vec<String> = differing
        .iter()
        .map(|k| format!("{k} was {}, now {}", show(saved.get(*k)), show(now.get(*k))))
        .collect();
    let changeable = differing.iter().all(|k| CHANGEABLE.contains(&k.as_str()));
    ensure(differing.is_empty(), || {
        let names: Vec<&str> = differing.iter().map(|k| k.as_str()).collect();
        let way = if changeable {
            format!(
                "resume with the flags and --config of the run, add --allow-config-change {} to \
                 resume with the new values",
                names.join(",")
            )
        } else {
            format!(
                "resume with the flags and --config of the run (a resume can change only {}, \
                 with --allow-config-change)",
                CHANGEABLE.join(", ")
            )
        };
        format!(
            "{} was saved with other settings ({}); {way}, or pass --overwrite to start again",
            checkpoint.display(),
            changes.join("; ")
        )
    })?;
    Ok(())
}

/// Delete what the command writes into an output directory, leaving other files alone.
fn remove_earlier_run(target: &TrainOutput) -> anyhow::Result<()> {
    let output = target.output;
    let checkpoints = output.join(CHECKPOINTS_DIR);
    if checkpoints.is_dir() {
        std::fs::remove_dir_all(&checkpoints)
            .with_context(|| format!("removing {}", checkpoints.display()))?;
    }
    let files = [
        METRICS_FILE,
        target.config_file,
        "config.json",
        "model.safetensors",
        "generation_config.json",
        ADAPTER_CONFIG_FILE,
        ADAPTER_WEIGHTS_FILE,
        "tokenizer.json",
        "tokenizer_config.json",
    ];
    for &name in files.iter().chain(target.extra_files) {
        let path = output.join(name);
        if path.is_file() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}
