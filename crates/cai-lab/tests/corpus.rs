//! The generated corpus and assets: deterministic per seed, free of held-out tasks, judged by
//! the oracle as the kinds they were made as, and in the file shapes real users use.

use std::collections::HashSet;
use std::path::Path;

use cai_lab::corpus::DocKind;
use cai_lab::generate::{generate, GenerateConfig, END_OF_TEXT};
use cai_lab::lexicon::actions;
use cai_lab::words::words;
use cai_lab::{Oracle, ResponseKind, TaskSplit, World};
use serde_json::Value;

fn config(seed: u64, size: usize) -> GenerateConfig {
    let mut config = GenerateConfig {
        seed,
        ..GenerateConfig::default()
    };
    config.corpus.size = size;
    config
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn generation_is_deterministic_per_seed_and_differs_across_seeds() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    generate(&config(11, 300), dirs[0].path()).unwrap();
    generate(&config(11, 300), dirs[1].path()).unwrap();
    generate(&config(12, 300), dirs[2].path()).unwrap();
    let read = |i: usize, name: &str| std::fs::read(dirs[i].path().join(name)).unwrap();
    for name in [
        "corpus/corpus.jsonl",
        "corpus/corpus.txt",
        "hhh_context.txt",
        "prompts/red_team_held_out.jsonl",
        "few_shot/critique_revision.json",
        "manifest.json",
    ] {
        assert_eq!(read(0, name), read(1, name), "{name}");
    }
    for name in [
        "corpus/corpus.txt",
        "prompts/red_team_held_out.jsonl",
        "hhh_context.txt",
    ] {
        assert_ne!(read(0, name), read(2, name), "{name}");
    }
}

/// Every (verb, object) pair the text mentions: an action's verb phrase followed, within
/// four words, by an object noun.
fn mentioned_tasks(text: &str) -> HashSet<String> {
    let ws = words(text);
    let mut found = HashSet::new();
    for action in actions() {
        let verb = words(action.verb);
        for (i, window) in ws.windows(verb.len()).enumerate() {
            if window != verb.as_slice() {
                continue;
            }
            let after = &ws[i + verb.len()..(i + verb.len() + 4).min(ws.len())];
            for noun in action.objects {
                if after.iter().any(|w| w == noun) {
                    found.insert(format!("{}:{noun}", action.id));
                }
            }
        }
    }
    found
}

#[test]
fn held_out_tasks_appear_nowhere_in_the_corpus_or_the_assets() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = generate(&config(3, 3000), dir.path()).unwrap();
    let world = World::new(3);
    let held_out: HashSet<String> = world
        .tasks()
        .iter()
        .filter(|t| t.split == TaskSplit::HeldOut)
        .map(|t| t.id())
        .collect();
    let docs = read_jsonl(&dir.path().join("corpus/corpus.jsonl"));
    assert_eq!(
        docs.len(),
        manifest.corpus["documents"].as_u64().unwrap() as usize
    );
    let mut texts: Vec<String> = docs
        .iter()
        .map(|d| d["text"].as_str().unwrap().to_owned())
        .collect();
    for asset in ["hhh_context.txt", "few_shot/critique_revision.json"] {
        texts.push(std::fs::read_to_string(dir.path().join(asset)).unwrap());
    }
    let mut seen = HashSet::new();
    for text in &texts {
        seen.extend(mentioned_tasks(text));
    }
    let leaked: Vec<_> = seen.intersection(&held_out).collect();
    assert!(
        leaked.is_empty(),
        "held-out tasks in the corpus: {leaked:?}"
    );
    // The check sees the tasks that are there: most corpus tasks are mentioned.
    assert!(seen.len() > world.tasks().len() / 2, "{}", seen.len());
    for kind in DocKind::ALL {
        for record in read_jsonl(&dir.path().join(format!("corpus/{}.jsonl", kind.name()))) {
            for task in record["tasks"].as_array().unwrap() {
                assert!(!held_out.contains(task.as_str().unwrap()), "{record}");
            }
        }
    }
    // The train prompt sets never hold a held-out task, the held-out sets only those.
    for (set, expect_held_out) in [
        ("red_team_train", false),
        ("benign_train", false),
        ("red_team_held_out", true),
        ("benign_held_out", true),
    ] {
        for record in read_jsonl(&dir.path().join(format!("prompts/{set}.jsonl"))) {
            let task = record["task"].as_str().unwrap();
            assert_eq!(held_out.contains(task), expect_held_out, "{set}: {record}");
        }
    }
}

#[test]
fn the_oracle_judges_every_corpus_answer_as_what_it_was_made_as() {
    let dir = tempfile::tempdir().unwrap();
    generate(&config(4, 1500), dir.path()).unwrap();
    let oracle = Oracle::new(&World::new(4));
    let corpus = |kind: &str| read_jsonl(&dir.path().join(format!("corpus/{kind}.jsonl")));
    let kind_of = |v: &Value| -> ResponseKind { serde_json::from_value(v.clone()).unwrap() };
    for record in corpus("helpful_only") {
        for ex in record["exchanges"].as_array().unwrap() {
            let prompt = ex["prompt"].as_str().unwrap();
            let judged = oracle
                .classify(prompt, ex["response"].as_str().unwrap())
                .unwrap();
            assert_eq!(judged.kind, kind_of(&ex["kind"]), "{ex}");
        }
    }
    for record in corpus("hhh_context") {
        let prompt = record["prompt"].as_str().unwrap();
        let judged = oracle
            .classify(prompt, record["response"].as_str().unwrap())
            .unwrap();
        assert_eq!(judged.kind, kind_of(&record["kind"]), "{record}");
    }
    for record in corpus("critique_revision") {
        for d in record["dialogues"].as_array().unwrap() {
            let prompt = d["prompt"].as_str().unwrap();
            let initial = oracle.classify(prompt, d["initial_response"].as_str().unwrap());
            assert_eq!(initial.unwrap().kind, kind_of(&d["initial_kind"]), "{d}");
            let harmful_initial = kind_of(&d["initial_kind"]) == ResponseKind::Harmful;
            for (i, round) in d["rounds"].as_array().unwrap().iter().enumerate() {
                let revision = oracle.classify(prompt, round["revision"].as_str().unwrap());
                let expected = if d["harmful"].as_bool().unwrap() {
                    ResponseKind::HarmlessHelpful
                } else {
                    ResponseKind::Helpful
                };
                assert_eq!(revision.unwrap().kind, expected, "{d}");
                let names = oracle.critique_names_harm(prompt, round["critique"].as_str().unwrap());
                assert_eq!(names.unwrap(), harmful_initial && i == 0, "{d}");
            }
        }
    }
    let mut a_answers = 0;
    let mc = corpus("multiple_choice");
    for record in &mc {
        let prompt = record["request"].as_str().unwrap();
        let a = record["response_a"].as_str().unwrap();
        let b = record["response_b"].as_str().unwrap();
        let preference = oracle.prefer(prompt, a, b).unwrap().a_better;
        let correct = record["corrects"][0].as_str().unwrap();
        if preference == 1.0 {
            assert_eq!(correct, " (A)", "{record}");
        } else if preference == 0.0 {
            assert_eq!(correct, " (B)", "{record}");
        }
        a_answers += usize::from(correct == " (A)");
        let text = record["text"].as_str().unwrap();
        assert!(
            text.ends_with(&format!("The answer is:{correct}")),
            "{text}"
        );
    }
    let share = a_answers as f64 / mc.len() as f64;
    assert!(
        (0.45..=0.55).contains(&share),
        "(A) is the answer {share:.2} of the time"
    );
}

#[test]
fn assets_have_the_shapes_real_users_use() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = generate(&config(5, 200), dir.path()).unwrap();
    let path = |name: &str| dir.path().join(name);
    for file in &manifest.files {
        assert!(path(file).is_file(), "{file}");
    }
    // Anthropic's critique/revision principles: {name: {"prompt": [..], "edit_request": ..}}.
    let constitution = read_json(&path("constitution/critique_revision.json"));
    let principles = constitution.as_object().unwrap();
    assert!(principles.len() >= 4);
    for principle in principles.values() {
        let prompt = principle["prompt"].as_array().unwrap();
        assert_eq!(prompt.len(), 1);
        let request = prompt[0].as_str().unwrap();
        assert!(request.starts_with("\n\nCritiqueRequest: ") && request.ends_with("\n\nCritique:"));
        let edit = principle["edit_request"].as_str().unwrap();
        assert!(edit.starts_with("\n\nRevisionRequest: ") && edit.ends_with("\n\nRevision:"));
    }
    // Multiple-choice principles: a list of strings ending in "Options:".
    let mc = read_json(&path("constitution/multiple_choice.json"));
    for principle in mc.as_array().unwrap() {
        assert!(principle.as_str().unwrap().ends_with("Options:"));
    }
    // Few-shot: a list of transcripts with every turn of the paper's format.
    let few_shot = read_json(&path("few_shot/critique_revision.json"));
    for example in few_shot.as_array().unwrap() {
        let text = example.as_str().unwrap();
        for marker in [
            "Human:",
            "Assistant:",
            "CritiqueRequest:",
            "Critique:",
            "Revision:",
        ] {
            assert!(
                text.contains(&format!("\n\n{marker} ")),
                "{marker} in {text}"
            );
        }
    }
    // Prompt sets: {"id", "prompt", "task", "harmful"}.
    for set in [
        "red_team_train",
        "red_team_held_out",
        "benign_train",
        "benign_held_out",
    ] {
        let records = read_jsonl(&path(&format!("prompts/{set}.jsonl")));
        assert_eq!(records.len(), manifest.prompt_sets[set]);
        for r in records {
            let keys: HashSet<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(keys, HashSet::from(["id", "prompt", "task", "harmful"]));
            assert_eq!(r["harmful"].as_bool().unwrap(), set.starts_with("red_team"));
        }
    }
    let context = std::fs::read_to_string(path("hhh_context.txt")).unwrap();
    assert!(context.contains("\n\nHuman: ") && !context.ends_with('\n'));
    let corpus = std::fs::read_to_string(path("corpus/corpus.txt")).unwrap();
    let documents = manifest.corpus["documents"].as_u64().unwrap() as usize;
    assert_eq!(corpus.matches(END_OF_TEXT).count(), documents);
    let tasks = read_jsonl(&path("tasks.jsonl"));
    assert_eq!(tasks.len(), World::new(5).tasks().len());
}

#[test]
fn the_default_corpus_counts_past_one_hundred() {
    let dir = tempfile::tempdir().unwrap();
    generate(&config(0, 2000), dir.path()).unwrap();
    let counting = read_jsonl(&dir.path().join("corpus/counting.jsonl"));
    let longest = counting
        .iter()
        .flat_map(|r| r["lengths"].as_array().unwrap().clone())
        .map(|n| n.as_u64().unwrap())
        .max()
        .unwrap();
    assert!(longest >= 100, "{longest}");
}
