//! One rollout of online RL: a step's prompts drawn from the red-team/helpful mixture, a
//! response sampled from the policy for each (k for RLOO), each response scored by the reward
//! (the preference model, or any [`RewardFn`]), and the policy's and reference's
//! log-probabilities and the critic's values of every response token.

use std::path::Path;
use std::time::Instant;

use cai_core::dialogue::{transcript_stop_strings, Message};
use cai_core::prompts::Prompt;
use cai_core::{FinishReason, Sampling};
use cai_data::read_prompts;
use cai_model::batching::EngineLimits;
use cai_model::generate::{generate_batch, GenJob, Stopping};
use cai_model::layers::Mode;
use cai_model::reward_model::RewardModel;
use cai_model::tokenizer::{DialogueFormat, Tokenizer};

use crate::core::data_order::stream_slice;
use crate::rl::config::RlConfig;
use crate::rl::policy::{response_outputs, Policy, Sequence};
use crate::{Result, TrainError};

/// Scores whole dialogues (a prompt and the assistant's answer as the last turn).
pub trait RewardFn {
    /// One score per dialogue.
    fn rewards(&self, dialogues: &[Vec<Message>]) -> Result<Vec<f32>>;
}

/// A preference model (`*ForSequenceClassification` layout) as the reward: the dialogue is
/// rendered and tokenized as `cai train-pm` did for its training pairs.
pub struct PmReward {
    model: RewardModel,
    tokenizer: Tokenizer,
    format: DialogueFormat,
    limits: EngineLimits,
}

impl PmReward {
    /// Load the preference model in `dir`.
    pub fn load(dir: &Path, format: DialogueFormat, device: &candle_core::Device) -> Result<Self> {
        if !cai_model::reward_model::is_preference_model(dir) {
            return Err(TrainError::Config(format!(
                "{}: not a preference model (no score.weight in a *ForSequenceClassification \
                 config); train one with `cai train-pm`",
                dir.display()
            )));
        }
        let mut model = RewardModel::load(dir, candle_core::DType::F32, device, 0)?;
        model.prepare_for_inference()?;
        let tokenizer = Tokenizer::from_dir(dir)?;
        Ok(Self {
            model,
            tokenizer,
            format,
            limits: EngineLimits::default(),
        })
    }
}

impl RewardFn for PmReward {
    fn rewards(&self, dialogues: &[Vec<Message>]) -> Result<Vec<f32>> {
        let sequences = dialogues
            .iter()
            .map(|d| {
                let text = self.tokenizer.render_dialogue(d, false, self.format)?;
                Ok(self
                    .tokenizer
                    .encode(&text, self.tokenizer.add_bos_token())?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(self.model.score_sequences(&sequences, self.limits)?)
    }
}

/// Whether a prompt came from the red-team or the helpful set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptKind {
    /// The red-team set.
    RedTeam,
    /// The helpful set.
    Helpful,
}

/// A prompt ready for sampling.
#[derive(Debug, Clone)]
pub struct RlPrompt {
    /// The dialogue to answer.
    pub prompt: Prompt,
    /// Its tokens with the assistant's turn opened.
    pub tokens: Vec<u32>,
    /// Which set it came from.
    pub kind: PromptKind,
}

/// The red-team and helpful prompt sets and how a step draws from them.
pub struct PromptPool {
    red_team: Vec<RlPrompt>,
    helpful: Vec<RlPrompt>,
    /// (red-team, helpful) prompts per step.
    per_step: (usize, usize),
    seed: u64,
}

impl PromptPool {
    /// Read and tokenize the prompt files; `batch_size` prompts per step split by
    /// `helpful_ratio` (helpful per red-team prompt) when helpful prompts are given.
    pub fn load(
        red_team: &Path,
        helpful: Option<&Path>,
        tokenizer: &Tokenizer,
        cfg: &RlConfig,
        max_positions: usize,
    ) -> Result<Self> {
        let load = |path: &Path, kind| -> Result<Vec<RlPrompt>> {
            let prompts = read_prompts(path)?;
            if prompts.is_empty() {
                return Err(TrainError::Config(format!(
                    "{}: no prompts",
                    path.display()
                )));
            }
            prompts
                .into_iter()
                .map(|prompt| {
                    let text = tokenizer.render_dialogue(&prompt.messages, true, cfg.format)?;
                    let tokens = tokenizer.encode(&text, tokenizer.add_bos_token())?;
                    if tokens.len() + cfg.max_new_tokens > max_positions.min(cfg.max_length) {
                        return Err(TrainError::Data {
                            path: path.to_path_buf(),
                            line: prompt.line,
                            message: format!(
                                "the prompt takes {} tokens; with max_new_tokens {} that is \
                                 more than the {} the run allows (max_length, the model's \
                                 positions)",
                                tokens.len(),
                                cfg.max_new_tokens,
                                max_positions.min(cfg.max_length)
                            ),
                        });
                    }
                    Ok(RlPrompt {
                        prompt,
                        tokens,
                        kind,
                    })
                })
                .collect()
        };
        let red_team = load(red_team, PromptKind::RedTeam)?;
        let helpful = match helpful {
            Some(path) => load(path, PromptKind::Helpful)?,
            None => Vec::new(),
        };
        let per_step = if helpful.is_empty() {
            (cfg.batch_size, 0)
        } else {
            let h = (cfg.batch_size as f64 * cfg.helpful_ratio / (1.0 + cfg.helpful_ratio)).round()
                as usize;
            let h = h.min(cfg.batch_size);
            (cfg.batch_size - h, h)
        };
        Ok(Self {
            red_team,
            helpful,
            per_step,
            seed: cfg.seed,
        })
    }

    /// (red-team, helpful) prompts in the files.
    pub fn sizes(&self) -> (usize, usize) {
        (self.red_team.len(), self.helpful.len())
    }

    /// (red-team, helpful) prompts per step.
    pub fn per_step(&self) -> (usize, usize) {
        self.per_step
    }

    /// The prompts of `step` (0-based): each set is read as an endless stream of seeded
    /// epoch orders, so a step's prompts depend on the step alone (exact resume).
    pub fn batch(&self, step: u64) -> Vec<&RlPrompt> {
        let mut out = Vec::with_capacity(self.per_step.0 + self.per_step.1);
        for (set, n, stream) in [
            (&self.red_team, self.per_step.0, 0u64),
            (&self.helpful, self.per_step.1, 1u64),
        ] {
            if n > 0 {
                let seed = cai_core::rng::derive_seed_u64(self.seed, &[stream]);
                out.extend(
                    stream_slice(set.len(), n, step, seed)
                        .into_iter()
                        .map(|i| &set[i]),
                );
            }
        }
        out
    }
}

/// One sampled response and everything measured on it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The prompt's id.
    pub prompt_id: String,
    /// The set the prompt came from.
    pub kind: PromptKind,
    /// The dialogue answered.
    pub messages: Vec<Message>,
    /// The response's text (cut before a stop string).
    pub text: String,
    /// Prompt and response tokens.
    pub sequence: Sequence,
    /// Why sampling ended.
    pub finish: FinishReason,
    /// The reward's score of the response (plus the truncation penalty, if cut).
    pub score: f32,
    /// Policy log-probability of each response token at sampling time.
    pub logp: Vec<f32>,
    /// Reference log-probability of each response token.
    pub logp_ref: Vec<f32>,
    /// The critic's values (PPO) of the state before each response token.
    pub values: Vec<f32>,
    /// The policy's entropy at each response token.
    pub entropy: Vec<f32>,
}

/// A step's samples and where its time went.
pub struct Rollout {
    /// Samples, prompt by prompt (a prompt's `group` samples together).
    pub samples: Vec<Sample>,
    /// Seconds spent sampling.
    pub generation_s: f64,
    /// Seconds spent scoring with the reward.
    pub reward_s: f64,
    /// Seconds spent on the policy's and reference's log-probabilities.
    pub logprob_s: f64,
}

/// Sample and measure the responses of one step's prompts.
pub fn rollout(
    policy: &Policy,
    tokenizer: &Tokenizer,
    prompts: &[&RlPrompt],
    cfg: &RlConfig,
    step: u64,
    reward: &dyn RewardFn,
) -> Result<Rollout> {
    let group = cfg.group();
    let stop = if cfg.stop.is_empty() {
        transcript_stop_strings()
    } else {
        cfg.stop.clone()
    };
    // Each prompt `group` times in a row: one row per response.
    let rows: Vec<&RlPrompt> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(*p, group))
        .collect();
    let jobs: Vec<GenJob> = rows
        .iter()
        .enumerate()
        .map(|(i, p)| GenJob {
            prompt: p.tokens.clone(),
            max_new_tokens: cfg.max_new_tokens,
            sampling: Sampling {
                temperature: cfg.temperature,
                top_k: None,
                top_p: None,
            },
            stop: stop.clone(),
            seed: cai_core::rng::derive_seed_u64(cfg.seed, &[step, i as u64]),
            top_logprobs: 0,
            ignore_eos: false,
            format: cai_core::OutputFormat::Text,
        })
        .collect();
    let started = Instant::now();
    let sampler = policy.sampler()?;
    let mut outputs = Vec::with_capacity(jobs.len());
    for chunk in jobs.chunks(cfg.rollout_batch) {
        outputs.extend(generate_batch(
            &sampler,
            None,
            chunk,
            Stopping {
                tokenizer: Some(tokenizer),
                eos: tokenizer.eos_ids(),
            },
        )?);
    }
    let generation_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let dialogues: Vec<Vec<Message>> = rows
        .iter()
        .zip(&outputs)
        .map(|(p, out)| {
            let mut d = p.prompt.messages.clone();
            d.push(Message::assistant(out.text.trim()));
            d
        })
        .collect();
    let scores = reward.rewards(&dialogues)?;
    if scores.len() != dialogues.len() {
        return Err(TrainError::Config(format!(
            "the reward returned {} scores for {} responses",
            scores.len(),
            dialogues.len()
        )));
    }
    let reward_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut samples: Vec<Sample> = rows
        .iter()
        .zip(outputs)
        .zip(dialogues)
        .zip(scores)
        .map(|(((p, out), messages), score)| {
            let mut ids = p.tokens.clone();
            ids.extend(&out.tokens);
            let penalty = if out.finish == FinishReason::Length {
                cfg.truncation_penalty as f32
            } else {
                0.0
            };
            Sample {
                prompt_id: p.prompt.id.clone(),
                kind: p.kind,
                messages,
                text: out.text.trim().to_string(),
                sequence: Sequence {
                    ids,
                    response_start: p.tokens.len(),
                },
                finish: out.finish,
                score: score + penalty,
                logp: Vec::new(),
                logp_ref: Vec::new(),
                values: Vec::new(),
                entropy: Vec::new(),
            }
        })
        .collect();
    for chunk in samples.chunks_mut(cfg.rollout_batch) {
        let seqs: Vec<&Sequence> = chunk.iter().map(|s| &s.sequence).collect();
        let out = response_outputs(
            &sampler,
            policy.value_head.as_ref(),
            &seqs,
            Mode::Infer,
            true,
        )?;
        let logp: Vec<f32> = out.log_probs.to_vec1()?;
        let values: Option<Vec<f32>> = out.values.map(|v| v.to_vec1()).transpose()?;
        let entropy = out.entropy.unwrap_or_default();
        let logp_ref = policy.reference_log_probs(&seqs, Some(&sampler))?;
        let mut at = 0;
        for (s, &len) in chunk.iter_mut().zip(&out.lengths) {
            s.logp = logp[at..at + len].to_vec();
            s.logp_ref = logp_ref[at..at + len].to_vec();
            s.entropy = entropy[at..at + len].to_vec();
            s.values = values
                .as_ref()
                .map(|v| v[at..at + len].to_vec())
                .unwrap_or_default();
            at += len;
        }
    }
    let logprob_s = started.elapsed().as_secs_f64();
    Ok(Rollout {
        samples,
        generation_s,
        reward_s,
        logprob_s,
    })
}
