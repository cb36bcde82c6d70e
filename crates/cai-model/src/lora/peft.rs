//! LoRA adapters in Hugging Face PEFT's layout: `adapter_config.json` and
//! `adapter_model.safetensors` with `base_model.model.<module>.lora_{A,B}.weight` tensors,
//! written so that `PeftModel.from_pretrained(base, dir)` loads them, and read back with every
//! tensor checked against the model.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};
use serde::Deserialize;
use serde_json::json;

use super::{
    check_numbers, install, linear_specs, module_names, peft_name, LoraConfig, PEFT_PREFIX,
};
use crate::checkpoint::{save_safetensors, Checkpoint};
use crate::config::Architecture;
use crate::decoder::{Decoder, LinearSpec};
use crate::{ModelError, Result};

/// PEFT's adapter configuration file.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// PEFT's adapter weights file.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// The adapter matrices under their PEFT names, on the CPU in their own dtype.
pub fn adapter_tensors(decoder: &Decoder) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    decoder.clone().visit_linears(&mut |spec, linear| {
        if let Some(lora) = &linear.lora {
            out.insert(peft_name(&spec.path, 'A'), lora.a.to_device(&Device::Cpu)?);
            out.insert(peft_name(&spec.path, 'B'), lora.b.to_device(&Device::Cpu)?);
        }
        Ok(())
    })?;
    Ok(out)
}

/// The `adapter_config.json` PEFT reads for these adapters.
pub fn adapter_config(
    decoder: &Decoder,
    cfg: &LoraConfig,
    base_model_name_or_path: &str,
) -> serde_json::Value {
    // PEFT declares lora_alpha an int; write whole numbers as such.
    let alpha = if cfg.alpha.fract() == 0.0 && cfg.alpha < 1e15 {
        json!(cfg.alpha as i64)
    } else {
        json!(cfg.alpha)
    };
    json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": cfg.r,
        "lora_alpha": alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": cfg.target_modules,
        "bias": "none",
        // GPT-2's Conv1D weights are stored [in, out]; PEFT needs to know to merge them.
        "fan_in_fan_out": decoder.config().architecture == Architecture::Gpt2,
        "base_model_name_or_path": base_model_name_or_path,
        "inference_mode": true,
        "modules_to_save": null,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": null,
    })
}

/// Write the adapters in PEFT layout into `dir` (created if needed): `adapter_config.json`
/// and `adapter_model.safetensors` (with `{"format": "pt"}` metadata), loadable by
/// `PeftModel.from_pretrained(base, dir)`.
pub fn save_adapter(
    decoder: &Decoder,
    dir: &Path,
    cfg: &LoraConfig,
    base_model_name_or_path: &str,
) -> Result<()> {
    cfg.validate()?;
    let tensors = adapter_tensors(decoder)?;
    if tensors.is_empty() {
        return Err(ModelError::Request(
            "the model has no LoRA adapters to save".into(),
        ));
    }
    if let Some((name, t)) = tensors
        .iter()
        .find(|(n, t)| n.ends_with(".lora_A.weight") && t.dim(0).ok() != Some(cfg.r))
    {
        return Err(ModelError::Request(format!(
            "adapter '{name}' has rank {:?} but the LoRA config says r = {}",
            t.dims().first(),
            cfg.r
        )));
    }
    let config = adapter_config(decoder, cfg, base_model_name_or_path);
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let path = dir.join(ADAPTER_CONFIG_FILE);
    let text = serde_json::to_string_pretty(&config).expect("serialisable") + "\n";
    // The weights first: an adapter_config.json only ever sits beside its weights.
    save_safetensors(&tensors, &dir.join(ADAPTER_WEIGHTS_FILE))?;
    crate::write_atomic(&path, text.as_bytes())
}

/// How loaded adapters are installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterUse {
    /// Plain tensors: generation, scoring, merging.
    Inference,
    /// Trainable variables, returned in [`LoadedAdapter::vars`]: training or resuming.
    Training,
}

/// What [`load_adapter`] read.
#[derive(Debug)]
pub struct LoadedAdapter {
    /// r, α, dropout and targets from `adapter_config.json` (seed: the default).
    pub config: LoraConfig,
    /// The base model the adapter was trained on, as PEFT recorded it.
    pub base_model_name_or_path: Option<String>,
    /// With [`AdapterUse::Training`]: the adapter variables under their PEFT names, per module
    /// in checkpoint order; empty otherwise.
    pub vars: Vec<(String, Var)>,
}

/// `adapter_config.json` as PEFT writes it (the fields cai reads).
#[derive(Deserialize)]
struct PeftConfigFile {
    peft_type: Option<String>,
    r: usize,
    lora_alpha: f64,
    #[serde(default)]
    lora_dropout: f64,
    #[serde(default)]
    target_modules: Option<serde_json::Value>,
    #[serde(default)]
    bias: Option<String>,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    rank_pattern: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    alpha_pattern: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    base_model_name_or_path: Option<String>,
}

fn read_peft_config(path: &Path) -> Result<PeftConfigFile> {
    let text = crate::read_limits::read_text(path, crate::read_limits::CONFIG_LIMIT)
        .map_err(|e| ModelError::io(path, e))?;
    let bad = |message: String| ModelError::Config {
        path: path.to_path_buf(),
        message,
    };
    let file: PeftConfigFile =
        serde_json::from_str(&text).map_err(|e| bad(format!("not a PEFT LoRA config: {e}")))?;
    if let Some(t) = file.peft_type.as_deref().filter(|&t| t != "LORA") {
        return Err(bad(format!(
            "peft_type is \"{t}\"; cai loads LORA adapters only"
        )));
    }
    let unsupported = [
        (
            file.use_dora,
            "use_dora is true: DoRA adapters are not supported",
        ),
        (
            file.use_rslora,
            "use_rslora is true: rank-stabilised scaling is not supported",
        ),
        (
            file.bias.as_deref().is_some_and(|b| b != "none"),
            "bias is not \"none\": trained biases are not supported",
        ),
        (
            file.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()),
            "modules_to_save is set: fully trained extra modules are not supported",
        ),
        (
            file.rank_pattern.as_ref().is_some_and(|m| !m.is_empty())
                || file.alpha_pattern.as_ref().is_some_and(|m| !m.is_empty()),
            "rank_pattern/alpha_pattern are set: per-module ranks are not supported",
        ),
    ];
    if let Some((_, why)) = unsupported.iter().find(|(bad, _)| *bad) {
        return Err(bad(format!("{why}; merge the adapter with PEFT first")));
    }
    check_numbers(file.r, file.lora_alpha, file.lora_dropout).map_err(|m| {
        bad(m
            .replace("alpha", "lora_alpha")
            .replace("dropout", "lora_dropout"))
    })?;
    Ok(file)
}

/// Read a PEFT adapter directory and install its adapters on `decoder`, checking every
/// tensor's name and shape against the model; errors name the file and the tensor.
pub fn load_adapter(decoder: &mut Decoder, dir: &Path, usage: AdapterUse) -> Result<LoadedAdapter> {
    let config_path = dir.join(ADAPTER_CONFIG_FILE);
    let file = read_peft_config(&config_path)?;
    let weights: PathBuf = dir.join(ADAPTER_WEIGHTS_FILE);
    let ckpt = Checkpoint::open_files(dir, std::slice::from_ref(&weights))?;
    let specs = linear_specs(decoder)?;
    let mut adapted = BTreeSet::new();
    for name in ckpt.names() {
        let path = name
            .strip_prefix(PEFT_PREFIX)
            .and_then(|n| {
                n.strip_suffix(".lora_A.weight")
                    .or_else(|| n.strip_suffix(".lora_B.weight"))
            })
            .filter(|p| specs.iter().any(|s| s.path == *p));
        let Some(path) = path else {
            return Err(ModelError::Config {
                path: weights.clone(),
                message: format!(
                    "tensor '{name}' is not a LoRA matrix of a linear layer of this {} model \
                     (expected {PEFT_PREFIX}<module>.lora_A.weight / .lora_B.weight with \
                     modules named {})",
                    decoder.config().architecture.model_type(),
                    module_names(&specs).join(", ")
                ),
            });
        };
        adapted.insert(path.to_string());
    }
    if adapted.is_empty() {
        return Err(ModelError::Config {
            path: weights,
            message: "holds no LoRA tensors".into(),
        });
    }
    let target_modules = match &file.target_modules {
        Some(serde_json::Value::Array(list)) if list.iter().all(|v| v.is_string()) => list
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        // A regex or a missing field: name the modules the file actually adapts.
        _ => {
            let specs: Vec<LinearSpec> = specs
                .iter()
                .filter(|s| adapted.contains(&s.path))
                .cloned()
                .collect();
            module_names(&specs).into_iter().map(String::from).collect()
        }
    };
    let config = LoraConfig {
        r: file.r,
        alpha: file.lora_alpha,
        dropout: file.lora_dropout,
        target_modules,
        ..LoraConfig::default()
    };
    let (dtype, device) = (decoder.dtype(), decoder.device().clone());
    let load = |name: &str, shape: &[usize]| -> Result<Tensor> {
        if !ckpt.contains(name) {
            return Err(ModelError::MissingTensor {
                path: weights.clone(),
                name: name.to_string(),
            });
        }
        ckpt.load(name, shape, dtype, &device)
    };
    let mut vars = Vec::new();
    install(
        decoder,
        |spec| {
            if !adapted.contains(&spec.path) {
                return Ok(None);
            }
            let (name_a, name_b) = (peft_name(&spec.path, 'A'), peft_name(&spec.path, 'B'));
            let a = load(&name_a, &[config.r, spec.in_features])?;
            let b = load(&name_b, &[spec.out_features, config.r])?;
            Ok(Some(match usage {
                AdapterUse::Inference => (a, b),
                AdapterUse::Training => {
                    let (a, b) = (Var::from_tensor(&a)?, Var::from_tensor(&b)?);
                    let tensors = (a.as_tensor().clone(), b.as_tensor().clone());
                    vars.push((name_a, a));
                    vars.push((name_b, b));
                    tensors
                }
            }))
        },
        &config,
    )?;
    Ok(LoadedAdapter {
        config,
        base_model_name_or_path: file.base_model_name_or_path,
        vars,
    })
}
