//! A shared prefix (a dialogue context, a few-shot block) whose KV cache is computed once and
//! copied into every batch that continues it.

use candle_core::{DType, Tensor};

use crate::decoder::{Batch, Decoder};
use crate::kv_cache::KvCache;
use crate::layers::Mode;
use crate::Result;

/// A prefilled prefix.
#[derive(Debug, Clone)]
pub struct Prefix {
    /// The prefix's token ids.
    pub tokens: Vec<u32>,
    /// Its cache, one row.
    pub cache: KvCache,
    /// Next-token log-probabilities after the prefix, `[vocab]` (for continuations that start
    /// right after it).
    pub last_logprobs: Vec<f32>,
}

impl Prefix {
    /// Run the prefix through the model once. `tokens` must not be empty.
    pub fn compute(decoder: &Decoder, tokens: Vec<u32>) -> Result<Self> {
        if tokens.is_empty() {
            return Err(crate::ModelError::Request(
                "a prefix needs at least one token".into(),
            ));
        }
        let n = tokens.len();
        let mut cache = KvCache::new(decoder.config(), 1, n, decoder.dtype(), decoder.device())?;
        let ids = Tensor::from_vec(tokens.clone(), (1, n), decoder.device())?;
        let batch = Batch::from_valid(vec![vec![true; n]]);
        let hidden = decoder.forward_hidden(&ids, &batch, Some(&mut cache), Mode::Infer)?;
        let logits = decoder
            .logits(&hidden.narrow(1, n - 1, 1)?)?
            .flatten_all()?;
        let last_logprobs =
            candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, 0)?.to_vec1()?;
        Ok(Self {
            tokens,
            cache: cache.into_prefix(),
            last_logprobs,
        })
    }

    /// Number of prefix tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True for an empty prefix (never constructed; kept for clippy's `len` rule).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}
