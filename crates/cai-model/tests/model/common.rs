//! Shared helpers: tiny model shapes for every architecture, model directories in temp dirs,
//! seeded parameter perturbation, a masked language-modelling loss and tensor comparison.

use std::path::{Path, PathBuf};

use cai_model::config::{Architecture, ModelConfig};
use cai_model::decoder::{Batch, Decoder};
use cai_model::init::{init_model, ModelShape, TokenizerSource};
use cai_model::weights::{random_decoder, save_decoder};
use candle_core::{DType, Device, Tensor, D};
use rand::{Rng, SeedableRng};
use tempfile::TempDir;

/// Every supported architecture.
pub const ARCHS: [Architecture; 5] = [
    Architecture::Llama,
    Architecture::Mistral,
    Architecture::Qwen2,
    Architecture::Qwen3,
    Architecture::Gpt2,
];

/// Vocabulary rows of the tiny models (the trained tokenizers have at most this many tokens).
pub const VOCAB: usize = 384;

/// Text the tiny tokenizers are trained on.
pub const CORPUS: &str = "The assistant should be helpful, honest and harmless.\n\
    Human: How do I bake bread?\nAssistant: Mix flour, water, salt and yeast, then bake it.\n\
    Critique: the answer is helpful and harmless, but it could say how long to bake.\n\
    Revision: Mix flour, water, salt and yeast, let it rise, then bake for forty minutes.\n\
    Human: What is the capital of France?\nAssistant: The capital of France is Paris.\n";

/// A tiny shape: hidden 32, 2 layers, 4 query heads over 2 kv heads (GQA; GPT-2 has none),
/// 64 positions, untied. Mistral gets a 3-token sliding window so that it binds.
pub fn tiny_shape(arch: Architecture) -> ModelShape {
    ModelShape {
        architecture: arch,
        hidden_size: 32,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: (arch != Architecture::Gpt2).then_some(2),
        intermediate_size: 64,
        vocab_size: VOCAB,
        max_position_embeddings: 64,
        tie_word_embeddings: false,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        sliding_window: (arch == Architecture::Mistral).then_some(3),
    }
}

/// The config of [`tiny_shape`], optionally tied.
pub fn tiny_config(arch: Architecture, tied: bool) -> ModelConfig {
    ModelShape {
        tie_word_embeddings: tied,
        ..tiny_shape(arch)
    }
    .config()
    .expect("a valid tiny shape")
}

/// A random decoder whose every parameter (norm weights and biases included, which the
/// initialisation sets to one and zero) carries seeded uniform noise in ±0.1, so a weight
/// that is loaded or applied wrongly changes the output.
pub fn noisy_decoder(config: ModelConfig, seed: u64, dtype: DType) -> Decoder {
    let mut decoder = random_decoder(config, seed, dtype, &Device::Cpu).expect("random decoder");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    decoder
        .visit_params(&mut |_, t| {
            let noise: Vec<f64> = (0..t.elem_count())
                .map(|_| rng.random_range(-0.1..0.1))
                .collect();
            let noise = Tensor::from_vec(noise, t.shape(), t.device())?.to_dtype(t.dtype())?;
            *t = (&*t + noise)?;
            Ok(())
        })
        .expect("perturbing parameters");
    decoder
}

/// A model directory in a temp dir: a BPE trained on [`CORPUS`], `init_model`'s files, and
/// the weights of [`noisy_decoder`] (f32). The `TempDir` must outlive the path.
pub struct ModelDir {
    /// Keeps the directory alive.
    pub _tmp: TempDir,
    /// The model directory.
    pub path: PathBuf,
    /// The config written.
    pub config: ModelConfig,
}

impl ModelDir {
    /// The path as the `&str` `LocalModel::load` takes.
    pub fn spec(&self) -> &str {
        self.path.to_str().expect("a UTF-8 temp path")
    }
}

/// Make a model directory of `shape` with seeded noisy weights.
pub fn model_dir(shape: &ModelShape, seed: u64) -> ModelDir {
    let tmp = tempfile::tempdir().expect("temp dir");
    let corpus = write_corpus(tmp.path());
    let path = tmp.path().join("model");
    let config = init_model(
        shape,
        TokenizerSource::Train(corpus),
        seed,
        DType::F32,
        &path,
    )
    .expect("init_model");
    let decoder = noisy_decoder(config.clone(), seed, DType::F32);
    save_decoder(&decoder, &path, DType::F32).expect("save_decoder");
    ModelDir {
        _tmp: tmp,
        path,
        config,
    }
}

/// Write [`CORPUS`] (repeated, so merges are learned) into `dir`; returns its path.
pub fn write_corpus(dir: &Path) -> PathBuf {
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, CORPUS.repeat(10)).expect("writing the corpus");
    corpus
}

/// Token rows of different lengths within [`VOCAB`].
pub fn token_rows() -> Vec<Vec<u32>> {
    vec![
        vec![5, 17, 230, 99, 4, 310, 42, 7, 150, 61],
        vec![300, 2, 88],
        vec![11, 257, 33, 9, 140, 201],
    ]
}

/// Left-pad rows to one length. Returns ids `[b, l]` (padding id 0) and the batch.
pub fn left_padded(rows: &[Vec<u32>], device: &Device) -> (Tensor, Batch) {
    let l = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * l);
    let mut valid = Vec::with_capacity(rows.len());
    for row in rows {
        let pad = l - row.len();
        ids.extend(std::iter::repeat_n(0u32, pad).chain(row.iter().copied()));
        valid.push((0..l).map(|i| i >= pad).collect());
    }
    let ids = Tensor::from_vec(ids, (rows.len(), l), device).expect("ids");
    (ids, Batch::from_valid(valid))
}

/// Mean next-token cross-entropy of left-padded `rows` on `forward_train` logits; positions
/// whose input or target is padding do not count. Returns a scalar in the decoder's dtype.
pub fn lm_loss(decoder: &Decoder, rows: &[Vec<u32>]) -> Tensor {
    let device = decoder.device();
    let (ids, batch) = left_padded(rows, device);
    let (b, l) = ids.dims2().expect("2-d ids");
    let logits = decoder.forward_train(&ids, &batch).expect("forward_train");
    let logprobs =
        candle_nn::ops::log_softmax(&logits.narrow(1, 0, l - 1).expect("narrow"), D::Minus1)
            .expect("log_softmax");
    let ids_host: Vec<Vec<u32>> = ids.to_vec2().expect("ids to host");
    let mut targets = Vec::with_capacity(b * (l - 1));
    let mut weights = Vec::with_capacity(b * (l - 1));
    for (row, valid) in ids_host.iter().zip(&batch.valid) {
        for t in 0..l - 1 {
            let counts = valid[t] && valid[t + 1];
            targets.push(if counts { row[t + 1] } else { 0 });
            weights.push(if counts { 1.0 } else { 0.0 });
        }
    }
    let count: f64 = weights.iter().sum();
    let targets = Tensor::from_vec(targets, (b, l - 1, 1), device).expect("targets");
    let weights = Tensor::from_vec(weights, (b, l - 1), device)
        .and_then(|w| w.to_dtype(decoder.dtype()))
        .expect("weights");
    let picked = logprobs
        .gather(&targets, D::Minus1)
        .and_then(|t| t.squeeze(D::Minus1))
        .expect("gather");
    ((picked * weights).and_then(|t| t.sum_all()).expect("sum") * (-1.0 / count)).expect("mean")
}

/// Largest absolute elementwise difference, compared in f64.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a: Vec<f64> = a
        .flatten_all()
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1())
        .expect("a");
    let b: Vec<f64> = b
        .flatten_all()
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1())
        .expect("b");
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// The `[vocab]` logits of the last position of one unpadded sequence (fused path).
pub fn last_logits(decoder: &Decoder, tokens: &[u32]) -> Tensor {
    full_logits(decoder, tokens)
        .get(tokens.len() - 1)
        .expect("last position")
}

/// The `[s, vocab]` logits of one unpadded sequence (fused inference path, no cache).
pub fn full_logits(decoder: &Decoder, tokens: &[u32]) -> Tensor {
    let ids = Tensor::from_vec(tokens.to_vec(), (1, tokens.len()), decoder.device()).expect("ids");
    let batch = Batch::from_valid(vec![vec![true; tokens.len()]]);
    let hidden = decoder
        .forward_hidden(&ids, &batch, None, cai_model::layers::Mode::Infer)
        .expect("forward_hidden");
    decoder
        .logits(&hidden)
        .and_then(|t| Ok(t.squeeze(0)?))
        .expect("logits")
}

/// log_softmax of a logits row, in f64, computed by hand.
pub fn log_softmax_f64(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max
        + row
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln();
    row.iter().map(|&x| x as f64 - lse).collect()
}
