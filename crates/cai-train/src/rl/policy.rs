//! The model RL trains: the policy (every weight, or LoRA adapters), its value head (PPO), and
//! the frozen reference it is held near — with LoRA the same weights with the adapters
//! switched off, not a second copy. Also the forward pass over sampled responses that gives
//! their tokens' log-probabilities (with or without gradient) and the critic's values.

use std::path::{Path, PathBuf};

use cai_model::config::ModelConfig;
use cai_model::decoder::{Batch, Decoder};
use cai_model::kernels::head_nll::{head_log_probs, head_nll};
use cai_model::layers::Mode;
use cai_model::lora::LoraConfig;
use cai_model::tokenizer::Tokenizer;
use cai_model::weights::load_decoder;
use candle_core::{DType, Device, Tensor, Var};

use crate::core::checkpoint::LoadedCheckpoint;
use crate::core::loss::target_log_probs;
use crate::core::recompute::TrainPass;
use crate::core::session::{CheckpointParts, Checkpointed};
use crate::core::trainee::{write_json, Trainee};
use crate::{GradAccumulator, Result, TrainError, TrainParam};

/// Name of the value head's weights in checkpoints and the optimiser's state.
pub const VALUE_HEAD: &str = "v_head.weight";
/// The value head's file inside a checkpoint directory.
pub const VALUE_HEAD_FILE: &str = "value_head.json";

/// A dialogue prompt followed by a sampled response, as tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    /// Prompt then response tokens.
    pub ids: Vec<u32>,
    /// Where the response starts (≥ 1: a response token is predicted from the one before).
    pub response_start: usize,
}

impl Sequence {
    /// The response's tokens.
    pub fn response(&self) -> &[u32] {
        &self.ids[self.response_start..]
    }
}

/// What the reference model is.
enum Reference {
    /// The policy's own base weights with its LoRA adapters switched off.
    AdaptersOff,
    /// A frozen copy of the starting weights (full fine-tuning).
    Frozen(Box<Decoder>),
}

/// The policy being trained, its optional value head and its reference.
pub struct Policy {
    /// The decoder and its trainable parameters.
    pub trainee: Trainee,
    /// PPO's critic: `[1, hidden]`, reading the policy's last hidden states.
    pub value_head: Option<Var>,
    reference: Reference,
    /// Rollouts and the reference run on bf16 weights (`dtype = "bf16"` on the CPU).
    bf16_rollouts: bool,
}

/// One forward pass's outputs over the response tokens of a batch of sequences, in order
/// (sequence by sequence, token by token).
pub struct ResponseOutputs {
    /// Log-probability of each response token `[n]` (f32).
    pub log_probs: Tensor,
    /// The critic's value of the state before each response token `[n]` (f32), with a head.
    pub values: Option<Tensor>,
    /// Entropy of the policy at each response token (without gradient), when asked for.
    pub entropy: Option<Vec<f32>>,
    /// Σ entropy over the response tokens with its gradient (asked for in [`Mode::Train`]).
    pub entropy_sum: Option<Tensor>,
    /// Response tokens per sequence.
    pub lengths: Vec<usize>,
}

impl Policy {
    /// Load the policy from `dir`: LoRA adapters over frozen weights, or every weight
    /// trainable with a frozen copy as reference; a zero value head when `value_head`.
    pub fn load(
        dir: &Path,
        lora: Option<&LoraConfig>,
        value_head: bool,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, Tokenizer)> {
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let tokenizer = Tokenizer::from_dir(dir)?;
        tokenizer.check_fits(config.vocab_size, dir)?;
        let ckpt = cai_model::checkpoint::Checkpoint::open_dir(dir)?;
        let hidden = config.hidden_size;
        let decoder = load_decoder(config.clone(), &ckpt, dtype, device)?;
        let reference = match lora {
            Some(_) => Reference::AdaptersOff,
            None => {
                let mut frozen = load_decoder(config, &ckpt, dtype, device)?;
                frozen.prepare_for_inference()?;
                Reference::Frozen(Box::new(frozen))
            }
        };
        let trainee = Trainee::new(decoder, lora, dir)?;
        let value_head = if value_head {
            Some(Var::from_tensor(&Tensor::zeros(
                (1, hidden),
                DType::F32,
                device,
            )?)?)
        } else {
            None
        };
        Ok((
            Self {
                trainee,
                value_head,
                reference,
                bf16_rollouts: false,
            },
            tokenizer,
        ))
    }

    /// The decoder (the trained one: [`Policy::sampler`] for rollouts).
    pub fn decoder(&self) -> &Decoder {
        &self.trainee.decoder
    }

    /// Run rollouts and the reference on bf16 weights under f32 activations, as bf16
    /// inference does on the CPU (the training run's `dtype = "bf16"`, whose updates multiply
    /// in bf16 too); a frozen reference is converted once, here.
    pub fn with_bf16_rollouts(mut self) -> Result<Self> {
        if let Reference::Frozen(decoder) = &mut self.reference {
            decoder.prepare_for_inference_as(DType::BF16)?;
        }
        self.bf16_rollouts = true;
        Ok(self)
    }

    /// The policy's current weights for one rollout, without gradients: the decoder's own
    /// storage, or bf16 copies with [`Policy::with_bf16_rollouts`]. Build one per rollout (the
    /// weights change with every update).
    pub fn sampler(&self) -> Result<Decoder> {
        Ok(self.trainee.decoder.inference_view(self.bf16_rollouts)?)
    }

    /// Everything the optimiser updates: the policy's parameters, then the value head at
    /// `value_lr_scale` times the policy's learning rate.
    pub fn params(&self, value_lr_scale: f64) -> Vec<TrainParam> {
        let mut params = self.trainee.params.clone();
        if let Some(head) = &self.value_head {
            params.push(TrainParam {
                name: VALUE_HEAD.into(),
                var: head.clone(),
                decay: false,
                lr_scale: value_lr_scale,
            });
        }
        params
    }

    /// Log-probabilities (and values) of the response tokens under the policy. `mode`
    /// [`Mode::Train`] keeps the gradient; [`Mode::Infer`] is for the rollout's old values.
    pub fn forward(
        &self,
        sequences: &[&Sequence],
        mode: Mode,
        with_entropy: bool,
    ) -> Result<ResponseOutputs> {
        response_outputs(
            &self.trainee.decoder,
            self.value_head.as_ref(),
            sequences,
            mode,
            with_entropy,
        )
    }

    /// [`Policy::forward`] in [`Mode::Train`], with activation checkpointing when asked; the
    /// returned outputs run their own backward pass ([`TrainOutputs::backward`]).
    pub fn forward_train(
        &self,
        sequences: &[&Sequence],
        with_entropy: bool,
        checkpointing: bool,
    ) -> Result<TrainOutputs<'_>> {
        train_outputs(
            &self.trainee.decoder,
            self.value_head.as_ref(),
            sequences,
            with_entropy,
            checkpointing,
        )
    }

    /// Log-probabilities of the response tokens under the reference, without gradient. With
    /// LoRA the reference is the policy's base: `sampler` (from [`Policy::sampler`]) with its
    /// adapters off, or the trained decoder itself when `None`.
    pub fn reference_log_probs(
        &self,
        sequences: &[&Sequence],
        sampler: Option<&Decoder>,
    ) -> Result<Vec<f32>> {
        let outputs = match &self.reference {
            Reference::Frozen(decoder) => {
                response_outputs(decoder, None, sequences, Mode::Infer, false)?
            }
            Reference::AdaptersOff => {
                let decoder = sampler.unwrap_or(&self.trainee.decoder);
                decoder.set_adapters_enabled(false);
                let outputs = response_outputs(decoder, None, sequences, Mode::Infer, false);
                decoder.set_adapters_enabled(true);
                outputs?
            }
        };
        Ok(outputs.log_probs.to_vec1()?)
    }

    /// The value head's weights as JSON numbers (checkpoints).
    pub fn value_head_json(&self) -> Result<Option<serde_json::Value>> {
        match &self.value_head {
            Some(head) => {
                let w: Vec<f32> = head.as_tensor().flatten_all()?.to_vec1()?;
                Ok(Some(serde_json::json!({ "weight": w })))
            }
            None => Ok(None),
        }
    }

    /// Restore the value head from a checkpoint directory's [`VALUE_HEAD_FILE`].
    pub fn restore_value_head(&self, dir: &Path) -> Result<()> {
        let Some(head) = &self.value_head else {
            return Ok(());
        };
        let path = dir.join(VALUE_HEAD_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| TrainError::checkpoint(dir, format!("{VALUE_HEAD_FILE}: {e}")))?;
        let weight: Vec<f32> = serde_json::from_value(value["weight"].clone())
            .map_err(|e| TrainError::checkpoint(dir, format!("{VALUE_HEAD_FILE}: {e}")))?;
        let shape = head.as_tensor().dims().to_vec();
        if weight.len() != shape.iter().product::<usize>() {
            return Err(TrainError::checkpoint(
                dir,
                format!(
                    "{VALUE_HEAD_FILE} holds {} numbers; expected {shape:?}",
                    weight.len()
                ),
            ));
        }
        head.set(&Tensor::from_vec(weight, shape, head.device())?)?;
        Ok(())
    }
}

impl Checkpointed for Policy {
    fn weights_file(&self) -> &str {
        self.trainee.weights_file()
    }

    fn restore(&self, loaded: &LoadedCheckpoint) -> Result<()> {
        self.trainee.restore(&loaded.weights, &loaded.dir)?;
        self.restore_value_head(&loaded.dir)
    }

    /// The trainee's checkpoint (it loads as a model, or as an adapter with LoRA) with the
    /// value head beside it.
    fn save_checkpoint(&self, checkpoints: &Path, parts: &CheckpointParts<'_>) -> Result<PathBuf> {
        let head = self.value_head_json()?;
        self.trainee
            .save_checkpoint(checkpoints, parts, &|dir| match &head {
                Some(head) => write_json(&dir.join(VALUE_HEAD_FILE), head),
                None => Ok(()),
            })
    }
}

/// Right-pad `sequences` into one batch and read the outputs at the positions that predict
/// each response token.
///
/// Shapes: ids `[b, L]` internally; hidden `[b, L, H]` -> picked rows `[n, H]` -> logits
/// `[n, V]` -> log-probs `[n]`; values `[n]` from `head` `[1, H]`.
pub fn response_outputs(
    decoder: &Decoder,
    head: Option<&Var>,
    sequences: &[&Sequence],
    mode: Mode,
    with_entropy: bool,
) -> Result<ResponseOutputs> {
    Ok(outputs_with(decoder, head, sequences, mode, with_entropy, None)?.outputs)
}

/// [`response_outputs`] in [`Mode::Train`] through a [`TrainPass`] (checkpointed or not),
/// whose backward pass the returned [`TrainOutputs::backward`] runs.
pub fn train_outputs<'d>(
    decoder: &'d Decoder,
    head: Option<&Var>,
    sequences: &[&Sequence],
    with_entropy: bool,
    checkpointing: bool,
) -> Result<TrainOutputs<'d>> {
    outputs_with(
        decoder,
        head,
        sequences,
        Mode::Train,
        with_entropy,
        Some(checkpointing),
    )
}

/// A training pass's [`ResponseOutputs`] and the backward pass that goes with them.
pub struct TrainOutputs<'d> {
    /// The outputs, differentiable.
    pub outputs: ResponseOutputs,
    /// The decoder's pass (`None`: no response token, so nothing to backpropagate into it).
    pass: Option<TrainPass<'d>>,
}

impl TrainOutputs<'_> {
    /// Backpropagate `loss` (made from [`outputs`](Self::outputs)) and add the gradients of
    /// `params` to `grads`.
    pub fn backward(
        self,
        loss: &Tensor,
        params: &[TrainParam],
        grads: &mut GradAccumulator,
    ) -> Result<()> {
        match self.pass {
            Some(pass) => pass.backward(loss, params, grads),
            None => grads.add(&loss.backward()?, params),
        }
    }
}

/// [`response_outputs`], through a [`TrainPass`] when `train_pass` says whether to checkpoint.
fn outputs_with<'d>(
    decoder: &'d Decoder,
    head: Option<&Var>,
    sequences: &[&Sequence],
    mode: Mode,
    with_entropy: bool,
    train_pass: Option<bool>,
) -> Result<TrainOutputs<'d>> {
    let device = decoder.device();
    let b = sequences.len();
    let l = sequences.iter().map(|s| s.ids.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(b * l);
    let mut valid = Vec::with_capacity(b);
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    let mut lengths = Vec::with_capacity(b);
    for (r, s) in sequences.iter().enumerate() {
        if s.response_start == 0 || s.response_start > s.ids.len() {
            return Err(TrainError::Config(format!(
                "a response starts at token {} of a {}-token sequence; expected 1 ≤ start ≤ len",
                s.response_start,
                s.ids.len()
            )));
        }
        ids.extend(
            s.ids
                .iter()
                .copied()
                .chain(std::iter::repeat_n(0, l - s.ids.len())),
        );
        valid.push((0..l).map(|t| t < s.ids.len()).collect());
        for t in s.response_start..s.ids.len() {
            rows.push((r * l + t - 1) as u32);
            targets.push(s.ids[t]);
        }
        lengths.push(s.ids.len() - s.response_start);
    }
    let n = rows.len();
    if n == 0 {
        let empty = Tensor::zeros(0, DType::F32, device)?;
        return Ok(TrainOutputs {
            outputs: ResponseOutputs {
                log_probs: empty.clone(),
                values: head.map(|_| empty),
                entropy: with_entropy.then(Vec::new),
                entropy_sum: None,
                lengths,
            },
            pass: None,
        });
    }
    let ids = Tensor::from_vec(ids, (b, l), device)?;
    let batch = Batch::from_valid(valid);
    let (hidden, pass) = match train_pass {
        Some(checkpointing) => {
            let pass = TrainPass::forward(decoder, &ids, &batch, checkpointing)?;
            (pass.hidden().clone(), Some(pass))
        }
        None => (decoder.forward_hidden(&ids, &batch, None, mode)?, None),
    };
    let h = hidden.dim(2)?;
    let picked = hidden
        .reshape((b * l, h))?
        .index_select(&Tensor::from_vec(rows, n, device)?, 0)?;
    // The fused output layer (no [n, V] logits) where it applies: f32 on the CPU with a plain
    // output matrix, and no entropy gradient asked for.
    let fused_head = decoder.head_weight().filter(|w| {
        picked.device().is_cpu() && picked.dtype() == DType::F32 && w.dtype() == DType::F32
    });
    let (log_probs, entropy, entropy_sum) = match (fused_head, mode, with_entropy) {
        (Some(w), Mode::Infer, _) => {
            let (lp, entropy) = head_log_probs(&picked, w, &targets, with_entropy)?;
            (Tensor::from_vec(lp, n, device)?, entropy, None)
        }
        (Some(w), Mode::Train, false) => {
            let nll = head_nll(&picked, w, &targets, &vec![1.0; n])?;
            (nll.neg()?, None, None)
        }
        _ => {
            let logits = decoder.logits_mode(&picked, mode)?;
            let log_probs = target_log_probs(&logits, &targets)?;
            let (entropy, entropy_sum) = match (with_entropy, mode) {
                (false, _) => (None, None),
                (true, Mode::Infer) => (Some(entropies(&logits.detach())?), None),
                (true, Mode::Train) => {
                    let lp = crate::core::loss::log_softmax_last(&logits.to_dtype(DType::F32)?)?;
                    let sum = (lp.exp()? * &lp)?.sum_all()?.neg()?;
                    (None, Some(sum))
                }
            };
            (log_probs, entropy, entropy_sum)
        }
    };
    let values = match head {
        Some(head) => Some(
            picked
                .to_dtype(DType::F32)?
                .matmul(&head.as_tensor().t()?)?
                .squeeze(1)?,
        ),
        None => None,
    };
    Ok(TrainOutputs {
        outputs: ResponseOutputs {
            log_probs,
            values,
            entropy,
            entropy_sum,
            lengths,
        },
        pass,
    })
}

/// Entropy of each row's softmax. Shapes: logits `[n, V]` -> `n` numbers.
fn entropies(logits: &Tensor) -> Result<Vec<f32>> {
    let (_, vocab) = logits.dims2()?;
    let data: Vec<f32> = logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(data
        .chunks_exact(vocab)
        .map(|row| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
            let lse = max + sum.ln();
            -row.iter()
                .map(|&v| {
                    let lp = v - lse;
                    lp.exp() * lp
                })
                .sum::<f32>()
        })
        .collect())
}

/// Sum consecutive runs of `values` of the given lengths. Differentiable.
///
/// Shapes: values `[n]` with `Σ lengths = n` -> `[lengths.len()]`.
pub fn segment_sums(values: &Tensor, lengths: &[usize]) -> Result<Tensor> {
    let n = values.dims1()?;
    let total: usize = lengths.iter().sum();
    if total != n {
        return Err(TrainError::Config(format!(
            "segment_sums: lengths add up to {total} but there are {n} values"
        )));
    }
    let mut m = vec![0f32; lengths.len() * n];
    let mut at = 0;
    for (r, &len) in lengths.iter().enumerate() {
        for t in at..at + len {
            m[r * n + t] = 1.0;
        }
        at += len;
    }
    let m = Tensor::from_vec(m, (lengths.len(), n), values.device())?;
    Ok(m.matmul(&values.to_dtype(DType::F32)?.unsqueeze(1)?)?
        .squeeze(1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_sums_add_each_run() {
        let dev = Device::Cpu;
        let v = Var::new(&[1f32, 2.0, 3.0, 4.0, 5.0], &dev).unwrap();
        let s = segment_sums(v.as_tensor(), &[2, 0, 3]).unwrap();
        assert_eq!(s.to_vec1::<f32>().unwrap(), [3.0, 0.0, 12.0]);
        let g = s.sum_all().unwrap().backward().unwrap();
        assert_eq!(
            g.get(v.as_tensor()).unwrap().to_vec1::<f32>().unwrap(),
            [1.0; 5]
        );
        assert!(segment_sums(v.as_tensor(), &[1]).is_err());
    }

    #[test]
    fn entropy_of_uniform_and_peaked_rows() {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[0f32, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]], &dev).unwrap();
        let e = entropies(&logits).unwrap();
        assert!((e[0] - 4f32.ln()).abs() < 1e-5);
        assert!(e[1].abs() < 1e-5);
    }
}
