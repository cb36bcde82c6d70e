//! GGUF tensors to decoder weights: llama.cpp's tensor names mapped to Hugging Face's, every
//! tensor dequantised (F32/F16/BF16, Q4_0…Q8_0, the K-quants) with candle, llama.cpp's
//! rotary permutation of the Llama q/k projections undone, and the values checked.

use std::collections::BTreeSet;

use candle_core::{DType, Device, Tensor};

use super::GgufFile;
use crate::config::{Architecture, ModelConfig};
use crate::decoder::{Decoder, ParamSpec};
use crate::{ModelError, Result};

/// The ggml tensor types cai dequantises, as ggml names them.
pub const SUPPORTED_QUANT_TYPES: &[&str] = &[
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
    "Q6_K",
];

/// The llama.cpp name of a Hugging Face tensor name, for the decoder's architecture.
///
/// Llama family: `model.embed_tokens` → `token_embd`, `model.norm` → `output_norm`,
/// `lm_head` → `output`, and per block `blk.N.{attn_norm, attn_q, attn_k, attn_v,
/// attn_output, attn_q_norm, attn_k_norm, ffn_norm, ffn_gate, ffn_up, ffn_down}`. GPT-2:
/// `wte` → `token_embd`, `wpe` → `position_embd`, `ln_f` → `output_norm`, per block
/// `attn_norm, attn_qkv, attn_output, ffn_norm, ffn_up, ffn_down`.
pub fn gguf_tensor_name(hf_name: &str, arch: Architecture) -> Option<String> {
    let (stem, suffix) = hf_name.rsplit_once('.')?;
    let gpt2 = arch == Architecture::Gpt2;
    let top = match (gpt2, stem) {
        (false, "model.embed_tokens") | (true, "transformer.wte") => Some("token_embd"),
        (true, "transformer.wpe") => Some("position_embd"),
        (false, "model.norm") | (true, "transformer.ln_f") => Some("output_norm"),
        (_, "lm_head") => Some("output"),
        _ => None,
    };
    if let Some(top) = top {
        return Some(format!("{top}.{suffix}"));
    }
    let prefix = if gpt2 {
        "transformer.h."
    } else {
        "model.layers."
    };
    let (layer, module) = stem.strip_prefix(prefix)?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let module = match (gpt2, module) {
        (false, "input_layernorm") | (true, "ln_1") => "attn_norm",
        (false, "post_attention_layernorm") | (true, "ln_2") => "ffn_norm",
        (false, "self_attn.q_proj") => "attn_q",
        (false, "self_attn.k_proj") => "attn_k",
        (false, "self_attn.v_proj") => "attn_v",
        (false, "self_attn.o_proj") | (true, "attn.c_proj") => "attn_output",
        (false, "self_attn.q_norm") => "attn_q_norm",
        (false, "self_attn.k_norm") => "attn_k_norm",
        (false, "mlp.gate_proj") => "ffn_gate",
        (false, "mlp.up_proj") | (true, "mlp.c_fc") => "ffn_up",
        (false, "mlp.down_proj") | (true, "mlp.c_proj") => "ffn_down",
        (true, "attn.c_attn") => "attn_qkv",
        _ => return None,
    };
    Some(format!("blk.{layer}.{module}.{suffix}"))
}

/// Fill a decoder from the file's tensors. Every tensor the file holds must be used, except
/// GPT-2's `output.weight` (llama.cpp writes a copy of the tied embedding).
pub(super) fn load_decoder(
    file: &GgufFile,
    config: ModelConfig,
    dtype: DType,
    device: &Device,
) -> Result<Decoder> {
    let arch = config.architecture;
    // llama.cpp stores Llama's q and k rows interleaved for its rotary kernel; Qwen's use
    // the NeoX layout that Hugging Face uses, and GPT-2 has no rotary embedding.
    let rope_permuted = arch == Architecture::Llama || arch == Architecture::Mistral;
    let (heads, kv_heads) = (config.num_heads, config.num_kv_heads);
    let mut used: BTreeSet<String> = BTreeSet::new();
    let decoder = Decoder::build(config, dtype, device, &mut |spec: &ParamSpec| {
        let name = gguf_tensor_name(&spec.name, arch).ok_or_else(|| {
            file.error(format!(
                "cai has no llama.cpp name for the weight '{}'",
                spec.name
            ))
        })?;
        let mut t = read_tensor(file, &name, spec)?;
        if rope_permuted {
            if name.contains(".attn_q.") {
                t = unpermute_rope(&t, heads)?;
            } else if name.contains(".attn_k.") {
                t = unpermute_rope(&t, kv_heads)?;
            }
        }
        used.insert(name);
        Ok(t.to_dtype(dtype)?.to_device(device)?)
    })?;
    let unused: Vec<&str> = file
        .content()
        .tensor_infos
        .keys()
        .map(String::as_str)
        .filter(|n| !used.contains(*n))
        .filter(|n| !(arch == Architecture::Gpt2 && *n == "output.weight"))
        .collect();
    if !unused.is_empty() {
        let mut unused = unused;
        unused.sort_unstable();
        return Err(file.error(format!(
            "tensors cai's {} decoder has no place for: {}; the file holds a variant of the \
             architecture cai does not implement (convert the original Hugging Face model \
             instead)",
            arch.model_type(),
            unused.join(", ")
        )));
    }
    Ok(decoder)
}

/// One tensor dequantised to f32 on the CPU in the decoder's memory layout (`[out, in]`
/// for every matrix: ggml's `ne` order reversed), its shape and values checked.
///
/// Shapes: matrices `[out, in]`, vectors `[n]`.
fn read_tensor(file: &GgufFile, name: &str, spec: &ParamSpec) -> Result<Tensor> {
    let content = file.content();
    let info = content
        .tensor_infos
        .get(name)
        .ok_or_else(|| ModelError::MissingTensor {
            path: file.path().to_path_buf(),
            name: format!("{name} (Hugging Face name {})", spec.name),
        })?;
    let expected = if spec.conv1d {
        vec![spec.file_shape[1], spec.file_shape[0]]
    } else {
        spec.file_shape.clone()
    };
    if info.shape.dims() != expected.as_slice() {
        return Err(file.error(format!(
            "tensor '{name}' has shape {:?}, expected {expected:?} from the file's metadata",
            info.shape.dims()
        )));
    }
    let qtensor = {
        let mut reader = file.reader.lock().expect("gguf reader lock");
        info.read(&mut *reader, content.tensor_data_offset, &Device::Cpu)
            .map_err(|e| {
                file.error(format!(
                    "tensor '{name}' ({:?}) cannot be read: {}; the file is truncated or \
                     corrupt, download or convert it again",
                    info.ggml_dtype,
                    first_line(&e)
                ))
            })?
    };
    let t = qtensor.dequantize(&Device::Cpu).map_err(|e| {
        file.error(format!(
            "tensor '{name}' is {:?}, which cai cannot dequantise ({}); cai reads {}",
            info.ggml_dtype,
            first_line(&e),
            SUPPORTED_QUANT_TYPES.join(", ")
        ))
    })?;
    let finite = t
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .all(|x| x.is_finite());
    if !finite {
        return Err(ModelError::NonFinite {
            path: file.path().to_path_buf(),
            name: name.to_string(),
            problem: "holds NaN or infinite values; the file is corrupt".into(),
        });
    }
    Ok(t)
}

/// A candle error's first line (with RUST_BACKTRACE set, candle appends a backtrace).
fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// Undo llama.cpp's permutation of a Llama q or k projection (its weight `[heads·d, in]` or
/// bias `[heads·d]`): within each head llama.cpp interleaves the two rotary halves, so rows
/// `(head, i, half)` go back to `(head, half, i)`.
///
/// Shapes: `[heads·d, ...] -> [heads·d, ...]`.
pub(crate) fn unpermute_rope(t: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    let half = rows / heads / 2;
    let rest: Vec<usize> = dims[1..].to_vec();
    let mut split = vec![heads, half, 2];
    split.extend(&rest);
    let t = t.reshape(split)?.transpose(1, 2)?.contiguous()?;
    Ok(t.reshape(dims)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugging_face_names_map_to_llama_cpp_names() {
        let llama = [
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("model.norm.weight", "output_norm.weight"),
            ("lm_head.weight", "output.weight"),
            (
                "model.layers.3.input_layernorm.weight",
                "blk.3.attn_norm.weight",
            ),
            (
                "model.layers.3.post_attention_layernorm.weight",
                "blk.3.ffn_norm.weight",
            ),
            ("model.layers.0.self_attn.q_proj.bias", "blk.0.attn_q.bias"),
            (
                "model.layers.0.self_attn.o_proj.weight",
                "blk.0.attn_output.weight",
            ),
            (
                "model.layers.0.self_attn.k_norm.weight",
                "blk.0.attn_k_norm.weight",
            ),
            (
                "model.layers.12.mlp.gate_proj.weight",
                "blk.12.ffn_gate.weight",
            ),
            ("model.layers.12.mlp.up_proj.weight", "blk.12.ffn_up.weight"),
            (
                "model.layers.12.mlp.down_proj.weight",
                "blk.12.ffn_down.weight",
            ),
        ];
        for (hf, gguf) in llama {
            assert_eq!(
                gguf_tensor_name(hf, Architecture::Llama).as_deref(),
                Some(gguf),
                "{hf}"
            );
        }
        let gpt2 = [
            ("transformer.wte.weight", "token_embd.weight"),
            ("transformer.wpe.weight", "position_embd.weight"),
            ("transformer.ln_f.bias", "output_norm.bias"),
            ("transformer.h.1.ln_1.weight", "blk.1.attn_norm.weight"),
            ("transformer.h.1.attn.c_attn.bias", "blk.1.attn_qkv.bias"),
            (
                "transformer.h.1.attn.c_proj.weight",
                "blk.1.attn_output.weight",
            ),
            ("transformer.h.1.mlp.c_fc.weight", "blk.1.ffn_up.weight"),
            ("transformer.h.1.mlp.c_proj.weight", "blk.1.ffn_down.weight"),
        ];
        for (hf, gguf) in gpt2 {
            assert_eq!(
                gguf_tensor_name(hf, Architecture::Gpt2).as_deref(),
                Some(gguf),
                "{hf}"
            );
        }
        assert_eq!(
            gguf_tensor_name("model.layers.x.mlp.up_proj.weight", Architecture::Llama),
            None
        );
        assert_eq!(
            gguf_tensor_name("transformer.wte.weight", Architecture::Llama),
            None
        );
    }

    #[test]
    fn unpermute_undoes_llama_cpp_permute() {
        // llama.cpp: w.reshape(heads, 2, d/2, in).swapaxes(1, 2).reshape(w.shape).
        // Two heads of 4 rows: rows 0..8 → head 0 [0, 2, 1, 3], head 1 [4, 6, 5, 7].
        let rows: Vec<f32> = [0, 2, 1, 3, 4, 6, 5, 7].iter().map(|&x| x as f32).collect();
        let t = Tensor::from_vec(rows, (8, 1), &Device::Cpu).unwrap();
        let back = unpermute_rope(&t, 2).unwrap().flatten_all().unwrap();
        assert_eq!(
            back.to_vec1::<f32>().unwrap(),
            [0., 1., 2., 3., 4., 5., 6., 7.]
        );
    }
}
