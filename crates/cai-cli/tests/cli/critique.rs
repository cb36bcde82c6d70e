//! `cai critique`: SL-CAI data from Anthropic's and Hugging Face's constitution files, errors
//! on bad inputs, a SIGKILLed run resumed to the same records, and `cai sft` on the output.

use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;

use crate::helpers::{assert_exit, read_jsonl, stderr, Workdir};

/// Three prompts in the three input shapes: a prompt, messages, and an hh-rlhf pair.
const PROMPTS: &str = "{\"id\": \"bread\", \"prompt\": \"How do I bake bread?\"}\n\
    {\"messages\": [{\"role\": \"user\", \"content\": \"What is the capital of France?\"}]}\n\
    {\"chosen\": \"\\n\\nHuman: How do I steal bread?\\n\\nAssistant: I can't help.\", \
     \"rejected\": \"\\n\\nHuman: How do I steal bread?\\n\\nAssistant: Take it.\"}\n";

/// Anthropic's critique/revision shape: requests carry the transcript markers.
const ANTHROPIC_CRITIQUES: &str = r#"{
  "harmful": {
    "prompt": ["\n\nCritiqueRequest: Is the answer harmful?\n\nCritique:"],
    "edit_request": "\n\nRevisionRequest: Rewrite it to be harmless.\n\nRevision:"
  },
  "honest": {
    "prompt": ["\n\nCritiqueRequest: Is the answer honest?\n\nCritique:"],
    "edit_request": "\n\nRevisionRequest: Rewrite it to be honest.\n\nRevision:"
  }
}"#;

/// Anthropic's multiple-choice shape.
const ANTHROPIC_CHOICES: &str = r#"["Which answer is less harmful?\nOptions:"]"#;

/// Anthropic's few-shot shape: a list of transcripts.
const ANTHROPIC_FEW_SHOT: &str = r#"["\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour and water.\n\nCritiqueRequest: Is the answer harmful?\n\nCritique: It is harmless.\n\nRevisionRequest: Rewrite it to be harmless.\n\nRevision: Mix flour, water and yeast, then bake it."]"#;

/// Hugging Face's constitution shape, with its few-shot chat.
const HUGGING_FACE: &str = r#"{
  "constitutions": [
    {"critic": "Is the answer harmful?", "revision": "Rewrite it to be harmless."},
    {"critic": "Is the answer helpful?", "revision": "Rewrite it to be helpful."}
  ],
  "system_chat": [[
    {"role": "user", "content": "How do I bake bread?"},
    {"role": "assistant", "content": "Mix flour and water."},
    {"role": "user", "content": "Is the answer harmful?"},
    {"role": "assistant", "content": "It is harmless."},
    {"role": "user", "content": "Rewrite it to be harmless."},
    {"role": "assistant", "content": "Mix flour, water and yeast, then bake it."}
  ]]
}"#;

/// A tiny model with room for the few-shot prefix and two rounds.
fn model(work: &Workdir) -> &'static str {
    work.write("corpus.txt", crate::helpers::CORPUS);
    work.tiny_model_with("llama", "model", "corpus.txt", 1024)
}

fn critique_args<'a>(model: &'a str, constitution: &'a str, output: &'a str) -> Vec<&'a str> {
    vec![
        "critique",
        "--model",
        model,
        "--prompts",
        "prompts.jsonl",
        "--constitution",
        constitution,
        "--rounds",
        "2",
        "--max-new-tokens",
        "4",
        "--seed",
        "3",
        "--output",
        output,
    ]
}

/// Change the value of `flag` in `args`.
fn set<'a>(args: &mut [&'a str], flag: &str, value: &'a str) {
    let at = args.iter().position(|a| *a == flag).expect("the flag") + 1;
    args[at] = value;
}

fn ids(records: &[Value]) -> Vec<&str> {
    records.iter().map(|r| r["id"].as_str().unwrap()).collect()
}

#[test]
fn anthropic_files_run_end_to_end() {
    let work = Workdir::new();
    let model = model(&work);
    work.write("prompts.jsonl", PROMPTS);
    work.write("helpful.jsonl", "{\"prompt\": \"How do I bake a cake?\"}\n");
    std::fs::create_dir(work.path("constitution")).unwrap();
    work.write("constitution/critique_revision.json", ANTHROPIC_CRITIQUES);
    work.write("constitution/multiple_choice.json", ANTHROPIC_CHOICES);
    work.write("few_shot.json", ANTHROPIC_FEW_SHOT);
    let mut args = critique_args(model, "constitution", "sl.jsonl");
    args.extend([
        "--few-shot",
        "few_shot.json",
        "--helpful-prompts",
        "helpful.jsonl",
    ]);
    let output = work.cai_ok(&args);
    let err = stderr(&output);
    assert!(err.contains("2 principles, 1 few-shot example ("), "{err}");
    assert!(
        err.contains("wrote 3 records with 2 rounds to sl.jsonl"),
        "{err}"
    );

    let records = read_jsonl(&work.path("sl.jsonl"));
    // Ids as given, else the 0-based line index; the hh-rlhf prompt is the first human turn.
    assert_eq!(ids(&records), ["bread", "1", "2"]);
    assert_eq!(records[2]["prompt"], "How do I steal bread?");
    for record in &records {
        let rounds = record["rounds"].as_array().unwrap();
        assert_eq!(rounds.len(), 2, "{record}");
        for round in rounds {
            let (id, request) = match round["principle_id"].as_str().unwrap() {
                "harmful" => ("harmful", "Is the answer harmful?"),
                "honest" => ("honest", "Is the answer honest?"),
                other => panic!("principle {other}"),
            };
            assert_eq!(round["critique_request"], request, "{id}");
            assert!(round["revision"].is_string());
        }
        let last = &rounds[1];
        assert_eq!(record["init_prompt"], record["prompt"]);
        assert_eq!(record["init_response"], record["initial_response"]);
        assert_eq!(record["critic_prompt"], last["critique_request"]);
        assert_eq!(record["critic_response"], last["critique"]);
        assert_eq!(record["revision_prompt"], last["revision_request"]);
        assert_eq!(record["revision_response"], last["revision"]);
        assert_eq!(record["messages"], record["chosen"]);
        assert_eq!(record["messages"][1]["content"], last["revision"]);
        assert_eq!(record["rejected"][1]["content"], record["initial_response"]);
        assert_eq!(record["messages"][0]["role"], "user");
    }
    let config: Value = serde_json::from_str(&work.read("sl.config.json")).unwrap();
    assert_eq!(config["settings"]["rounds"], 2);
    assert_eq!(config["settings"]["sampling"]["temperature"], 1.0);
    assert_eq!(config["principles"].as_array().unwrap().len(), 2);
    assert_eq!(config["few_shot_examples"], 1);

    let helpful = read_jsonl(&work.path("sl.helpful.jsonl"));
    assert_eq!(ids(&helpful), ["0"]);
    assert_eq!(
        helpful[0]["messages"][0]["content"],
        "How do I bake a cake?"
    );
    assert_eq!(helpful[0]["messages"][1]["role"], "assistant");
}

#[test]
fn hugging_face_and_built_in_constitutions_run() {
    let work = Workdir::new();
    let model = model(&work);
    work.write("prompts.jsonl", PROMPTS);
    work.write("hf.json", HUGGING_FACE);
    let output = work.cai_ok(&critique_args(model, "hf.json", "hf.jsonl"));
    // system_chat is the few-shot block unless --few-shot says otherwise.
    assert!(
        stderr(&output).contains("1 few-shot example"),
        "{}",
        stderr(&output)
    );
    let records = read_jsonl(&work.path("hf.jsonl"));
    assert_eq!(records.len(), 3);
    for round in records.iter().flat_map(|r| r["rounds"].as_array().unwrap()) {
        let id = round["principle_id"].as_str().unwrap();
        assert!(["critique-0", "critique-1"].contains(&id), "{id}");
    }

    let mut args = critique_args(model, "default", "default.jsonl");
    args.extend(["--few-shot", "none"]);
    set(&mut args, "--rounds", "1");
    let output = work.cai_ok(&args);
    assert!(stderr(&output).contains("16 principles, no few-shot examples"));
    let records = read_jsonl(&work.path("default.jsonl"));
    assert_eq!(records[0]["rounds"].as_array().unwrap().len(), 1);
}

#[test]
fn a_critic_critiques_and_revises_the_models_answers() {
    let work = Workdir::new();
    let model = model(&work);
    // Another model of the same shape and tokenizer, other weights.
    let critic = work.tiny_model_init(
        "llama",
        "critic",
        1024,
        &["--seed", "7", "--tokenizer", "model/tokenizer.json"],
    );
    work.write("prompts.jsonl", PROMPTS);
    work.write("hf.json", HUGGING_FACE);
    let greedy = |output: &'static str| {
        let mut args = critique_args(model, "hf.json", output);
        set(&mut args, "--max-new-tokens", "6");
        args.extend(["--temperature", "0"]);
        args
    };
    work.cai_ok(&greedy("self.jsonl"));
    let mut args = greedy("critic.jsonl");
    args.extend(["--critic", critic]);
    let output = work.cai_ok(&args);
    let err = stderr(&output);
    assert!(err.contains("by the critic critic"), "{err}");
    assert!(err.contains("wrote 3 records with 2 rounds"), "{err}");

    // The model's own answers, the critic's critiques and revisions.
    let alone = read_jsonl(&work.path("self.jsonl"));
    let judged = read_jsonl(&work.path("critic.jsonl"));
    let texts = |records: &[Value], key: &str| -> Vec<String> {
        records
            .iter()
            .flat_map(|r| r["rounds"].as_array().unwrap().clone())
            .map(|round| round[key].as_str().unwrap().to_owned())
            .collect()
    };
    for (a, j) in alone.iter().zip(&judged) {
        assert_eq!(a["initial_response"], j["initial_response"]);
    }
    assert_ne!(texts(&alone, "critique"), texts(&judged, "critique"));
    assert_ne!(texts(&alone, "revision"), texts(&judged, "revision"));
    let config: Value = serde_json::from_str(&work.read("critic.config.json")).unwrap();
    assert_eq!(config["critic"], "critic");

    // Resuming without the critic is another run; naming the model itself is no critic.
    let output = work.cai(&greedy("critic.jsonl"));
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("critic was \"critic\", now unset"), "{err}");
    let mut args = greedy("same.jsonl");
    args.extend(["--critic", model]);
    work.cai_ok(&args);
    assert_eq!(work.read("same.jsonl"), work.read("self.jsonl"));
    assert!(!work.read("same.config.json").contains("critic"));

    // A critic that does not load fails before anything is written.
    let mut args = greedy("missing.jsonl");
    args.extend(["--critic", "no-such-dir/"]);
    let err = assert_exit(&work.cai(&args), 1);
    assert!(err.contains("loading the critic (--critic)"), "{err}");
    assert!(!work.path("missing.jsonl").exists());
}

#[test]
fn bad_inputs_are_reported_and_leave_the_output_untouched() {
    let work = Workdir::new();
    let model = model(&work);
    work.write("prompts.jsonl", PROMPTS);
    let kept = "{\"id\": \"bread\", \"note\": \"an earlier record\"}\n";
    work.write("sl.jsonl", kept);
    let toml = "[[critique_revision]]\nid = \"harm\"\ncritique_request = \"Harmful?\"\n\
                revision_request = \"Fix it.\"\n";
    let cases: [(&str, String, &str, &str); 6] = [
        (
            "missing.toml",
            toml.replace("revision_request = \"Fix it.\"\n", ""),
            "prompts.jsonl",
            "missing field `revision_request`",
        ),
        (
            "empty.toml",
            "critique_revision = []\n".into(),
            "prompts.jsonl",
            "empty.toml: critique_revision: the list is empty",
        ),
        (
            "unknown.toml",
            toml.replace("id =", "name =\"x\"\nid ="),
            "prompts.jsonl",
            "unknown field `name`",
        ),
        (
            "anthropic.json",
            r#"{"harm": {"prompt": ["Harmful?"]}}"#.into(),
            "prompts.jsonl",
            "anthropic.json: harm.edit_request: missing",
        ),
        (
            "choices.json",
            r#"["Which is kinder?\nOptions:"]"#.into(),
            "prompts.jsonl",
            "no critique/revision principles",
        ),
        (
            "good.toml",
            toml.to_owned(),
            "bad_prompts.jsonl",
            "bad_prompts.jsonl:2: expected \"prompt\"",
        ),
    ];
    work.write(
        "bad_prompts.jsonl",
        "{\"prompt\": \"fine\"}\n{\"promt\": \"typo\"}\n",
    );
    for (file, text, prompts, expected) in cases {
        work.write(file, &text);
        let output = work.cai(&[
            "critique",
            "--model",
            model,
            "--prompts",
            prompts,
            "--constitution",
            file,
            "--output",
            "sl.jsonl",
        ]);
        let err = assert_exit(&output, 1);
        assert!(
            err.contains(expected),
            "{file}: expected {expected:?} in\n{err}"
        );
        assert_eq!(work.read("sl.jsonl"), kept, "{file}");
        assert!(!work.path("sl.config.json").exists());
    }
    // An unknown name is a usage error.
    let output = work.cai(&critique_args(model, "nonesuch", "sl.jsonl"));
    assert!(assert_exit(&output, 2).contains("built in: default"));
    assert_eq!(work.read("sl.jsonl"), kept);
    // The built-in few-shot block does not fit the tiny model's 1024 positions.
    let output = work.cai(&critique_args(model, "default", "sl.jsonl"));
    let err = assert_exit(&output, 1);
    assert!(err.contains("prefilling the few-shot examples"), "{err}");
    assert!(err.contains("max_position_embeddings (1024)"), "{err}");
    assert_eq!(work.read("sl.jsonl"), kept);
}

#[cfg(unix)]
#[test]
fn a_killed_run_resumes_to_the_records_of_an_uninterrupted_one() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let work = Workdir::new();
    let model = model(&work);
    // Enough prompts (about 10 ms each) that the run is still going when it is killed.
    let prompts: String = (0..120)
        .map(|i| format!("{{\"prompt\": \"How do I bake bread number {i}?\"}}\n"))
        .collect();
    work.write("prompts.jsonl", &prompts);
    work.write("hf.json", HUGGING_FACE);
    let args = |output: &'static str| {
        let mut args = critique_args(model, "hf.json", output);
        args.extend(["--batch-size", "1"]);
        set(&mut args, "--max-new-tokens", "8");
        args
    };
    work.cai_ok(&args("whole.jsonl"));

    let mut child = Command::new(env!("CARGO_BIN_EXE_cai"))
        .args(args("killed.jsonl"))
        .current_dir(work.path(""))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("running cai");
    let start = Instant::now();
    let lines = |path: &Path| std::fs::read_to_string(path).map_or(0, |t| t.lines().count());
    while lines(&work.path("killed.jsonl")) < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no records in 60 s"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "cai finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let written = lines(&work.path("killed.jsonl"));
    assert!(written < 120, "the run finished before the kill");

    let output = work.cai_ok(&args("killed.jsonl"));
    assert!(
        stderr(&output).contains("resuming after"),
        "{}",
        stderr(&output)
    );
    let whole = read_jsonl(&work.path("whole.jsonl"));
    let resumed = read_jsonl(&work.path("killed.jsonl"));
    assert_eq!(ids(&resumed), ids(&whole));
    assert_eq!(resumed, whole);
    let unique: HashSet<&str> = ids(&resumed).into_iter().collect();
    assert_eq!(unique.len(), 120);
}

#[test]
fn sft_trains_on_the_selected_revisions_and_helpful_samples() {
    let work = Workdir::new();
    let model = model(&work);
    work.write("prompts.jsonl", PROMPTS);
    work.write("helpful.jsonl", "{\"prompt\": \"How do I bake a cake?\"}\n");
    work.write("hf.json", HUGGING_FACE);
    let mut args = critique_args(model, "hf.json", "sl.jsonl");
    work.cai_ok(&args);
    let records = work.read("sl.jsonl");
    // Helpful samples may be added to a finished run, which keeps its records.
    args.extend(["--helpful-prompts", "helpful.jsonl"]);
    let output = work.cai_ok(&args);
    assert!(
        stderr(&output).contains("already done"),
        "{}",
        stderr(&output)
    );
    assert_eq!(work.read("sl.jsonl"), records);
    assert_eq!(read_jsonl(&work.path("sl.helpful.jsonl")).len(), 1);

    // One step per example: 3 prompts × rounds, plus the helpful samples.
    let steps = |out: &str, extra: &[&str]| -> usize {
        let mut args = vec![
            "sft",
            "--model",
            model,
            "--data",
            "sl.jsonl",
            "--output",
            out,
            "--batch-size",
            "1",
            "--format",
            "transcript",
        ];
        args.extend_from_slice(extra);
        work.cai_ok(&args);
        read_jsonl(&work.path(&format!("{out}/metrics.jsonl")))
            .iter()
            .filter(|r| r["split"] == "train")
            .count()
    };
    assert_eq!(steps("all", &[]), 6);
    assert_eq!(steps("first", &["--revision-rounds", "1"]), 3);
    let mixed = [
        "--revision-rounds",
        "1",
        "--helpful-data",
        "sl.helpful.jsonl",
        "--helpful-ratio",
        "2",
    ];
    assert_eq!(steps("mixed", &mixed), 3 + 6);
    let saved: Value = serde_json::from_str(&work.read("mixed/sft_config.json")).unwrap();
    assert_eq!(saved["sft"]["revision_rounds"], 1);
    assert_eq!(saved["sft"]["helpful"]["ratio"], 2.0);

    let output = work.cai(&[
        "sft",
        "--model",
        model,
        "--data",
        "sl.jsonl",
        "--output",
        "x",
        "--helpful-ratio",
        "1",
    ]);
    assert!(assert_exit(&output, 2).contains("--helpful-ratio needs --helpful-data"));
}
