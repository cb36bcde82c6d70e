//! The SL-CAI stage against a fake language model that answers deterministically from each
//! request and records every request it sees.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use cai_core::chat_template::ChatTemplate;
use cai_core::constitution::{builtin, CritiquePrinciple};
use cai_core::critique::stop_strings;
use cai_core::dialogue::{Message, Role};
use cai_core::few_shot::transcript_prefix;
use cai_core::jsonl::{read_complete_records, JsonlWriter};
use cai_core::prompts::Prompt;
use cai_core::rng::derive_seed;
use cai_core::{
    Error, FinishReason, GenerateRequest, Generation, LanguageModel, Sampling, Score, ScoreRequest,
};
use cai_pipeline::critique::{Critic, CritiqueSettings, CritiqueStage};
use cai_pipeline::render::PromptFormat;
use cai_pipeline::PipelineError;

/// Answers `" gen-N "` where N hashes the whole request (prefix, prompt, seed), so equal
/// requests get equal answers whatever the batch; fails every call from `fail_from` on. With
/// a `context`, a request's size is the number of earlier answers (`gen-`) its prompt holds
/// and a request that fills the context fails, as a local model's does.
struct FakeModel {
    requests: Mutex<Vec<GenerateRequest>>,
    calls: AtomicUsize,
    batch_sizes: Mutex<Vec<usize>>,
    fail_from: usize,
    context: Option<usize>,
}

/// The fake's size of a request's prompt: the earlier answers it holds.
fn fake_tokens(prompt: &str) -> usize {
    prompt.matches(" gen-").count()
}

impl FakeModel {
    fn new() -> Self {
        Self::failing_from(usize::MAX)
    }

    fn failing_from(call: usize) -> Self {
        Self {
            requests: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
            batch_sizes: Mutex::new(Vec::new()),
            fail_from: call,
            context: None,
        }
    }

    fn with_context(context: usize) -> Self {
        Self {
            context: Some(context),
            ..Self::new()
        }
    }

    fn requests(&self) -> Vec<GenerateRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl LanguageModel for FakeModel {
    fn generate(&self, requests: &[GenerateRequest]) -> Result<Vec<Generation>, Error> {
        if self.calls.fetch_add(1, Ordering::SeqCst) >= self.fail_from {
            return Err(Error::Invalid("the fake backend went away".into()));
        }
        if let Some(context) = self.context {
            if let Some(r) = requests.iter().find(|r| fake_tokens(&r.prompt) >= context) {
                return Err(Error::Invalid(format!("{} fill the context", r.prompt)));
            }
        }
        self.requests.lock().unwrap().extend_from_slice(requests);
        self.batch_sizes.lock().unwrap().push(requests.len());
        Ok(requests
            .iter()
            .map(|r| {
                let n = derive_seed(r.seed, &[&r.prefix, &r.prompt]) % 100_000;
                Generation {
                    text: format!(" gen-{n} "),
                    token_ids: vec![1],
                    token_logprobs: vec![-1.0],
                    prompt_tokens: 1,
                    finish_reason: FinishReason::Stop,
                }
            })
            .collect())
    }

    fn score(&self, _: &[ScoreRequest]) -> Result<Vec<Score>, Error> {
        unreachable!("the critique stage never scores")
    }

    fn room_after(&self, _prefix: &str, prompt: &str) -> Result<Option<usize>, Error> {
        Ok(self.context.map(|c| c.saturating_sub(fake_tokens(prompt))))
    }
}

fn prompts(n: usize) -> Vec<Prompt> {
    (0..n)
        .map(|i| Prompt {
            id: format!("p{i}"),
            line: i + 1,
            messages: vec![Message::user(format!("request {i}"))],
        })
        .collect()
}

fn stage(rounds: usize) -> CritiqueStage {
    let constitution = builtin("default").unwrap();
    CritiqueStage {
        settings: CritiqueSettings {
            rounds,
            max_new_tokens: 17,
            sampling: Sampling::default(),
            seed: 42,
        },
        principles: constitution.critique_revision,
        few_shot: constitution.few_shot,
        context: "An HHH context.".into(),
        format: PromptFormat::Transcript,
    }
}

/// Run the stage over `prompts` into a fresh file, `batch_size` at a time; the file's text.
fn run_to_file(stage: &CritiqueStage, prompts: &[Prompt], batch_size: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sl.jsonl");
    let mut writer = JsonlWriter::create(&path).unwrap();
    let mut done = 0;
    stage
        .run(
            &FakeModel::new(),
            None,
            prompts,
            batch_size,
            &mut writer,
            &mut |n| done += n,
        )
        .unwrap();
    assert_eq!(done, prompts.len());
    std::fs::read_to_string(&path).unwrap()
}

#[test]
fn records_do_not_depend_on_the_batch_size() {
    let stage = stage(4);
    let prompts = prompts(5);
    let whole = run_to_file(&stage, &prompts, 5);
    assert_eq!(whole.lines().count(), 5);
    for batch_size in [1, 2, 3] {
        assert_eq!(
            run_to_file(&stage, &prompts, batch_size),
            whole,
            "batch {batch_size}"
        );
    }
    // A prompt's principles depend on its id and the round only, and vary between draws.
    let alone = stage.critique(&FakeModel::new(), &prompts[3..4]).unwrap();
    let together = stage.critique(&FakeModel::new(), &prompts).unwrap();
    assert_eq!(alone[0], together[3]);
    let drawn: HashSet<&str> = together
        .iter()
        .flat_map(|r| r.rounds.iter().map(|round| round.principle_id.as_str()))
        .collect();
    assert!(drawn.len() > 5, "{drawn:?}");
    for record in &together {
        for (k, round) in record.rounds.iter().enumerate() {
            assert_eq!(round.principle_id, stage.principle(&record.id, k + 1).id);
        }
    }
}

#[test]
fn each_step_is_one_wave_over_the_chunk() {
    let stage = stage(2);
    let model = FakeModel::new();
    let dir = tempfile::tempdir().unwrap();
    let mut writer = JsonlWriter::create(&dir.path().join("o.jsonl")).unwrap();
    stage
        .run(&model, None, &prompts(5), 3, &mut writer, &mut |_| {})
        .unwrap();
    // Answers, then a critique wave and a revision wave per round, for chunks of 3 and 2.
    assert_eq!(
        *model.batch_sizes.lock().unwrap(),
        [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]
    );
}

#[test]
fn a_resumed_run_writes_what_an_uninterrupted_run_writes() {
    let stage = stage(3);
    let prompts = prompts(7);
    let uninterrupted = run_to_file(&stage, &prompts, 2);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sl.jsonl");
    // Each chunk takes 1 + 2 × 3 = 7 calls: the backend dies in the middle of the third chunk.
    let dying = FakeModel::failing_from(17);
    let mut writer = JsonlWriter::create(&path).unwrap();
    let err = stage
        .run(&dying, None, &prompts, 2, &mut writer, &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(&err, PipelineError::Model { step, first, last, .. }
            if step == "round 2 critiques" && first == "p4" && last == "p5"),
        "{err}"
    );
    drop(writer);
    // The process was killed while writing a line.
    let mut text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 4);
    text.push_str("{\"id\":\"p4\",\"pro");
    std::fs::write(&path, text).unwrap();

    // Resume as the command does: skip finished ids, append after the complete lines.
    let finished: HashSet<String> = read_complete_records(&path)
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let todo: Vec<Prompt> = prompts
        .iter()
        .filter(|p| !finished.contains(&p.id))
        .cloned()
        .collect();
    assert_eq!(todo.len(), 3);
    let mut writer = JsonlWriter::append(&path).unwrap();
    stage
        .run(&FakeModel::new(), None, &todo, 2, &mut writer, &mut |_| {})
        .unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), uninterrupted);
}

#[test]
fn requests_share_the_prefix_and_stop_at_every_marker() {
    let stage = stage(2);
    let model = FakeModel::new();
    let records = stage.critique(&model, &prompts(3)).unwrap();
    let requests = model.requests();
    assert_eq!(requests.len(), 3 * (1 + 2 * 2));
    let few_shot = transcript_prefix(&stage.few_shot);
    assert!(few_shot.starts_with("\n\nHuman: "));
    for (i, request) in requests.iter().enumerate() {
        let expected_prefix = if i < 3 { "An HHH context." } else { &few_shot };
        assert_eq!(request.prefix, expected_prefix, "request {i}");
        assert_eq!(request.stop, stop_strings());
        assert_eq!(request.max_new_tokens, 17);
        assert_eq!(request.sampling, Sampling::default());
    }
    let seeds: HashSet<u64> = requests.iter().map(|r| r.seed).collect();
    assert_eq!(
        seeds.len(),
        requests.len(),
        "every request has its own seed"
    );

    // The answer, then each round's critique and revision requests, chained.
    assert_eq!(requests[0].prompt, "\n\nHuman: request 0\n\nAssistant:");
    let r = &records[0];
    let p1 = stage.principle("p0", 1);
    let p2 = stage.principle("p0", 2);
    let after_answer = format!("\n\nHuman: request 0\n\nAssistant: {}", r.initial_response);
    assert_eq!(
        requests[3].prompt,
        format!(
            "{after_answer}\n\nCritiqueRequest: {}\n\nCritique:",
            p1.critique_request
        )
    );
    let round1 = format!(
        "{after_answer}\n\nCritiqueRequest: {}\n\nCritique: {}\n\nRevisionRequest: {}\n\n\
         Revision:",
        p1.critique_request, r.rounds[0].critique, p1.revision_request
    );
    assert_eq!(requests[6].prompt, round1);
    assert_eq!(
        requests[9].prompt,
        format!(
            "{round1} {}\n\nCritiqueRequest: {}\n\nCritique:",
            r.rounds[0].revision, p2.critique_request
        )
    );
    assert!(requests[12].prompt.ends_with(&format!(
        "\n\nRevisionRequest: {}\n\nRevision:",
        p2.revision_request
    )));
    // Texts come back trimmed, and the final revision is the SFT target.
    assert!(r.rounds[1].revision.starts_with("gen-") && !r.rounds[1].revision.ends_with(' '));
    assert_eq!(r.messages.last().unwrap().content, r.rounds[1].revision);
    assert_eq!(r.rejected.last().unwrap().content, r.initial_response);
    assert_eq!(r.revision_response, r.rounds[1].revision);
}

/// A chat template that writes each turn as `[role]content`.
fn bracket_chat() -> PromptFormat {
    let template = ChatTemplate::new(
        "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}\
         {% if add_generation_prompt %}[assistant]{% endif %}",
        None,
        None,
    )
    .unwrap();
    PromptFormat::Chat(Box::new(template))
}

#[test]
fn chat_models_get_user_turns_and_no_stop_strings() {
    let stage = CritiqueStage {
        format: bracket_chat(),
        context: String::new(),
        ..stage(1)
    };
    let model = FakeModel::new();
    let records = stage.critique(&model, &prompts(1)).unwrap();
    let requests = model.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.stop.is_empty()));
    assert_eq!(requests[0].prefix, "");
    assert_eq!(requests[0].prompt, "[user]request 0[assistant]");
    assert!(requests[1].prefix.starts_with("[user]My neighbour's dog"));
    assert_eq!(requests[1].prefix, requests[2].prefix);
    let principle = stage.principle("p0", 1);
    assert_eq!(
        requests[2].prompt,
        format!(
            "[user]request 0[assistant]{}[user]{}[assistant]{}[user]{}[assistant]",
            records[0].initial_response,
            principle.critique_request,
            records[0].rounds[0].critique,
            principle.revision_request
        )
    );
}

#[test]
fn a_critic_writes_the_critiques_and_revisions_in_its_own_format() {
    // The policy answers in the transcript; the critic reads its own chat template.
    let chat = bracket_chat();
    let stage = stage(2);
    let (policy, critic_model) = (FakeModel::new(), FakeModel::new());
    let critic = Critic {
        model: &critic_model,
        format: &chat,
    };
    let prompts = prompts(3);
    let records = stage.critique_by(&policy, critic, &prompts).unwrap();

    // The policy only answered, after the context, in the transcript.
    let answered = policy.requests();
    assert_eq!(answered.len(), 3);
    assert!(answered.iter().all(|r| r.prefix == "An HHH context."));
    assert!(answered.iter().all(|r| r.prompt.ends_with("Assistant:")));
    // The critic wrote both waves of both rounds, as chat turns with no stop strings.
    let critiqued = critic_model.requests();
    assert_eq!(critiqued.len(), 3 * 2 * 2);
    assert!(critiqued.iter().all(|r| r.stop.is_empty()));
    assert!(critiqued
        .iter()
        .all(|r| r.prompt.starts_with("[user]request ")));
    assert!(critiqued
        .iter()
        .all(|r| !r.prompt.contains("CritiqueRequest:")));
    for (i, (record, answer)) in records.iter().zip(&answered).enumerate() {
        assert!(answer.prompt.contains(&format!("request {i}")));
        // The critic's requests carry the policy's answer.
        let own: Vec<&GenerateRequest> = critiqued
            .iter()
            .filter(|r| {
                r.prompt
                    .starts_with(&format!("[user]request {i}[assistant]"))
            })
            .collect();
        assert_eq!(own.len(), 4, "{}", record.id);
        let first = format!(
            "[user]request {i}[assistant]{}[user]",
            record.initial_response
        );
        assert!(own.iter().all(|r| r.prompt.starts_with(&first)));
    }
    // The same model as its own critic is the paper's stage, request for request.
    let model = FakeModel::new();
    let by_itself = stage
        .critique_by(&model, stage.self_critic(&model), &prompts)
        .unwrap();
    assert_eq!(
        by_itself,
        stage.critique(&FakeModel::new(), &prompts).unwrap()
    );
    assert_ne!(by_itself, records);
}

#[test]
fn helpful_answers_are_sft_records_with_their_own_seeds() {
    let stage = stage(1);
    let model = FakeModel::new();
    let prompts = prompts(2);
    let helpful = stage.helpful(&model, &prompts).unwrap();
    let critique = stage.critique(&FakeModel::new(), &prompts).unwrap();
    assert_eq!(helpful[1].id, "p1");
    assert_eq!(helpful[1].prompt, "request 1");
    let roles: Vec<Role> = helpful[1].messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::User, Role::Assistant]);
    assert_ne!(helpful[1].messages[1].content, critique[1].initial_response);
    assert_eq!(model.requests()[0].prefix, "An HHH context.");
}

#[test]
fn settings_and_principles_are_checked() {
    let model = FakeModel::new();
    let no_principles = CritiqueStage {
        principles: Vec::<CritiquePrinciple>::new(),
        ..stage(1)
    };
    let err = no_principles.critique(&model, &prompts(1)).unwrap_err();
    assert!(
        err.to_string().contains("no critique/revision principles"),
        "{err}"
    );
    let err = stage(0).critique(&model, &prompts(1)).unwrap_err();
    assert!(err.to_string().contains("rounds 0"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let mut writer = JsonlWriter::create(&dir.path().join("o.jsonl")).unwrap();
    let err = stage(1)
        .run(&model, None, &prompts(1), 0, &mut writer, &mut |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("batch size 0"), "{err}");
    assert_eq!(model.calls.load(Ordering::SeqCst), 0);
    let defaults = CritiqueSettings::default();
    assert_eq!((defaults.rounds, defaults.max_new_tokens), (4, 128));
    assert_eq!(defaults.sampling.temperature, 1.0);
}

#[test]
fn a_history_that_would_fill_the_context_leaves_out_the_earlier_rounds() {
    let stage = stage(4);
    let prompts = prompts(3);
    let unlimited = stage.critique(&FakeModel::new(), &prompts).unwrap();
    // Where every request fits, the records are those of a model that cannot count.
    let roomy = stage
        .critique(&FakeModel::with_context(100), &prompts)
        .unwrap();
    assert_eq!(roomy, unlimited);
    // Four answers fill this context: the answer and round 1 fit whole; round 2's revision
    // (answer, critique 1, revision 1, critique 2) and everything after would not.
    let small = FakeModel::with_context(4);
    let records = stage.critique(&small, &prompts).unwrap();
    assert!(records.iter().all(|r| r.rounds.len() == 4));
    let requests = small.requests();
    assert!(requests.iter().all(|r| fake_tokens(&r.prompt) < 4));
    for record in &records {
        let mine: Vec<&GenerateRequest> = requests
            .iter()
            .filter(|r| r.prompt.contains(&record.prompt))
            .collect();
        // Round 3's critique starts from round 2's revision, without the answer before it.
        let round2 = &record.rounds[1].revision;
        assert!(
            mine.iter().any(|r| r.prompt.contains(round2.as_str())
                && !r.prompt.contains(record.initial_response.as_str())),
            "{mine:#?}"
        );
        // Round 1 kept the whole dialogue.
        assert_eq!(
            record.rounds[0],
            unlimited[records.iter().position(|x| x.id == record.id).unwrap()].rounds[0]
        );
    }
}
