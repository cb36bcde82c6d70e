//! `LocalModel`: a model directory loaded onto a device, implementing the `LanguageModel`
//! trait with batched generation and scoring, and a small cache of prefilled shared prefixes.
//! Scoring requests that share a prompt (a question's options) prefill the prompt once.
//! Generation keeps finished rows' keys and values ([`PrefixCache`], bounded by
//! [`EngineLimits::kv_reuse_bytes`]) so that a request continuing an earlier one (the critique
//! stage's next wave) prefills only what is new.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cai_core::{
    Error as CoreError, GenerateRequest, Generation, LanguageModel, Sampling, Score, ScoreRequest,
    TokenLogprob,
};
use candle_core::{DType, Device};
use serde::Deserialize;

use crate::batching::{plan_batches, EngineLimits};
use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::decoder::Decoder;
use crate::fork_score::{score_forked, ForkJob};
use crate::generate::{generate_continuous, GenJob, Stopping};
use crate::prefix::Prefix;
use crate::prefix_cache::PrefixCache;
use crate::score::{score_batch, ScoreJob, ScoreOutput};
use crate::tokenizer::Tokenizer;
use crate::weights::{load_decoder, parse_dtype};
use crate::{ModelError, Result};

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Device for weights and activations.
    pub device: Device,
    /// Compute dtype; `None`: f32 on CPU, the config's `torch_dtype` on an accelerator.
    pub dtype: Option<DType>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: None,
        }
    }
}

/// Sampling defaults from `generation_config.json`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct GenerationDefaults {
    /// `do_sample`: false means greedy.
    pub do_sample: Option<bool>,
    /// Default temperature.
    pub temperature: Option<f32>,
    /// Default top-p.
    pub top_p: Option<f32>,
    /// Default top-k.
    pub top_k: Option<usize>,
    /// Default token budget.
    pub max_new_tokens: Option<usize>,
}

impl GenerationDefaults {
    /// Read `generation_config.json` from `dir` (absent: all `None`).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("generation_config.json");
        if !path.exists() {
            return Ok(Self::default());
        }
        let text = crate::read_limits::read_text(&path, crate::read_limits::CONFIG_LIMIT)
            .map_err(|e| ModelError::io(&path, e))?;
        let defaults: Self = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.clone(),
            message: e.to_string(),
        })?;
        defaults
            .validate()
            .map_err(|message| ModelError::Config { path, message })?;
        Ok(defaults)
    }

    /// Values that sample sensibly: a negative temperature would favour the least likely
    /// tokens, and a zero budget would make every completion empty.
    fn validate(&self) -> std::result::Result<(), String> {
        if let Some(t) = self.temperature.filter(|t| !(t.is_finite() && *t >= 0.0)) {
            return Err(format!(
                "`temperature` is {t}; expected a number ≥ 0 (0 is greedy)"
            ));
        }
        if let Some(p) = self.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            return Err(format!("`top_p` is {p}; expected a probability in (0, 1]"));
        }
        if self.max_new_tokens == Some(0) {
            return Err("`max_new_tokens` is 0; expected at least 1 (or no field)".into());
        }
        Ok(())
    }

    /// The model's preferred sampling (plain sampling at T = 1 where it states nothing).
    pub fn sampling(&self) -> Sampling {
        if self.do_sample == Some(false) {
            return Sampling::greedy();
        }
        Sampling {
            temperature: self.temperature.unwrap_or(1.0),
            top_k: self.top_k.filter(|&k| k > 0),
            top_p: self.top_p.filter(|&p| p < 1.0),
        }
    }
}

/// A local model: decoder, tokenizer and engine settings.
pub struct LocalModel {
    dir: PathBuf,
    decoder: Decoder,
    tokenizer: Tokenizer,
    defaults: GenerationDefaults,
    limits: EngineLimits,
    prefixes: Mutex<Vec<(String, Arc<Prefix>)>>,
    kv_reuse: PrefixCache,
}

/// Prefilled prefixes kept per model (least recently used dropped first).
const PREFIX_CACHE_SIZE: usize = 4;

impl LocalModel {
    /// Load a model directory, a GGUF file, or a Hub model id (from the Hugging Face cache,
    /// else downloaded into it).
    pub fn load(spec: &str, options: &LoadOptions) -> Result<Self> {
        // A Hub id may resolve to a GGUF file (`org/name:FILE.gguf`), so dispatch after.
        let dir = crate::hub::resolve_model_dir(spec)?;
        if crate::gguf::is_gguf(&dir) {
            return Self::load_gguf(&dir, options);
        }
        let config_path = dir.join("config.json");
        let config = ModelConfig::from_file(&config_path)?;
        let tokenizer = Tokenizer::from_dir(&dir)?;
        tokenizer.check_fits(config.vocab_size, &dir)?;
        let dtype = options
            .dtype
            .unwrap_or_else(|| match (&options.device, &config.torch_dtype) {
                (Device::Cpu, _) | (_, None) => DType::F32,
                (_, Some(name)) => parse_dtype(name).unwrap_or(DType::F32),
            });
        let build = Decoder::inference_build_dtype(dtype, &options.device);
        crate::memory::check(&options.device, config.memory_bytes(build), || {
            format!(
                "{}: {} in {}",
                config_path.display(),
                config.describe(),
                crate::weights::dtype_short_name(dtype)
            )
        })?;
        let ckpt = Checkpoint::open_dir(&dir)?;
        let mut decoder = load_decoder(config, &ckpt, build, &options.device)?;
        decoder.prepare_for_inference_as(dtype)?;
        let defaults = GenerationDefaults::from_dir(&dir)?;
        let limits = EngineLimits::default().with_env()?;
        Ok(Self::from_parts(dir, decoder, tokenizer, defaults).with_limits(limits))
    }

    /// Load a GGUF file: config and tokenizer from its metadata, weights dequantised to the
    /// compute dtype (f32 unless `options.dtype` says otherwise: the file records no
    /// compute dtype). [`LocalModel::dir`] is then the file.
    fn load_gguf(path: &Path, options: &LoadOptions) -> Result<Self> {
        let dtype = options.dtype.unwrap_or(DType::F32);
        let build = Decoder::inference_build_dtype(dtype, &options.device);
        let model = crate::gguf::load(path, build, &options.device)?;
        let mut decoder = model.decoder;
        decoder.prepare_for_inference_as(dtype)?;
        let limits = EngineLimits::default().with_env()?;
        Ok(Self::from_parts(
            path.to_path_buf(),
            decoder,
            model.tokenizer,
            GenerationDefaults::default(),
        )
        .with_limits(limits))
    }

    /// Assemble from parts already in memory, with the default [`EngineLimits`] (not
    /// [`EngineLimits::with_env`]: callers that want the environment apply it).
    pub fn from_parts(
        dir: PathBuf,
        decoder: Decoder,
        tokenizer: Tokenizer,
        defaults: GenerationDefaults,
    ) -> Self {
        Self {
            dir,
            decoder,
            tokenizer,
            defaults,
            limits: EngineLimits::default(),
            prefixes: Mutex::new(Vec::new()),
            kv_reuse: reuse_cache(EngineLimits::default()),
        }
    }

    /// Change the batch limits (and with them the prefix-reuse cache, emptied).
    pub fn with_limits(mut self, limits: EngineLimits) -> Self {
        self.limits = limits;
        self.kv_reuse = reuse_cache(limits);
        self
    }

    /// The engine limits.
    pub fn limits(&self) -> EngineLimits {
        self.limits
    }

    /// The kept keys and values of finished generation rows, which later requests continuing
    /// them start from (a continuous-batching server passes it to
    /// [`crate::decode_batch::DecodeBatch::with_reuse`]).
    pub fn kv_reuse(&self) -> &PrefixCache {
        &self.kv_reuse
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The decoder.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// `generation_config.json` defaults.
    pub fn generation_defaults(&self) -> &GenerationDefaults {
        &self.defaults
    }

    /// The prefilled prefix for `text` (computed once, then reused), or `None` for "".
    ///
    /// The cache holds keys and values computed with the weights of the time; call
    /// [`LocalModel::clear_prefixes`] after changing them or the LoRA switch.
    pub fn prefix(&self, text: &str) -> Result<Option<Arc<Prefix>>> {
        if text.is_empty() {
            return Ok(None);
        }
        let mut cache = self.prefixes.lock().expect("prefix cache lock");
        if let Some(i) = cache.iter().position(|(t, _)| t == text) {
            let entry = cache.remove(i);
            let prefix = entry.1.clone();
            cache.push(entry);
            return Ok(Some(prefix));
        }
        let tokens = self
            .tokenizer
            .encode(text, self.tokenizer.add_bos_token())?;
        let prefix = Arc::new(Prefix::compute(&self.decoder, tokens)?);
        if cache.len() >= PREFIX_CACHE_SIZE {
            cache.remove(0);
        }
        cache.push((text.to_string(), prefix.clone()));
        Ok(Some(prefix))
    }

    /// Forget every prefilled prefix and every kept row (after the weights or the adapters'
    /// switch changed).
    pub fn clear_prefixes(&self) {
        self.prefixes.lock().expect("prefix cache lock").clear();
        self.kv_reuse.clear();
    }

    /// Tokens of a prompt: with bos when it starts the sequence and the tokenizer wants one.
    fn prompt_tokens(&self, has_prefix: bool, prompt: &str) -> Result<Vec<u32>> {
        self.tokenizer
            .encode(prompt, !has_prefix && self.tokenizer.add_bos_token())
    }

    fn generate_inner(&self, requests: &[GenerateRequest]) -> Result<Vec<Generation>> {
        let mut results: Vec<Option<Generation>> = vec![None; requests.len()];
        for (prefix_text, members) in group_by_prefix(requests.iter().map(|r| r.prefix.as_str())) {
            let prefix = self.prefix(prefix_text)?;
            let context = self.decoder.config().max_position_embeddings;
            let jobs: Vec<GenJob> = members
                .iter()
                .map(|&i| {
                    let r = &requests[i];
                    let prompt = self.prompt_tokens(prefix.is_some(), &r.prompt)?;
                    let used = prefix.as_ref().map_or(0, |p| p.len()) + prompt.len();
                    if used >= context {
                        return Err(crate::ModelError::Request(format!(
                            "prefix + prompt ({used} tokens) fill the model's context of \
                             {context}: no room to generate"
                        )));
                    }
                    Ok(GenJob {
                        prompt,
                        // Cut to the room left, as llama.cpp does: a long dialogue late in a
                        // stage (a fourth revision round) ends at the context instead of
                        // failing the run.
                        max_new_tokens: r.max_new_tokens.min(context - used),
                        sampling: r.sampling,
                        stop: r.stop.clone(),
                        seed: r.seed,
                        top_logprobs: 0,
                        ignore_eos: false,
                        format: r.format,
                    })
                })
                .collect::<Result<_>>()?;
            let stopping = Stopping {
                tokenizer: Some(&self.tokenizer),
                eos: self.tokenizer.eos_ids(),
            };
            let outs = generate_continuous(
                &self.decoder,
                prefix.as_deref(),
                &jobs,
                stopping,
                Some(&self.kv_reuse),
                self.limits,
            )?;
            for ((job, out), &i) in jobs.iter().zip(outs).zip(&members) {
                results[i] = Some(Generation {
                    text: out.text,
                    token_ids: out.tokens,
                    token_logprobs: out.logprobs,
                    prompt_tokens: prefix.as_ref().map_or(0, |p| p.len()) + job.prompt.len(),
                    finish_reason: out.finish,
                });
            }
        }
        let reuse = self.kv_reuse.stats();
        tracing::debug!(
            requests = requests.len(),
            hits = reuse.hits,
            reused_tokens = reuse.reused_tokens,
            kept_rows = self.kv_reuse.len(),
            kept_mib = self.kv_reuse.bytes() >> 20,
            evicted = reuse.evicted,
            "prefix reuse so far"
        );
        Ok(results
            .into_iter()
            .map(|g| g.expect("every request answered"))
            .collect())
    }

    fn score_inner(&self, requests: &[ScoreRequest]) -> Result<Vec<Score>> {
        let mut results: Vec<Option<Score>> = vec![None; requests.len()];
        for (prefix_text, members) in group_by_prefix(requests.iter().map(|r| r.prefix.as_str())) {
            let prefix = self.prefix(prefix_text)?;
            let jobs: Vec<ScoreJob> = members
                .iter()
                .map(|&i| {
                    let r = &requests[i];
                    Ok(ScoreJob {
                        prompt: self.prompt_tokens(prefix.is_some(), &r.prompt)?,
                        continuation: self.tokenizer.encode(&r.continuation, false)?,
                        top_k: r.top_k,
                    })
                })
                .collect::<Result<_>>()?;
            let outs = if shares_prompts(&jobs) {
                self.score_forked_group(prefix.as_deref(), &jobs)?
            } else {
                let len = |k: usize| jobs[k].prompt.len() + jobs[k].continuation.len();
                let mut outs: Vec<Option<ScoreOutput>> = vec![None; jobs.len()];
                for chunk in plan_batches(jobs.len(), len, self.limits) {
                    let batch: Vec<ScoreJob> = chunk.iter().map(|&k| jobs[k].clone()).collect();
                    let scored = score_batch(&self.decoder, prefix.as_deref(), &batch)?;
                    for (&k, out) in chunk.iter().zip(scored) {
                        outs[k] = Some(out);
                    }
                }
                outs.into_iter()
                    .map(|o| o.expect("every job scored"))
                    .collect()
            };
            for ((&member, job), out) in members.iter().zip(&jobs).zip(outs) {
                let top_logprobs = out
                    .top
                    .iter()
                    .map(|row| {
                        row.iter()
                            .map(|&(id, logprob)| TokenLogprob {
                                id,
                                token: self.tokenizer.id_to_token(id).unwrap_or_default(),
                                logprob,
                            })
                            .collect()
                    })
                    .collect();
                results[member] = Some(Score {
                    logprob: out.logprobs.iter().map(|&x| x as f64).sum(),
                    token_logprobs: out.logprobs,
                    token_ids: job.continuation.clone(),
                    top_logprobs,
                });
            }
        }
        Ok(results
            .into_iter()
            .map(|s| s.expect("every request answered"))
            .collect())
    }

    /// Score jobs of which some share a prompt: each distinct prompt is prefilled once and
    /// its continuations are scored from copies of its cache ([`score_forked`]).
    fn score_forked_group(
        &self,
        prefix: Option<&Prefix>,
        jobs: &[ScoreJob],
    ) -> Result<Vec<ScoreOutput>> {
        let mut prompts: Vec<&[u32]> = Vec::new();
        let mut index: HashMap<&[u32], usize> = HashMap::new();
        let owner: Vec<usize> = jobs
            .iter()
            .map(|job| {
                *index.entry(job.prompt.as_slice()).or_insert_with(|| {
                    prompts.push(&job.prompt);
                    prompts.len() - 1
                })
            })
            .collect();
        let mut continuations: Vec<Vec<usize>> = vec![Vec::new(); prompts.len()];
        for (k, &i) in owner.iter().enumerate() {
            continuations[i].push(k);
        }
        let len = |i: usize| {
            let longest = continuations[i]
                .iter()
                .map(|&k| jobs[k].continuation.len())
                .max()
                .unwrap_or(0);
            prompts[i].len() + longest
        };
        let mut outs: Vec<Option<ScoreOutput>> = vec![None; jobs.len()];
        for chunk in plan_batches(prompts.len(), len, self.limits) {
            let batch_prompts: Vec<Vec<u32>> = chunk.iter().map(|&i| prompts[i].to_vec()).collect();
            let members: Vec<usize> = chunk
                .iter()
                .flat_map(|&i| continuations[i].iter().copied())
                .collect();
            let fork_jobs: Vec<ForkJob> = chunk
                .iter()
                .enumerate()
                .flat_map(|(at, &i)| {
                    continuations[i].iter().map(move |&k| ForkJob {
                        prompt: at,
                        continuation: jobs[k].continuation.clone(),
                        top_k: jobs[k].top_k,
                    })
                })
                .collect();
            let scored = score_forked(&self.decoder, prefix, &batch_prompts, &fork_jobs)?;
            for (k, out) in members.into_iter().zip(scored) {
                outs[k] = Some(out);
            }
        }
        Ok(outs
            .into_iter()
            .map(|o| o.expect("every job scored"))
            .collect())
    }
}

/// The prefix-reuse cache the limits describe.
fn reuse_cache(limits: EngineLimits) -> PrefixCache {
    PrefixCache::new(limits.kv_reuse_bytes, limits.kv_reuse_min_tokens)
}

/// Whether some non-empty prompt has more than one continuation to score (and none is empty,
/// which only the plain path handles): then prefilling each prompt once pays.
fn shares_prompts(jobs: &[ScoreJob]) -> bool {
    if jobs.iter().any(|j| j.prompt.is_empty()) {
        return false;
    }
    let mut seen = std::collections::HashSet::new();
    jobs.iter().any(|j| !seen.insert(j.prompt.as_slice()))
}

/// Indices grouped by prefix text, groups in order of first appearance.
fn group_by_prefix<'a>(prefixes: impl Iterator<Item = &'a str>) -> Vec<(&'a str, Vec<usize>)> {
    let mut order: Vec<&str> = Vec::new();
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, p) in prefixes.enumerate() {
        groups.entry(p).or_insert_with(|| {
            order.push(p);
            Vec::new()
        });
        groups.get_mut(p).expect("inserted").push(i);
    }
    order
        .into_iter()
        .map(|p| (p, groups.remove(p).expect("present")))
        .collect()
}

impl LanguageModel for LocalModel {
    fn generate(
        &self,
        requests: &[GenerateRequest],
    ) -> std::result::Result<Vec<Generation>, CoreError> {
        Ok(self.generate_inner(requests)?)
    }

    fn score(&self, requests: &[ScoreRequest]) -> std::result::Result<Vec<Score>, CoreError> {
        Ok(self.score_inner(requests)?)
    }

    fn room_after(
        &self,
        prefix: &str,
        prompt: &str,
    ) -> std::result::Result<Option<usize>, CoreError> {
        let prefix_tokens = if prefix.is_empty() {
            0
        } else {
            self.tokenizer
                .encode(prefix, self.tokenizer.add_bos_token())?
                .len()
        };
        let prompt_tokens = self.prompt_tokens(!prefix.is_empty(), prompt)?.len();
        let context = self.decoder.config().max_position_embeddings;
        Ok(Some(context.saturating_sub(prefix_tokens + prompt_tokens)))
    }
}
