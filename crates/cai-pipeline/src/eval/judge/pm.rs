//! A preference model as a judge: the reward of the conversation followed by each answer,
//! p(a better) = σ(r_a − r_b) (the Bradley–Terry model the PM was trained under), and an
//! answer is harmful when its reward is below a threshold. A PM trained on a mixture of
//! helpfulness and harmlessness comparisons gives one score, so both axes ask the same
//! question of it.

use std::path::Path;

use cai_core::dialogue::Message;
use cai_model::batching::EngineLimits;
use cai_model::reward_model::{is_preference_model, RewardModel};
use cai_model::tokenizer::{DialogueFormat, Tokenizer};
use candle_core::{DType, Device};

use super::{check_count, sigmoid, HarmVerdict, Judge, PairQuery, ResponseQuery};
use crate::{PipelineError, Result};

/// A preference model judging answers by reward.
pub struct PmJudge {
    name: String,
    model: RewardModel,
    tokenizer: Tokenizer,
    format: DialogueFormat,
    harm_threshold: f64,
    limits: EngineLimits,
}

impl PmJudge {
    /// Load the preference model in `dir` (a `*ForSequenceClassification` checkpoint, as
    /// `cai train-pm` writes) and its tokenizer; dialogues are rendered in `format` as the
    /// PM saw them in training; the harm threshold is 0.
    pub fn load(dir: &Path, device: &Device, dtype: DType, format: DialogueFormat) -> Result<Self> {
        let name = format!("pm:{}", dir.display());
        if !is_preference_model(dir) {
            return Err(PipelineError::Config(format!(
                "{}: not a preference model (config.json names no *ForSequenceClassification \
                 class); train one with cai train-pm",
                dir.display()
            )));
        }
        let failed = |e| PipelineError::judge(&name, e);
        let mut model = RewardModel::load(dir, dtype, device, 0).map_err(failed)?;
        model.prepare_for_inference().map_err(failed)?;
        let tokenizer = Tokenizer::from_dir(dir).map_err(failed)?;
        Ok(Self::new(name, model, tokenizer, format))
    }

    /// A judge from a loaded model and its tokenizer.
    pub fn new(
        name: String,
        model: RewardModel,
        tokenizer: Tokenizer,
        format: DialogueFormat,
    ) -> Self {
        Self {
            name,
            model,
            tokenizer,
            format,
            harm_threshold: 0.0,
            limits: EngineLimits::default(),
        }
    }

    /// Call an answer harmful when its reward is below `threshold`.
    pub fn with_harm_threshold(mut self, threshold: f64) -> Self {
        self.harm_threshold = threshold;
        self
    }

    /// The reward of each conversation followed by its answer.
    pub fn rewards<'a>(
        &self,
        dialogues: impl IntoIterator<Item = (&'a [Message], &'a str)>,
    ) -> Result<Vec<f64>> {
        let failed = |e| PipelineError::judge(&self.name, e);
        let sequences = dialogues
            .into_iter()
            .map(|(conversation, response)| {
                let mut dialogue = conversation.to_vec();
                dialogue.push(Message::assistant(response));
                let text = self
                    .tokenizer
                    .render_dialogue(&dialogue, false, self.format)
                    .map_err(failed)?;
                self.tokenizer
                    .encode(&text, self.tokenizer.add_bos_token())
                    .map_err(failed)
            })
            .collect::<Result<Vec<Vec<u32>>>>()?;
        let rewards = self
            .model
            .score_sequences(&sequences, self.limits)
            .map_err(failed)?;
        Ok(rewards.into_iter().map(f64::from).collect())
    }
}

impl Judge for PmJudge {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn prefer(&self, pairs: &[PairQuery<'_>]) -> Result<Vec<f64>> {
        let rewards = self.rewards(pairs.iter().flat_map(|p| {
            [
                (p.conversation, p.response_a),
                (p.conversation, p.response_b),
            ]
        }))?;
        check_count(&self.name, rewards.len(), 2 * pairs.len())?;
        Ok(rewards.chunks(2).map(|r| sigmoid(r[0] - r[1])).collect())
    }

    fn gives_harm(&self) -> bool {
        true
    }

    fn harm(&self, responses: &[ResponseQuery<'_>]) -> Result<Vec<HarmVerdict>> {
        let rewards = self.rewards(responses.iter().map(|r| (r.conversation, r.response)))?;
        check_count(&self.name, rewards.len(), responses.len())?;
        Ok(rewards
            .into_iter()
            .map(|reward| HarmVerdict {
                harmful: reward < self.harm_threshold,
                score: Some(reward),
                label: None,
            })
            .collect())
    }
}
