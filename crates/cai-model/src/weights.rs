//! Filling a [`Decoder`] from a checkpoint or from a seeded random initialisation, and saving
//! it back in Hugging Face layout (HF names, Conv1D layout for GPT-2, no `lm_head.weight` when
//! tied, `{"format": "pt"}` metadata).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

use crate::atomic_file::write_atomic;
use crate::checkpoint::{save_safetensors, Checkpoint, SINGLE_FILE};
use crate::config::ModelConfig;
use crate::decoder::{Decoder, ParamKind, ParamSpec};
use crate::{ModelError, Result};

/// Load a decoder's weights from an opened checkpoint, converting to `dtype` on `device`.
pub fn load_decoder(
    config: ModelConfig,
    ckpt: &Checkpoint,
    dtype: DType,
    device: &Device,
) -> Result<Decoder> {
    Decoder::build(config, dtype, device, &mut |spec| {
        // Original GPT-2 checkpoints omit the "transformer." prefix.
        let name = match spec.name.strip_prefix("transformer.") {
            Some(bare) if !ckpt.contains(&spec.name) && ckpt.contains(bare) => bare.to_string(),
            _ => spec.name.clone(),
        };
        let t = ckpt.load(&name, &spec.file_shape, dtype, device)?;
        Ok(if spec.conv1d { t.t()?.contiguous()? } else { t })
    })
}

/// Standard deviation of the random initialisation (transformers' `initializer_range`).
pub const INIT_STD: f64 = 0.02;

/// A decoder with seeded random weights: normal(0, 0.02) matrices and embeddings, unit norm
/// weights, zero biases. Each tensor's stream is keyed by (seed, name), so the result does not
/// depend on the order in which parameters are created.
pub fn random_decoder(
    config: ModelConfig,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<Decoder> {
    Decoder::build(config, dtype, device, &mut |spec| {
        let shape = memory_shape(spec);
        let n: usize = shape.iter().product();
        let t = match spec.kind {
            ParamKind::NormWeight => Tensor::ones(n, DType::F32, device)?,
            ParamKind::Bias => Tensor::zeros(n, DType::F32, device)?,
            ParamKind::Matrix | ParamKind::Embedding => {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cai_core::rng::derive_seed(
                    seed,
                    &[spec.name.as_str()],
                ));
                Tensor::from_vec(normal_samples(&mut rng, n, INIT_STD), n, device)?
            }
        };
        Ok(t.reshape(shape)?.to_dtype(dtype)?)
    })
}

fn memory_shape(spec: &ParamSpec) -> Vec<usize> {
    if spec.conv1d {
        vec![spec.file_shape[1], spec.file_shape[0]]
    } else {
        spec.file_shape.clone()
    }
}

/// `n` draws from N(0, std²) by the Box–Muller transform.
pub(crate) fn normal_samples(rng: &mut impl Rng, n: usize, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let a = 2.0 * std::f64::consts::PI * u2;
        out.push((r * a.cos()) as f32);
        out.push((r * a.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// The decoder's tensors under their HF names, in file layout and `dtype`.
pub fn hf_tensors(decoder: &Decoder, dtype: DType) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    for (spec, t) in decoder.params() {
        let t = if spec.conv1d { t.t()?.contiguous()? } else { t };
        out.insert(spec.name, t.to_dtype(dtype)?.to_device(&Device::Cpu)?);
    }
    Ok(out)
}

/// Write `config.json` and `model.safetensors` for the decoder into `dir` (created if needed).
/// `dtype` is the dtype on disk and is recorded as `torch_dtype`.
pub fn save_decoder(decoder: &Decoder, dir: &Path, dtype: DType) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let mut config = decoder.config().clone();
    config.torch_dtype = Some(torch_dtype_name(dtype).to_string());
    let json = serde_json::to_string_pretty(&config.to_hf_json()).expect("serialisable");
    save_safetensors(&hf_tensors(decoder, dtype)?, &dir.join(SINGLE_FILE))?;
    // The config last: a config.json that says this model only ever sits beside its weights.
    write_atomic(&dir.join("config.json"), (json + "\n").as_bytes())
}

/// The PyTorch name of a dtype, as `config.json` records it.
pub fn torch_dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        DType::F64 => "float64",
        _ => "float32",
    }
}

/// The short name of a dtype, as `--dtype` takes it (`f32`, `f16`, `bf16`, `f64`).
pub fn dtype_short_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F64 => "f64",
        _ => "f32",
    }
}

/// Parse a dtype name as users and configs write it (`f32`, `float32`, `bf16`, …).
pub fn parse_dtype(s: &str) -> Option<DType> {
    Some(match s {
        "f32" | "float32" | "float" => DType::F32,
        "f16" | "float16" | "half" => DType::F16,
        "bf16" | "bfloat16" => DType::BF16,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_samples_have_the_requested_moments() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let xs = normal_samples(&mut rng, 20_001, 0.02);
        assert_eq!(xs.len(), 20_001);
        let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 1e-3, "mean {mean}");
        assert!((var.sqrt() - 0.02).abs() < 1e-3, "std {}", var.sqrt());
    }
}
