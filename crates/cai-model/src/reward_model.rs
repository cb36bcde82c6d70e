//! Preference models: the decoder with a scalar head, `score.weight` (`[1, hidden]`, no bias),
//! read at each sequence's last real token — transformers' `*ForSequenceClassification` with
//! one label. Loads from such a checkpoint, or from a causal LM (whose `lm_head` is dropped)
//! with a fresh head; saves back in the `*ForSequenceClassification` layout.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use serde_json::{json, Value};

use crate::batching::{plan_batches, EngineLimits};
use crate::checkpoint::{save_safetensors, Checkpoint, SINGLE_FILE};
use crate::config::{Architecture, ModelConfig};
use crate::decoder::{Batch, Decoder, ParamSpec};
use crate::layers::Mode;
use crate::weights::{hf_tensors, load_decoder, normal_samples, torch_dtype_name, INIT_STD};
use crate::{ModelError, Result};

/// The head's tensor name in `*ForSequenceClassification` checkpoints.
pub const SCORE_WEIGHT: &str = "score.weight";

/// A decoder with a scalar reward head.
#[derive(Debug, Clone)]
pub struct RewardModel {
    decoder: Decoder,
    /// `[1, hidden]`.
    head: Tensor,
    /// The config's own `tie_word_embeddings`, written back on save (the decoder is built
    /// tied so that it has no `lm_head` of its own).
    tie_word_embeddings: bool,
    /// Written into the saved config, so that transformers finds each row's last real token.
    pad_token_id: Option<u32>,
}

/// Whether the model directory holds a preference model (its `config.json` names a
/// `*ForSequenceClassification` class).
pub fn is_preference_model(dir: &Path) -> bool {
    crate::read_limits::read_text(&dir.join("config.json"), crate::read_limits::CONFIG_LIMIT)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|config| {
            let classes = config.get("architectures")?.as_array()?.clone();
            Some(classes.iter().any(|c| {
                c.as_str()
                    .is_some_and(|c| c.ends_with("ForSequenceClassification"))
            }))
        })
        .unwrap_or(false)
}

/// The transformers class of a preference model of `architecture`.
pub fn sequence_classification_class(architecture: Architecture) -> String {
    match architecture {
        Architecture::Gpt2 => "GPT2ForSequenceClassification".into(),
        arch => arch
            .hf_class()
            .replace("ForCausalLM", "ForSequenceClassification"),
    }
}

impl RewardModel {
    /// Load `dir`: a preference model with its head, or a causal LM with a new head drawn
    /// from N(0, 0.02²) (transformers' initialisation) seeded by `seed`.
    pub fn load(dir: &Path, dtype: DType, device: &Device, seed: u64) -> Result<Self> {
        let config_path = dir.join("config.json");
        let mut config = ModelConfig::from_file(&config_path)?;
        let tie_word_embeddings = config.tie_word_embeddings;
        config.tie_word_embeddings = true;
        let pad_token_id =
            crate::read_limits::read_text(&config_path, crate::read_limits::CONFIG_LIMIT)
                .ok()
                .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                .and_then(|v| v.get("pad_token_id")?.as_u64())
                .map(|id| id as u32);
        let ckpt = Checkpoint::open_dir(dir)?;
        let hidden = config.hidden_size;
        let decoder = load_decoder(config, &ckpt, dtype, device)?;
        let head = if is_preference_model(dir) {
            ckpt.load(SCORE_WEIGHT, &[1, hidden], dtype, device)?
        } else {
            random_head(hidden, seed, dtype, device)?
        };
        Ok(Self {
            decoder,
            head,
            tie_word_embeddings,
            pad_token_id,
        })
    }

    /// A preference model from a decoder (whose `lm_head`, if any, is not used) and a head
    /// `[1, hidden]`.
    pub fn from_parts(decoder: Decoder, head: Tensor, pad_token_id: Option<u32>) -> Result<Self> {
        let hidden = decoder.config().hidden_size;
        if head.dims() != [1, hidden] {
            return Err(ModelError::Request(format!(
                "a reward head of shape {:?}; expected [1, {hidden}]",
                head.dims()
            )));
        }
        let tie_word_embeddings = decoder.config().tie_word_embeddings;
        Ok(Self {
            decoder,
            head,
            tie_word_embeddings,
            pad_token_id,
        })
    }

    /// The decoder.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The head, `[1, hidden]`.
    pub fn head(&self) -> &Tensor {
        &self.head
    }

    /// Set the padding id the saved config names.
    pub fn set_pad_token_id(&mut self, id: Option<u32>) {
        self.pad_token_id = id;
    }

    /// Re-lay the decoder's matrices for fast inference (see
    /// [`Decoder::prepare_for_inference`]); call once on a model that will not be trained.
    pub fn prepare_for_inference(&mut self) -> Result<()> {
        self.decoder.prepare_for_inference()
    }

    /// The reward of each row, read at its last real token.
    ///
    /// Shapes: ids `[b, s]` (u32) -> rewards `[b]` in the decoder's dtype.
    pub fn rewards(&self, ids: &Tensor, batch: &Batch, mode: Mode) -> Result<Tensor> {
        ids.dims2()?;
        let hidden = self.decoder.forward_hidden(ids, batch, None, mode)?;
        self.rewards_from_hidden(&hidden, batch)
    }

    /// [`RewardModel::rewards`] from the decoder's hidden states (after its final norm), e.g.
    /// of a training pass run layer by layer.
    ///
    /// Shapes: hidden `[b, s, hidden]` -> rewards `[b]` in the decoder's dtype.
    pub fn rewards_from_hidden(&self, hidden: &Tensor, batch: &Batch) -> Result<Tensor> {
        let (b, s, h) = hidden.dims3()?;
        let last = batch
            .valid
            .iter()
            .enumerate()
            .map(|(r, valid)| {
                let at = valid.iter().rposition(|&v| v).ok_or_else(|| {
                    ModelError::Request(format!("row {r} has no real token to read a reward at"))
                })?;
                Ok((r * s + at) as u32)
            })
            .collect::<Result<Vec<u32>>>()?;
        let picked = hidden
            .reshape((b * s, h))?
            .index_select(&Tensor::from_vec(last, b, hidden.device())?, 0)?;
        Ok(picked.matmul(&self.head.t()?)?.squeeze(1)?)
    }

    /// The reward of each token sequence (each non-empty), in right-padded batches of
    /// similar lengths within `limits`, without gradients.
    pub fn score_sequences(
        &self,
        sequences: &[Vec<u32>],
        limits: EngineLimits,
    ) -> Result<Vec<f32>> {
        let mut out = vec![0f32; sequences.len()];
        for chunk in plan_batches(sequences.len(), |i| sequences[i].len(), limits) {
            let l = chunk.iter().map(|&i| sequences[i].len()).max().unwrap_or(0);
            let mut ids = Vec::with_capacity(chunk.len() * l);
            let mut valid = Vec::with_capacity(chunk.len());
            for &i in &chunk {
                let row = &sequences[i];
                ids.extend(
                    row.iter()
                        .copied()
                        .chain(std::iter::repeat_n(0, l - row.len())),
                );
                valid.push((0..l).map(|t| t < row.len()).collect());
            }
            let ids = Tensor::from_vec(ids, (chunk.len(), l), self.decoder.device())?;
            let rewards: Vec<f32> = self
                .rewards(&ids, &Batch::from_valid(valid), Mode::Infer)?
                .to_dtype(DType::F32)?
                .to_vec1()?;
            for (&i, r) in chunk.iter().zip(rewards) {
                out[i] = r;
            }
        }
        Ok(out)
    }

    /// Turn every weight, head included, into a trainable [`Var`]; returns them in
    /// checkpoint order with their specs (the head last).
    pub fn make_trainable(&mut self) -> Result<Vec<(ParamSpec, Var)>> {
        let mut vars = self.decoder.make_trainable()?;
        let head = Var::from_tensor(&self.head.contiguous()?)?;
        self.head = head.as_tensor().clone();
        vars.push((
            ParamSpec {
                name: SCORE_WEIGHT.into(),
                file_shape: vec![1, self.decoder.config().hidden_size],
                kind: crate::decoder::ParamKind::Matrix,
                conv1d: false,
            },
            head,
        ));
        Ok(vars)
    }

    /// Every tensor under its transformers name, in file layout and `dtype`.
    pub fn tensors(&self, dtype: DType) -> Result<BTreeMap<String, Tensor>> {
        let mut tensors = hf_tensors(&self.decoder, dtype)?;
        tensors.insert(
            SCORE_WEIGHT.into(),
            self.head.to_dtype(dtype)?.to_device(&Device::Cpu)?,
        );
        Ok(tensors)
    }

    /// The `config.json` of the `*ForSequenceClassification` model, `dtype` on disk.
    pub fn hf_config(&self, dtype: DType) -> Value {
        let mut config = self.decoder.config().clone();
        config.torch_dtype = Some(torch_dtype_name(dtype).into());
        config.tie_word_embeddings = self.tie_word_embeddings;
        let mut value = config.to_hf_json();
        let object = value.as_object_mut().expect("configs are objects");
        object.insert(
            "architectures".into(),
            json!([sequence_classification_class(config.architecture)]),
        );
        object.insert("num_labels".into(), json!(1));
        object.insert("id2label".into(), json!({"0": "LABEL_0"}));
        object.insert("label2id".into(), json!({"LABEL_0": 0}));
        object.insert("pad_token_id".into(), json!(self.pad_token_id));
        value
    }

    /// Write `config.json` and `model.safetensors` into `dir` (created if needed).
    pub fn save(&self, dir: &Path, dtype: DType) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        let path = dir.join("config.json");
        let text = serde_json::to_string_pretty(&self.hf_config(dtype)).expect("serialisable");
        save_safetensors(&self.tensors(dtype)?, &dir.join(SINGLE_FILE))?;
        crate::write_atomic(&path, (text + "\n").as_bytes())
    }
}

/// A head `[1, hidden]` from N(0, 0.02²), seeded.
fn random_head(hidden: usize, seed: u64, dtype: DType, device: &Device) -> Result<Tensor> {
    let mut rng =
        rand_chacha::ChaCha8Rng::seed_from_u64(cai_core::rng::derive_seed(seed, &[SCORE_WEIGHT]));
    let values = normal_samples(&mut rng, hidden, INIT_STD);
    Ok(Tensor::from_vec(values, (1, hidden), device)?.to_dtype(dtype)?)
}

/// A preference model with its tokenizer: the [`cai_core::Scorer`] over a local model.
/// Dialogues are rendered as the PM saw them in training, then scored in batches within the
/// engine's limits.
pub struct RewardScorer {
    model: RewardModel,
    tokenizer: crate::tokenizer::Tokenizer,
    format: crate::tokenizer::DialogueFormat,
    limits: EngineLimits,
}

impl RewardScorer {
    /// Load the preference model in `dir` (a `*ForSequenceClassification` checkpoint, as
    /// `cai train-pm` writes) and its tokenizer, ready for inference.
    pub fn load(
        dir: &Path,
        dtype: DType,
        device: &Device,
        format: crate::tokenizer::DialogueFormat,
    ) -> Result<Self> {
        let mut model = RewardModel::load(dir, dtype, device, 0)?;
        model.prepare_for_inference()?;
        let tokenizer = crate::tokenizer::Tokenizer::from_dir(dir)?;
        Ok(Self::new(model, tokenizer, format))
    }

    /// A scorer over a loaded model and its tokenizer.
    pub fn new(
        model: RewardModel,
        tokenizer: crate::tokenizer::Tokenizer,
        format: crate::tokenizer::DialogueFormat,
    ) -> Self {
        Self {
            model,
            tokenizer,
            format,
            limits: EngineLimits::default(),
        }
    }

    fn rewards_of(&self, dialogues: &[Vec<cai_core::dialogue::Message>]) -> Result<Vec<f64>> {
        let sequences = dialogues
            .iter()
            .map(|dialogue| {
                let text = self
                    .tokenizer
                    .render_dialogue(dialogue, false, self.format)?;
                self.tokenizer.encode(&text, self.tokenizer.add_bos_token())
            })
            .collect::<Result<Vec<Vec<u32>>>>()?;
        let rewards = self.model.score_sequences(&sequences, self.limits)?;
        Ok(rewards.into_iter().map(f64::from).collect())
    }
}

impl cai_core::Scorer for RewardScorer {
    fn rewards(
        &self,
        dialogues: &[Vec<cai_core::dialogue::Message>],
    ) -> std::result::Result<Vec<f64>, cai_core::Error> {
        self.rewards_of(dialogues)
            .map_err(|e| cai_core::Error::Backend(Box::new(e)))
    }
}
