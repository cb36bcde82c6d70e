//! A cacheless training forward pass cut at the decoder layers, so that a trainer can run it
//! one layer at a time: activation (gradient) checkpointing keeps only each layer's input and
//! recomputes the layer during the backward pass (see `cai_train::core::recompute`).

use candle_core::Tensor;

use super::{AttnMask, Batch, Decoder};
use crate::layers::{Mode, RopeAt};
use crate::Result;

/// The parts of [`Decoder::forward_hidden`] (no cache, [`Mode::Train`]) as separate calls:
/// [`embed`](Self::embed), then [`layer`](Self::layer) for each layer in order, then
/// [`final_norm`](Self::final_norm) give the same hidden states, op for op.
pub struct LayerPass<'d> {
    decoder: &'d Decoder,
    embedded: Tensor,
    rope: Option<RopeAt>,
    masks: Vec<AttnMask>,
}

impl Decoder {
    /// Prepare a training pass over `ids` (`[b, s]`, u32) with `batch`'s validity and
    /// positions: the embeddings, rotary factors and attention masks every layer shares.
    pub fn layer_pass(&self, ids: &Tensor, batch: &Batch) -> Result<LayerPass<'_>> {
        let (embedded, rope) = self.embed_positions(ids, batch)?;
        let masks = self.masks_for(&batch.valid, &batch.positions, ids.dim(1)?)?;
        Ok(LayerPass {
            decoder: self,
            embedded,
            rope,
            masks,
        })
    }
}

impl LayerPass<'_> {
    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.decoder.blocks.len()
    }

    /// The input of layer 0 (token and learned position embeddings), differentiable
    /// towards the embeddings. Shapes: `[b, s, hidden]`.
    pub fn embed(&self) -> Tensor {
        self.embedded.clone()
    }

    /// Layer `l` on its input `x`. Shapes: x `[b, s, hidden]` -> `[b, s, hidden]`.
    pub fn layer(&self, l: usize, x: &Tensor) -> Result<Tensor> {
        let block = self.decoder.blocks.get(l).ok_or_else(|| {
            crate::ModelError::Request(format!(
                "layer {l} of a decoder with {} layers",
                self.num_layers()
            ))
        })?;
        block.forward(
            x,
            &self.decoder.config,
            self.rope.as_ref(),
            &self.masks[l],
            None,
            Mode::Train,
        )
    }

    /// The final norm after the last layer. Shapes: x `[b, s, hidden]` -> `[b, s, hidden]`.
    pub fn final_norm(&self, x: &Tensor) -> Result<Tensor> {
        self.decoder.final_norm.forward(x, Mode::Train)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use crate::decoder::Batch;
    use crate::layers::Mode;

    /// Embedding, every layer and the final norm in turn give `forward_hidden`'s hidden states
    /// bit for bit (padding and a learned-position model included).
    #[test]
    fn the_layers_in_turn_give_the_whole_pass() {
        let dev = Device::Cpu;
        for gpt2 in [false, true] {
            let mut shape = crate::init::ModelShape {
                hidden_size: 32,
                num_layers: 3,
                num_heads: 4,
                intermediate_size: 64,
                vocab_size: 50,
                ..Default::default()
            };
            if gpt2 {
                shape.architecture = crate::config::Architecture::Gpt2;
            }
            let decoder =
                crate::weights::random_decoder(shape.config().unwrap(), 3, DType::F32, &dev)
                    .unwrap();
            let ids = Tensor::new(&[[3u32, 9, 27, 8], [0, 0, 7, 1]], &dev).unwrap();
            let batch = Batch::from_valid(vec![vec![true; 4], vec![false, false, true, true]]);
            let whole = decoder
                .forward_hidden(&ids, &batch, None, Mode::Train)
                .unwrap();
            let pass = decoder.layer_pass(&ids, &batch).unwrap();
            let mut x = pass.embed();
            for l in 0..pass.num_layers() {
                x = pass.layer(l, &x).unwrap();
            }
            let parts = pass.final_norm(&x).unwrap();
            let a: Vec<f32> = whole.flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = parts.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(a, b, "gpt2 {gpt2}");
            assert!(pass.layer(3, &x).is_err());
        }
    }
}
