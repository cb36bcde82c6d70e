//! The teacher of context distillation: the frozen model with the context C in front, p0(· | C,
//! x<t). C's KV cache is computed once and every batch continues copies of it, so C costs one
//! prefill per run instead of one per example. The teacher's next-token distributions come as
//! full log-probabilities, or as a table of top-k log-probabilities for a whole data set,
//! which is kept on disk and reused across epochs and resumed runs.

use std::collections::BTreeMap;
use std::path::Path;

use cai_model::decoder::{Batch, Decoder};
use cai_model::layers::Mode;
use cai_model::prefix::Prefix;
use cai_model::sampling::log_sum_exp;
use cai_model::score::top_k;
use candle_core::{DType, Device, Tensor, D};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::distill::data::DistillExample;
use crate::distill::loss::TeacherTargets;
use crate::{Result, TrainError};

/// The frozen model and its prefilled context.
pub struct Teacher {
    decoder: Decoder,
    prefix: Prefix,
}

impl Teacher {
    /// Prefill `context_ids` (the context's tokens, with bos if the tokenizer adds one) on
    /// `decoder`, which is never trained: a copy taken before the student was made trainable.
    pub fn new(decoder: Decoder, context_ids: Vec<u32>) -> Result<Self> {
        let prefix = Prefix::compute(&decoder, context_ids)?;
        Ok(Self { decoder, prefix })
    }

    /// Tokens of the context.
    pub fn context_len(&self) -> usize {
        self.prefix.len()
    }

    /// The longest student sequence the teacher can follow: the context and the sequence
    /// (less its bos, `skip`) must fit the model's positions.
    pub fn max_student_len(&self, skip: usize) -> usize {
        (self.decoder.config().max_position_embeddings + skip).saturating_sub(self.prefix.len())
    }

    /// The teacher's log-probabilities at every compared position of `examples`, in order
    /// (for each example, positions `0..len − 1`; see [`DistillExample::positions`]).
    ///
    /// Shapes: -> `[Σ positions, V]` f32.
    ///
    /// Student position `t` has read `ids[..=t]`. The teacher's counterpart has read C and
    /// `ids[skip..=t]`; for `t < skip` (the student's bos) that is C alone, whose
    /// distribution the prefix keeps.
    pub fn log_probs(&self, examples: &[&DistillExample]) -> Result<Tensor> {
        let device = self.decoder.device();
        let p = self.prefix.len();
        let b = examples.len();
        let l = examples
            .iter()
            .map(|e| e.ids.len() - e.skip)
            .max()
            .unwrap_or(0);
        if p + l > self.decoder.config().max_position_embeddings {
            return Err(TrainError::Config(format!(
                "the context ({p} tokens) and a sequence of {l} tokens exceed the model's {} \
                 positions; lower max_length",
                self.decoder.config().max_position_embeddings
            )));
        }
        // Rows of the teacher's hidden states to read, and where each position's
        // distribution comes from: 0 is the prefix's, i + 1 the i-th row read.
        let mut rows = Vec::new();
        let mut source = Vec::new();
        for (r, e) in examples.iter().enumerate() {
            for t in 0..e.positions() {
                if t < e.skip {
                    source.push(0u32);
                } else {
                    rows.push((r * l + t - e.skip) as u32);
                    source.push(rows.len() as u32);
                }
            }
        }
        let vocab = self.prefix.last_logprobs.len();
        let computed: Vec<f32> = if rows.is_empty() {
            Vec::new()
        } else {
            let mut ids = Vec::with_capacity(b * l);
            let mut valid = Vec::with_capacity(b);
            for e in examples {
                let x = &e.ids[e.skip..];
                ids.extend(x.iter().copied().chain(std::iter::repeat_n(0, l - x.len())));
                valid.push((0..l).map(|j| j < x.len()).collect::<Vec<bool>>());
            }
            let positions = valid
                .iter()
                .map(|v| {
                    (0..l)
                        .map(|j| if v[j] { (p + j) as u32 } else { 0 })
                        .collect()
                })
                .collect();
            let batch = Batch { valid, positions };
            let mut cache = self.prefix.cache.expand(b, p + l)?;
            let ids = Tensor::from_vec(ids, (b, l), device)?;
            let hidden =
                self.decoder
                    .forward_hidden(&ids, &batch, Some(&mut cache), Mode::Infer)?;
            let h = hidden.dim(D::Minus1)?;
            let n = rows.len();
            let picked = hidden
                .reshape((b * l, h))?
                .index_select(&Tensor::from_vec(rows, n, device)?, 0)?;
            let logits = self.decoder.logits(&picked)?.to_dtype(DType::F32)?;
            let mut flat: Vec<f32> = logits.flatten_all()?.to_vec1()?;
            drop(logits);
            // log-softmax in place, row by row: no [n, V] temporaries.
            flat.par_chunks_mut(vocab).for_each(|row| {
                let lse = log_sum_exp(row);
                row.iter_mut().for_each(|v| *v -= lse);
            });
            flat
        };
        // Each position's row: the prefix's distribution or the next computed row, in order.
        let mut out = Vec::with_capacity(source.len() * vocab);
        for &from in &source {
            match from {
                0 => out.extend_from_slice(&self.prefix.last_logprobs),
                i => {
                    let i = i as usize - 1;
                    out.extend_from_slice(&computed[i * vocab..(i + 1) * vocab]);
                }
            }
        }
        Ok(Tensor::from_vec(out, (source.len(), vocab), device)?)
    }

    /// A short digest of what the teacher computes: the bits of its distribution after the
    /// context, which change with the weights and with the context.
    fn digest(&self) -> u64 {
        let bits: Vec<u32> = self
            .prefix
            .last_logprobs
            .iter()
            .map(|x| x.to_bits())
            .collect();
        fnv1a(0xcbf2_9ce4_8422_2325, &bits)
    }
}

/// The teacher's top-k at every compared position of a data set, kept for the whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct TopKTable {
    k: usize,
    /// Per example, its first row (and one past the last example's last row).
    offsets: Vec<usize>,
    /// `[rows, k]` ids, best first.
    ids: Vec<u32>,
    /// `[rows, k]` log-probabilities.
    logprobs: Vec<f32>,
}

/// The sidecar of a saved table: what it was computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TableKey {
    k: usize,
    fingerprint: String,
}

impl TopKTable {
    /// Run the teacher over `examples` in batches of `batch_size`; `progress` sees (done,
    /// total) examples after each batch.
    pub fn compute(
        teacher: &Teacher,
        examples: &[DistillExample],
        k: usize,
        batch_size: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let mut table = Self {
            k,
            offsets: vec![0],
            ids: Vec::new(),
            logprobs: Vec::new(),
        };
        for (i, chunk) in examples.chunks(batch_size.max(1)).enumerate() {
            let refs: Vec<&DistillExample> = chunk.iter().collect();
            let log_probs: Vec<Vec<f32>> = teacher.log_probs(&refs)?.to_vec2()?;
            for row in &log_probs {
                let best = top_k(row, k);
                if best.len() < k {
                    return Err(TrainError::Config(format!(
                        "top_k {k} is larger than the vocabulary of {}",
                        row.len()
                    )));
                }
                for (id, lp) in best {
                    table.ids.push(id);
                    table.logprobs.push(lp);
                }
            }
            for e in chunk {
                let last = *table.offsets.last().expect("starts with 0");
                table.offsets.push(last + e.positions());
            }
            progress(((i + 1) * batch_size).min(examples.len()), examples.len());
        }
        Ok(table)
    }

    /// The targets of the given examples' positions, in order.
    pub fn targets(&self, examples: &[usize], device: &Device) -> Result<TeacherTargets> {
        let mut ids = Vec::new();
        let mut logprobs = Vec::new();
        for &e in examples {
            let (start, end) = (self.offsets[e] * self.k, self.offsets[e + 1] * self.k);
            ids.extend_from_slice(&self.ids[start..end]);
            logprobs.extend_from_slice(&self.logprobs[start..end]);
        }
        let n = ids.len() / self.k;
        Ok(TeacherTargets::TopK {
            ids: Tensor::from_vec(ids, (n, self.k), device)?,
            logprobs: Tensor::from_vec(logprobs, (n, self.k), device)?,
        })
    }

    /// Save to `path` (safetensors) with a JSON sidecar naming what it was computed from.
    pub fn save(&self, path: &Path, fingerprint: &str) -> Result<()> {
        let rows = self.ids.len() / self.k;
        let offsets: Vec<u32> = self.offsets.iter().map(|&o| o as u32).collect();
        let tensors: BTreeMap<String, Tensor> = [
            (
                "ids",
                Tensor::from_slice(&self.ids, (rows, self.k), &Device::Cpu)?,
            ),
            (
                "logprobs",
                Tensor::from_slice(&self.logprobs, (rows, self.k), &Device::Cpu)?,
            ),
            (
                "offsets",
                Tensor::from_slice(&offsets, offsets.len(), &Device::Cpu)?,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        cai_model::checkpoint::save_safetensors(&tensors, path)?;
        let key = TableKey {
            k: self.k,
            fingerprint: fingerprint.to_owned(),
        };
        let sidecar = path.with_extension("json");
        let text = serde_json::to_string_pretty(&key).expect("serialisable") + "\n";
        Ok(cai_model::write_atomic(&sidecar, text.as_bytes())?)
    }

    /// The table saved at `path` if it was computed for `k` and `fingerprint`, else `None`.
    pub fn load(path: &Path, k: usize, fingerprint: &str) -> Result<Option<Self>> {
        let sidecar = path.with_extension("json");
        let Ok(text) = std::fs::read_to_string(&sidecar) else {
            return Ok(None);
        };
        let wanted = TableKey {
            k,
            fingerprint: fingerprint.to_owned(),
        };
        if serde_json::from_str::<TableKey>(&text).ok() != Some(wanted) || !path.exists() {
            return Ok(None);
        }
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
        let get = |name: &str| {
            tensors
                .get(name)
                .ok_or_else(|| TrainError::checkpoint(path, format!("missing tensor '{name}'")))
        };
        let offsets: Vec<u32> = get("offsets")?.to_vec1()?;
        Ok(Some(Self {
            k,
            offsets: offsets.into_iter().map(|o| o as usize).collect(),
            ids: get("ids")?.flatten_all()?.to_vec1()?,
            logprobs: get("logprobs")?.flatten_all()?.to_vec1()?,
        }))
    }
}

/// Where a batch's teacher targets come from.
pub enum TargetSource<'a> {
    /// The teacher, run on each batch: full log-probabilities.
    Live(&'a Teacher),
    /// The teacher's top-k, computed once for the whole data set.
    Table(TopKTable),
}

impl TargetSource<'_> {
    /// The targets of `batch`, the examples at `indices` of the data set.
    pub fn targets(
        &self,
        indices: &[usize],
        batch: &[&DistillExample],
        device: &Device,
    ) -> Result<TeacherTargets> {
        match self {
            Self::Live(teacher) => Ok(TeacherTargets::Full(teacher.log_probs(batch)?)),
            Self::Table(table) => table.targets(indices, device),
        }
    }
}

/// What a top-k table depends on — the teacher (weights and context), `k` and every token
/// of the data — as 16 hex digits.
pub fn fingerprint(teacher: &Teacher, examples: &[DistillExample], k: usize) -> String {
    let mut hash = fnv1a(teacher.digest(), &[k as u32]);
    for e in examples {
        hash = fnv1a(hash, &[e.ids.len() as u32, e.skip as u32]);
        hash = fnv1a(hash, &e.ids);
    }
    format!("{hash:016x}")
}

/// FNV-1a over the bytes of `words`, continuing from `hash`.
fn fnv1a(mut hash: u64, words: &[u32]) -> u64 {
    for w in words {
        for byte in w.to_le_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}
