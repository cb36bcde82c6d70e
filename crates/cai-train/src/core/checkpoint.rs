//! Training checkpoints: `checkpoint-{step}/` directories holding weights, optimiser state,
//! trainer state and the resolved config, written atomically and rotated.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::core::optim::AdamW;
use crate::core::state::TrainerState;
use crate::{Result, TrainError};

/// Directory name prefix: `checkpoint-{step}`, as transformers' Trainer names them.
pub const CHECKPOINT_PREFIX: &str = "checkpoint-";
/// The optimiser state file (see [`AdamW::save`]).
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The trainer state file; its presence marks a complete checkpoint.
pub const TRAINER_STATE_FILE: &str = "trainer_state.json";
/// The resolved training config. Not `config.json`: that name belongs to the model's own
/// Hugging Face config, which callers add through [`Checkpoint::extra_files`] so that a
/// checkpoint directory loads as a model.
pub const TRAINING_CONFIG_FILE: &str = "training_config.json";

/// Where and how checkpoints are written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointOptions {
    /// Weights file name. Default `model.safetensors`: transformers' single-file name (a
    /// LoRA run passes PEFT's `adapter_model.safetensors`).
    pub weights_file: String,
    /// Keep only the newest N checkpoints (by step); the one just written is never deleted.
    /// Default `None`: keep all, as transformers' `save_total_limit` does.
    pub keep_last: Option<usize>,
}

impl Default for CheckpointOptions {
    fn default() -> Self {
        Self {
            weights_file: cai_model::checkpoint::SINGLE_FILE.to_string(),
            keep_last: None,
        }
    }
}

/// What one checkpoint holds.
#[derive(Debug, Clone, Copy)]
pub struct Checkpoint<'a> {
    /// The trained tensors under their checkpoint names, in file layout and dtype.
    pub weights: &'a BTreeMap<String, Tensor>,
    /// The optimiser, whose moments, master weights and step counts are saved.
    pub optimizer: &'a AdamW,
    /// The trainer's counters; `state.step` names the directory.
    pub state: &'a TrainerState,
    /// The resolved training config.
    pub config: &'a serde_json::Value,
    /// Further files by name (the model's `config.json`, tokenizer files,
    /// `adapter_config.json`).
    pub extra_files: &'a [(String, Vec<u8>)],
}

/// A checkpoint read back by [`load_checkpoint`].
#[derive(Debug)]
pub struct LoadedCheckpoint {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// The weights by name.
    pub weights: BTreeMap<String, Tensor>,
    /// The trainer's counters.
    pub state: TrainerState,
    /// The training config the run was started with.
    pub config: serde_json::Value,
}

impl LoadedCheckpoint {
    /// Restore `optimizer` from this checkpoint's optimiser state; build it over the
    /// parameters of a model that holds these [`weights`](Self::weights).
    pub fn restore_optimizer(&self, optimizer: &mut AdamW) -> Result<()> {
        optimizer.load(&self.dir.join(OPTIMIZER_FILE))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::io(path, e)
}

/// Write a file and flush it to disk.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = fs::File::create(path).map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

fn sync_path(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

/// The step of a directory named `checkpoint-{step}`.
fn checkpoint_step(name: &std::ffi::OsStr) -> Option<u64> {
    name.to_str()?.strip_prefix(CHECKPOINT_PREFIX)?.parse().ok()
}

/// Complete checkpoints in `dir` (those holding a trainer state) with their steps, sorted by
/// step (a missing `dir` has none).
pub fn list_checkpoints(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    complete_checkpoints(dir)
}

/// Complete checkpoints in `dir` (those holding a trainer state), sorted by step.
fn complete_checkpoints(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(dir, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        if let Some(step) = checkpoint_step(&entry.file_name()) {
            if entry.path().join(TRAINER_STATE_FILE).is_file() {
                found.push((step, entry.path()));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The complete checkpoint with the highest step in `dir`, if any (a missing `dir` has none).
pub fn latest_checkpoint(dir: &Path) -> Result<Option<PathBuf>> {
    Ok(complete_checkpoints(dir)?.pop().map(|(_, path)| path))
}

/// Write `dir/checkpoint-{state.step}/` and return its path.
///
/// Everything is written into a hidden temporary directory, synced, then renamed into place,
/// so a crash leaves either the complete checkpoint or none. A save that fails (a full disk)
/// removes its temporary directory; temporaries of killed runs are removed by the next save
/// (only cai's own `.checkpoint-N.tmp` and `.checkpoint-N.old.tmp` names, and only in `dir`;
/// one trainer writes to a directory at a time, under its writer lock). A checkpoint of the
/// same step is replaced. With `keep_last`, older checkpoints beyond the newest N are deleted
/// after the new one is in place.
pub fn save_checkpoint(
    dir: &Path,
    checkpoint: &Checkpoint<'_>,
    options: &CheckpointOptions,
) -> Result<PathBuf> {
    save_checkpoint_with(dir, checkpoint, options, &|_| Ok(()))
}

/// [`save_checkpoint`], with `write_extra` writing further files (a tokenizer, an adapter's
/// config, a value head) into the temporary directory before it is renamed into place, so
/// that they are part of the atomic save too.
pub fn save_checkpoint_with(
    dir: &Path,
    checkpoint: &Checkpoint<'_>,
    options: &CheckpointOptions,
    write_extra: &dyn Fn(&Path) -> Result<()>,
) -> Result<PathBuf> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    remove_stale_temporaries(dir)?;
    let name = format!("{CHECKPOINT_PREFIX}{}", checkpoint.state.step);
    let target = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::create_dir(&tmp).map_err(io(&tmp))?;
    if let Err(e) = write_contents(&tmp, checkpoint, options, write_extra) {
        // Leave nothing half-written behind (the error says why the save failed).
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }

    if target.exists() {
        let old = dir.join(format!(".{name}.old.tmp"));
        fs::rename(&target, &old).map_err(io(&target))?;
        if let Err(e) = fs::rename(&tmp, &target) {
            // Put the old checkpoint back rather than lose it.
            let _ = fs::rename(&old, &target);
            let _ = fs::remove_dir_all(&tmp);
            return Err(TrainError::io(&target, e));
        }
        fs::remove_dir_all(&old).map_err(io(&old))?;
    } else if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(TrainError::io(&target, e));
    }
    sync_path(dir)?;

    if let Some(keep) = options.keep_last {
        let all = complete_checkpoints(dir)?;
        let excess = all.len().saturating_sub(keep.max(1));
        for (_, path) in all.into_iter().take(excess) {
            if path != target {
                fs::remove_dir_all(&path).map_err(io(&path))?;
            }
        }
    }
    tracing::info!(checkpoint = %target.display(), "saved checkpoint");
    Ok(target)
}

/// Write a checkpoint's files into `tmp`, each synced; the trainer state last.
fn write_contents(
    tmp: &Path,
    checkpoint: &Checkpoint<'_>,
    options: &CheckpointOptions,
    write_extra: &dyn Fn(&Path) -> Result<()>,
) -> Result<()> {
    let weights = tmp.join(&options.weights_file);
    cai_model::checkpoint::save_safetensors(checkpoint.weights, &weights)?;
    sync_path(&weights)?;
    let optimizer = tmp.join(OPTIMIZER_FILE);
    checkpoint.optimizer.save(&optimizer)?;
    sync_path(&optimizer)?;
    write_synced(
        &tmp.join(TRAINING_CONFIG_FILE),
        &pretty_json(checkpoint.config),
    )?;
    for (file, bytes) in checkpoint.extra_files {
        write_synced(&tmp.join(file), bytes)?;
    }
    write_extra(tmp)?;
    write_synced(
        &tmp.join(TRAINER_STATE_FILE),
        &pretty_json(checkpoint.state),
    )?;
    sync_path(tmp)
}

/// Whether `name` is one of [`save_checkpoint`]'s temporaries: `.checkpoint-{step}.tmp` or
/// `.checkpoint-{step}.old.tmp`.
fn is_temporary(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(&format!(".{CHECKPOINT_PREFIX}")) else {
        return false;
    };
    let step = rest
        .strip_suffix(".old.tmp")
        .or_else(|| rest.strip_suffix(".tmp"));
    step.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

fn remove_stale_temporaries(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let is_dir = entry.file_type().map_err(io(dir))?.is_dir();
        if is_dir && is_temporary(&name.to_string_lossy()) {
            let path = entry.path();
            fs::remove_dir_all(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// Pretty-printed JSON with a trailing newline.
fn pretty_json(value: &impl Serialize) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("plain data serialises");
    bytes.push(b'\n');
    bytes
}

/// Read a checkpoint directory written by [`save_checkpoint`]: the weights (onto `device`),
/// the trainer state and the training config. Restore the optimiser afterwards with
/// [`LoadedCheckpoint::restore_optimizer`], once the model holds these weights.
pub fn load_checkpoint(
    dir: &Path,
    weights_file: &str,
    device: &Device,
) -> Result<LoadedCheckpoint> {
    let read_json = |file: &str| -> Result<serde_json::Value> {
        let path = dir.join(file);
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        serde_json::from_str(&text)
            .map_err(|e| TrainError::checkpoint(&path, format!("not valid JSON ({e})")))
    };
    let state_path = dir.join(TRAINER_STATE_FILE);
    let state: TrainerState = serde_json::from_value(read_json(TRAINER_STATE_FILE)?)
        .map_err(|e| TrainError::checkpoint(&state_path, format!("not a trainer state ({e})")))?;
    if let Some(step) = dir.file_name().and_then(checkpoint_step) {
        if step != state.step {
            return Err(TrainError::checkpoint(
                &state_path,
                format!(
                    "records step {} but the directory is for step {step}",
                    state.step
                ),
            ));
        }
    }
    let config = read_json(TRAINING_CONFIG_FILE)?;
    let weights_path = dir.join(weights_file);
    let weights = candle_core::safetensors::load(&weights_path, device)
        .map_err(|e| TrainError::checkpoint(&weights_path, format!("cannot read weights ({e})")))?
        .into_iter()
        .collect();
    Ok(LoadedCheckpoint {
        dir: dir.to_path_buf(),
        weights,
        state,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::optim::{AdamWConfig, TrainParam};
    use candle_core::Var;
    use serde_json::json;

    fn optimizer() -> AdamW {
        let var = Var::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let param = TrainParam {
            name: "w".into(),
            var,
            decay: true,
            lr_scale: 1.0,
        };
        AdamW::new(vec![param], AdamWConfig::default()).unwrap()
    }

    fn save(dir: &Path, step: u64, keep_last: Option<usize>) -> PathBuf {
        let weights: BTreeMap<String, Tensor> = [(
            "w".to_string(),
            Tensor::new(&[step as f32, 0.5], &Device::Cpu).unwrap(),
        )]
        .into();
        let mut state = TrainerState::new(3);
        state.step = step;
        let options = CheckpointOptions {
            keep_last,
            ..CheckpointOptions::default()
        };
        let checkpoint = Checkpoint {
            weights: &weights,
            optimizer: &optimizer(),
            state: &state,
            config: &json!({"lr": 1e-3, "step": step}),
            extra_files: &[("config.json".into(), b"{}\n".to_vec())],
        };
        save_checkpoint(dir, &checkpoint, &options).unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_a_complete_directory_and_reads_it_back() {
        let tmp = tempfile::tempdir().unwrap();
        let path = save(tmp.path(), 20, None);
        assert_eq!(path, tmp.path().join("checkpoint-20"));
        assert_eq!(
            names(&path),
            [
                "config.json",
                "model.safetensors",
                "optimizer.safetensors",
                "trainer_state.json",
                "training_config.json"
            ]
        );
        assert_eq!(names(tmp.path()), ["checkpoint-20"]);
        let loaded = load_checkpoint(&path, "model.safetensors", &Device::Cpu).unwrap();
        assert_eq!(loaded.state.step, 20);
        assert_eq!(loaded.state.seed, 3);
        assert_eq!(loaded.config, json!({"lr": 1e-3, "step": 20}));
        assert_eq!(loaded.weights["w"].to_vec1::<f32>().unwrap(), [20.0, 0.5]);
        let mut opt = optimizer();
        loaded.restore_optimizer(&mut opt).unwrap();
    }

    #[test]
    fn latest_ignores_incomplete_and_temporary_directories() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(latest_checkpoint(&tmp.path().join("absent")).unwrap(), None);
        save(tmp.path(), 5, None);
        save(tmp.path(), 10, None);
        // A crash mid-save leaves a temporary; a directory without trainer state is not a
        // checkpoint; nor is a name that is not a step.
        fs::create_dir(tmp.path().join(".checkpoint-15.tmp")).unwrap();
        fs::create_dir(tmp.path().join("checkpoint-30")).unwrap();
        fs::create_dir(tmp.path().join("checkpoint-best")).unwrap();
        assert_eq!(
            latest_checkpoint(tmp.path()).unwrap(),
            Some(tmp.path().join("checkpoint-10"))
        );
        save(tmp.path(), 15, None);
        assert_eq!(
            names(tmp.path()),
            [
                "checkpoint-10",
                "checkpoint-15",
                "checkpoint-30",
                "checkpoint-5",
                "checkpoint-best"
            ]
        );
    }

    #[test]
    fn a_failed_save_leaves_no_temporary_and_stale_ones_go_only_if_ours() {
        let tmp = tempfile::tempdir().unwrap();
        save(tmp.path(), 1, None);
        // A save that fails part-way (here the extra files' writer; a full disk alike).
        let weights: BTreeMap<String, Tensor> = [(
            "w".to_string(),
            Tensor::new(&[2f32, 0.5], &Device::Cpu).unwrap(),
        )]
        .into();
        let mut state = TrainerState::new(3);
        state.step = 2;
        let checkpoint = Checkpoint {
            weights: &weights,
            optimizer: &optimizer(),
            state: &state,
            config: &json!({}),
            extra_files: &[],
        };
        let err = save_checkpoint_with(
            tmp.path(),
            &checkpoint,
            &CheckpointOptions::default(),
            &|dir| {
                Err(TrainError::io(
                    dir.join("tokenizer.json"),
                    std::io::Error::other("No space left on device"),
                ))
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("No space left"), "{err}");
        assert_eq!(names(tmp.path()), ["checkpoint-1"]);

        // A killed run's temporaries go at the next save; look-alikes stay.
        for name in [".checkpoint-3.tmp", ".checkpoint-1.old.tmp"] {
            fs::create_dir(tmp.path().join(name)).unwrap();
        }
        for name in [
            ".checkpoint-notes.tmp",
            ".checkpoint-.tmp",
            "checkpoint-9.tmp",
        ] {
            fs::create_dir(tmp.path().join(name)).unwrap();
        }
        fs::write(tmp.path().join(".checkpoint-4.tmp-file"), "x").unwrap();
        save(tmp.path(), 5, None);
        assert_eq!(
            names(tmp.path()),
            [
                ".checkpoint-.tmp",
                ".checkpoint-4.tmp-file",
                ".checkpoint-notes.tmp",
                "checkpoint-1",
                "checkpoint-5",
                "checkpoint-9.tmp"
            ]
        );
    }

    #[test]
    fn extra_files_are_inside_the_atomic_save() {
        let tmp = tempfile::tempdir().unwrap();
        let weights: BTreeMap<String, Tensor> = [(
            "w".to_string(),
            Tensor::new(&[2f32, 0.5], &Device::Cpu).unwrap(),
        )]
        .into();
        let state = TrainerState::new(3);
        let checkpoint = Checkpoint {
            weights: &weights,
            optimizer: &optimizer(),
            state: &state,
            config: &json!({}),
            extra_files: &[],
        };
        let dir = save_checkpoint_with(
            tmp.path(),
            &checkpoint,
            &CheckpointOptions::default(),
            &|dir| {
                // Written before the trainer state that marks the checkpoint complete.
                assert!(!dir.join(TRAINER_STATE_FILE).exists());
                assert!(dir.file_name().unwrap().to_string_lossy().ends_with(".tmp"));
                write_synced(&dir.join("tokenizer.json"), b"{}")
            },
        )
        .unwrap();
        assert!(dir.join("tokenizer.json").is_file());
    }

    #[test]
    fn rotation_keeps_the_newest_and_same_step_replaces() {
        let tmp = tempfile::tempdir().unwrap();
        for step in [1, 2, 3] {
            save(tmp.path(), step, Some(2));
        }
        assert_eq!(names(tmp.path()), ["checkpoint-2", "checkpoint-3"]);
        save(tmp.path(), 3, Some(2));
        assert_eq!(names(tmp.path()), ["checkpoint-2", "checkpoint-3"]);
        // keep_last 0 still keeps the checkpoint just written.
        save(tmp.path(), 4, Some(0));
        assert_eq!(names(tmp.path()), ["checkpoint-4"]);
    }

    #[test]
    fn mismatched_or_missing_files_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let path = save(tmp.path(), 7, None);
        let moved = tmp.path().join("checkpoint-8");
        fs::rename(&path, &moved).unwrap();
        let err = load_checkpoint(&moved, "model.safetensors", &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("records step 7 but the directory is for step 8"),
            "{err}"
        );
        fs::rename(&moved, &path).unwrap();
        let err = load_checkpoint(&path, "adapter_model.safetensors", &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("checkpoint-7/adapter_model.safetensors"),
            "{err}"
        );
    }
}
