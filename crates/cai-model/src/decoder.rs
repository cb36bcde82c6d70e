//! cai's differentiable decoder: one implementation of Llama, Mistral (sliding window), Qwen2
//! (q/k/v bias), Qwen3 (q/k norm) and GPT-2 (learned positions, LayerNorm, GELU, fused
//! `c_attn`), with grouped-query attention, RoPE (θ, linear and Llama-3 scaling), per-row
//! positions, padding masks and an external KV cache. It returns full-sequence hidden states
//! and logits, so the same code serves generation, scoring and training.
//!
//! Parameters carry the checkpoint's own names: [`Decoder::visit_params`] is the single place
//! that lists them, and loading, saving, random initialisation and training all go through it.
//! [`Decoder::visit_linears`] walks the same list by linear layer, for LoRA ([`crate::lora`]).
//! That walk is in `decoder/params.rs`, re-exported here; this file is the forward pass.

mod layer_pass;
mod params;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, D};

use crate::config::{Architecture, MlpKind, ModelConfig, NormKind, PositionEncoding};
use crate::kernels::decode_attention::DecodeAttention;
use crate::kv_cache::{KvCache, LayerKeys};
use crate::layers::{apply_rope, softmax_last, Linear, Mode, Norm, Rope, RopeAt};
use crate::lora::LoraSwitch;
use crate::mask::{attention_mask, blocked, mask_values, positions_for};
use crate::Result;

pub use layer_pass::LayerPass;
pub use params::{LinearSpec, LinearVisitor, ParamKind, ParamSpec, ParamVisitor};

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
        crate::memory::check(device, cfg.memory_bytes(dtype), || {
            format!(
                "{} in {}",
                cfg.describe(),
                crate::weights::dtype_short_name(dtype)
            )
        })?;
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

    /// The token (and learned position) embeddings of a cacheless or cached pass, and the
    /// rotary factors of its positions. Shapes: ids `[b, s]` (u32) -> (`[b, s, hidden]`,
    /// rotary factors `[b, s, head_dim / 2]`).
    fn embed_positions(&self, ids: &Tensor, batch: &Batch) -> Result<(Tensor, Option<RopeAt>)> {
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
        if x.dtype() != self.dtype {
            // bf16 weights under f32 activations (`Decoder::prepare_for_bf16_inference`).
            x = x.to_dtype(self.dtype)?;
        }
        if let Some(wpe) = &self.wpe {
            x = (x + wpe.embedding(&positions.flatten_all()?)?.reshape((
                b,
                s,
                self.config.hidden_size,
            ))?)?;
        }
        let rope_at = match &self.rope {
            Some(r) => Some(r.at(&positions, max_pos + 1)?),
            None => None,
        };
        Ok((x, rope_at))
    }

    /// Each layer's attention mask for `s` new tokens whose keys are the rows `valid` and
    /// `positions` describe (`[b][t]`); one mask per distinct window, shared by the layers
    /// that use it (Qwen may window only some layers).
    fn masks_for(
        &self,
        valid: &[Vec<bool>],
        positions: &[Vec<u32>],
        s: usize,
    ) -> Result<Vec<AttnMask>> {
        // The CPU attention kernel serves f32 inference and (with its backward) training.
        let kernel = self.device.is_cpu() && self.dtype == DType::F32;
        let build_mask = |window: Option<usize>| -> Result<AttnMask> {
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
        let windows: Vec<Option<usize>> = (0..self.blocks.len())
            .map(|l| self.config.layer_window(l))
            .collect();
        let mut built: Vec<(Option<usize>, AttnMask)> = Vec::new();
        for &w in &windows {
            if !built.iter().any(|(b, _)| *b == w) {
                built.push((w, build_mask(w)?));
            }
        }
        Ok(windows
            .iter()
            .map(|w| built.iter().find(|(b, _)| b == w).expect("built").1.clone())
            .collect())
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
        let (mut x, rope_at) = self.embed_positions(ids, batch)?;
        if mode == Mode::Infer {
            // Inference records no graph (see `Linear::forward_mode`).
            x = x.detach();
        }
        let s = ids.dim(1)?;
        match cache {
            Some(cache) => {
                cache.push_meta(&batch.valid, &batch.positions)?;
                let masks = self.masks_for(cache.valid(), cache.positions(), s)?;
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
                let masks = self.masks_for(&batch.valid, &batch.positions, s)?;
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
            None => Linear::new(self.embed.clone(), None).forward_mode(hidden, mode),
        }
    }

    /// The output layer's weight `[vocab, hidden]` when it is a plain matrix (tied to the
    /// embedding, or an `lm_head` without a LoRA adapter): what fused ops over the output layer
    /// ([`crate::kernels::head_nll`]) take in place of [`Decoder::logits`].
    pub fn head_weight(&self) -> Option<&Tensor> {
        match &self.lm_head {
            Some(head) if head.lora.is_some() || head.bias.is_some() => None,
            Some(head) => Some(&head.weight),
            None => Some(&self.embed),
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
            Mlp::SwiGlu { gate, up, down } if mode == Mode::Train && fused_swiglu(x, gate, up) => {
                // One graph node for both projections and the gate (see `SwiGluProj`).
                let op = crate::kernels::mlp_block::SwiGluProj::default();
                let h = x.contiguous()?.apply_op3(&gate.weight, &up.weight, op)?;
                down.forward_mode(&h, mode)
            }
            Mlp::SwiGlu { gate, up, down } => {
                let (g, u) = (gate.forward_mode(x, mode)?, up.forward_mode(x, mode)?);
                let fused = g.device().is_cpu() && g.dtype() == DType::F32;
                let op = crate::kernels::train_ops::SwiGluOp;
                let (g, u) = (g.contiguous()?, u.contiguous()?);
                let h = if fused && mode == Mode::Train {
                    g.apply_op2(&u, op)?
                } else if fused {
                    g.apply_op2_no_bwd(&u, &op)?
                } else {
                    (candle_nn::ops::silu(&g)? * u)?
                };
                down.forward_mode(&h, mode)
            }
            Mlp::Gelu { fc, proj, erf } => {
                let hdn = fc.forward_mode(x, mode)?;
                let act = if *erf { hdn.gelu_erf()? } else { hdn.gelu()? };
                proj.forward_mode(&act, mode)
            }
        }
    }
}

/// Whether the gate and up projections can run as one [`crate::kernels::mlp_block::SwiGluProj`]:
/// plain f32 CPU weights, no bias, no LoRA adapter.
fn fused_swiglu(x: &Tensor, gate: &Linear, up: &Linear) -> bool {
    [gate, up]
        .iter()
        .all(|l| l.bias.is_none() && l.lora.is_none() && crate::layers::train_kernel(x, &l.weight))
        && gate.weight.dims() == up.weight.dims()
}

/// Whether a training pass can split and merge heads with
/// [`crate::kernels::attention_heads`]: f32 on the CPU, contiguous f32 rotary factors.
fn fused_heads(x: &Tensor, rope: Option<&RopeAt>) -> bool {
    x.device().is_cpu()
        && x.dtype() == DType::F32
        && rope.is_none_or(|at| {
            [&at.cos, &at.sin]
                .iter()
                .all(|t| t.dtype() == DType::F32 && t.is_contiguous())
        })
}

impl Attention {
    /// A training pass without a cache in five graph nodes: three projections, each with its
    /// split into heads (q and k rotated) as one op, the attention op, and the merge of the
    /// heads with the output projection as one op (a projection with a bias or an adapter is
    /// a node of its own). Shapes: x `[b, s, h]` -> `[b, s, h]`.
    fn forward_train_fused(
        &self,
        x: &Tensor,
        cfg: &ModelConfig,
        rope: Option<&RopeAt>,
        mask: &Option<Arc<Vec<f32>>>,
        [q, k, v]: [&Linear; 3],
    ) -> Result<Tensor> {
        use crate::kernels::attention_heads::{MergeHeads, SplitHeads};
        let x = x.contiguous()?;
        // A plain linear layer (no bias, no adapter) runs inside the split or merge op, whose
        // backward then needs only the layer's input, not its output.
        let plain = |l: &Linear| {
            l.bias.is_none() && l.lora.is_none() && crate::layers::train_kernel(&x, &l.weight)
        };
        let split = |l: &Linear, heads: usize, rotate: bool| -> Result<Tensor> {
            let op = SplitHeads {
                heads,
                rope: if rotate { rope.cloned() } else { None },
            };
            Ok(if plain(l) {
                x.apply_op2(&l.weight, op)?
            } else {
                l.forward_mode(&x, Mode::Train)?.apply_op1(op)?
            })
        };
        let q = split(q, cfg.num_heads, true)?;
        let k = split(k, cfg.num_kv_heads, true)?;
        let v = split(v, cfg.num_kv_heads, false)?;
        let op = DecodeAttention {
            scale: 1.0 / (cfg.head_dim as f32).sqrt(),
            mask: mask.clone(),
            shared: 0,
            head: None,
        };
        let heads = q.apply_op3(&k, &v, op)?;
        if plain(&self.o) {
            return Ok(heads.apply_op2(&self.o.weight, MergeHeads)?);
        }
        self.o
            .forward_mode(&heads.apply_op1(MergeHeads)?, Mode::Train)
    }

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
        if mode == Mode::Train && cache.is_none() && self.q_norm.is_none() {
            if let (AttnMask::Values(values), Some(q), Some(k), Some(v)) =
                (mask, &self.q, &self.k, &self.v)
            {
                if fused_heads(x, rope) {
                    return self.forward_train_fused(x, cfg, rope, values, [q, k, v]);
                }
            }
        }
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
        // Inference may read a prefix that every row shares from row 0 (training keeps each
        // row's own slots, whose gradients are its own).
        let shared = match (&cache, mode) {
            (Some((cache, _)), Mode::Infer) => cache.shared(),
            _ => 0,
        };
        let keys = match cache {
            Some((cache, layer)) => cache.append(layer, &k, &v)?,
            None => LayerKeys { k, v, head: None },
        };
        if let AttnMask::Values(values) = mask {
            // The kernel reads a prefix held apart; its backward takes every row's copy.
            let (k, v, head) = match (mode, keys.head) {
                (Mode::Infer, head) => (keys.k, keys.v, head),
                (Mode::Train, head) => {
                    let (k, v) = LayerKeys { head, ..keys }.dense()?;
                    (k, v, None)
                }
            };
            let op = DecodeAttention {
                scale: 1.0 / (hd as f32).sqrt(),
                mask: values.clone(),
                shared,
                head,
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
        let (k, v) = keys.dense()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::params::ParamKind;

    /// Log-probabilities of every position through `d`. Shapes: ids `[1, s]` -> `[s, vocab]`.
    fn log_probs(d: &Decoder, ids: &Tensor) -> Tensor {
        let s = ids.dim(1).unwrap();
        let batch = Batch::from_valid(vec![vec![true; s]]);
        let hidden = d.forward_hidden(ids, &batch, None, Mode::Infer).unwrap();
        let logits = d.logits(&hidden).unwrap().squeeze(0).unwrap();
        candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap()
    }

    /// Sampling from the model being trained (an RL rollout, its old log-probs) takes the
    /// same few-row kernels as a frozen copy, bit for bit, and records nothing for backprop.
    #[test]
    fn inference_over_trainable_weights_matches_a_frozen_copy() {
        let dev = Device::Cpu;
        let frozen = crate::test_util::tiny_decoder(64);
        let mut trainable = frozen.clone();
        let vars = trainable.make_trainable().unwrap();
        assert!(!vars.is_empty());
        let ids = Tensor::new(&[[3u32, 14, 15, 92, 65, 35]], &dev).unwrap();
        let (want, got) = (log_probs(&frozen, &ids), log_probs(&trainable, &ids));
        assert!(!got.track_op(), "inference recorded a graph");
        assert_eq!(crate::test_util::max_abs_diff(&want, &got), 0.0);
    }

    /// `--dtype bf16` on the CPU: bf16 weights (the tied output layer included), f32
    /// activations; log-probabilities within bf16 rounding of the f32 model's, with and
    /// without a KV cache.
    #[test]
    fn bf16_weights_stay_within_rounding_of_f32() {
        let dev = Device::Cpu;
        let f32_model = crate::test_util::tiny_decoder(64);
        let mut bf16_model = f32_model.clone();
        bf16_model.prepare_for_bf16_inference().unwrap();
        assert_eq!(bf16_model.dtype(), DType::F32, "activations stay f32");
        assert!(bf16_model
            .params()
            .iter()
            .filter(|(spec, _)| spec.kind == ParamKind::Matrix || spec.kind == ParamKind::Embedding)
            .all(|(_, t)| t.dtype() == DType::BF16));
        let ids = Tensor::new(&[[3u32, 14, 15, 92, 65, 35, 89, 79, 32, 38]], &dev).unwrap();
        let (want, got) = (log_probs(&f32_model, &ids), log_probs(&bf16_model, &ids));
        let diff = crate::test_util::max_abs_diff(&want, &got);
        assert!(diff > 0.0, "the bf16 model computed exactly the f32 values");
        assert!(diff < 0.02, "bf16 log-probs differ from f32 by {diff} nats");
        // Token by token through a KV cache (the decode path: one row per step).
        let mut cache = KvCache::new(bf16_model.config(), 1, 10, DType::F32, &dev).unwrap();
        let mut last = None;
        for t in 0..10 {
            let step = ids.narrow(1, t, 1).unwrap();
            let batch = Batch {
                valid: vec![vec![true]],
                positions: vec![vec![t as u32]],
            };
            let h = bf16_model
                .forward_hidden(&step, &batch, Some(&mut cache), Mode::Infer)
                .unwrap();
            last = Some(bf16_model.logits(&h).unwrap().squeeze(0).unwrap());
        }
        let last = candle_nn::ops::log_softmax(&last.unwrap(), D::Minus1).unwrap();
        let full_last = got.narrow(0, 9, 1).unwrap();
        let diff = crate::test_util::max_abs_diff(&last, &full_last);
        assert!(
            diff < 1e-3,
            "cached and uncached bf16 passes differ by {diff}"
        );
    }

    /// A training pass through the fused f32 kernels (`LinearTrain`, `SwiGluProj`,
    /// `SplitHeads`, `MergeHeads`, attention) gives every parameter the gradient candle's
    /// composed ops give the same weights in f64, a left-padded row included.
    #[test]
    fn fused_training_gradients_match_the_composed_ops_in_f64() {
        let dev = Device::Cpu;
        let mut d32 = crate::test_util::tiny_decoder(16);
        let params = d32.params();
        let mut next = params.iter();
        let mut d64 = Decoder::build(d32.config().clone(), DType::F64, &dev, &mut |_| {
            Ok(next
                .next()
                .expect("one tensor per parameter")
                .1
                .to_dtype(DType::F64)?)
        })
        .unwrap();
        let (v32, v64) = (d32.make_trainable().unwrap(), d64.make_trainable().unwrap());
        let ids = Tensor::new(&[[5u32, 17, 3, 99, 42, 8], [0, 0, 61, 2, 7, 30]], &dev).unwrap();
        let batch = Batch::from_valid(vec![
            vec![true; 6],
            vec![false, false, true, true, true, true],
        ]);
        let probe = Tensor::randn(0f32, 1.0, (2, 6, 100), &dev).unwrap();
        let grads = |d: &Decoder, dtype: DType| {
            let logits = d.forward_train(&ids, &batch).unwrap();
            let p = probe.to_dtype(dtype).unwrap();
            (logits * p).unwrap().sum_all().unwrap().backward().unwrap()
        };
        let (g32, g64) = (grads(&d32, DType::F32), grads(&d64, DType::F64));
        for ((spec, a), (_, b)) in v32.iter().zip(&v64) {
            let a = g32.get(a.as_tensor()).expect("an f32 gradient");
            let b = g64.get(b.as_tensor()).expect("an f64 gradient");
            let b = b.to_dtype(DType::F32).unwrap();
            let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
            let scale = scale.to_scalar::<f32>().unwrap().max(1e-3);
            let diff = crate::test_util::max_abs_diff(a, &b);
            assert!(
                diff <= 1e-4 * scale,
                "{}: {diff} against {scale}",
                spec.name
            );
        }
    }

    /// Inference over trainable weights (a rollout, an evaluation) builds no backprop graph,
    /// which would keep every layer's activations alive; training still does, tied output
    /// layer included.
    #[test]
    fn inference_over_trainable_weights_records_no_graph() {
        let dev = Device::Cpu;
        let mut d = crate::test_util::tiny_decoder(64);
        d.make_trainable().unwrap();
        let ids = Tensor::new(&[[1u32, 2, 3, 4, 5, 6, 7, 8]], &dev).unwrap();
        let batch = Batch::from_valid(vec![vec![true; 8]]);
        let hidden = d.forward_hidden(&ids, &batch, None, Mode::Infer).unwrap();
        assert!(!hidden.track_op(), "an inference pass recorded a graph");
        assert!(!d.logits(&hidden).unwrap().track_op());
        let trained = d.forward_hidden(&ids, &batch, None, Mode::Train).unwrap();
        assert!(trained.track_op());
        let logits = d.logits_mode(&trained, Mode::Train).unwrap();
        let grads = logits.sum_all().unwrap().backward().unwrap();
        let (_, embed) = &d.params()[0];
        assert!(
            grads.get(embed).is_some(),
            "the embedding lost its gradient"
        );
    }
}
