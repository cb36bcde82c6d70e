//! Token accounting for any [`LanguageModel`]: a wrapper that counts what passes through it
//! (prompt tokens, generated tokens, calls), so a stage can report its throughput whatever the
//! backend.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::lm::{GenerateRequest, Generation, LanguageModel, Score, ScoreRequest};
use crate::Error;

/// A [`LanguageModel`] that forwards to `inner` and counts its traffic.
pub struct CountingModel<'a> {
    inner: &'a dyn LanguageModel,
    generate_calls: AtomicU64,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    scored_tokens: AtomicU64,
}

/// What a [`CountingModel`] has seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Calls to `generate`.
    pub generate_calls: u64,
    /// Prompt tokens of the generations (prefixes included).
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub generated_tokens: u64,
    /// Continuation tokens scored.
    pub scored_tokens: u64,
}

impl<'a> CountingModel<'a> {
    /// Count the traffic to `inner`.
    pub fn new(inner: &'a dyn LanguageModel) -> Self {
        Self {
            inner,
            generate_calls: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            scored_tokens: AtomicU64::new(0),
        }
    }

    /// The counts so far.
    pub fn usage(&self) -> Usage {
        Usage {
            generate_calls: self.generate_calls.load(Ordering::Relaxed),
            prompt_tokens: self.prompt_tokens.load(Ordering::Relaxed),
            generated_tokens: self.generated_tokens.load(Ordering::Relaxed),
            scored_tokens: self.scored_tokens.load(Ordering::Relaxed),
        }
    }
}

impl LanguageModel for CountingModel<'_> {
    fn generate(&self, requests: &[GenerateRequest]) -> Result<Vec<Generation>, Error> {
        let generations = self.inner.generate(requests)?;
        self.generate_calls.fetch_add(1, Ordering::Relaxed);
        for g in &generations {
            self.prompt_tokens
                .fetch_add(g.prompt_tokens as u64, Ordering::Relaxed);
            self.generated_tokens
                .fetch_add(g.token_ids.len() as u64, Ordering::Relaxed);
        }
        Ok(generations)
    }

    fn room_after(&self, prefix: &str, prompt: &str) -> Result<Option<usize>, Error> {
        self.inner.room_after(prefix, prompt)
    }

    fn score(&self, requests: &[ScoreRequest]) -> Result<Vec<Score>, Error> {
        let scores = self.inner.score(requests)?;
        for s in &scores {
            self.scored_tokens
                .fetch_add(s.token_ids.len() as u64, Ordering::Relaxed);
        }
        Ok(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lm::{FinishReason, Sampling};

    /// Answers every prompt with as many tokens as the prompt has bytes, scores one token per
    /// continuation byte.
    struct Echo;

    impl LanguageModel for Echo {
        fn generate(&self, requests: &[GenerateRequest]) -> Result<Vec<Generation>, Error> {
            Ok(requests
                .iter()
                .map(|r| Generation {
                    text: r.prompt.clone(),
                    token_ids: vec![0; r.prompt.len()],
                    token_logprobs: vec![0.0; r.prompt.len()],
                    prompt_tokens: r.prefix.len() + r.prompt.len(),
                    finish_reason: FinishReason::Length,
                })
                .collect())
        }

        fn score(&self, requests: &[ScoreRequest]) -> Result<Vec<Score>, Error> {
            Ok(requests
                .iter()
                .map(|r| Score {
                    logprob: 0.0,
                    token_logprobs: vec![0.0; r.continuation.len()],
                    token_ids: vec![0; r.continuation.len()],
                    top_logprobs: Vec::new(),
                })
                .collect())
        }
    }

    #[test]
    fn counts_what_passes_through() {
        let counting = CountingModel::new(&Echo);
        let mut with_prefix = GenerateRequest::new("abc", 8, Sampling::greedy());
        with_prefix.prefix = "xy".into();
        let out = counting
            .generate(&[
                with_prefix,
                GenerateRequest::new("de", 8, Sampling::greedy()),
            ])
            .unwrap();
        assert_eq!(out[0].text, "abc");
        counting.score(&[ScoreRequest::new("p", "four")]).unwrap();
        assert_eq!(
            counting.usage(),
            Usage {
                generate_calls: 1,
                prompt_tokens: 7,
                generated_tokens: 5,
                scored_tokens: 4,
            }
        );
    }
}
