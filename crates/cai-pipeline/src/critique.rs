//! The SL-CAI stage (Bai et al. 2022, §3): for each red-team prompt, the model's answer,
//! then rounds of critique and revision, each against a principle drawn at random from the
//! constitution, each revision chaining on the last; and answers to helpfulness prompts to
//! mix into the fine-tuning data.
//!
//! The critiques and revisions are written by a [`Critic`]: the answering model itself, as in
//! the paper, or a separate (stronger) model, for a policy too small to critique itself.
//!
//! Every step is one batched wave over a chunk of prompts. The principle of a round is drawn
//! from an RNG keyed by (seed, prompt id, round) and each request's sampler is seeded by
//! (seed, prompt id, round, step), so a prompt's record does not depend on which other
//! prompts share its chunk, on the batch size, or on where a killed run was resumed.

use cai_core::constitution::CritiquePrinciple;
use cai_core::critique::CritiqueRound;
use cai_core::few_shot::CritiqueExample;
use cai_core::jsonl::JsonlWriter;
use cai_core::prompts::Prompt;
use cai_core::rng::{derive_seed, rng_from_seed};
use cai_core::{GenerateRequest, LanguageModel, Sampling};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::chunks::write_in_chunks;
use crate::record::{CritiqueRecord, HelpfulRecord, RoundRecord};
use crate::render::{render, CritiqueDialogue, Leading, Pending, PromptFormat, RenderedPrompt};
use crate::{PipelineError, Result};

/// Whether `rendered` leaves the model any room to generate (always, where the model cannot
/// say): a request that fills the context fails the model's call.
fn fits(model: &dyn LanguageModel, rendered: &RenderedPrompt, id: &str) -> Result<bool> {
    let room = model
        .room_after(&rendered.prefix, &rendered.prompt)
        .map_err(|source| PipelineError::Model {
            step: "counting a request's tokens".into(),
            first: id.to_owned(),
            last: id.to_owned(),
            source: Box::new(source),
        })?;
    Ok(room.is_none_or(|room| room > 0))
}

/// The settings that decide what the stage samples; saved beside its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CritiqueSettings {
    /// Rounds of critique and revision per prompt (paper: 4).
    pub rounds: usize,
    /// Token budget of each answer, critique and revision (paper: responses ≤ 128 tokens).
    pub max_new_tokens: usize,
    /// How tokens are picked (paper: temperature 1).
    pub sampling: Sampling,
    /// Run seed: principles and samplers are derived from it.
    pub seed: u64,
}

impl Default for CritiqueSettings {
    fn default() -> Self {
        Self {
            rounds: 4,
            max_new_tokens: 128,
            sampling: Sampling::default(),
            seed: 0,
        }
    }
}

/// The stage: its settings, the constitution's critique principles, and what goes in front
/// of the requests.
#[derive(Debug, Clone)]
pub struct CritiqueStage {
    /// Sampling and rounds.
    pub settings: CritiqueSettings,
    /// Critique/revision principles to draw from (at least one).
    pub principles: Vec<CritiquePrinciple>,
    /// Few-shot examples put in front of every critique and revision request.
    pub few_shot: Vec<CritiqueExample>,
    /// Dialogue-prompting context put in front of every initial and helpful answer (may be
    /// empty).
    pub context: String,
    /// How dialogues become text.
    pub format: PromptFormat,
}

/// The model that writes the critiques and revisions, and how its dialogues are rendered
/// (its own chat template, which need not be the answering model's).
#[derive(Clone, Copy)]
pub struct Critic<'a> {
    /// The critic.
    pub model: &'a dyn LanguageModel,
    /// Its dialogue rendering.
    pub format: &'a PromptFormat,
}

/// Which sample of a prompt a request is; part of its seed.
#[derive(Debug, Clone, Copy)]
enum Step {
    Answer,
    Critique(usize),
    Revision(usize),
    Helpful,
}

impl CritiqueStage {
    /// Check the settings and the principles.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(PipelineError::Config(m.to_owned()));
        if self.principles.is_empty() {
            return bad(
                "the constitution has no critique/revision principles; SL-CAI needs at least one",
            );
        }
        if self.settings.rounds == 0 {
            return bad("rounds 0: expected at least 1 round of critique and revision");
        }
        if self.settings.max_new_tokens == 0 {
            return bad("max_new_tokens 0: expected at least 1");
        }
        Ok(())
    }

    /// The principle of round `round` (1-based) for the prompt `prompt_id`.
    pub fn principle(&self, prompt_id: &str, round: usize) -> &CritiquePrinciple {
        let seed = derive_seed(
            self.settings.seed,
            &["principle", prompt_id, &round.to_string()],
        );
        let index = rng_from_seed(seed).random_range(0..self.principles.len());
        &self.principles[index]
    }

    /// The sampler seed of one request.
    fn request_seed(&self, prompt_id: &str, step: Step) -> u64 {
        let (round, name) = match step {
            Step::Answer => (0, "answer"),
            Step::Critique(round) => (round, "critique"),
            Step::Revision(round) => (round, "revision"),
            Step::Helpful => return derive_seed(self.settings.seed, &["helpful", prompt_id]),
        };
        derive_seed(
            self.settings.seed,
            &["critique", prompt_id, &round.to_string(), name],
        )
    }

    /// The answering model as its own critic (the paper's SL-CAI).
    pub fn self_critic<'a>(&'a self, model: &'a dyn LanguageModel) -> Critic<'a> {
        Critic {
            model,
            format: &self.format,
        }
    }

    /// The records of `prompts`, the model critiquing itself: see [`Self::critique_by`].
    pub fn critique(
        &self,
        model: &dyn LanguageModel,
        prompts: &[Prompt],
    ) -> Result<Vec<CritiqueRecord>> {
        self.critique_by(model, self.self_critic(model), prompts)
    }

    /// The records of `prompts`: one wave of `model`'s answers, then two waves of `critic`'s
    /// (critiques, revisions) per round.
    pub fn critique_by(
        &self,
        model: &dyn LanguageModel,
        critic: Critic<'_>,
        prompts: &[Prompt],
    ) -> Result<Vec<CritiqueRecord>> {
        self.validate()?;
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        let context = Leading::Context(&self.context);
        let answers = self.wave(model, &self.format, prompts, "answers", |i| {
            let dialogue = CritiqueDialogue {
                prompt: &prompts[i].messages,
                answer: None,
                rounds: &[],
                pending: Pending::Answer,
            };
            Ok((render(&self.format, context, &dialogue)?, Step::Answer))
        })?;
        let few_shot = Leading::FewShot(&self.few_shot);
        let mut rounds: Vec<Vec<CritiqueRound>> = vec![Vec::new(); prompts.len()];
        let mut used: Vec<Vec<&str>> = vec![Vec::new(); prompts.len()];
        for round in 1..=self.settings.rounds {
            let principles: Vec<&CritiquePrinciple> = prompts
                .iter()
                .map(|p| self.principle(&p.id, round))
                .collect();
            // The dialogue a round's requests continue: the answer and every earlier round,
            // unless that would fill the model's context (a model that rambles, late in four
            // rounds); then the latest revision stands as the answer, without the earlier
            // rounds, for both of the round's requests.
            let mut compact = vec![false; prompts.len()];
            let latest = |i: usize, rounds: &[Vec<CritiqueRound>]| -> String {
                rounds[i]
                    .last()
                    .map_or_else(|| answers[i].clone(), |r| r.revision.clone())
            };
            let (critic_model, format) = (critic.model, critic.format);
            let critiques = self.wave(
                critic_model,
                format,
                prompts,
                &format!("round {round} critiques"),
                |i| {
                    let pending = Pending::Critique {
                        request: &principles[i].critique_request,
                    };
                    let dialogue = CritiqueDialogue {
                        prompt: &prompts[i].messages,
                        answer: Some(&answers[i]),
                        rounds: &rounds[i],
                        pending,
                    };
                    let full = render(format, few_shot, &dialogue)?;
                    if round == 1 || fits(critic_model, &full, &prompts[i].id)? {
                        return Ok((full, Step::Critique(round)));
                    }
                    compact[i] = true;
                    let latest = latest(i, &rounds);
                    let dialogue = CritiqueDialogue {
                        prompt: &prompts[i].messages,
                        answer: Some(&latest),
                        rounds: &[],
                        pending,
                    };
                    Ok((render(format, few_shot, &dialogue)?, Step::Critique(round)))
                },
            )?;
            let revisions = self.wave(
                critic_model,
                format,
                prompts,
                &format!("round {round} revisions"),
                |i| {
                    let pending = Pending::Revision {
                        critique_request: &principles[i].critique_request,
                        critique: &critiques[i],
                        request: &principles[i].revision_request,
                    };
                    let dialogue = CritiqueDialogue {
                        prompt: &prompts[i].messages,
                        answer: Some(&answers[i]),
                        rounds: &rounds[i],
                        pending,
                    };
                    if !compact[i] {
                        let full = render(format, few_shot, &dialogue)?;
                        if round == 1 || fits(critic_model, &full, &prompts[i].id)? {
                            return Ok((full, Step::Revision(round)));
                        }
                    }
                    let latest = latest(i, &rounds);
                    let dialogue = CritiqueDialogue {
                        prompt: &prompts[i].messages,
                        answer: Some(&latest),
                        rounds: &[],
                        pending,
                    };
                    Ok((render(format, few_shot, &dialogue)?, Step::Revision(round)))
                },
            )?;
            for (i, (critique, revision)) in critiques.into_iter().zip(revisions).enumerate() {
                rounds[i].push(CritiqueRound {
                    critique_request: principles[i].critique_request.clone(),
                    critique,
                    revision_request: principles[i].revision_request.clone(),
                    revision,
                });
                used[i].push(&principles[i].id);
            }
        }
        Ok(prompts
            .iter()
            .zip(answers)
            .zip(rounds.into_iter().zip(used))
            .map(|((prompt, answer), (rounds, used))| {
                let rounds = rounds
                    .into_iter()
                    .zip(used)
                    .map(|(round, id)| RoundRecord {
                        principle_id: id.to_owned(),
                        critique_request: round.critique_request,
                        critique: round.critique,
                        revision_request: round.revision_request,
                        revision: round.revision,
                    })
                    .collect();
                CritiqueRecord::new(prompt, answer, rounds)
            })
            .collect())
    }

    /// Answers to helpfulness prompts (one wave, after the context like the initial answers),
    /// as SFT records.
    pub fn helpful(
        &self,
        model: &dyn LanguageModel,
        prompts: &[Prompt],
    ) -> Result<Vec<HelpfulRecord>> {
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        let context = Leading::Context(&self.context);
        let answers = self.wave(model, &self.format, prompts, "helpful answers", |i| {
            let dialogue = CritiqueDialogue {
                prompt: &prompts[i].messages,
                answer: None,
                rounds: &[],
                pending: Pending::Answer,
            };
            Ok((render(&self.format, context, &dialogue)?, Step::Helpful))
        })?;
        Ok(prompts
            .iter()
            .zip(answers)
            .map(|(prompt, answer)| {
                let mut messages = prompt.messages.clone();
                messages.push(cai_core::dialogue::Message::assistant(answer));
                HelpfulRecord {
                    id: prompt.id.clone(),
                    prompt: prompt.request().to_owned(),
                    messages,
                }
            })
            .collect())
    }

    /// [`CritiqueStage::critique_by`] `batch_size` prompts at a time (`critic` `None`: the
    /// model critiques itself), each chunk's records appended to `writer` (and synced) when
    /// its last round is done. `progress` hears how many prompts each chunk finished.
    pub fn run(
        &self,
        model: &dyn LanguageModel,
        critic: Option<Critic<'_>>,
        prompts: &[Prompt],
        batch_size: usize,
        writer: &mut JsonlWriter,
        progress: &mut dyn FnMut(usize),
    ) -> Result<()> {
        self.validate()?;
        write_in_chunks(prompts, batch_size, writer, progress, |chunk| {
            let critic = critic.unwrap_or_else(|| self.self_critic(model));
            self.critique_by(model, critic, chunk)
        })
    }

    /// [`CritiqueStage::helpful`] `batch_size` prompts at a time, appended to `writer`.
    pub fn run_helpful(
        &self,
        model: &dyn LanguageModel,
        prompts: &[Prompt],
        batch_size: usize,
        writer: &mut JsonlWriter,
        progress: &mut dyn FnMut(usize),
    ) -> Result<()> {
        self.validate()?;
        write_in_chunks(prompts, batch_size, writer, progress, |chunk| {
            self.helpful(model, chunk)
        })
    }

    /// One batched call: the request of prompt `i` is `request(i)`, rendered in `format`;
    /// returns the trimmed texts.
    fn wave(
        &self,
        model: &dyn LanguageModel,
        format: &PromptFormat,
        prompts: &[Prompt],
        step: &str,
        mut request: impl FnMut(usize) -> Result<(RenderedPrompt, Step)>,
    ) -> Result<Vec<String>> {
        let stop = format.stop_strings();
        let requests = (0..prompts.len())
            .map(|i| {
                let (rendered, which) = request(i)?;
                Ok(GenerateRequest {
                    prefix: rendered.prefix,
                    prompt: rendered.prompt,
                    max_new_tokens: self.settings.max_new_tokens,
                    sampling: self.settings.sampling,
                    stop: stop.clone(),
                    seed: self.request_seed(&prompts[i].id, which),
                    format: cai_core::OutputFormat::Text,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let failed = |source| PipelineError::Model {
            step: step.to_owned(),
            first: prompts[0].id.clone(),
            last: prompts[prompts.len() - 1].id.clone(),
            source: Box::new(source),
        };
        let generations = model.generate(&requests).map_err(failed)?;
        if generations.len() != requests.len() {
            return Err(failed(cai_core::Error::Invalid(format!(
                "the model returned {} generations for {} requests",
                generations.len(),
                requests.len()
            ))));
        }
        Ok(generations
            .into_iter()
            .map(|g| g.text.trim().to_owned())
            .collect())
    }
}
