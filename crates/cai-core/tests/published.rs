//! The published prompt, constitution and evaluation files, imported as they are and checked
//! against their own content (opt-in: `CAI_PUBLISHED_DIR=<folder>` holding Anthropic's
//! `ConstitutionalHarmlessnessPaper` files and Hugging Face's llm-swarm `constitutional-ai`
//! files, found by name anywhere below it; `CAI_REAL_DIR=<folder>` with `harmbench.jsonl`
//! and `donotanswer.jsonl`). Without the variables the tests skip.

use std::path::{Path, PathBuf};

use cai_core::constitution;
use cai_core::critique::{bare_request, CRITIQUE, CRITIQUE_REQUEST, REVISION, REVISION_REQUEST};
use cai_core::dialogue::Message;
use cai_core::few_shot::{self, transcript_prefix};
use cai_core::multiple_choice::load_items;
use cai_core::prompts::read_prompts;
use serde_json::Value;

/// Every file below `dir`, in name order.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_below(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// Anthropic's critique/revision principles: one per name, requests without markers.
fn critique_instructions(path: &Path) -> usize {
    let c = constitution::load(path).unwrap();
    let raw = json(path);
    let raw = raw.as_object().unwrap();
    assert_eq!(c.critique_revision.len(), raw.len());
    for p in &c.critique_revision {
        let entry = &raw[&p.id];
        let prompt = strings(&entry["prompt"]);
        assert_eq!(prompt.len(), 1, "{}", p.id);
        assert_eq!(
            p.critique_request,
            bare_request(&prompt[0], CRITIQUE_REQUEST, CRITIQUE)
        );
        assert!(prompt[0].contains(&p.critique_request));
        let edit = entry["edit_request"].as_str().unwrap();
        assert_eq!(
            p.revision_request,
            bare_request(edit, REVISION_REQUEST, REVISION)
        );
        assert!(edit.contains(&p.revision_request));
    }
    c.critique_revision.len()
}

/// Anthropic's multiple-choice principles: each question is the string before `Options:`.
fn choice_instructions(path: &Path) -> usize {
    let c = constitution::load(path).unwrap();
    let raw = strings(&json(path));
    assert_eq!(c.multiple_choice.len(), raw.len());
    for (p, raw) in c.multiple_choice.iter().zip(&raw) {
        assert_eq!(format!("{} Options:", p.question), raw.trim());
    }
    c.multiple_choice.len()
}

/// Anthropic's few-shot transcripts: rendered back, each gives its string without the next
/// example's `\n\nHuman:`.
fn critique_few_shot(path: &Path) -> usize {
    let examples = few_shot::load(path).unwrap();
    let raw = strings(&json(path));
    assert_eq!(examples.len(), raw.len());
    for (example, raw) in examples.iter().zip(&raw) {
        let expected = raw.strip_suffix("\n\nHuman:").unwrap_or(raw);
        assert_eq!(transcript_prefix(std::slice::from_ref(example)), expected);
    }
    examples.len()
}

/// Multiple-choice items: the same prompt and options as each object of the file (a
/// chain-of-thought example's prompt and answer together give its text).
fn choice_items(path: &Path, raw: Vec<Value>) -> usize {
    let items = load_items(path).unwrap();
    assert_eq!(items.len(), raw.len());
    for (item, raw) in items.iter().zip(&raw) {
        let text = raw["prompt"].as_str().unwrap();
        if raw.get("corrects").is_some() {
            assert_eq!(item.prompt, text);
            assert_eq!(item.corrects, strings(&raw["corrects"]));
            assert_eq!(item.incorrects, strings(&raw["incorrects"]));
            let texts = raw.get("text_correct").map(|t| {
                let s = |v: &Value| v.as_str().unwrap().to_owned();
                (s(t), s(&raw["text_incorrect"]))
            });
            assert_eq!(item.texts, texts);
        } else {
            assert_eq!(format!("{}{}", item.prompt, item.corrects[0]), text);
        }
    }
    items.len()
}

/// Hugging Face's constitution: the critic/revision pairs in order, and `system_chat` as
/// the few-shot examples, every message in order.
fn hugging_face_constitution(path: &Path) -> (usize, usize) {
    let c = constitution::load(path).unwrap();
    let raw = json(path);
    let entries = raw["constitutions"].as_array().unwrap();
    assert_eq!(c.critique_revision.len(), entries.len());
    for (p, raw) in c.critique_revision.iter().zip(entries) {
        assert_eq!(p.critique_request, raw["critic"].as_str().unwrap().trim());
        assert_eq!(p.revision_request, raw["revision"].as_str().unwrap().trim());
    }
    let chats = raw["system_chat"].as_array().unwrap();
    assert_eq!(c.few_shot.len(), chats.len());
    for (example, chat) in c.few_shot.iter().zip(chats) {
        let messages: Vec<Message> = serde_json::from_value(chat.clone()).unwrap();
        let trimmed: Vec<Message> = messages
            .iter()
            .map(|m| Message {
                role: m.role,
                content: m.content.trim().to_owned(),
            })
            .collect();
        assert_eq!(example.messages(), trimmed);
    }
    (c.critique_revision.len(), c.few_shot.len())
}

#[test]
fn published_files_import_as_they_are() {
    let Some(dir) = std::env::var_os("CAI_PUBLISHED_DIR") else {
        eprintln!("skipped: set CAI_PUBLISHED_DIR to the folder of published files");
        return;
    };
    let mut checked = Vec::new();
    for path in files_below(Path::new(&dir)) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let result = match name.as_str() {
            "CritiqueRevisionInstructions.json" => {
                format!(
                    "{} critique/revision principles",
                    critique_instructions(&path)
                )
            }
            "RLMadisonInstructions.json" => {
                format!("{} multiple-choice principles", choice_instructions(&path))
            }
            "CritiqueRevisionFewShotPrompts.json" => {
                format!("{} few-shot examples", critique_few_shot(&path))
            }
            "RLMadisonFewShotPrompts.json" | "RLMadisonPrecogFewShotPrompts.json" => {
                let raw = json(&path).as_array().unwrap().clone();
                format!(
                    "{} multiple-choice few-shot items",
                    choice_items(&path, raw)
                )
            }
            "task.json" => {
                let items = load_items(&path).unwrap();
                format!("{} BIG-bench items", items.len())
            }
            _ if name.ends_with(".jsonl") && path.to_string_lossy().contains("evals") => {
                format!("{} evaluation items", choice_items(&path, jsonl(&path)))
            }
            _ if name.starts_with("constitu") && name.ends_with(".json") => {
                let (principles, examples) = hugging_face_constitution(&path);
                format!("{principles} critique/revision principles, {examples} few-shot examples")
            }
            _ => continue,
        };
        eprintln!("{}: {result}", path.display());
        checked.push(name);
    }
    assert!(!checked.is_empty(), "no published file found below {dir:?}");
}

#[test]
fn real_red_team_prompt_sets_read_as_prompts() {
    let Some(dir) = std::env::var_os("CAI_REAL_DIR") else {
        eprintln!(
            "skipped: set CAI_REAL_DIR to the folder of harmbench.jsonl and donotanswer.jsonl"
        );
        return;
    };
    for (name, n) in [("harmbench.jsonl", 200), ("donotanswer.jsonl", 939)] {
        let path = Path::new(&dir).join(name);
        let prompts = read_prompts(&path).unwrap();
        let raw = jsonl(&path);
        assert_eq!(prompts.len(), n, "{name}");
        for (prompt, raw) in prompts.iter().zip(&raw) {
            assert_eq!(prompt.id, raw["id"].as_str().unwrap());
            assert_eq!(prompt.request(), raw["prompt"].as_str().unwrap().trim());
        }
        eprintln!("{}: {} prompts", path.display(), prompts.len());
    }
}
