//! The model a trainer changes: its trainable parameters (every weight, or LoRA adapters), its
//! resumable checkpoints, restoring them, and the finished model written as a Hugging Face
//! model directory or a PEFT adapter. Shared by the trainers (`sft`, `distill`, `rl`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cai_model::decoder::Decoder;
use cai_model::lora::{adapter_config, adapter_tensors, save_adapter, LoraConfig};
use cai_model::tokenizer::Tokenizer;
use cai_model::weights::{hf_tensors, save_decoder};
use candle_core::Tensor;

use crate::core::checkpoint::{save_checkpoint_with, LoadedCheckpoint};
use crate::core::session::{CheckpointParts, Checkpointed};
use crate::{Checkpoint, CheckpointOptions, Result, TrainError, TrainParam};

/// A decoder being trained, with the variables the optimiser updates.
pub struct Trainee {
    /// The model; its trainable tensors are the variables' tensors.
    pub decoder: Decoder,
    /// What the optimiser updates: every weight (HF names) or the adapters (PEFT names).
    pub params: Vec<TrainParam>,
    lora: Option<LoraConfig>,
    model_dir: PathBuf,
}

impl Trainee {
    /// Make `decoder` (loaded from `model_dir`) trainable: fresh LoRA adapters when `lora` is
    /// given (the base weights stay frozen), else every weight.
    pub fn new(mut decoder: Decoder, lora: Option<&LoraConfig>, model_dir: &Path) -> Result<Self> {
        let params = match lora {
            Some(lora) => decoder
                .add_lora(lora)?
                .into_iter()
                .map(|(name, var)| TrainParam {
                    name,
                    var,
                    decay: true,
                    lr_scale: 1.0,
                })
                .collect(),
            None => decoder
                .make_trainable()?
                .into_iter()
                .map(|(spec, var)| TrainParam::from_spec(&spec, var))
                .collect(),
        };
        Ok(Self {
            decoder,
            params,
            lora: lora.cloned(),
            model_dir: model_dir.to_path_buf(),
        })
    }

    /// The checkpoint's weights file: the adapter's or the whole model's.
    pub fn weights_file(&self) -> &'static str {
        if self.lora.is_some() {
            cai_model::lora::ADAPTER_WEIGHTS_FILE
        } else {
            "model.safetensors"
        }
    }

    /// The trained tensors: adapters under PEFT names, or the whole model under HF names.
    pub fn tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        Ok(if self.lora.is_some() {
            adapter_tensors(&self.decoder)?.into_iter().collect()
        } else {
            hf_tensors(&self.decoder, self.decoder.dtype())?
        })
    }

    /// Set the variables from a checkpoint's tensors (as [`Trainee::tensors`] wrote them).
    pub fn restore(&self, weights: &BTreeMap<String, Tensor>, dir: &Path) -> Result<()> {
        restore_params(&self.params, weights, &self.decoder, dir)
    }

    /// Save a resumable checkpoint under `checkpoints` with the model's config, the tokenizer
    /// (and the adapter's config), so that a checkpoint directory loads as a model or adapter
    /// of its own; `more` writes further files into it. Everything is part of the atomic
    /// save (see [`save_checkpoint_with`]). Returns the checkpoint directory.
    pub fn save_checkpoint(
        &self,
        checkpoints: &Path,
        parts: &CheckpointParts<'_>,
        more: &dyn Fn(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let weights = self.tensors()?;
        let extra = [(
            "config.json".to_string(),
            serde_json::to_vec_pretty(&self.decoder.config().to_hf_json()).expect("json"),
        )];
        let checkpoint = Checkpoint {
            weights: &weights,
            optimizer: parts.optimizer,
            state: parts.state,
            config: parts.config,
            extra_files: &extra,
        };
        save_checkpoint_with(
            checkpoints,
            &checkpoint,
            &CheckpointOptions {
                weights_file: self.weights_file().into(),
                keep_last: parts.keep_last,
            },
            &|dir| {
                parts.tokenizer.save(dir)?;
                if let Some(lora) = &self.lora {
                    let config =
                        adapter_config(&self.decoder, lora, &self.model_dir.display().to_string());
                    write_json(&dir.join(cai_model::lora::ADAPTER_CONFIG_FILE), &config)?;
                }
                more(dir)
            },
        )
    }

    /// Write the finished model to `output`: a full HF model directory (with the base model's
    /// `generation_config.json`), or a PEFT adapter; plus the tokenizer. The weights come
    /// last: their presence marks a finished run, so a crash before them leaves a run to
    /// resume, never a "finished" one without its tokenizer.
    pub fn write(&self, output: &Path, tokenizer: &Tokenizer) -> Result<()> {
        tokenizer.save(output)?;
        match &self.lora {
            Some(lora) => save_adapter(
                &self.decoder,
                output,
                lora,
                &self.model_dir.display().to_string(),
            )?,
            None => {
                let generation = self.model_dir.join("generation_config.json");
                if generation.exists() {
                    let target = output.join("generation_config.json");
                    std::fs::copy(&generation, &target).map_err(|e| TrainError::io(&target, e))?;
                }
                save_decoder(&self.decoder, output, self.decoder.dtype())?;
            }
        }
        Ok(())
    }
}

impl Checkpointed for Trainee {
    fn weights_file(&self) -> &str {
        Trainee::weights_file(self)
    }

    fn restore(&self, loaded: &LoadedCheckpoint) -> Result<()> {
        Trainee::restore(self, &loaded.weights, &loaded.dir)
    }

    fn save_checkpoint(&self, checkpoints: &Path, parts: &CheckpointParts<'_>) -> Result<PathBuf> {
        Trainee::save_checkpoint(self, checkpoints, parts, &|_| Ok(()))
    }
}

/// Set trained variables `params` from a checkpoint's tensors (in file layout: the matrices
/// `decoder` stores as Conv1D are transposed back), converting dtype and device.
pub fn restore_params(
    params: &[TrainParam],
    weights: &BTreeMap<String, Tensor>,
    decoder: &Decoder,
    dir: &Path,
) -> Result<()> {
    let conv1d: Vec<String> = decoder
        .params()
        .into_iter()
        .filter(|(s, _)| s.conv1d)
        .map(|(s, _)| s.name)
        .collect();
    for p in params {
        let t = weights
            .get(&p.name)
            .ok_or_else(|| TrainError::checkpoint(dir, format!("missing tensor '{}'", p.name)))?;
        let t = if conv1d.contains(&p.name) {
            t.t()?.contiguous()?
        } else {
            t.clone()
        };
        p.var
            .set(&t.to_dtype(p.var.dtype())?.to_device(p.var.device())?)?;
    }
    Ok(())
}

/// Write `value` as pretty JSON with a final newline.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serialisable") + "\n";
    Ok(cai_model::write_atomic(path, text.as_bytes())?)
}
