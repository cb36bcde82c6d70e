//! cai's differentiable decoder: one implementation of Llama, Mistral (sliding window), Qwen2
//! (q/k/v bias), Qwen3 (q/k norm) and GPT-2 (learned positions, LayerNorm, GELU, fused
//! `c_attn`), with grouped-query attention, RoPE (θ, linear and Llama-3 scaling), per-row
//! positions, padding masks and an external KV cache. It returns full-sequence hidden states
//! and logits, so the same code serves generation, scoring and training.
//!
//! Parameters carry the checkpoint's own names: [`Decoder::visit_params`] is the single place
//! that lists them, and loading, saving, random initialisation and training all go through it.
//! [`Decoder::visit_linears`] walks the same list by linear layer, for LoRA ([`crate::lora`]).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var, D};

use crate::config::{Architecture, MlpKind, ModelConfig, NormKind, PositionEncoding};
use crate::decode_attention::DecodeAttention;
use crate::kv_cache::KvCache;
use crate::layers::{apply_rope, softmax_last, Linear, Mode, Norm, Rope, RopeAt};
use crate::lora::LoraSwitch;
use crate::mask::{attention_mask, blocked, mask_values, positions_for};
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

#[derive(Debug, Clone)]
struct Attention {
    /// Separate q/k/v projections (llama family) …
    q: Option<Linear>,
    k: Option<Linear>,
    v: Option<Linear>,
    /// … or GPT-2's fused `c_attn` with output `[q | k | v]`.
    qkv: Option<Linear>,
    o: Linear,
    q_norm: Option<Norm>,
    k_norm: Option<Norm>,
}

#[derive(Debug, Clone)]
enum Mlp {
    SwiGlu {
        gate: Linear,
        up: Linear,
        down: Linear,
    },
    Gelu {
        fc: Linear,
        proj: Linear,
        erf: bool,
    },
}

#[derive(Debug, Clone)]
struct Block {
    ln1: Norm,
    attn: Attention,
    ln2: Norm,
    mlp: Mlp,
}

/// The attention mask in the form the chosen attention path needs (cheap to clone).
#[derive(Clone)]
enum AttnMask {
    /// For candle ops: `[b, 1, s, t]` additive, or `None` when nothing is masked.
    Tensor(Option<Tensor>),
    /// For [`DecodeAttention`]: `[b, s, t]` additive values, or `None`.
    Values(Option<Arc<Vec<f32>>>),
}

/// A decoder-only causal language model.
#[derive(Debug, Clone)]
pub struct Decoder {
    config: ModelConfig,
    embed: Tensor,
    wpe: Option<Tensor>,
    blocks: Vec<Block>,
    final_norm: Norm,
    lm_head: Option<Linear>,
    rope: Option<Rope>,
    dtype: DType,
    device: Device,
    /// The on/off switch and dropout seed shared by every LoRA adapter (`None`: no adapters).
    pub(crate) lora: Option<Arc<LoraSwitch>>,
}

/// The per-row bookkeeping of one forward pass without a cache.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[b][s]`: token is real (false: padding).
    pub valid: Vec<Vec<bool>>,
    /// `[b][s]`: position ids.
    pub positions: Vec<Vec<u32>>,
}

impl Batch {
    /// Left- or right-padded rows: positions count real tokens from 0.
    pub fn from_valid(valid: Vec<Vec<bool>>) -> Self {
        let positions = valid.iter().map(|v| positions_for(v, 0)).collect();
        Self { valid, positions }
    }
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

fn placeholder() -> Tensor {
    Tensor::zeros(0, DType::F32, &Device::Cpu).expect("an empty tensor")
}

fn linear(bias: bool) -> Linear {
    Linear::new(placeholder(), bias.then(placeholder))
}

fn norm(cfg: &ModelConfig) -> Norm {
    Norm {
        weight: placeholder(),
        bias: (cfg.norm == NormKind::Layer).then(placeholder),
        eps: cfg.norm_eps,
    }
}

impl Decoder {
    /// Build a decoder whose every parameter comes from `fill`, called once per parameter in
    /// checkpoint order with its spec; `fill` returns the tensor in memory layout
    /// (`[out, in]` for Conv1D weights).
    pub fn build(
        config: ModelConfig,
        dtype: DType,
        device: &Device,
        fill: &mut dyn FnMut(&ParamSpec) -> Result<Tensor>,
    ) -> Result<Self> {
        let cfg = &config;
        let gpt2 = cfg.architecture == Architecture::Gpt2;
        let blocks = (0..cfg.num_layers)
            .map(|_| Block {
                ln1: norm(cfg),
                attn: Attention {
                    q: (!gpt2).then(|| linear(cfg.qkv_bias)),
                    k: (!gpt2).then(|| linear(cfg.qkv_bias)),
                    v: (!gpt2).then(|| linear(cfg.qkv_bias)),
                    qkv: gpt2.then(|| linear(true)),
                    o: linear(cfg.o_bias),
                    q_norm: cfg.qk_norm.then(|| Norm {
                        weight: placeholder(),
                        bias: None,
                        eps: cfg.norm_eps,
                    }),
                    k_norm: cfg.qk_norm.then(|| Norm {
                        weight: placeholder(),
                        bias: None,
                        eps: cfg.norm_eps,
                    }),
                },
                ln2: norm(cfg),
                mlp: match cfg.mlp {
                    MlpKind::SwiGlu => Mlp::SwiGlu {
                        gate: linear(cfg.mlp_bias),
                        up: linear(cfg.mlp_bias),
                        down: linear(cfg.mlp_bias),
                    },
                    kind => Mlp::Gelu {
                        fc: linear(cfg.mlp_bias),
                        proj: linear(cfg.mlp_bias),
                        erf: kind == MlpKind::GeluErf,
                    },
                },
            })
            .collect();
        let rope = match cfg.positions {
            PositionEncoding::Rope { theta, scaling } => Some(Rope::new(
                cfg.head_dim,
                theta,
                scaling,
                cfg.max_position_embeddings,
                dtype,
                device,
            )?),
            PositionEncoding::Learned => None,
        };
        let mut decoder = Self {
            wpe: (cfg.positions == PositionEncoding::Learned).then(placeholder),
            lm_head: (!cfg.tie_word_embeddings).then(|| linear(false)),
            final_norm: norm(cfg),
            embed: placeholder(),
            blocks,
            rope,
            dtype,
            device: device.clone(),
            config,
            lora: None,
        };
        decoder.visit_params(&mut |spec, t| {
            *t = fill(spec)?;
            Ok(())
        })?;
        Ok(decoder)
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Compute dtype of activations.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

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

    /// Shapes: ids `[b, s]` (u32) -> hidden states after the final norm `[b, s, hidden]`.
    ///
    /// `batch` gives each new token's validity and position. With a cache, the new tokens are
    /// appended after what it holds and attend to all of it.
    pub fn forward_hidden(
        &self,
        ids: &Tensor,
        batch: &Batch,
        cache: Option<&mut KvCache>,
        mode: Mode,
    ) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let pos_flat: Vec<u32> = batch.positions.iter().flatten().copied().collect();
        let max_pos = pos_flat.iter().copied().max().unwrap_or(0) as usize;
        if max_pos >= self.config.max_position_embeddings {
            return Err(crate::ModelError::Request(format!(
                "sequence reaches position {max_pos}, beyond the model's max_position_embeddings ({})",
                self.config.max_position_embeddings
            )));
        }
        let positions = Tensor::from_vec(pos_flat, (b, s), &self.device)?;
        let mut x =
            self.embed
                .embedding(&ids.flatten_all()?)?
                .reshape((b, s, self.config.hidden_size))?;
        if let Some(wpe) = &self.wpe {
            x = (x + wpe.embedding(&positions.flatten_all()?)?.reshape((
                b,
                s,
                self.config.hidden_size,
            ))?)?;
        }
        let rope_at = match &self.rope {
            Some(r) => Some(r.at(&positions)?),
            None => None,
        };
        // The CPU attention kernel serves f32 inference and (with its backward) training.
        let kernel = self.device.is_cpu() && self.dtype == DType::F32;
        let build_mask = |valid: &[Vec<bool>],
                          positions: &[Vec<u32>],
                          window: Option<usize>|
         -> Result<AttnMask> {
            Ok(if kernel {
                AttnMask::Values(
                    mask_values(valid, positions, s, window, blocked(self.dtype)).map(Arc::new),
                )
            } else {
                AttnMask::Tensor(attention_mask(
                    valid,
                    positions,
                    s,
                    window,
                    self.dtype,
                    &self.device,
                )?)
            })
        };
        // One mask per distinct window: Qwen may window only some layers.
        let windows: Vec<Option<usize>> = (0..self.blocks.len())
            .map(|l| self.config.layer_window(l))
            .collect();
        let masks_for = |valid: &[Vec<bool>], positions: &[Vec<u32>]| -> Result<Vec<AttnMask>> {
            let mut built: Vec<(Option<usize>, AttnMask)> = Vec::new();
            for &w in &windows {
                if !built.iter().any(|(b, _)| *b == w) {
                    built.push((w, build_mask(valid, positions, w)?));
                }
            }
            Ok(windows
                .iter()
                .map(|w| built.iter().find(|(b, _)| b == w).expect("built").1.clone())
                .collect())
        };
        match cache {
            Some(cache) => {
                cache.push_meta(&batch.valid, &batch.positions)?;
                let masks = masks_for(cache.valid(), cache.positions())?;
                for (l, block) in self.blocks.iter().enumerate() {
                    x = block.forward(
                        &x,
                        &self.config,
                        rope_at.as_ref(),
                        &masks[l],
                        Some((cache, l)),
                        mode,
                    )?;
                }
                cache.commit(s);
            }
            None => {
                let masks = masks_for(&batch.valid, &batch.positions)?;
                for (block, mask) in self.blocks.iter().zip(&masks) {
                    x = block.forward(&x, &self.config, rope_at.as_ref(), mask, None, mode)?;
                }
            }
        }
        self.final_norm.forward(&x, mode)
    }

    /// Shapes: hidden `[.., hidden]` -> logits `[.., vocab]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.logits_mode(hidden, Mode::Infer)
    }

    /// As [`Decoder::logits`]; in [`Mode::Train`] an `lm_head` adapter's dropout applies.
    /// Shapes: hidden `[.., hidden]` -> logits `[.., vocab]`.
    pub fn logits_mode(&self, hidden: &Tensor, mode: Mode) -> Result<Tensor> {
        match &self.lm_head {
            Some(head) => head.forward_mode(hidden, mode),
            None => Linear::new(self.embed.clone(), None).forward(hidden),
        }
    }

    /// Full-sequence logits for training. Shapes: ids `[b, s]` -> logits `[b, s, vocab]`.
    pub fn forward_train(&self, ids: &Tensor, batch: &Batch) -> Result<Tensor> {
        let hidden = self.forward_hidden(ids, batch, None, Mode::Train)?;
        self.logits_mode(&hidden, Mode::Train)
    }
}

impl Block {
    /// Shapes: x `[b, s, h]` -> `[b, s, h]`.
    fn forward(
        &self,
        x: &Tensor,
        cfg: &ModelConfig,
        rope: Option<&RopeAt>,
        mask: &AttnMask,
        cache: Option<(&mut KvCache, usize)>,
        mode: Mode,
    ) -> Result<Tensor> {
        let a = self
            .attn
            .forward(&self.ln1.forward(x, mode)?, cfg, rope, mask, cache, mode)?;
        let x = (x + a)?;
        let m = self.mlp.forward(&self.ln2.forward(&x, mode)?, mode)?;
        Ok((x + m)?)
    }
}

impl Mlp {
    /// Shapes: x `[b, s, h]` -> `[b, s, h]`.
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        match self {
            Mlp::SwiGlu { gate, up, down } => {
                let g = candle_nn::ops::silu(&gate.forward_mode(x, mode)?)?;
                down.forward_mode(&(g * up.forward_mode(x, mode)?)?, mode)
            }
            Mlp::Gelu { fc, proj, erf } => {
                let hdn = fc.forward_mode(x, mode)?;
                let act = if *erf { hdn.gelu_erf()? } else { hdn.gelu()? };
                proj.forward_mode(&act, mode)
            }
        }
    }
}

impl Attention {
    /// Shapes: x `[b, s, h]` -> `[b, s, h]`; the cache (if any) gains `s` slots.
    fn forward(
        &self,
        x: &Tensor,
        cfg: &ModelConfig,
        rope: Option<&RopeAt>,
        mask: &AttnMask,
        cache: Option<(&mut KvCache, usize)>,
        mode: Mode,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let (q, k, v) = match &self.qkv {
            Some(qkv) => {
                let y = qkv.forward_mode(x, mode)?;
                (
                    y.narrow(D::Minus1, 0, nh * hd)?,
                    y.narrow(D::Minus1, nh * hd, nkv * hd)?,
                    y.narrow(D::Minus1, (nh + nkv) * hd, nkv * hd)?,
                )
            }
            None => (
                self.q.as_ref().expect("q").forward_mode(x, mode)?,
                self.k.as_ref().expect("k").forward_mode(x, mode)?,
                self.v.as_ref().expect("v").forward_mode(x, mode)?,
            ),
        };
        let mut q = q.reshape((b, s, nh, hd))?;
        let mut k = k.reshape((b, s, nkv, hd))?;
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward(&q, mode)?;
            k = kn.forward(&k, mode)?;
        }
        let mut q = q.transpose(1, 2)?.contiguous()?;
        let mut k = k.transpose(1, 2)?.contiguous()?;
        let v = v.reshape((b, s, nkv, hd))?.transpose(1, 2)?.contiguous()?;
        if let Some(at) = rope {
            q = apply_rope(&q, at, mode)?;
            k = apply_rope(&k, at, mode)?;
        }
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, &k, &v)?,
            None => (k, v),
        };
        if let AttnMask::Values(values) = mask {
            let op = DecodeAttention {
                scale: 1.0 / (hd as f32).sqrt(),
                mask: values.clone(),
            };
            let out = match mode {
                Mode::Infer => q.apply_op3_no_bwd(&k, &v, &op)?,
                Mode::Train => q.apply_op3(&k, &v, op)?,
            };
            let out = out.transpose(1, 2)?.reshape((b, s, nh * hd))?;
            return self.o.forward_mode(&out, mode);
        }
        let mask = match mask {
            AttnMask::Tensor(t) => t.as_ref(),
            AttnMask::Values(_) => None,
        };
        let t = k.dim(2)?;
        let rep = nh / nkv;
        // Heads that share a kv head are adjacent, so folding them into the query axis lets
        // one batched matmul serve the whole group without copying k and v.
        let q = (q.reshape((b, nkv, rep * s, hd))? * (1.0 / (hd as f64).sqrt()))?;
        let mut scores = q.matmul(&k.t()?)?.reshape((b, nh, s, t))?;
        if let Some(m) = mask {
            scores = scores.broadcast_add(m)?;
        }
        let probs = softmax_last(&scores, mode)?.reshape((b, nkv, rep * s, t))?;
        let out = probs
            .matmul(&v)?
            .reshape((b, nh, s, hd))?
            .transpose(1, 2)?
            .reshape((b, s, nh * hd))?;
        self.o.forward_mode(&out, mode)
    }
}
