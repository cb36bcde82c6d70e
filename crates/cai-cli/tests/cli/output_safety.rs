//! What cai does with files it does not own: a second writer on a locked output, a foreign or
//! unmarked JSONL at `--output`, an input given as the output, empty inputs, and a stdout that
//! has gone away.

use std::io::Read;
use std::process::{Command, Stdio};

use cai_core::lock::WriterLock;

use crate::helpers::{assert_exit, read_jsonl, Workdir};

const PROMPTS: &str = "{\"id\": \"a\", \"prompt\": \"The capital of France\"}\n\
    {\"id\": \"b\", \"prompt\": \"How do I bake bread?\"}\n";

fn generate<'a>(model: &'a str, input: &'a str, output: &'a str) -> Vec<&'a str> {
    vec![
        "generate",
        "--model",
        model,
        "--input",
        input,
        "--output",
        output,
        "--temperature",
        "0",
        "--max-new-tokens",
        "4",
    ]
}

#[test]
fn a_second_writer_fails_at_once_naming_the_holder() {
    let work = Workdir::new();
    let model = work.tiny_model();
    work.write("in.jsonl", PROMPTS);
    let held = WriterLock::acquire(&work.path("out.jsonl")).unwrap();
    let err = assert_exit(&work.cai(&generate(model, "in.jsonl", "out.jsonl")), 1);
    assert!(err.contains("out.jsonl"), "{err}");
    assert!(err.contains("another cai process"), "{err}");
    assert!(
        err.contains(&format!("PID {}", std::process::id())),
        "{err}"
    );
    assert!(!work.path("out.jsonl").exists());
    drop(held);
    work.cai_ok(&generate(model, "in.jsonl", "out.jsonl"));
    assert_eq!(read_jsonl(&work.path("out.jsonl")).len(), 2);
    // The lock's sidecar goes with the process.
    assert!(!work.path(".out.jsonl.cai-lock").exists());
}

#[test]
fn a_foreign_jsonl_is_not_taken_as_progress() {
    let work = Workdir::new();
    let model = work.tiny_model();
    work.write("in.jsonl", PROMPTS);
    // The user's own file, whose ids happen to match the input's.
    let foreign = "{\"id\": \"a\", \"note\": \"mine\"}\n{\"id\": \"b\", \"note\": \"mine too\"}\n";
    work.write("out.jsonl", foreign);
    let err = assert_exit(&work.cai(&generate(model, "in.jsonl", "out.jsonl")), 1);
    assert!(err.contains("out.config.json"), "{err}");
    assert!(err.contains("--overwrite"), "{err}");
    assert_eq!(work.read("out.jsonl"), foreign);

    // Even beside a config cai saved, records without a completion were not written by
    // cai generate.
    work.cai_ok(&generate(model, "in.jsonl", "real.jsonl"));
    work.write("out.config.json", &work.read("real.config.json"));
    let err = assert_exit(&work.cai(&generate(model, "in.jsonl", "out.jsonl")), 1);
    assert!(err.contains("\"completion\""), "{err}");
    assert!(err.contains("not written by cai generate"), "{err}");
    assert_eq!(work.read("out.jsonl"), foreign);
}

#[test]
fn deleting_the_saved_settings_does_not_let_other_settings_resume() {
    let work = Workdir::new();
    let model = work.tiny_model();
    work.write("in.jsonl", PROMPTS);
    work.cai_ok(&generate(model, "in.jsonl", "out.jsonl"));
    let before = work.read("out.jsonl");
    std::fs::remove_file(work.path("out.config.json")).unwrap();
    let mut other = generate(model, "in.jsonl", "out.jsonl");
    other[8] = "0.7";
    let err = assert_exit(&work.cai(&other), 1);
    assert!(
        err.contains("no ") && err.contains("out.config.json"),
        "{err}"
    );
    assert!(!err.contains("already done"), "{err}");
    assert_eq!(work.read("out.jsonl"), before);
}

#[test]
fn an_input_given_as_the_output_is_refused_and_kept() {
    let work = Workdir::new();
    let model = work.tiny_model();
    work.write("in.jsonl", PROMPTS);
    let err = assert_exit(&work.cai(&generate(model, "in.jsonl", "in.jsonl")), 1);
    assert!(err.contains("also an input"), "{err}");
    let err = assert_exit(&work.cai(&generate(model, "in.jsonl", "./in.jsonl")), 1);
    assert!(err.contains("also an input"), "{err}");
    assert_eq!(work.read("in.jsonl"), PROMPTS);
}

#[test]
fn an_empty_input_is_an_error() {
    let work = Workdir::new();
    let model = work.tiny_model();
    for (name, text) in [("empty.jsonl", ""), ("blank.jsonl", "\n  \n")] {
        work.write(name, text);
        let err = assert_exit(&work.cai(&generate(model, name, "out.jsonl")), 1);
        assert!(err.contains(name) && err.contains("no records"), "{err}");
        assert!(!err.contains("already done"), "{err}");
    }
}

/// Run `cai [flags] init-model …` (a tiny model with a trained tokenizer, in `m/`) with the
/// pipe of `closed` ("stdout" or "stderr") shut before it writes; the other pipe's text and the
/// exit code. init-model prints its summary to stdout, and with `-vvv` the tokenizer trainer
/// logs at trace level, through tracing, to stderr.
fn init_model_with_a_closed(work: &Workdir, closed: &str, flags: &[&str]) -> (String, Option<i32>) {
    work.write("corpus.txt", crate::helpers::CORPUS);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cai"))
        .args(flags)
        .args([
            "init-model",
            "--arch",
            "llama",
            "--output",
            "m",
            "--hidden-size",
            "32",
            "--layers",
            "1",
            "--heads",
            "4",
            "--intermediate-size",
            "64",
            "--vocab-size",
            "300",
            "--train-tokenizer",
            "corpus.txt",
        ])
        .current_dir(work.path(""))
        .env("CAI_CACHE", work.path(".cai-cache"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let mut open: Box<dyn Read> = if closed == "stdout" {
        drop(stdout);
        Box::new(stderr)
    } else {
        drop(stderr);
        Box::new(stdout)
    };
    let mut text = String::new();
    open.read_to_string(&mut text).unwrap();
    (text, child.wait().unwrap().code())
}

#[test]
fn a_closed_stdout_does_not_stop_the_work() {
    let work = Workdir::new();
    let (err, code) = init_model_with_a_closed(&work, "stdout", &[]);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(code, Some(0), "{err}");
    assert!(work.path("m/model.safetensors").is_file());
}

#[test]
fn a_closed_stderr_does_not_stop_the_work_even_while_logging() {
    let work = Workdir::new();
    let (out, code) = init_model_with_a_closed(&work, "stderr", &["-vvv"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(work.path("m/model.safetensors").is_file());
}
