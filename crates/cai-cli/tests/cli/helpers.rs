//! Shared helpers: a temporary working directory per test, running `cai` in it, a tiny model
//! with a tokenizer trained on a few lines, and reading JSONL outputs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tempfile::TempDir;

/// Text the tiny tokenizers are trained on.
pub const CORPUS: &str = "The assistant should be helpful, honest and harmless.\n\
    Human: How do I bake bread?\nAssistant: Mix flour, water, salt and yeast, then bake it.\n\
    Critique: the answer is helpful and harmless, but it could say how long to bake.\n\
    Revision: Mix flour, water, salt and yeast, let it rise, then bake for forty minutes.\n\
    Human: What is the capital of France?\nAssistant: The capital of France is Paris.\n";

/// A temporary directory that `cai` runs in; removed when dropped.
pub struct Workdir {
    dir: TempDir,
}

impl Workdir {
    /// A fresh empty directory.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write a file and return its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("writing a test file");
        path
    }

    /// Read a file as text.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("reading a test file")
    }

    /// Run `cai args...` in the directory.
    pub fn cai(&self, args: &[&str]) -> Output {
        self.cai_with_stdin(args, "")
    }

    /// Run `cai args...` in the directory with `stdin` as its input.
    pub fn cai_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cai"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            // The shipped lab models are extracted here, not into the user's cache.
            .env("CAI_CACHE", self.dir.path().join(".cai-cache"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running cai");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(stdin.as_bytes())
            .expect("writing cai's stdin");
        child.wait_with_output().expect("waiting for cai")
    }

    /// Run `cai args...` and fail the test, showing stderr, unless it succeeds.
    pub fn cai_ok(&self, args: &[&str]) -> Output {
        let output = self.cai(args);
        assert_success(&output, args);
        output
    }

    /// A tiny Llama (hidden 32, 2 layers, vocab 300) with a BPE tokenizer trained on
    /// [`CORPUS`], in `model/`; returns the directory name.
    pub fn tiny_model(&self) -> &'static str {
        self.tiny_model_of("llama", "model")
    }

    /// A tiny model of `arch` in `dir`.
    pub fn tiny_model_of(&self, arch: &str, dir: &'static str) -> &'static str {
        self.write("corpus.txt", CORPUS);
        self.tiny_model_with(arch, dir, "corpus.txt", 256)
    }

    /// A tiny model of `arch` in `dir` (hidden 32, 2 layers, vocab 300) whose tokenizer is
    /// trained on `corpus`, with `max_positions` positions.
    pub fn tiny_model_with(
        &self,
        arch: &str,
        dir: &'static str,
        corpus: &str,
        max_positions: usize,
    ) -> &'static str {
        self.tiny_model_init(arch, dir, max_positions, &["--train-tokenizer", corpus])
    }

    /// A tiny model of `arch` in `dir` (hidden 32, 2 layers, vocab 300) with `max_positions`
    /// positions and `init-model`'s further flags `extra` (its tokenizer, its seed).
    pub fn tiny_model_init(
        &self,
        arch: &str,
        dir: &'static str,
        max_positions: usize,
        extra: &[&str],
    ) -> &'static str {
        let positions = max_positions.to_string();
        let mut args = vec![
            "init-model",
            "--arch",
            arch,
            "--output",
            dir,
            "--hidden-size",
            "32",
            "--layers",
            "2",
            "--heads",
            "4",
            "--intermediate-size",
            "64",
            "--vocab-size",
            "300",
            "--max-positions",
            &positions,
        ];
        args.extend_from_slice(extra);
        self.cai_ok(&args);
        dir
    }
}

/// Fail with the command's stderr unless it exited with status 0.
pub fn assert_success(output: &Output, args: &[&str]) {
    assert!(
        output.status.success(),
        "cai {} failed with {}:\n{}",
        args.join(" "),
        output.status,
        stderr(output)
    );
}

/// Assert the exit status and return stderr.
pub fn assert_exit(output: &Output, code: i32) -> String {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(code), "stderr:\n{err}");
    assert!(err.starts_with("error: "), "stderr:\n{err}");
    err
}

/// The command's stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The command's stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every line of a JSONL file, parsed.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("reading a JSONL output")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}
