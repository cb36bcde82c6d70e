//! A running generation batch that rows can join and leave between decode steps (continuous
//! batching): [`DecodeBatch::add`] prefills new rows and joins their cache to the batch's,
//! [`DecodeBatch::step`] samples one token per row and runs one decode pass for the rows still
//! going, [`DecodeBatch::remove`] drops rows whose caller went away. With a
//! [`PrefixCache`] ([`DecodeBatch::with_reuse`]), finished rows leave their keys and values
//! there and new rows whose tokens continue one start from them.

use cai_core::{FinishReason, OutputFormat};
use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::decoder::{Batch, Decoder};
use crate::generate::{GenJob, GenOutput, Stopping};
use crate::json_prefix::{self, JsonPrefix};
use crate::kv_cache::{reorder, KvCache};
use crate::layers::Mode;
use crate::prefix::Prefix;
use crate::prefix_cache::PrefixCache;
use crate::sampling::{log_sum_exp, sample, token_logprob};
use crate::score::top_k;
use crate::{ModelError, Result};
use prefill::{prefill_fresh, prefill_reused, Joining};

mod prefill;

/// A row's next token, its log-probability, the top alternatives, and whether the token
/// makes the row's JSON object whole (always false for text rows).
type Pick = (u32, f32, Vec<(u32, f32)>, bool);

/// The most cache slots reserved ahead for tokens not yet made; beyond them the cache grows
/// as they come. The papers' responses (≤ 128 tokens) never grow it.
const KV_ROOM_STEP: usize = 256;

/// Rows from which the next tokens are picked on several threads.
const PARALLEL_PICKS: usize = 4;

/// One row of the batch: its job, sampler and tokens so far.
struct Row {
    id: u64,
    job: GenJob,
    rng: ChaCha8Rng,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    top_logprobs: Vec<Vec<(u32, f32)>>,
    next_pos: u32,
    /// A JSON row's object is whole (it ends after this token).
    json_whole: bool,
    /// The prefix's and prompt's tokens, kept only to name the row's keys and values in a
    /// [`PrefixCache`] when it finishes (empty without one).
    context: Vec<u32>,
    /// The one-row cache of the shared prefix the row continues (with a [`PrefixCache`]), so
    /// that a finished row is kept as its own slots after that prefix.
    head: Option<KvCache>,
}

/// A token sampled by [`DecodeBatch::step`].
#[derive(Debug, Clone, PartialEq)]
pub struct StepToken {
    /// The row's id, as given to [`DecodeBatch::add`].
    pub id: u64,
    /// The token.
    pub token: u32,
    /// Its log-probability at temperature 1.
    pub logprob: f32,
    /// The job's `top_logprobs` most likely tokens at this position, best first.
    pub top: Vec<(u32, f32)>,
}

/// What one [`DecodeBatch::step`] did.
#[derive(Debug, Clone, Default)]
pub struct Step {
    /// The token sampled for each row (rows with a zero budget sample none).
    pub tokens: Vec<StepToken>,
    /// Rows that finished in this step, with their results; they have left the batch.
    pub finished: Vec<(u64, GenOutput)>,
}

/// A job waiting to join a [`DecodeBatch`], with the kept row it continues (if any) already
/// looked up and held ([`DecodeBatch::prepare`]).
pub struct Pending(Joining);

impl Pending {
    /// The id the row will have.
    pub fn id(&self) -> u64 {
        self.0 .0
    }

    /// The job.
    pub fn job(&self) -> &GenJob {
        &self.0 .1
    }

    /// Tokens its prefill runs: the prompt, or what follows the kept row it continues.
    pub fn prefill_tokens(&self) -> usize {
        match self.0 .3 {
            Some(_) => rest_len(&self.0),
            None => self.0 .1.prompt.len(),
        }
    }
}

/// Tokens of a job with a hit that its prefill runs (after the kept slots).
fn rest_len(j: &Joining) -> usize {
    j.2.len() - j.3.as_ref().map_or(0, |h| h.len())
}

/// Consecutive ranges of `jobs` whose padded prefill (rows × longest `len`) stays within
/// `pass_tokens`, one job at least each.
fn passes(
    jobs: &[Joining],
    pass_tokens: usize,
    len: impl Fn(&Joining) -> usize,
) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    let mut longest = 0;
    for (i, j) in jobs.iter().enumerate() {
        let l = len(j).max(1);
        match out.last_mut() {
            Some(r) if (r.len() + 1) * longest.max(l) <= pass_tokens => {
                r.end = i + 1;
                longest = longest.max(l);
            }
            _ => {
                out.push(i..i + 1);
                longest = l;
            }
        }
    }
    out
}

/// Rows being generated together. Each row's samples depend only on its own job and seed,
/// never on which rows share the batch or when it joined.
pub struct DecodeBatch<'a> {
    decoder: &'a Decoder,
    rows: Vec<Row>,
    /// Next-token logits of each row, aligned with `rows`.
    logits: Vec<Vec<f32>>,
    cache: Option<KvCache>,
    reuse: Option<&'a PrefixCache>,
}

impl<'a> DecodeBatch<'a> {
    /// An empty batch over `decoder`.
    pub fn new(decoder: &'a Decoder) -> Self {
        Self {
            decoder,
            rows: Vec::new(),
            logits: Vec::new(),
            cache: None,
            reuse: None,
        }
    }

    /// Keep finished rows' keys and values in `reuse` and start new rows from the longest
    /// kept row their tokens continue (`None`, or a disabled cache: every row is prefilled
    /// from its prompt). Results equal a fresh prefill's within float rounding.
    pub fn with_reuse(mut self, reuse: Option<&'a PrefixCache>) -> Self {
        self.reuse = reuse.filter(|c| c.enabled());
        self
    }

    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no row is running.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The ids of the rows, in batch order.
    pub fn ids(&self) -> Vec<u64> {
        self.rows.iter().map(|r| r.id).collect()
    }

    /// Prefill `jobs` (after `prefix`, if any) in one left-padded pass and add them as rows
    /// with the given ids. Fails without changing the batch when a job does not fit the
    /// model's context or a prompt is empty without a prefix.
    pub fn add(&mut self, prefix: Option<&Prefix>, jobs: Vec<(u64, GenJob)>) -> Result<()> {
        let pending = jobs
            .into_iter()
            .map(|(id, job)| self.prepare(prefix, id, job))
            .collect();
        self.join(prefix, pending, usize::MAX)
    }

    /// `job` (to run after `prefix`, if any) looked up in the batch's [`PrefixCache`] now, so
    /// that the kept row it continues is held until it joins ([`DecodeBatch::join`]), whatever
    /// rows finishing meanwhile evict.
    pub fn prepare(&self, prefix: Option<&Prefix>, id: u64, job: GenJob) -> Pending {
        let Some(reuse) = self.reuse else {
            return Pending((id, job, Vec::new(), None));
        };
        let context: Vec<u32> = prefix
            .map_or(&[][..], |pre| &pre.tokens)
            .iter()
            .chain(&job.prompt)
            .copied()
            .collect();
        let p = prefix.map_or(0, Prefix::len);
        let hit = reuse.lookup(&context, self.decoder.adapters_enabled(), p);
        Pending((id, job, context, hit))
    }

    /// Prefill prepared jobs ([`DecodeBatch::prepare`], after the same `prefix`) in left-padded
    /// passes of at most `pass_tokens` padded tokens each (one job at least), and add them as
    /// rows. Fails without changing the batch when a job does not fit the model's context or
    /// a prompt is empty without a prefix.
    pub fn join(
        &mut self,
        prefix: Option<&Prefix>,
        jobs: Vec<Pending>,
        pass_tokens: usize,
    ) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let decoder = self.decoder;
        let p = prefix.map_or(0, Prefix::len);
        if prefix.is_none() && jobs.iter().any(|j| j.job().prompt.is_empty()) {
            return Err(ModelError::Request(
                "a prompt tokenized to nothing and there is no prefix to continue".into(),
            ));
        }
        let max_pos = decoder.config().max_position_embeddings;
        // Per job: padding takes cache slots but no positions, so a batch fits whenever each
        // job does.
        if let Some(j) = jobs
            .iter()
            .map(Pending::job)
            .find(|j| p + j.prompt.len() + j.max_new_tokens > max_pos)
        {
            return Err(ModelError::Request(format!(
                "prefix ({p}) + prompt ({}) + max_new_tokens ({}) tokens exceed the model's context of {max_pos}",
                j.prompt.len(),
                j.max_new_tokens
            )));
        }
        let budget = jobs
            .iter()
            .map(|j| j.job().max_new_tokens)
            .max()
            .unwrap_or(0);
        // Room for what is made, not what is allowed: the cache grows (doubling) as tokens
        // come, so a budget of millions reserves nothing it does not use.
        let room = budget.min(KV_ROOM_STEP);
        let (mut reused, mut fresh): (Vec<Joining>, Vec<Joining>) =
            jobs.into_iter().map(|j| j.0).partition(|j| j.3.is_some());
        let fresh_passes = passes(&fresh, pass_tokens, |j| j.1.prompt.len());
        let reused_passes = passes(&reused, pass_tokens, rest_len);
        // A part joined to others is copied, so only a lone part needs room of its own.
        let lone = self.cache.is_none() && fresh_passes.len() + reused_passes.len() == 1;
        let part_room = if lone { room } else { 0 };
        let mut parts = Vec::new();
        let mut logits = Vec::new();
        for range in fresh_passes {
            let (cache, mut l) = prefill_fresh(decoder, prefix, &fresh[range], part_room)?;
            parts.push(cache);
            logits.append(&mut l);
        }
        for range in reused_passes {
            let (cache, mut l) = prefill_reused(decoder, &reused[range], part_room)?;
            parts.push(cache);
            logits.append(&mut l);
        }
        let joined = match (&self.cache, parts.len()) {
            (None, 1) => parts.pop().expect("one part"),
            (running, _) => {
                let spare = self
                    .rows
                    .iter()
                    .map(|r| r.job.max_new_tokens - r.tokens.len())
                    .chain([budget])
                    .max()
                    .unwrap_or(0)
                    .min(KV_ROOM_STEP);
                let all: Vec<&KvCache> = running.iter().chain(&parts).collect();
                KvCache::concat_rows(&all, spare)?
            }
        };
        drop(parts);
        self.cache = Some(joined);
        self.logits.append(&mut logits);
        fresh.append(&mut reused);
        let kept_apart = self.reuse.is_some();
        self.rows
            .extend(fresh.into_iter().map(|(id, job, context, hit)| Row {
                head: match hit {
                    Some(hit) => hit.head().cloned(),
                    None => prefix.filter(|_| kept_apart).map(|p| p.cache.clone()),
                },
                id,
                rng: ChaCha8Rng::seed_from_u64(job.seed),
                tokens: Vec::new(),
                logprobs: Vec::new(),
                top_logprobs: Vec::new(),
                next_pos: (p + job.prompt.len()) as u32,
                json_whole: false,
                context,
                job,
            }));
        Ok(())
    }

    /// Drop the rows with these ids (unknown ids are ignored).
    pub fn remove(&mut self, ids: &[u64]) -> Result<()> {
        let keep: Vec<usize> = (0..self.rows.len())
            .filter(|&r| !ids.contains(&self.rows[r].id))
            .collect();
        self.keep_rows(&keep).map(drop)
    }

    /// Keep only the rows at these indices (increasing), with their logits and cache rows;
    /// rows may change places ([`KvCache::retain_rows`]). Returns the new order: each row's
    /// old index.
    fn keep_rows(&mut self, keep: &[usize]) -> Result<Vec<usize>> {
        if keep.len() == self.rows.len() {
            return Ok(keep.to_vec());
        }
        if keep.is_empty() {
            self.rows.clear();
            self.logits.clear();
            self.cache = None;
            return Ok(Vec::new());
        }
        let order = match &mut self.cache {
            Some(cache) => cache.retain_rows(keep)?,
            None => keep.to_vec(),
        };
        reorder(&mut self.rows, &order);
        reorder(&mut self.logits, &order);
        Ok(order)
    }

    /// Leave the keys and values of the finished rows at these indices in the
    /// [`PrefixCache`], named by the tokens they hold: the row's prefix and prompt, then the
    /// generated tokens that went through the model (not the last one sampled).
    fn keep_finished(&self, done: &[usize]) -> Result<()> {
        let (Some(reuse), Some(cache)) = (self.reuse, &self.cache) else {
            return Ok(());
        };
        let adapters = self.decoder.adapters_enabled();
        for &r in done {
            let row = &self.rows[r];
            // A row after a shared prefix is kept as its own slots, the prefix by reference.
            let (head, kept) = match &row.head {
                Some(head) if cache.continues(head) => {
                    (Some(head.clone()), cache.compact_row_from(r, head.len())?)
                }
                _ => (None, cache.compact_row(r)?),
            };
            let Some(kept) = kept else {
                continue;
            };
            let slots = head.as_ref().map_or(0, KvCache::len) + kept.len();
            let tokens: Vec<u32> = row
                .context
                .iter()
                .chain(&row.tokens)
                .take(slots)
                .copied()
                .collect();
            reuse.insert_after(tokens, head, kept, adapters);
        }
        Ok(())
    }

    /// Sample one token for every row; rows that end (end-of-sequence, a stop string, their
    /// budget) leave the batch and are returned; one decode pass computes the next logits of
    /// the rest.
    pub fn step(&mut self, stopping: Stopping<'_>) -> Result<Step> {
        let mut step = Step::default();
        let mut keep = Vec::with_capacity(self.rows.len());
        let mut next = Vec::with_capacity(self.rows.len());
        // Each row's pick reads only its own logits and sampler, so rows are picked in
        // parallel: over a vocabulary of thousands, the log-sum-exp of every row is a tenth of
        // a batch-16 decode step on bench-6m when done on one core.
        let pick = |(row, logits): (&mut Row, &Vec<f32>)| -> Result<Option<Pick>> {
            if row.job.max_new_tokens == 0 {
                return Ok(None);
            }
            let (tok, whole) = match row.job.format {
                OutputFormat::Text => (sample(logits, &row.job.sampling, &mut row.rng), false),
                OutputFormat::JsonObject => match pick_json(row, logits, stopping)? {
                    Some((tok, verdict)) => (tok, verdict == JsonPrefix::Complete),
                    // No token continues the object: the row ends here, cut short.
                    None => return Ok(None),
                },
            };
            let top = top_logprobs(logits, row.job.top_logprobs);
            Ok(Some((tok, token_logprob(logits, tok), top, whole)))
        };
        let picks: Vec<Option<Pick>> = if self.rows.len() >= PARALLEL_PICKS {
            self.rows
                .par_iter_mut()
                .zip(self.logits.par_iter())
                .map(pick)
                .collect::<Result<_>>()?
        } else {
            self.rows
                .iter_mut()
                .zip(self.logits.iter())
                .map(pick)
                .collect::<Result<_>>()?
        };
        let mut done = Vec::new();
        for ((r, row), picked) in self.rows.iter_mut().enumerate().zip(picks) {
            let Some((tok, logprob, top, whole)) = picked else {
                done.push(r);
                step.finished
                    .push((row.id, finish(row, FinishReason::Length, stopping)?));
                continue;
            };
            row.logprobs.push(logprob);
            row.tokens.push(tok);
            row.json_whole = whole;
            if row.job.top_logprobs > 0 {
                row.top_logprobs.push(top.clone());
            }
            step.tokens.push(StepToken {
                id: row.id,
                token: tok,
                logprob,
                top,
            });
            match finished(row, tok, stopping)? {
                Some(reason) => {
                    done.push(r);
                    step.finished.push((row.id, finish(row, reason, stopping)?));
                }
                None => {
                    keep.push(r);
                    next.push(tok);
                }
            }
        }
        self.keep_finished(&done)?;
        let order = self.keep_rows(&keep)?;
        // The next tokens in the rows' new order.
        let next: Vec<u32> = order
            .iter()
            .map(|r| next[keep.binary_search(r).expect("a kept row")])
            .collect();
        if self.rows.is_empty() {
            return Ok(step);
        }
        let decoder = self.decoder;
        let n = self.rows.len();
        let ids = Tensor::from_vec(next, (n, 1), decoder.device())?;
        let batch = Batch {
            valid: vec![vec![true]; n],
            positions: self.rows.iter().map(|r| vec![r.next_pos]).collect(),
        };
        for row in &mut self.rows {
            row.next_pos += 1;
        }
        let hidden = decoder.forward_hidden(&ids, &batch, self.cache.as_mut(), Mode::Infer)?;
        self.logits = decoder
            .logits(&hidden.squeeze(1)?)?
            .to_dtype(DType::F32)?
            .to_vec2()?;
        Ok(step)
    }
}

/// The `k` most likely tokens of a logit row with their log-probabilities, best first.
fn top_logprobs(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    if k == 0 {
        return Vec::new();
    }
    let norm = log_sum_exp(logits);
    top_k(logits, k)
        .into_iter()
        .map(|(id, x)| (id, x - norm))
        .collect()
}

/// Draws a JSON-constrained row makes before it looks through the tokens in logit order.
const JSON_DRAWS: usize = 16;

/// The next token of a row whose output must be one JSON object, with what the text is after
/// it: drawn as the row's sampling says, except that a token is masked out and the draw
/// repeated when the text after it can no longer become a JSON object, when it adds no text
/// (an end-of-sequence or other special token: the object is not whole yet), after
/// [`JSON_DRAWS`] draws, the most likely allowed token; `None` when no token of the
/// vocabulary is allowed (the row then ends, cut short, without failing its batch).
fn pick_json(
    row: &mut Row,
    logits: &[f32],
    stopping: Stopping<'_>,
) -> Result<Option<(u32, JsonPrefix)>> {
    let tokenizer = stopping.tokenizer.ok_or_else(|| {
        ModelError::Request("JSON output needs a tokenizer to read the text it makes".into())
    })?;
    let before = tokenizer.decode(&row.tokens)?;
    let mut tokens = row.tokens.clone();
    tokens.push(0);
    let mut verdict = |tok: u32| -> Result<Option<JsonPrefix>> {
        if stopping.eos.contains(&tok) {
            return Ok(None);
        }
        *tokens.last_mut().expect("pushed above") = tok;
        let text = tokenizer.decode(&tokens)?;
        if text == before {
            return Ok(None);
        }
        Ok(Some(json_prefix::check(&text)).filter(|v| *v != JsonPrefix::Invalid))
    };
    let mut masked = logits.to_vec();
    for _ in 0..JSON_DRAWS {
        let tok = sample(&masked, &row.job.sampling, &mut row.rng);
        if let Some(v) = verdict(tok)? {
            return Ok(Some((tok, v)));
        }
        masked[tok as usize] = f32::NEG_INFINITY;
    }
    let mut order: Vec<u32> = (0..masked.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| masked[b as usize].total_cmp(&masked[a as usize]));
    for tok in order {
        if let Some(v) = verdict(tok)? {
            return Ok(Some((tok, v)));
        }
    }
    Ok(None)
}

/// Whether `row` is done after sampling `tok`.
fn finished(row: &Row, tok: u32, stopping: Stopping<'_>) -> Result<Option<FinishReason>> {
    if stopping.eos.contains(&tok) && !row.job.ignore_eos {
        return Ok(Some(FinishReason::Eos));
    }
    if row.json_whole {
        // The object is whole: nothing but whitespace could follow, so the row ends here.
        return Ok(Some(FinishReason::Stop));
    }
    if let (Some(tk), false) = (stopping.tokenizer, row.job.stop.is_empty()) {
        let text = tk.decode(&row.tokens)?;
        if row.job.stop.iter().any(|s| text.contains(s.as_str())) {
            return Ok(Some(FinishReason::Stop));
        }
    }
    Ok((row.tokens.len() >= row.job.max_new_tokens).then_some(FinishReason::Length))
}

/// The row's result: its tokens, and its text without the end-of-sequence token and cut
/// before the first stop string.
fn finish(row: &Row, reason: FinishReason, stopping: Stopping<'_>) -> Result<GenOutput> {
    let text = match stopping.tokenizer {
        None => String::new(),
        Some(tk) => {
            let body = if reason == FinishReason::Eos {
                &row.tokens[..row.tokens.len() - 1]
            } else {
                &row.tokens[..]
            };
            let text = tk.decode(body)?;
            let cut = row
                .job
                .stop
                .iter()
                .filter_map(|s| text.find(s.as_str()))
                .min();
            match cut {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        }
    };
    Ok(GenOutput {
        tokens: row.tokens.clone(),
        logprobs: row.logprobs.clone(),
        top_logprobs: row.top_logprobs.clone(),
        text,
        finish: reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::ModelShape;
    use crate::weights::random_decoder;
    use cai_core::Sampling;
    use candle_core::Device;

    /// A byte-level BPE trained here, and a JSON row at its start.
    fn json_setup(dir: &std::path::Path) -> (crate::tokenizer::Tokenizer, Row) {
        let corpus = dir.join("corpus.txt");
        std::fs::write(&corpus, "Human: hi {\"a\": 1}\nAssistant: ok\n".repeat(30)).unwrap();
        let tokenizer = crate::tokenizer::Tokenizer::train_bpe(&corpus, 300).unwrap();
        let row = Row {
            id: 0,
            job: GenJob {
                format: OutputFormat::JsonObject,
                ..job(8)
            },
            rng: ChaCha8Rng::seed_from_u64(0),
            tokens: Vec::new(),
            logprobs: Vec::new(),
            top_logprobs: Vec::new(),
            next_pos: 0,
            json_whole: false,
            context: Vec::new(),
            head: None,
        };
        (tokenizer, row)
    }

    /// A JSON row never takes a token that adds no text (a special token the decoder skips,
    /// an id past the tokenizer's vocabulary), however likely: it would stall the object.
    #[test]
    fn a_json_row_skips_tokens_that_add_no_text() {
        let tmp = tempfile::tempdir().unwrap();
        let (tokenizer, mut row) = json_setup(tmp.path());
        let special = tokenizer.token_to_id("<|endoftext|>").unwrap();
        let brace = tokenizer.token_to_id("{").unwrap();
        let vocab = tokenizer.vocab_size();
        let mut logits = vec![0.0f32; vocab + 4];
        logits[special as usize] = 9.0;
        logits[vocab + 2] = 8.0;
        logits[brace as usize] = 5.0;
        let stopping = Stopping {
            tokenizer: Some(&tokenizer),
            eos: &[],
        };
        let (tok, verdict) = pick_json(&mut row, &logits, stopping).unwrap().unwrap();
        assert_eq!((tok, verdict), (brace, JsonPrefix::Partial));
    }

    /// A JSON row no token can continue ends alone (`None`), without failing its batch.
    #[test]
    fn a_json_row_no_token_continues_gives_none_not_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let (tokenizer, mut row) = json_setup(tmp.path());
        // Text that no continuation makes an object: every candidate is refused.
        row.tokens = tokenizer.encode("Human", false).unwrap();
        let logits = vec![0.0f32; tokenizer.vocab_size()];
        let stopping = Stopping {
            tokenizer: Some(&tokenizer),
            eos: &[],
        };
        assert_eq!(pick_json(&mut row, &logits, stopping).unwrap(), None);
    }

    fn job(max_new_tokens: usize) -> GenJob {
        GenJob {
            prompt: vec![5, 17, 3],
            max_new_tokens,
            sampling: Sampling::greedy(),
            stop: Vec::new(),
            seed: 1,
            top_logprobs: 0,
            ignore_eos: true,
            format: cai_core::OutputFormat::Text,
        }
    }

    #[test]
    fn a_huge_budget_reserves_cache_for_tokens_made_not_tokens_allowed() {
        // A model that declares 10¹² positions and rows allowed 10⁹ new tokens: a cache
        // sized to the budget would need 64 GB per tensor before the first token.
        let shape = ModelShape {
            hidden_size: 16,
            num_layers: 1,
            num_heads: 2,
            intermediate_size: 32,
            vocab_size: 64,
            max_position_embeddings: 1_000_000_000_000,
            ..ModelShape::default()
        };
        let decoder = random_decoder(shape.config().unwrap(), 3, DType::F32, &Device::Cpu).unwrap();
        let stopping = Stopping {
            tokenizer: None,
            eos: &[],
        };
        let capacity = |b: &DecodeBatch| b.cache.as_ref().unwrap().capacity();
        let mut batch = DecodeBatch::new(&decoder);
        batch.add(None, vec![(0, job(1_000_000_000))]).unwrap();
        assert!(capacity(&batch) <= 3 + KV_ROOM_STEP, "{}", capacity(&batch));
        // It grows as tokens are made, and a row joining a running batch adds little.
        for _ in 0..KV_ROOM_STEP + 10 {
            batch.step(stopping).unwrap();
        }
        batch.add(None, vec![(1, job(1_000_000_000))]).unwrap();
        assert_eq!(batch.len(), 2);
        let cap = capacity(&batch);
        assert!(
            cap > KV_ROOM_STEP + 10 && cap <= 2 * (3 + KV_ROOM_STEP + 10) + KV_ROOM_STEP,
            "{cap}"
        );
        batch.step(stopping).unwrap();
    }
}
