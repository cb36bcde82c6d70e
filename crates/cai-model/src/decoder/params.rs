//! The checkpoint's parameter names: the one walk over a [`Decoder`]'s modules that lists every
//! tensor with its Hugging Face name, file shape and kind, or every linear layer with its PEFT
//! module path. Loading, saving, random initialisation, training and LoRA all go through it.

use candle_core::{DType, Tensor, Var};

use super::{Decoder, Mlp};
use crate::config::Architecture;
use crate::layers::{Linear, Norm};
use crate::Result;

/// What a parameter is, which decides how it is initialised and whether weight decay applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A token or position embedding table.
    Embedding,
    /// A projection matrix.
    Matrix,
    /// A normalisation weight (initialised to one, no weight decay).
    NormWeight,
    /// A bias (initialised to zero, no weight decay).
    Bias,
}

/// One named parameter as it appears in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// The Hugging Face tensor name.
    pub name: String,
    /// Shape in the checkpoint file.
    pub file_shape: Vec<usize>,
    /// Kind of parameter.
    pub kind: ParamKind,
    /// GPT-2 Conv1D weight: stored `[in, out]` in the file, `[out, in]` in memory.
    pub conv1d: bool,
}

/// A callback over named parameters; see [`Decoder::visit_params`].
pub type ParamVisitor<'a> = dyn FnMut(&ParamSpec, &mut Tensor) -> Result<()> + 'a;

/// One linear layer, addressed by its module path as PEFT names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearSpec {
    /// The Hugging Face module path: the weight's name without `.weight`
    /// (`model.layers.0.self_attn.q_proj`, `transformer.h.0.attn.c_attn`, `lm_head`).
    pub path: String,
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
    /// GPT-2 Conv1D: the weight is stored `[in, out]` in the file.
    pub conv1d: bool,
}

/// A callback over linear layers; see [`Decoder::visit_linears`].
pub type LinearVisitor<'a> = dyn FnMut(&LinearSpec, &mut Linear) -> Result<()> + 'a;

/// What one walk over the modules calls back: every parameter, or every linear layer.
enum Walk<'a, 'b> {
    Params(&'a mut ParamVisitor<'b>),
    Linears(&'a mut LinearVisitor<'b>),
}

fn visit_one(
    f: &mut Walk<'_, '_>,
    name: String,
    file_shape: Vec<usize>,
    kind: ParamKind,
    conv1d: bool,
    t: &mut Tensor,
) -> Result<()> {
    let Walk::Params(f) = f else {
        return Ok(());
    };
    f(
        &ParamSpec {
            name,
            file_shape,
            kind,
            conv1d,
        },
        t,
    )
}

fn visit_linear(
    f: &mut Walk<'_, '_>,
    prefix: String,
    out: usize,
    inp: usize,
    l: &mut Linear,
    conv1d: bool,
) -> Result<()> {
    if let Walk::Linears(f) = f {
        let spec = LinearSpec {
            path: prefix,
            in_features: inp,
            out_features: out,
            conv1d,
        };
        return f(&spec, l);
    }
    let shape = if conv1d {
        vec![inp, out]
    } else {
        vec![out, inp]
    };
    visit_one(
        f,
        format!("{prefix}.weight"),
        shape,
        ParamKind::Matrix,
        conv1d,
        &mut l.weight,
    )?;
    if let Some(b) = &mut l.bias {
        visit_one(
            f,
            format!("{prefix}.bias"),
            vec![out],
            ParamKind::Bias,
            false,
            b,
        )?;
    }
    Ok(())
}

fn visit_norm(f: &mut Walk<'_, '_>, prefix: String, dim: usize, n: &mut Norm) -> Result<()> {
    visit_one(
        f,
        format!("{prefix}.weight"),
        vec![dim],
        ParamKind::NormWeight,
        false,
        &mut n.weight,
    )?;
    if let Some(b) = &mut n.bias {
        visit_one(
            f,
            format!("{prefix}.bias"),
            vec![dim],
            ParamKind::Bias,
            false,
            b,
        )?;
    }
    Ok(())
}

impl Decoder {
    /// Visit every parameter with its checkpoint spec, in a fixed order. This is the one list
    /// of tensor names; the tensor passed is in memory layout (Conv1D weights `[out, in]`).
    /// LoRA adapters are not parameters of the base model and are not visited.
    pub fn visit_params(&mut self, f: &mut ParamVisitor<'_>) -> Result<()> {
        self.walk(&mut Walk::Params(f))
    }

    /// Visit every linear layer (the untied `lm_head` included) with its module path, in
    /// checkpoint order; LoRA installs, saves and merges its adapters through this.
    pub fn visit_linears(&mut self, f: &mut LinearVisitor<'_>) -> Result<()> {
        self.walk(&mut Walk::Linears(f))
    }

    fn walk(&mut self, f: &mut Walk<'_, '_>) -> Result<()> {
        let cfg = self.config.clone();
        let h = cfg.hidden_size;
        let (q_out, kv_out) = (
            cfg.num_heads * cfg.head_dim,
            cfg.num_kv_heads * cfg.head_dim,
        );
        let gpt2 = cfg.architecture == Architecture::Gpt2;
        let embed_name = if gpt2 {
            "transformer.wte.weight"
        } else {
            "model.embed_tokens.weight"
        };
        visit_one(
            f,
            embed_name.into(),
            vec![cfg.vocab_size, h],
            ParamKind::Embedding,
            false,
            &mut self.embed,
        )?;
        if let Some(wpe) = &mut self.wpe {
            let shape = vec![cfg.max_position_embeddings, h];
            visit_one(
                f,
                "transformer.wpe.weight".into(),
                shape,
                ParamKind::Embedding,
                false,
                wpe,
            )?;
        }
        for (i, block) in self.blocks.iter_mut().enumerate() {
            if gpt2 {
                let p = format!("transformer.h.{i}");
                visit_norm(f, format!("{p}.ln_1"), h, &mut block.ln1)?;
                let qkv = block.attn.qkv.as_mut().expect("gpt2 has c_attn");
                visit_linear(f, format!("{p}.attn.c_attn"), 3 * h, h, qkv, true)?;
                visit_linear(f, format!("{p}.attn.c_proj"), h, h, &mut block.attn.o, true)?;
                visit_norm(f, format!("{p}.ln_2"), h, &mut block.ln2)?;
                if let Mlp::Gelu { fc, proj, .. } = &mut block.mlp {
                    visit_linear(
                        f,
                        format!("{p}.mlp.c_fc"),
                        cfg.intermediate_size,
                        h,
                        fc,
                        true,
                    )?;
                    visit_linear(
                        f,
                        format!("{p}.mlp.c_proj"),
                        h,
                        cfg.intermediate_size,
                        proj,
                        true,
                    )?;
                }
            } else {
                let p = format!("model.layers.{i}");
                visit_norm(f, format!("{p}.input_layernorm"), h, &mut block.ln1)?;
                let a = &mut block.attn;
                visit_linear(
                    f,
                    format!("{p}.self_attn.q_proj"),
                    q_out,
                    h,
                    a.q.as_mut().expect("q"),
                    false,
                )?;
                visit_linear(
                    f,
                    format!("{p}.self_attn.k_proj"),
                    kv_out,
                    h,
                    a.k.as_mut().expect("k"),
                    false,
                )?;
                visit_linear(
                    f,
                    format!("{p}.self_attn.v_proj"),
                    kv_out,
                    h,
                    a.v.as_mut().expect("v"),
                    false,
                )?;
                visit_linear(
                    f,
                    format!("{p}.self_attn.o_proj"),
                    h,
                    q_out,
                    &mut a.o,
                    false,
                )?;
                if let (Some(qn), Some(kn)) = (&mut a.q_norm, &mut a.k_norm) {
                    visit_norm(f, format!("{p}.self_attn.q_norm"), cfg.head_dim, qn)?;
                    visit_norm(f, format!("{p}.self_attn.k_norm"), cfg.head_dim, kn)?;
                }
                visit_norm(
                    f,
                    format!("{p}.post_attention_layernorm"),
                    h,
                    &mut block.ln2,
                )?;
                if let Mlp::SwiGlu { gate, up, down } = &mut block.mlp {
                    let i_size = cfg.intermediate_size;
                    visit_linear(f, format!("{p}.mlp.gate_proj"), i_size, h, gate, false)?;
                    visit_linear(f, format!("{p}.mlp.up_proj"), i_size, h, up, false)?;
                    visit_linear(f, format!("{p}.mlp.down_proj"), h, i_size, down, false)?;
                }
            }
        }
        let final_name = if gpt2 {
            "transformer.ln_f"
        } else {
            "model.norm"
        };
        visit_norm(f, final_name.into(), h, &mut self.final_norm)?;
        if let Some(head) = &mut self.lm_head {
            visit_linear(f, "lm_head".into(), cfg.vocab_size, h, head, false)?;
        }
        Ok(())
    }

    /// Re-lay every untied projection matrix as row-major `[in, out]` (the tensor stays a
    /// `[out, in]` view), which the few-row CPU kernel streams without horizontal sums.
    /// Call once on a model that will only run inference; the tied output matrix keeps the
    /// embedding's layout.
    pub fn prepare_for_inference(&mut self) -> Result<()> {
        if !self.device.is_cpu() || self.dtype != DType::F32 {
            return Ok(());
        }
        self.visit_params(&mut |spec, t| {
            if spec.kind == ParamKind::Matrix && t.is_contiguous() {
                *t = t.t()?.contiguous()?.t()?;
            }
            Ok(())
        })
    }

    /// A copy for inference only that shares every tensor's storage but tracks no gradient
    /// (parameters and LoRA adapters detached): sampling from a model being trained. With
    /// `bf16` (an f32 CPU model) its weights become bf16 copies
    /// ([`Decoder::prepare_for_bf16_inference`]), for the bf16 kernels.
    pub fn inference_view(&self, bf16: bool) -> Result<Decoder> {
        let mut view = self.clone();
        view.visit_params(&mut |_, t| {
            *t = t.detach();
            Ok(())
        })?;
        view.visit_linears(&mut |_, l| {
            if let Some(lora) = &mut l.lora {
                lora.a = lora.a.detach();
                lora.b = lora.b.detach();
            }
            Ok(())
        })?;
        if bf16 {
            view.prepare_for_bf16_inference()?;
        }
        Ok(view)
    }

    /// The dtype to build a model in that will run inference at `requested` on `device`: bf16
    /// on the CPU means f32 activations over packed bf16 weights, so such a model is built in
    /// f32 and then given to [`Decoder::prepare_for_inference_as`].
    pub fn inference_build_dtype(requested: DType, device: &candle_core::Device) -> DType {
        if device.is_cpu() && requested == DType::BF16 {
            DType::F32
        } else {
            requested
        }
    }

    /// Prepare for inference at the dtype the user asked for: bf16 on the CPU packs the
    /// weights ([`Decoder::prepare_for_bf16_inference`]), anything else re-lays them
    /// ([`Decoder::prepare_for_inference`]).
    pub fn prepare_for_inference_as(&mut self, requested: DType) -> Result<()> {
        if requested == DType::BF16 && self.device.is_cpu() && self.dtype == DType::F32 {
            self.prepare_for_bf16_inference()
        } else {
            self.prepare_for_inference()
        }
    }

    /// Prepare an f32 CPU model for inference with bf16 weights: every linear layer's weight
    /// and the token embedding (a tied output layer) become bf16 tensors, which
    /// [`crate::kernels::bf16`]'s kernels multiply with f32 activations rounded to bf16,
    /// summing in f32; norms, attention, the KV cache and the activations stay f32 (embedding
    /// rows are widened as they are looked up). A model on another device or in another dtype
    /// is left as it is. Call once, on a model that will only run inference.
    pub fn prepare_for_bf16_inference(&mut self) -> Result<()> {
        if !self.device.is_cpu() || self.dtype != DType::F32 {
            return Ok(());
        }
        self.visit_linears(&mut |_, l| {
            l.weight = l.weight.to_dtype(DType::BF16)?.contiguous()?;
            Ok(())
        })?;
        self.embed = self.embed.to_dtype(DType::BF16)?.contiguous()?;
        Ok(())
    }

    /// Turn every parameter into a trainable [`Var`] (full fine-tuning) and return them in
    /// checkpoint order with their specs. The model's tensors are the variables' tensors, so an
    /// optimiser step on a variable changes the model.
    pub fn make_trainable(&mut self) -> Result<Vec<(ParamSpec, Var)>> {
        let mut vars = Vec::new();
        self.visit_params(&mut |spec, t| {
            let var = Var::from_tensor(&t.contiguous()?)?;
            *t = var.as_tensor().clone();
            vars.push((spec.clone(), var));
            Ok(())
        })?;
        Ok(vars)
    }

    /// All parameters with their specs, in checkpoint order (tensors share storage with the model).
    pub fn params(&self) -> Vec<(ParamSpec, Tensor)> {
        let mut out = Vec::new();
        let mut copy = self.clone();
        copy.visit_params(&mut |spec, t| {
            out.push((spec.clone(), t.clone()));
            Ok(())
        })
        .expect("collecting never fails");
        out
    }
}
