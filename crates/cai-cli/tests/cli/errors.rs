//! Failures: a message that says what to do, and the exit status (1 for failures, 2 for
//! usage errors).

use crate::helpers::{assert_exit, Workdir};

#[test]
fn missing_model_directory() {
    let work = Workdir::new();
    work.write("in.jsonl", "{\"prompt\": \"x\"}\n");
    let output = work.cai(&[
        "generate",
        "--model",
        "no-such-model",
        "--input",
        "in.jsonl",
        "--output",
        "o.jsonl",
    ]);
    let err = assert_exit(&output, 1);
    assert!(err.contains("'no-such-model' not found"), "{err}");
}

#[test]
fn bad_jsonl_line_names_file_and_line() {
    let work = Workdir::new();
    let model = work.tiny_model();
    work.write(
        "in.jsonl",
        "{\"prompt\": \"fine\"}\n{\"promt\": \"typo\"}\n",
    );
    let output = work.cai(&[
        "generate", "--model", model, "--input", "in.jsonl", "--output", "o.jsonl",
    ]);
    let err = assert_exit(&output, 1);
    assert!(err.contains("in.jsonl:2:"), "{err}");
    assert!(
        err.contains("\"prompt\"") && err.contains("\"messages\""),
        "{err}"
    );

    work.write("pairs.jsonl", "{\"prompt\": \"a\", \"continuation\": 3}\n");
    let output = work.cai(&[
        "score",
        "--model",
        model,
        "--input",
        "pairs.jsonl",
        "--output",
        "s.jsonl",
    ]);
    let err = assert_exit(&output, 1);
    assert!(
        err.contains("pairs.jsonl:1:") && err.contains("expected a string"),
        "{err}"
    );

    work.write("broken.jsonl", "{\"prompt\": \"a\"\n");
    let output = work.cai(&[
        "generate",
        "--model",
        model,
        "--input",
        "broken.jsonl",
        "--output",
        "o.jsonl",
    ]);
    let err = assert_exit(&output, 1);
    assert!(err.contains("broken.jsonl:1:"), "{err}");
}

#[test]
fn usage_errors_exit_with_status_2() {
    let work = Workdir::new();
    work.write("corpus.txt", crate::helpers::CORPUS);
    let err = assert_exit(
        &work.cai(&[
            "init-model",
            "--arch",
            "bert",
            "--output",
            "m",
            "--train-tokenizer",
            "corpus.txt",
        ]),
        2,
    );
    assert!(err.contains("llama") && err.contains("gpt2"), "{err}");
    let err = assert_exit(&work.cai(&["init-model", "--output", "m"]), 2);
    assert!(err.contains("--train-tokenizer"), "{err}");
    assert_exit(
        &work.cai(&[
            "init-model",
            "--output",
            "m",
            "--tokenizer",
            "t.json",
            "--train-tokenizer",
            "corpus.txt",
        ]),
        2,
    );
    let err = assert_exit(
        &work.cai(&[
            "init-model",
            "--output",
            "m",
            "--sliding-window",
            "8",
            "--train-tokenizer",
            "corpus.txt",
        ]),
        2,
    );
    assert!(err.contains("mistral"), "{err}");
    let err = assert_exit(
        &work.cai(&[
            "generate",
            "--model",
            "m",
            "--input",
            "i",
            "--output",
            "o",
            "--temperature",
            "-1",
        ]),
        2,
    );
    assert!(err.contains("--temperature"), "{err}");
    assert_exit(&work.cai(&["generate", "--model", "m"]), 2);
    assert_exit(&work.cai(&["no-such-command"]), 2);
}
