//! Harm rates: the share of a model's answers that a judge calls harmful (Bai et al. 2022
//! report it on red-team prompts). Only judges that give a verdict on one answer can say;
//! see [`super::judge`] for which do.

use cai_core::prompts::Prompt;
use serde::{Deserialize, Serialize};

use super::judge::{check_count, HarmVerdict, Judge, ResponseQuery};
use super::samples::{answer, SampleRecord, SampleSettings, Snapshot};
use crate::{PipelineError, Result};

/// One answer and the judge's verdict on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HarmRecord {
    /// The prompt's id.
    pub id: String,
    /// The user's request.
    pub prompt: String,
    /// The answer.
    pub response: String,
    /// The verdict.
    #[serde(flatten)]
    pub verdict: HarmVerdict,
}

/// The harm rate of a set of verdicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HarmSummary {
    /// The judge's name.
    pub judge: String,
    /// Answers judged.
    pub responses: usize,
    /// Answers called harmful.
    pub harmful: usize,
    /// `harmful / responses` (0 for no answers).
    pub harm_rate: f64,
    /// Mean of the judge's scores, where it gives them (higher is less harmful).
    pub mean_score: Option<f64>,
}

impl HarmSummary {
    /// The summary of `verdicts` from `judge`.
    pub fn of<'v>(judge: &str, verdicts: impl IntoIterator<Item = &'v HarmVerdict>) -> Self {
        let (mut responses, mut harmful, mut scores, mut scored) = (0, 0, 0.0, 0);
        for v in verdicts {
            responses += 1;
            harmful += usize::from(v.harmful);
            if let Some(s) = v.score {
                scores += s;
                scored += 1;
            }
        }
        Self {
            judge: judge.to_owned(),
            responses,
            harmful,
            harm_rate: if responses == 0 {
                0.0
            } else {
                harmful as f64 / responses as f64
            },
            mean_score: (scored > 0 && scored == responses).then(|| scores / scored as f64),
        }
    }
}

/// Fail, saying why, unless `judge` gives harm verdicts.
pub fn check_gives_harm(judge: &dyn Judge) -> Result<()> {
    if judge.gives_harm() {
        return Ok(());
    }
    Err(PipelineError::Config(format!(
        "the judge {} only compares answers and gives no harm verdict; harm rates need a \
         preference model (pm:DIR, with a threshold) or the lab's oracle",
        judge.name()
    )))
}

/// The judge's verdicts on sampled answers, `batch_size` per call.
pub fn judge_samples(
    judge: &dyn Judge,
    samples: &[&SampleRecord],
    batch_size: usize,
) -> Result<Vec<HarmVerdict>> {
    check_gives_harm(judge)?;
    let mut verdicts = Vec::with_capacity(samples.len());
    for chunk in samples.chunks(batch_size.max(1)) {
        let queries: Vec<ResponseQuery<'_>> = chunk
            .iter()
            .map(|s| ResponseQuery {
                key: &s.id,
                conversation: &s.conversation,
                response: &s.response,
            })
            .collect();
        let found = judge.harm(&queries)?;
        check_count(&judge.name(), found.len(), chunk.len())?;
        verdicts.extend(found);
    }
    Ok(verdicts)
}

/// One batched step of `cai eval harm`: the snapshot's answers to `prompts` and the judge's
/// verdict on each.
pub fn harm_records(
    snapshot: &Snapshot<'_>,
    judge: &dyn Judge,
    prompts: &[Prompt],
    settings: &SampleSettings,
) -> Result<Vec<HarmRecord>> {
    check_gives_harm(judge)?;
    let samples = answer(snapshot, prompts, settings)?;
    let refs: Vec<&SampleRecord> = samples.iter().collect();
    let verdicts = judge_samples(judge, &refs, refs.len())?;
    Ok(samples
        .into_iter()
        .zip(verdicts)
        .map(|(s, verdict)| HarmRecord {
            id: s.prompt_id,
            prompt: s.prompt,
            response: s.response,
            verdict,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::compare::tests::Longer;
    use crate::eval::judge::PairQuery;
    use crate::eval::samples::tests::{prompts, Echo};
    use crate::render::PromptFormat;

    /// A judge that calls an answer harmful when it holds a digit 7.
    struct Sevens;

    impl Judge for Sevens {
        fn name(&self) -> String {
            "sevens".into()
        }

        fn prefer(&self, pairs: &[PairQuery<'_>]) -> Result<Vec<f64>> {
            Ok(vec![0.5; pairs.len()])
        }

        fn gives_harm(&self) -> bool {
            true
        }

        fn harm(&self, responses: &[ResponseQuery<'_>]) -> Result<Vec<HarmVerdict>> {
            Ok(responses
                .iter()
                .map(|r| HarmVerdict {
                    harmful: r.response.contains('7'),
                    score: None,
                    label: None,
                })
                .collect())
        }
    }

    #[test]
    fn the_rate_counts_harmful_verdicts() {
        let model = Echo::new("m");
        let snapshot = Snapshot {
            name: "m".into(),
            model: &model,
            context: String::new(),
            format: PromptFormat::Transcript,
        };
        let prompts = prompts(20);
        let records =
            harm_records(&snapshot, &Sevens, &prompts, &SampleSettings::default()).unwrap();
        assert_eq!(records.len(), 20);
        let expected = records.iter().filter(|r| r.response.contains('7')).count();
        let summary = HarmSummary::of("sevens", records.iter().map(|r| &r.verdict));
        assert_eq!((summary.responses, summary.harmful), (20, expected));
        assert_eq!(summary.harm_rate, expected as f64 / 20.0);
        assert_eq!(summary.mean_score, None);
        let scored = [
            HarmVerdict {
                harmful: true,
                score: Some(-1.0),
                label: None,
            },
            HarmVerdict {
                harmful: false,
                score: Some(2.0),
                label: None,
            },
        ];
        let summary = HarmSummary::of("pm", &scored);
        assert_eq!((summary.harm_rate, summary.mean_score), (0.5, Some(0.5)));
        // A judge that only compares is refused, with the reason.
        let err = harm_records(
            &snapshot,
            &Longer(0.into()),
            &prompts,
            &SampleSettings::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("gives no harm verdict"), "{err}");
    }
}
