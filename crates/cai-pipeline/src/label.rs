//! The RL-CAI feedback stage (Bai et al. 2022, §4): for each prompt, two responses sampled from
//! the policy; then a feedback model — which may be another model — asked which response is
//! better under principles of the constitution, as a multiple-choice question whose options
//! `" (A)"` and `" (B)"` are scored by log-probability and normalised into a soft label.
//!
//! Variants: one principle drawn per comparison (the paper) or an ensemble over K or all
//! principles; both orders of the options averaged (Lee et al. 2023); a chain of thought
//! sampled before the answer, its label clamped. Every step is one batched call over a chunk
//! of prompts, and every random choice is keyed by (seed, prompt id, …), so a record does not
//! depend on the batch size or on where a killed run was resumed.

pub mod question;
pub mod record;
pub mod soft_label;

use cai_core::constitution::ChoicePrinciple;
use cai_core::jsonl::JsonlWriter;
use cai_core::multiple_choice::ChoiceItem;
use cai_core::prompts::Prompt;
use cai_core::rng::{derive_seed, rng_from_seed};
use cai_core::{GenerateRequest, LanguageModel, Sampling, ScoreRequest};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::chunks::write_in_chunks;
use crate::render::{render, CritiqueDialogue, Leading, Pending, PromptFormat};
use crate::{PipelineError, Result};
use question::{
    answer_after_reasoning, answer_prompt, few_shot_block, question_body, reasoning_prompt,
    reasoning_stops, QuestionLayout, OPTIONS,
};
use record::{LabelRecord, OrderScore, PrincipleLabel, Side};
use soft_label::{option_probability, swap_average, Clamp};

/// Which principles a comparison is asked under.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipleChoice {
    /// One principle drawn at random per comparison (CAI paper).
    #[default]
    Sampled,
    /// K distinct principles drawn at random, their labels averaged.
    Ensemble(usize),
    /// Every principle of the constitution, labels averaged (the paper's ensemble of 16).
    All,
}

/// Chain-of-thought labelling: reasoning is sampled before the answer is scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CotSettings {
    /// Token budget of the reasoning.
    pub max_new_tokens: usize,
    /// How the reasoning is sampled (default: temperature 1, the CAI paper's setting for its
    /// samples; 0 gives greedy reasoning).
    pub sampling: Sampling,
    /// CoT labels are over-confident, so they are clamped (CAI paper: [0.4, 0.6]).
    pub clamp: Clamp,
}

impl Default for CotSettings {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            sampling: Sampling::default(),
            clamp: Clamp::default(),
        }
    }
}

/// The settings that decide what the stage samples and asks; saved beside its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LabelSettings {
    /// Token budget of each response (CAI paper: responses ≤ 128 tokens).
    pub max_new_tokens: usize,
    /// How the responses are sampled (CAI paper: temperature 1).
    pub sampling: Sampling,
    /// Run seed: samples, positions, principles and reasoning are derived from it.
    pub seed: u64,
    /// Principles per comparison (CAI paper: one, drawn at random).
    pub principles: PrincipleChoice,
    /// Ask both orders of the options and average (Lee et al. 2023).
    pub swap: bool,
    /// Chain of thought before the answer.
    pub cot: Option<CotSettings>,
    /// How the question is laid out.
    pub layout: QuestionLayout,
}

impl Default for LabelSettings {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            sampling: Sampling::default(),
            seed: 0,
            principles: PrincipleChoice::Sampled,
            swap: false,
            cot: None,
            layout: QuestionLayout::Plain,
        }
    }
}

/// The stage: its settings, the constitution's multiple-choice principles, the few-shot
/// examples, and the contexts the responses are sampled after.
#[derive(Debug, Clone)]
pub struct LabelStage {
    /// Sampling and labelling settings.
    pub settings: LabelSettings,
    /// Multiple-choice principles (at least one).
    pub principles: Vec<ChoicePrinciple>,
    /// Labelled examples put in front of every question (may be none).
    pub few_shot: Vec<ChoiceItem>,
    /// Dialogue-prompting context in front of both samples (may be empty).
    pub context: String,
    /// A context of the second sample's own (e.g. an HHH prompt), so that the two samples
    /// come from different distributions; `None`: both use `context`.
    pub context_b: Option<String>,
    /// How the policy's prompts become text.
    pub format: PromptFormat,
}

/// One question: a prompt's pair under one principle, in one order.
struct Question {
    prompt: usize,
    principle: usize,
    swapped: bool,
    body: String,
}

impl LabelStage {
    /// Check the settings and the principles.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(PipelineError::Config(m));
        let n = self.principles.len();
        if n == 0 {
            return bad(
                "the constitution has no multiple-choice principles; labelling needs at least one"
                    .into(),
            );
        }
        if self.settings.max_new_tokens == 0 {
            return bad("max_new_tokens 0: expected at least 1".into());
        }
        if let PrincipleChoice::Ensemble(k) = self.settings.principles {
            if k == 0 || k > n {
                return bad(format!(
                    "an ensemble of {k} principles, but the constitution has {n} multiple-choice \
                     principles; expected 1 to {n} (or all)"
                ));
            }
        }
        if let Some(cot) = &self.settings.cot {
            if cot.max_new_tokens == 0 {
                return bad("chain-of-thought max_new_tokens 0: expected at least 1".into());
            }
            cot.clamp.validate().map_err(PipelineError::Config)?;
        }
        Ok(())
    }

    /// The indices of the principles the prompt `id` is asked under.
    pub fn principles_for(&self, id: &str) -> Vec<usize> {
        let n = self.principles.len();
        let mut rng = rng_from_seed(derive_seed(self.settings.seed, &["label-principles", id]));
        match self.settings.principles {
            PrincipleChoice::Sampled => vec![rng.random_range(0..n)],
            PrincipleChoice::Ensemble(k) => rand::seq::index::sample(&mut rng, n, k).into_vec(),
            PrincipleChoice::All => (0..n).collect(),
        }
    }

    /// A seed for one random choice about the prompt `id`.
    fn seed(&self, id: &str, what: &[&str]) -> u64 {
        let mut parts = vec!["label", id];
        parts.extend_from_slice(what);
        derive_seed(self.settings.seed, &parts)
    }

    /// The records of `prompts`: one wave of samples, one of reasoning (with a chain of
    /// thought), one of scores.
    pub fn label(
        &self,
        policy: &dyn LanguageModel,
        feedback: &dyn LanguageModel,
        prompts: &[Prompt],
    ) -> Result<Vec<LabelRecord>> {
        self.validate()?;
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        let settings = &self.settings;
        let layout = settings.layout;
        let mut requests = Vec::with_capacity(2 * prompts.len());
        for prompt in prompts {
            for sample in 0..2 {
                let context = match (sample, &self.context_b) {
                    (1, Some(context_b)) => context_b,
                    _ => &self.context,
                };
                let dialogue = CritiqueDialogue {
                    prompt: &prompt.messages,
                    answer: None,
                    rounds: &[],
                    pending: Pending::Answer,
                };
                let rendered = render(&self.format, Leading::Context(context), &dialogue)?;
                requests.push(GenerateRequest {
                    prefix: rendered.prefix,
                    prompt: rendered.prompt,
                    max_new_tokens: settings.max_new_tokens,
                    sampling: settings.sampling,
                    stop: self.format.stop_strings(),
                    seed: self.seed(&prompt.id, &["sample", &sample.to_string()]),
                    format: cai_core::OutputFormat::Text,
                });
            }
        }
        let samples = generate(policy, &requests, "responses", prompts)?;
        // The responses' positions are random, so that a feedback model's position bias
        // does not line up with which sampler a response came from.
        let pairs: Vec<(String, String, Option<Side>)> = prompts
            .iter()
            .zip(samples.chunks(2))
            .map(|(prompt, two)| {
                let first_is_a = rng_from_seed(self.seed(&prompt.id, &["order"])).random_bool(0.5);
                let (a, b, second) = if first_is_a {
                    (&two[0], &two[1], Side::B)
                } else {
                    (&two[1], &two[0], Side::A)
                };
                (
                    a.clone(),
                    b.clone(),
                    self.context_b.as_ref().map(|_| second),
                )
            })
            .collect();

        let mut questions = Vec::new();
        for (i, prompt) in prompts.iter().enumerate() {
            let (a, b, _) = &pairs[i];
            for principle in self.principles_for(&prompt.id) {
                for swapped in [false, true] {
                    if swapped && !settings.swap {
                        continue;
                    }
                    let (x, y) = if swapped { (b, a) } else { (a, b) };
                    let text = &self.principles[principle].question;
                    questions.push(Question {
                        prompt: i,
                        principle,
                        swapped,
                        body: question_body(layout, &prompt.messages, text, x, y),
                    });
                }
            }
        }
        let blocks: Vec<String> = self
            .principles
            .iter()
            .map(|p| few_shot_block(layout, &self.few_shot, &p.question))
            .collect();
        let reasoning = match &settings.cot {
            None => None,
            Some(cot) => {
                let requests: Vec<GenerateRequest> = questions
                    .iter()
                    .map(|q| GenerateRequest {
                        prefix: blocks[q.principle].clone(),
                        prompt: reasoning_prompt(layout, &q.body),
                        max_new_tokens: cot.max_new_tokens,
                        sampling: cot.sampling,
                        stop: reasoning_stops(),
                        seed: self.seed(
                            &prompts[q.prompt].id,
                            &[
                                "reasoning",
                                &self.principles[q.principle].id,
                                if q.swapped { "swapped" } else { "original" },
                            ],
                        ),
                        format: cai_core::OutputFormat::Text,
                    })
                    .collect();
                Some(generate(feedback, &requests, "reasoning", prompts)?)
            }
        };
        let scores: Vec<ScoreRequest> = questions
            .iter()
            .enumerate()
            .flat_map(|(k, q)| {
                let prompt = match &reasoning {
                    Some(texts) => answer_after_reasoning(layout, &q.body, &texts[k]),
                    None => answer_prompt(layout, &q.body),
                };
                let prefix = blocks[q.principle].clone();
                OPTIONS.map(|option| ScoreRequest {
                    prefix: prefix.clone(),
                    prompt: prompt.clone(),
                    continuation: option.to_owned(),
                    top_k: 0,
                })
            })
            .collect();
        let failed = |source| model_error("option scores", prompts, source);
        let logprobs: Vec<f64> = feedback
            .score(&scores)
            .map_err(failed)?
            .into_iter()
            .map(|s| s.logprob)
            .collect();
        if logprobs.len() != scores.len() {
            return Err(failed(cai_core::Error::Invalid(format!(
                "the model returned {} scores for {} requests",
                logprobs.len(),
                scores.len()
            ))));
        }

        let mut labels: Vec<Vec<PrincipleLabel>> = vec![Vec::new(); prompts.len()];
        for (k, q) in questions.iter().enumerate() {
            let (la, lb) = (logprobs[2 * k], logprobs[2 * k + 1]);
            let p = option_probability(la, lb);
            let score = OrderScore {
                logprob_option_a: la,
                logprob_option_b: lb,
                p_option_a: settings.cot.as_ref().map_or(p, |cot| cot.clamp.apply(p)),
                reasoning: reasoning.as_ref().map(|texts| texts[k].clone()),
            };
            let principles = &mut labels[q.prompt];
            if q.swapped {
                let label = principles
                    .last_mut()
                    .expect("the original order comes first");
                label.p_a = swap_average(label.original.p_option_a, score.p_option_a);
                label.swapped = Some(score);
            } else {
                principles.push(PrincipleLabel {
                    principle_id: self.principles[q.principle].id.clone(),
                    p_a: score.p_option_a,
                    original: score,
                    swapped: None,
                });
            }
        }
        Ok(prompts
            .iter()
            .zip(pairs)
            .zip(labels)
            .map(|((prompt, (a, b, side)), labels)| LabelRecord::new(prompt, a, b, labels, side))
            .collect())
    }

    /// [`LabelStage::label`] `batch_size` prompts at a time, each chunk's records appended to
    /// `writer` (and synced) when they are done. `progress` hears how many prompts each chunk
    /// finished.
    pub fn run(
        &self,
        policy: &dyn LanguageModel,
        feedback: &dyn LanguageModel,
        prompts: &[Prompt],
        batch_size: usize,
        writer: &mut JsonlWriter,
        progress: &mut dyn FnMut(usize),
    ) -> Result<()> {
        self.validate()?;
        write_in_chunks(prompts, batch_size, writer, progress, |chunk| {
            self.label(policy, feedback, chunk)
        })
    }
}

/// A model failure on a wave over `prompts`.
fn model_error(step: &str, prompts: &[Prompt], source: cai_core::Error) -> PipelineError {
    PipelineError::Model {
        step: step.to_owned(),
        first: prompts[0].id.clone(),
        last: prompts[prompts.len() - 1].id.clone(),
        source: Box::new(source),
    }
}

/// One batched generation call; the trimmed texts.
fn generate(
    model: &dyn LanguageModel,
    requests: &[GenerateRequest],
    step: &str,
    prompts: &[Prompt],
) -> Result<Vec<String>> {
    let generations = model
        .generate(requests)
        .map_err(|e| model_error(step, prompts, e))?;
    if generations.len() != requests.len() {
        return Err(model_error(
            step,
            prompts,
            cai_core::Error::Invalid(format!(
                "the model returned {} generations for {} requests",
                generations.len(),
                requests.len()
            )),
        ));
    }
    Ok(generations
        .into_iter()
        .map(|g| g.text.trim().to_owned())
        .collect())
}
