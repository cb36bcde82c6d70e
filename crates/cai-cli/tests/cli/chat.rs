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
