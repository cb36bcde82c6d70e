//! `cai chat` driven from a pipe: replies per line, /reset, /quit, end of input.

use crate::helpers::{assert_success, stdout, Workdir};

#[test]
fn reset_forgets_and_quit_stops() {
    let work = Workdir::new();
    let model = work.tiny_model();
    let args = [
        "chat",
        "--model",
        model,
        "--temperature",
        "0",
        "--max-new-tokens",
        "5",
    ];
    // Greedy: after /reset the same message gets the same reply; nothing after /quit is read.
    let output = work.cai_with_stdin(&args, "hello there\n/reset\nhello there\n/quit\nnot read\n");
    assert_success(&output, &args);
    let text = stdout(&output);
    let (first, second) = text.split_at(text.len() / 2);
    assert_eq!(first, second, "{text:?}");
    assert!(first.ends_with('\n'));
}

#[test]
fn runs_to_end_of_input_with_context_and_system_message() {
    let work = Workdir::new();
    let model = work.tiny_model();
    work.write(
        "hhh.txt",
        "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?",
    );
    let args = [
        "chat",
        "--model",
        model,
        "--context",
        "hhh.txt",
        "--system",
        "Be kind.",
        "--format",
        "transcript",
        "--max-new-tokens",
        "5",
    ];
    let output = work.cai_with_stdin(&args, "hello\nand again\n");
    assert_success(&output, &args);
}

#[test]
fn a_dialogue_that_fills_the_context_drops_its_oldest_turns() {
    // A 64-token context: a few turns fill it. Every line still gets a reply, the oldest
    // turns are dropped (said on stderr) and the session ends normally.
    let work = Workdir::new();
    work.write("corpus.txt", crate::helpers::CORPUS);
    let model = work.tiny_model_with("llama", "model", "corpus.txt", 64);
    let args = [
        "chat",
        "--model",
        model,
        "--system",
        "Be kind.",
        "--format",
        "transcript",
        "--temperature",
        "0",
        "--max-new-tokens",
        "6",
    ];
    let lines: Vec<String> = (0..12)
        .map(|i| format!("How do I bake bread, question {i}?"))
        .collect();
    let output = work.cai_with_stdin(&args, &(lines.join("\n") + "\n"));
    assert_success(&output, &args);
    let err = crate::helpers::stderr(&output);
    assert!(err.contains("dropped the oldest"), "{err}");
    assert!(err.contains("64"), "{err}");
    assert!(!err.contains("error"), "{err}");
    let replies = stdout(&output).lines().count();
    assert!(
        replies >= lines.len(),
        "{replies} reply lines for {} messages",
        lines.len()
    );
}

#[test]
fn a_message_too_long_for_the_context_is_an_error_naming_the_context() {
    let work = Workdir::new();
    work.write("corpus.txt", crate::helpers::CORPUS);
    let model = work.tiny_model_with("llama", "model", "corpus.txt", 64);
    let args = ["chat", "--model", model, "--max-new-tokens", "4"];
    let long = "bread ".repeat(200);
    let output = work.cai_with_stdin(&args, &format!("{long}\n"));
    let err = crate::helpers::assert_exit(&output, 1);
    assert!(err.contains("context of 64"), "{err}");
}

#[test]
fn a_message_that_does_not_fit_after_the_context_names_the_context_file() {
    let work = Workdir::new();
    work.write("corpus.txt", crate::helpers::CORPUS);
    let model = work.tiny_model_with("llama", "model", "corpus.txt", 64);
    work.write("hhh.txt", "\n\nHuman: Hi\n\nAssistant: Hello!");
    let args = [
        "chat",
        "--model",
        model,
        "--context",
        "hhh.txt",
        "--max-new-tokens",
        "4",
    ];
    let long = "bread ".repeat(200);
    let output = work.cai_with_stdin(&args, &format!("{long}\n"));
    // stderr starts with the context's length, then the error.
    let err = crate::helpers::stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("hhh.txt") && last.contains("context of 64"),
        "{err}"
    );
}
