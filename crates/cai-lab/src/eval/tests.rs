//! Tests of the evaluation with fake language models that answer as the lab's assistants
//! would, so every figure has a known value.

use std::sync::Mutex;

use cai_core::rng::rng_from_seed;
use cai_core::{FinishReason, GenerateRequest, Generation, Score, ScoreRequest};

use super::*;
use crate::context::harmless_answer;
use crate::critiques::critique;
use crate::requests::Request;
use crate::responses::{compliance, ResponseKind};

/// How the fake model answers a turn or a critique.
#[derive(Clone, Copy)]
enum Manner {
    /// The steps of the task (harmful for a harmful request).
    Comply,
    /// Harmless-helpful for a harmful request, the steps for a benign one.
    Harmless,
}

/// A fake model: answers by `manner`, critiques naming the harm when `critiques_hit`,
/// scores the oracle's choice higher when `mc_right`; it records every generation request.
struct Fake {
    manner: Manner,
    critiques_hit: bool,
    mc_right: bool,
    seen: Mutex<Vec<GenerateRequest>>,
}

impl Fake {
    fn new(manner: Manner, critiques_hit: bool, mc_right: bool) -> Self {
        Self {
            manner,
            critiques_hit,
            mc_right,
            seen: Mutex::new(Vec::new()),
        }
    }
}

/// The request of the last `Human:` line of `text` (up to the next blank line or newline).
fn human_request(text: &str) -> Request {
    let start = text.rfind("Human: ").expect("a human turn") + "Human: ".len();
    let rest = &text[start..];
    let end = rest.find('\n').unwrap_or(rest.len());
    let prompt = &rest[..end];
    let world = World::new(0);
    let parsed = Oracle::new(&world).parse_prompt(prompt).unwrap();
    Request {
        task: world.task(&parsed.task_id()).unwrap(),
        owner: None,
        text: prompt.to_owned(),
    }
}

/// The text of option `(X)` in a plain multiple-choice question.
fn option(question: &str, letter: &str) -> String {
    let tag = format!("\n({letter}) ");
    let start = question.find(&tag).unwrap() + tag.len();
    let rest = &question[start..];
    rest[..rest.find('\n').unwrap()].to_owned()
}

impl LanguageModel for Fake {
    fn generate(&self, requests: &[GenerateRequest]) -> Result<Vec<Generation>, cai_core::Error> {
        self.seen.lock().unwrap().extend(requests.iter().cloned());
        let mut rng = rng_from_seed(1);
        Ok(requests
            .iter()
            .map(|r| {
                let request = human_request(&r.prompt);
                let text = if r.prompt.ends_with("Critique:") {
                    if self.critiques_hit {
                        critique(&request, ResponseKind::Harmful, &mut rng)
                    } else {
                        "the response is fine.".to_owned()
                    }
                } else {
                    match self.manner {
                        Manner::Comply => compliance(&request.task, &mut rng),
                        Manner::Harmless => harmless_answer(&request, &mut rng),
                    }
                };
                Generation {
                    text: format!(" {text}"),
                    token_ids: Vec::new(),
                    token_logprobs: Vec::new(),
                    prompt_tokens: 0,
                    finish_reason: FinishReason::Stop,
                }
            })
            .collect())
    }

    fn score(&self, requests: &[ScoreRequest]) -> Result<Vec<Score>, cai_core::Error> {
        let oracle = Oracle::new(&World::new(0));
        Ok(requests
            .iter()
            .map(|r| {
                let request = human_request(&r.prompt);
                let (a, b) = (option(&r.prompt, "A"), option(&r.prompt, "B"));
                let a_better = oracle.prefer(&request.text, &a, &b).unwrap().a_better;
                let wanted = if a_better == 1.0 { " (A)" } else { " (B)" };
                let right = r.continuation == wanted;
                Score {
                    logprob: if right == self.mc_right { 0.0 } else { -1.0 },
                    token_logprobs: Vec::new(),
                    token_ids: Vec::new(),
                    top_logprobs: Vec::new(),
                }
            })
            .collect())
    }
}

fn options(world: &World, max_items: usize) -> EvalOptions {
    EvalOptions {
        max_items: Some(max_items),
        batch_size: 5,
        ..EvalOptions::new(world)
    }
}

#[test]
fn a_complying_model_is_harmful_and_helpful() {
    let world = World::new(0);
    let report = evaluate(
        &Fake::new(Manner::Comply, true, true),
        &world,
        &options(&world, 12),
    )
    .unwrap();
    assert_eq!(report.harmful_rate, 1.0);
    assert_eq!(report.harmful_rate_with_context, 1.0);
    assert_eq!(report.harmless_helpful_rate, 0.0);
    assert_eq!(report.evasive_rate, 0.0);
    assert_eq!(report.helpful_rate, 1.0);
    assert_eq!(report.critique_hit_rate, 1.0);
    assert_eq!(report.mc_accuracy, 1.0);
}

#[test]
fn a_harmless_model_is_harmless_helpful() {
    let world = World::new(0);
    let report = evaluate(
        &Fake::new(Manner::Harmless, false, false),
        &world,
        &options(&world, 12),
    )
    .unwrap();
    assert_eq!(report.harmful_rate, 0.0);
    assert_eq!(report.harmless_helpful_rate, 1.0);
    assert_eq!(report.helpful_rate, 1.0);
    assert_eq!(report.critique_hit_rate, 0.0);
    assert_eq!(report.mc_accuracy, 0.0);
}

#[test]
fn counts_follow_the_cap_and_prompts_have_the_papers_format() {
    let world = World::new(3);
    let opts = options(&world, 7);
    let fake = Fake::new(Manner::Comply, true, true);
    let report = evaluate(&fake, &world, &opts).unwrap();
    for n in [
        report.red_team_items,
        report.red_team_with_context_items,
        report.benign_items,
        report.critique_items,
        report.mc_items,
    ] {
        assert_eq!(n, 7);
    }
    assert_eq!(report.world_seed, 3);
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen.len(), 4 * 7);
    let first = &seen[0];
    assert_eq!(first.prefix, "");
    assert_eq!(
        first.prompt,
        format!("\n\nHuman: {}\n\nAssistant:", opts.red_team[0].prompt)
    );
    assert!(first.sampling.is_greedy());
    assert_eq!(first.max_new_tokens, DEFAULT_MAX_NEW_TOKENS);
    assert_eq!(first.stop, STOP_STRINGS);
    assert_eq!(seen[7].prefix, opts.context);
    let critique = &seen[21].prompt;
    assert!(critique.contains("\n\nAssistant: "));
    assert!(critique.contains("\n\nCritiqueRequest: ") && critique.ends_with("\n\nCritique:"));
    // Red-team items are spread over many tasks.
    let tasks: std::collections::HashSet<_> = pick(&opts.red_team, Some(7))
        .into_iter()
        .map(|r| r.task)
        .collect();
    assert_eq!(tasks.len(), 7);
}

#[test]
fn without_a_cap_every_held_out_prompt_is_used() {
    let world = World::new(0);
    let opts = EvalOptions::new(&world);
    assert_eq!(pick(&opts.red_team, None).len(), opts.red_team.len());
    assert_eq!(
        pick(&opts.red_team, Some(10_000)).len(),
        opts.red_team.len()
    );
    assert_eq!(
        interleave(&opts.red_team, &opts.benign).len(),
        opts.red_team.len() + opts.benign.len()
    );
}

#[test]
fn bad_options_are_rejected() {
    let world = World::new(0);
    let fake = Fake::new(Manner::Comply, true, true);
    for opts in [
        EvalOptions {
            max_items: Some(0),
            ..EvalOptions::new(&world)
        },
        EvalOptions {
            max_new_tokens: 0,
            ..EvalOptions::new(&world)
        },
        EvalOptions {
            red_team: Vec::new(),
            ..EvalOptions::new(&world)
        },
    ] {
        assert!(matches!(
            evaluate(&fake, &world, &opts),
            Err(LabError::Config(_))
        ));
    }
}

#[test]
fn the_report_serialises_every_figure() {
    let world = World::new(0);
    let report = evaluate(
        &Fake::new(Manner::Comply, true, true),
        &world,
        &options(&world, 2),
    )
    .unwrap();
    let json = serde_json::to_value(&report).unwrap();
    for field in [
        "harmful_rate",
        "harmful_rate_with_context",
        "harmless_helpful_rate",
        "evasive_rate",
        "helpful_rate",
        "critique_hit_rate",
        "mc_accuracy",
        "mc_items",
    ] {
        assert!(json.get(field).is_some(), "{field}");
    }
}
