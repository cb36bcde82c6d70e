//! Samples of model snapshots: one answer per prompt from each snapshot, rendered as the other
//! stages render a prompt (the snapshot's context in front, the transcript or the model's chat
//! template), appended to a JSONL file chunk by chunk and resumed by (snapshot, prompt) id.
//!
//! Each request's sampler is seeded by (seed, prompt id) — the same for every snapshot — so
//! two snapshots that are the same model give the same answers, and differences between
//! snapshots are not sampling noise of different seeds.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use cai_core::dialogue::Message;
use cai_core::jsonl::{read_complete_records, JsonlWriter};
use cai_core::prompts::Prompt;
use cai_core::rng::derive_seed;
use cai_core::{FinishReason, GenerateRequest, LanguageModel, Sampling};
use serde::{Deserialize, Serialize};

use crate::chunks::write_in_chunks;
use crate::render::{render, CritiqueDialogue, Leading, Pending, PromptFormat};
use crate::{PipelineError, Result};

/// How the answers are sampled; saved beside them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SampleSettings {
    /// Token budget of each answer (CAI paper: responses ≤ 128 tokens).
    pub max_new_tokens: usize,
    /// How tokens are picked (CAI paper: the Elo comparisons are of samples at temperature 1).
    pub sampling: Sampling,
    /// Run seed: each request's sampler is seeded from it and the prompt's id.
    pub seed: u64,
}

impl Default for SampleSettings {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            sampling: Sampling::default(),
            seed: 0,
        }
    }
}

/// A model snapshot under evaluation: a name, the model, and how its prompts are rendered.
pub struct Snapshot<'a> {
    /// Unique among the snapshots compared (letters, digits, `.`, `_`, `-`); a name ending in
    /// a number (`rl-step-20`) is a checkpoint of the series named by the rest.
    pub name: String,
    /// The model, local or remote.
    pub model: &'a dyn LanguageModel,
    /// Dialogue-prompting context put in front of every prompt (empty for none): a
    /// "prompted" snapshot is a model with the HHH context here.
    pub context: String,
    /// How dialogues become text.
    pub format: PromptFormat,
}

/// Check a snapshot name: non-empty, and only letters, digits, `.`, `_` and `-`, so that it
/// is safe in ids, file names and the command line's `NAME=MODEL`.
pub fn check_snapshot_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(PipelineError::Config(format!(
            "snapshot name {name:?}: expected letters, digits, '.', '_' or '-' (e.g. \
             sl-cai, rl-step-20)"
        )))
    }
}

/// Check that names are valid and distinct.
pub fn check_snapshot_names<'n>(names: impl IntoIterator<Item = &'n str>) -> Result<()> {
    let mut seen = HashSet::new();
    for name in names {
        check_snapshot_name(name)?;
        if !seen.insert(name) {
            return Err(PipelineError::Config(format!(
                "snapshot {name:?} is named twice; expected every snapshot to have its own name"
            )));
        }
    }
    if seen.len() < 2 {
        return Err(PipelineError::Config(format!(
            "{} snapshot(s): expected at least 2 to compare",
            seen.len()
        )));
    }
    Ok(())
}

/// One snapshot's answer to one prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// `"{snapshot}|{prompt_id}"` (see [`sample_id`]).
    pub id: String,
    /// The snapshot's name.
    pub snapshot: String,
    /// The prompt's id.
    pub prompt_id: String,
    /// The user's request (the prompt's last user turn).
    pub prompt: String,
    /// The prompt's dialogue, ending with the user's request.
    pub conversation: Vec<Message>,
    /// The answer.
    pub response: String,
    /// Why the answer ended.
    pub finish_reason: FinishReason,
}

/// The id of a snapshot's answer to a prompt.
pub fn sample_id(snapshot: &str, prompt_id: &str) -> String {
    format!("{snapshot}|{prompt_id}")
}

/// At most `max` prompts spread evenly over `prompts` (all of them for `None`), so that a
/// capped evaluation still covers every part of a set ordered by task.
pub fn spread(prompts: &[Prompt], max: Option<usize>) -> Vec<Prompt> {
    match max {
        Some(max) if max < prompts.len() => (0..max)
            .map(|i| prompts[i * prompts.len() / max].clone())
            .collect(),
        _ => prompts.to_vec(),
    }
}

/// Every complete record of a samples file, by id (none when it does not exist yet).
pub fn read_samples(path: &Path) -> Result<HashMap<String, SampleRecord>> {
    read_complete_records(path)?
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let record: SampleRecord = serde_json::from_value(value).map_err(|e| {
                PipelineError::Config(format!(
                    "{}: record {}: {e}; expected a sample written by cai eval (delete the \
                     file, or choose another output directory)",
                    path.display(),
                    i + 1
                ))
            })?;
            Ok((record.id.clone(), record))
        })
        .collect()
}

/// The answers of `snapshot` to `prompts`: those already in the file at `path` are kept,
/// the rest are sampled `batch_size` prompts per model call and appended (each chunk synced
/// before the next starts). `progress` hears how many prompts each chunk finished; returns
/// how many answers were sampled now.
pub fn sample_snapshot(
    snapshot: &Snapshot<'_>,
    prompts: &[Prompt],
    settings: &SampleSettings,
    batch_size: usize,
    path: &Path,
    progress: &mut dyn FnMut(usize),
) -> Result<usize> {
    check_snapshot_name(&snapshot.name)?;
    if settings.max_new_tokens == 0 {
        return Err(PipelineError::Config(
            "max_new_tokens 0: expected at least 1".into(),
        ));
    }
    let done = read_samples(path)?;
    let todo: Vec<Prompt> = prompts
        .iter()
        .filter(|p| !done.contains_key(&sample_id(&snapshot.name, &p.id)))
        .cloned()
        .collect();
    if todo.is_empty() {
        return Ok(0);
    }
    let mut writer = JsonlWriter::append(path)?;
    write_in_chunks(&todo, batch_size, &mut writer, progress, |chunk| {
        answer(snapshot, chunk, settings)
    })?;
    Ok(todo.len())
}

/// One batched call: the snapshot's answers to `prompts`.
pub fn answer(
    snapshot: &Snapshot<'_>,
    prompts: &[Prompt],
    settings: &SampleSettings,
) -> Result<Vec<SampleRecord>> {
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    let stop = snapshot.format.stop_strings();
    let requests = prompts
        .iter()
        .map(|prompt| {
            let dialogue = CritiqueDialogue {
                prompt: &prompt.messages,
                answer: None,
                rounds: &[],
                pending: Pending::Answer,
            };
            let rendered = render(
                &snapshot.format,
                Leading::Context(&snapshot.context),
                &dialogue,
            )?;
            Ok(GenerateRequest {
                prefix: rendered.prefix,
                prompt: rendered.prompt,
                max_new_tokens: settings.max_new_tokens,
                sampling: settings.sampling,
                stop: stop.clone(),
                seed: derive_seed(settings.seed, &["eval-sample", &prompt.id]),
                format: cai_core::OutputFormat::Text,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let failed = |source| PipelineError::Model {
        step: format!("answers of snapshot {}", snapshot.name),
        first: prompts[0].id.clone(),
        last: prompts[prompts.len() - 1].id.clone(),
        source: Box::new(source),
    };
    let generations = snapshot.model.generate(&requests).map_err(failed)?;
    if generations.len() != requests.len() {
        return Err(failed(cai_core::Error::Invalid(format!(
            "the model returned {} generations for {} requests",
            generations.len(),
            requests.len()
        ))));
    }
    Ok(prompts
        .iter()
        .zip(generations)
        .map(|(prompt, g)| SampleRecord {
            id: sample_id(&snapshot.name, &prompt.id),
            snapshot: snapshot.name.clone(),
            prompt_id: prompt.id.clone(),
            prompt: prompt.request().to_owned(),
            conversation: prompt.messages.clone(),
            response: g.text.trim().to_owned(),
            finish_reason: g.finish_reason,
        })
        .collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use cai_core::{Generation, Score, ScoreRequest};

    use super::*;

    /// A model whose answer is its name followed by the request's seed, recording every
    /// request it was sent.
    pub(crate) struct Echo {
        pub name: &'static str,
        pub requests: Mutex<Vec<GenerateRequest>>,
    }

    impl Echo {
        pub(crate) fn new(name: &'static str) -> Self {
            Self {
                name,
                requests: Mutex::new(Vec::new()),
            }
        }
    }

    impl LanguageModel for Echo {
        fn generate(
            &self,
            requests: &[GenerateRequest],
        ) -> std::result::Result<Vec<Generation>, cai_core::Error> {
            self.requests.lock().unwrap().extend_from_slice(requests);
            Ok(requests
                .iter()
                .map(|r| Generation {
                    text: format!(" {} {}\n", self.name, r.seed % 1000),
                    token_ids: vec![],
                    token_logprobs: vec![],
                    prompt_tokens: 0,
                    finish_reason: FinishReason::Stop,
                })
                .collect())
        }

        fn score(&self, _: &[ScoreRequest]) -> std::result::Result<Vec<Score>, cai_core::Error> {
            unreachable!("sampling does not score")
        }
    }

    pub(crate) fn prompts(n: usize) -> Vec<Prompt> {
        (0..n)
            .map(|i| Prompt {
                id: format!("p{i}"),
                line: i + 1,
                messages: vec![Message::user(format!("question {i}?"))],
            })
            .collect()
    }

    #[test]
    fn answers_are_rendered_after_the_context_and_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples.jsonl");
        let model = Echo::new("m");
        let snapshot = Snapshot {
            name: "prompted".into(),
            model: &model,
            context: "Be kind.".into(),
            format: PromptFormat::Transcript,
        };
        let settings = SampleSettings::default();
        let mut seen = 0;
        let n = sample_snapshot(&snapshot, &prompts(3)[..2], &settings, 1, &path, &mut |k| {
            seen += k
        })
        .unwrap();
        assert_eq!((n, seen), (2, 2));
        {
            let requests = model.requests.lock().unwrap();
            assert_eq!(requests[0].prefix, "Be kind.");
            assert_eq!(requests[0].prompt, "\n\nHuman: question 0?\n\nAssistant:");
            assert!(requests[0].stop.contains(&"\n\nHuman:".to_owned()));
        }
        // A rerun over three prompts samples only the third.
        let n = sample_snapshot(&snapshot, &prompts(3), &settings, 4, &path, &mut |_| {}).unwrap();
        assert_eq!(n, 1);
        let samples = read_samples(&path).unwrap();
        assert_eq!(samples.len(), 3);
        let third = &samples["prompted|p2"];
        assert_eq!(third.prompt, "question 2?");
        assert!(third.response.starts_with("m "), "{third:?}");
        // The seed depends on the prompt, not on the snapshot or the chunk.
        let other = Echo::new("o");
        let base = Snapshot {
            name: "base".into(),
            model: &other,
            context: String::new(),
            format: PromptFormat::Transcript,
        };
        sample_snapshot(&base, &prompts(3), &settings, 2, &path, &mut |_| {}).unwrap();
        let samples = read_samples(&path).unwrap();
        assert_eq!(samples.len(), 6);
        let seed = |r: &SampleRecord| r.response.split(' ').nth(1).unwrap().to_owned();
        assert_eq!(seed(&samples["base|p1"]), seed(&samples["prompted|p1"]));
        assert_ne!(seed(&samples["base|p1"]), seed(&samples["base|p2"]));
    }

    #[test]
    fn names_are_checked_and_prompts_spread() {
        assert!(check_snapshot_name("rl-step-20").is_ok());
        assert!(check_snapshot_name("a=b").is_err());
        assert!(check_snapshot_name("").is_err());
        assert!(check_snapshot_names(["a", "b"]).is_ok());
        assert!(check_snapshot_names(["a", "a"]).is_err());
        assert!(check_snapshot_names(["a"]).is_err());
        let ids: Vec<String> = spread(&prompts(10), Some(4))
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(ids, ["p0", "p2", "p5", "p7"]);
        assert_eq!(spread(&prompts(3), Some(5)).len(), 3);
        assert_eq!(spread(&prompts(3), None).len(), 3);
    }
}
