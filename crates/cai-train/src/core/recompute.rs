//! Activation (gradient) checkpointing, as transformers' `gradient_checkpointing`: the
//! forward pass keeps only each decoder layer's input, and the backward pass recomputes one
//! layer at a time from it. Saved activations shrink from every layer's intermediates (~2.5 GB
//! for 8 × 256 tokens of SmolLM2-135M) to one `[b, s, hidden]` tensor per layer, for about
//! one more forward pass of compute.
//!
//! candle has no checkpoint op, so the backward pass is segmented: the loss is backpropagated
//! to the last layer's output; then, from the last layer down, the layer is recomputed on its
//! input made a variable, `Σ y ⊙ ∂L/∂y` is backpropagated (its gradient at `y` is exactly
//! `∂L/∂y`), the parameters' gradients are added to the run's, and the input's gradient is
//! carried down. The gradients are the plain pass's up to the order of floating-point sums.

use cai_model::decoder::{Batch, Decoder, LayerPass};
use cai_model::layers::Mode;
use candle_core::{Tensor, Var};

use crate::{GradAccumulator, Result, TrainError, TrainParam};

/// A training forward pass through a decoder, up to the final norm's hidden states, and the
/// backward pass that matches it: plain (candle keeps every intermediate) or checkpointed.
pub struct TrainPass<'d> {
    hidden: Tensor,
    checkpointed: Option<Checkpointed<'d>>,
}

/// What a checkpointed pass keeps for its backward pass.
struct Checkpointed<'d> {
    layers: LayerPass<'d>,
    /// Each layer's input, detached (`[b, s, hidden]` each).
    inputs: Vec<Tensor>,
    /// The last layer's output as a variable: the final norm's input.
    last: Var,
}

impl<'d> TrainPass<'d> {
    /// Run the decoder over `ids` (`[b, s]`, u32) in [`Mode::Train`], keeping only each
    /// layer's input when `checkpointing`.
    pub fn forward(
        decoder: &'d Decoder,
        ids: &Tensor,
        batch: &Batch,
        checkpointing: bool,
    ) -> Result<Self> {
        if !checkpointing {
            return Ok(Self {
                hidden: decoder.forward_hidden(ids, batch, None, Mode::Train)?,
                checkpointed: None,
            });
        }
        let layers = decoder.layer_pass(ids, batch)?;
        let mut inputs = Vec::with_capacity(layers.num_layers());
        let mut x = layers.embed().detach();
        for l in 0..layers.num_layers() {
            let y = layers.layer(l, &x)?.detach();
            inputs.push(std::mem::replace(&mut x, y));
        }
        let last = Var::from_tensor(&x)?;
        let hidden = layers.final_norm(last.as_tensor())?;
        Ok(Self {
            hidden,
            checkpointed: Some(Checkpointed {
                layers,
                inputs,
                last,
            }),
        })
    }

    /// The hidden states after the final norm. Shapes: `[b, s, hidden]`.
    pub fn hidden(&self) -> &Tensor {
        &self.hidden
    }

    /// Backpropagate `loss` (a scalar computed from [`hidden`](Self::hidden)) and add the
    /// gradients of `params` to `grads`.
    pub fn backward(
        self,
        loss: &Tensor,
        params: &[TrainParam],
        grads: &mut GradAccumulator,
    ) -> Result<()> {
        drop(self.hidden);
        let Some(Checkpointed {
            layers,
            mut inputs,
            last,
        }) = self.checkpointed
        else {
            return grads.add(&loss.backward()?, params);
        };
        let store = loss.backward()?;
        grads.add(&store, params)?;
        let Some(mut grad) = store.get(last.as_tensor()).cloned() else {
            // The loss does not depend on the decoder's output: nothing below gets a gradient.
            return Ok(());
        };
        drop((store, last));
        for l in (0..layers.num_layers()).rev() {
            let input = Var::from_tensor(&inputs.pop().expect("one input per layer"))?;
            let output = layers.layer(l, input.as_tensor())?;
            let store = (output * &grad)?.sum_all()?.backward()?;
            grads.add(&store, params)?;
            grad = store.get(input.as_tensor()).cloned().ok_or_else(|| {
                TrainError::Config(format!(
                    "gradient checkpointing: layer {l}'s output does not depend on its input"
                ))
            })?;
        }
        let embedded = layers.embed();
        if embedded.track_op() {
            grads.add(&(embedded * grad)?.sum_all()?.backward()?, params)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::loss::hidden_cross_entropy_past;
    use cai_model::lora::LoraConfig;
    use candle_core::{DType, Device};

    /// Every trainable parameter's gradient from the checkpointed pass, as a list in
    /// `params` order, against the plain pass's: full fine-tuning (tied and untied output
    /// layers) and LoRA (with dropout, which the recomputation must repeat).
    #[test]
    fn checkpointing_gives_the_plain_gradients() {
        let dev = Device::Cpu;
        for (tied, lora) in [(true, false), (false, false), (true, true), (false, true)] {
            let shape = cai_model::init::ModelShape {
                hidden_size: 32,
                num_layers: 3,
                num_heads: 4,
                num_kv_heads: Some(2),
                intermediate_size: 64,
                vocab_size: 97,
                tie_word_embeddings: tied,
                ..Default::default()
            };
            let mut decoder =
                cai_model::weights::random_decoder(shape.config().unwrap(), 5, DType::F32, &dev)
                    .unwrap();
            let params: Vec<TrainParam> = if lora {
                let config = LoraConfig {
                    dropout: 0.2,
                    ..LoraConfig::default()
                };
                let adapters = decoder.add_lora(&config).unwrap();
                // B starts at zero: give it values so that every gradient is non-trivial.
                for (_, var) in &adapters {
                    let t = var.as_tensor();
                    var.set(&(t + 0.05).unwrap()).unwrap();
                }
                decoder.set_dropout_seed(11);
                adapters
                    .into_iter()
                    .map(|(name, var)| TrainParam {
                        name,
                        var,
                        decay: true,
                        lr_scale: 1.0,
                    })
                    .collect()
            } else {
                decoder
                    .make_trainable()
                    .unwrap()
                    .into_iter()
                    .map(|(spec, var)| TrainParam::from_spec(&spec, var))
                    .collect()
            };
            let ids = Tensor::new(&[[3u32, 9, 27, 81, 5], [0, 7, 1, 2, 4]], &dev).unwrap();
            let targets = Tensor::new(&[[9u32, 27, 81, 5, 6], [7, 1, 2, 4, 96]], &dev).unwrap();
            let mask = Tensor::new(
                &[[1f32, 1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0, 1.0]],
                &dev,
            )
            .unwrap();
            let batch = Batch::from_valid(vec![vec![true; 5], vec![false, true, true, true, true]]);
            let run = |checkpointing, fused_bytes| {
                let pass = TrainPass::forward(&decoder, &ids, &batch, checkpointing).unwrap();
                let (loss, _) = hidden_cross_entropy_past(
                    &decoder,
                    pass.hidden(),
                    &targets,
                    &mask,
                    fused_bytes,
                )
                .unwrap();
                let value = loss.to_scalar::<f32>().unwrap();
                let mut grads = GradAccumulator::new();
                pass.backward(&(loss * 0.5).unwrap(), &params, &mut grads)
                    .unwrap();
                let list: Vec<Vec<f32>> = params
                    .iter()
                    .map(|p| {
                        grads
                            .get(&p.var)
                            .unwrap_or_else(|| panic!("no gradient for {}", p.name))
                            .flatten_all()
                            .unwrap()
                            .to_vec1()
                            .unwrap()
                    })
                    .collect();
                (value, list)
            };
            // Below and past the fused output layer's threshold.
            for fused_bytes in [usize::MAX, 0] {
                let (plain_loss, plain) = run(false, fused_bytes);
                let (loss, checkpointed) = run(true, fused_bytes);
                assert_eq!(plain_loss, loss, "tied {tied}, lora {lora}");
                for (p, (a, b)) in params.iter().zip(plain.iter().zip(&checkpointed)) {
                    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
                    assert!(scale > 0.0, "{}: a zero gradient tests nothing", p.name);
                    for (x, y) in a.iter().zip(b) {
                        assert!(
                            (x - y).abs() <= 1e-5 * scale,
                            "tied {tied}, lora {lora}: {} differs: {x} vs {y}",
                            p.name
                        );
                    }
                }
            }
        }
    }
}
