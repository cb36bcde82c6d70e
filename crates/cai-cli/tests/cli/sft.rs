//! `cai sft` and `cai merge-lora`: a full fine-tune and a LoRA run on a toy set, merging,
//! exact resume, Ctrl-C, data errors, the transcript format and the config file.

use std::path::Path;

use serde_json::Value;

use crate::helpers::{assert_exit, read_jsonl, stderr, stdout, Workdir};

/// A learnable toy set: 16 short records, half prompt/completion pairs, half dialogues.
fn toy_data() -> String {
    let mut lines = String::new();
    for i in 0..8 {
        let pair = serde_json::json!({
            "prompt": format!("Human: What is {i} plus {i}?\n\nAssistant:"),
            "completion": format!(" {}.", 2 * i),
        });
        let dialogue = serde_json::json!({"messages": [
            {"role": "user", "content": format!("Say the number {i}.")},
            {"role": "assistant", "content": format!("The number {i}.")},
        ]});
        lines += &format!("{pair}\n{dialogue}\n");
    }
    lines
}

/// `cai sft` on `data.jsonl` into `output`: batches of 4 (four steps an epoch), at most
/// `steps` steps, then `extra` flags.
fn sft_args<'a>(
    model: &'a str,
    output: &'a str,
    steps: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "sft",
        "--model",
        model,
        "--data",
        "data.jsonl",
        "--output",
        output,
        "--batch-size",
        "4",
        "--epochs",
        "100",
        "--max-steps",
        steps,
    ];
    args.extend_from_slice(extra);
    args
}

/// `cai sft` into `out` with steps and epochs enough to be still training when a test acts
/// on the running process.
fn endless_sft_args(model: &str) -> Vec<&str> {
    let mut args = sft_args(model, "out", "1000000", &[]);
    let epochs = args.iter().position(|a| *a == "--epochs").unwrap() + 1;
    args[epochs] = "1000000";
    args
}

/// The training records of a `metrics.jsonl`.
fn train_records(path: &Path) -> Vec<Value> {
    read_jsonl(path)
        .into_iter()
        .filter(|r| r["split"] == "train")
        .collect()
}

fn losses(records: &[Value]) -> Vec<f64> {
    records
        .iter()
        .map(|r| r["loss"].as_f64().unwrap())
        .collect()
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// The tensor names in a safetensors file (its JSON header).
fn tensor_names(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    header
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k != "__metadata__")
        .collect()
}

#[test]
fn full_fine_tune_writes_a_model_and_lowers_the_loss() {
    let work = Workdir::new();
    let model = work.tiny_model();
    work.write("data.jsonl", &toy_data());
    let args = sft_args(
        model,
        "out",
        "20",
        &[
            "--learning-rate",
            "1e-3",
            "--eval-data",
            "data.jsonl",
            "--eval-every",
            "8",
        ],
    );
    let output = work.cai_ok(&args);
    let out = stdout(&output);
    assert!(out.contains("trained 20 steps: train loss "), "{out}");
    assert!(out.contains("eval loss "), "{out}");

    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "sft_config.json",
        "metrics.jsonl",
    ] {
        assert!(work.path("out").join(file).is_file(), "missing out/{file}");
    }
    assert!(!work.path("out/adapter_model.safetensors").exists());
    let base = std::fs::read(work.path("model/model.safetensors")).unwrap();
    let tuned = std::fs::read(work.path("out/model.safetensors")).unwrap();
    assert_ne!(base, tuned, "training changed no weight");

    let saved: Value = serde_json::from_str(&work.read("out/sft_config.json")).unwrap();
    assert_eq!(saved["sft"]["learning_rate"], 1e-3);
    assert_eq!(saved["sft"]["max_steps"], 20);
    assert_eq!(saved["sft"]["lora"], Value::Null);

    let train = train_records(&work.path("out/metrics.jsonl"));
    let steps: Vec<u64> = train.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (1..=20).collect::<Vec<_>>());
    for field in ["lr", "grad_norm", "tokens_per_s", "epoch"] {
        assert!(
            train.iter().all(|r| r[field].is_number()),
            "{field}: {train:?}"
        );
    }
    assert_eq!(train[19]["epoch"], 5.0);
    let loss = losses(&train);
    let (first, last) = (mean(&loss[..4]), mean(&loss[16..]));
    assert!(last < 0.9 * first, "loss did not go down: {loss:?}");

    let evals: Vec<u64> = read_jsonl(&work.path("out/metrics.jsonl"))
        .iter()
        .filter(|r| r["split"] == "eval")
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(evals.first(), Some(&8), "{evals:?}");
    assert_eq!(evals.last(), Some(&20), "{evals:?}");
}

#[test]
fn lora_adapter_merges_into_a_model_that_generates() {
    let work = Workdir::new();
    let model = work.tiny_model();
    work.write("data.jsonl", &toy_data());
    let args = sft_args(
        model,
        "adapter",
        "20",
        &["--lora", "--learning-rate", "1e-2"],
    );
    let out = stdout(&work.cai_ok(&args));
    assert!(out.contains("PEFT adapter"), "{out}");

    assert!(!work.path("adapter/model.safetensors").exists());
    assert!(work.path("adapter/tokenizer.json").is_file());
    let config: Value = serde_json::from_str(&work.read("adapter/adapter_config.json")).unwrap();
    assert_eq!(config["r"], 8);
    assert_eq!(
        config["target_modules"],
        serde_json::json!(["q_proj", "v_proj"])
    );
    assert_eq!(config["base_model_name_or_path"], "model");
    let names = tensor_names(&work.path("adapter/adapter_model.safetensors"));
    // Two adapted projections × two layers × (A, B).
    assert_eq!(names.len(), 8, "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("base_model.model.model.layers.")),
        "{names:?}"
    );
    assert!(
        names.contains(&"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight".into())
    );

    let merge = [
        "merge-lora",
        "--model",
        model,
        "--adapter",
        "adapter",
        "--output",
        "merged",
    ];
    let merged_out = work.cai_ok(&merge);
    assert!(stderr(&merged_out).is_empty(), "{}", stderr(&merged_out));
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "merge_lora_config.json",
    ] {
        assert!(
            work.path("merged").join(file).is_file(),
            "missing merged/{file}"
        );
    }
    let again = work.cai(&merge);
    assert!(assert_exit(&again, 2).contains("--overwrite"));

    // The merged model runs, and gives a training completion more probability than the base.
    work.write(
        "prompts.jsonl",
        "{\"prompt\": \"Human: What is 3 plus 3?\\n\\nAssistant:\"}\n",
    );
    for dir in ["merged", model] {
        let out = format!("{dir}.gen.jsonl");
        work.cai_ok(&[
            "generate",
            "--model",
            dir,
            "--input",
            "prompts.jsonl",
            "--output",
            &out,
            "--temperature",
            "0",
            "--max-new-tokens",
            "6",
        ]);
    }
    work.write(
        "pairs.jsonl",
        "{\"prompt\": \"Human: What is 3 plus 3?\\n\\nAssistant:\", \"continuation\": \" 6.\"}\n",
    );
    let mut logprobs = Vec::new();
    for dir in ["merged", model] {
        let out = format!("{dir}.score.jsonl");
        work.cai_ok(&[
            "score",
            "--model",
            dir,
            "--input",
            "pairs.jsonl",
            "--output",
            &out,
        ]);
        logprobs.push(read_jsonl(&work.path(&out))[0]["logprob"].as_f64().unwrap());
    }
    assert!(
        logprobs[0] > logprobs[1],
        "merged {} vs base {}",
        logprobs[0],
        logprobs[1]
    );

    // Merging onto another base works but warns.
    work.tiny_model_of("llama", "other");
    let other = work.cai_ok(&[
        "merge-lora",
        "--model",
        "other",
        "--adapter",
        "adapter",
        "--output",
        "merged2",
    ]);
    let err = stderr(&other);
    assert!(
        err.contains("warning: the adapter was trained on 'model'"),
        "{err}"
    );
}

/// Run `args` (which save every 2 steps and keep every checkpoint), then cut the run back to
/// its step-2 checkpoint and resume: the metrics and the final weights must be those of the
/// uninterrupted run, bit for bit.
fn assert_resume_is_exact(extra: &[&str], weights: &str) {
    let work = Workdir::new();
    let model = work.tiny_model();
    work.write("data.jsonl", &toy_data());
    let mut flags = vec![
        "--learning-rate",
        "1e-3",
        "--save-every",
        "2",
        "--keep-last",
        "all",
    ];
    flags.extend_from_slice(extra);
    let args = sft_args(model, "out", "6", &flags);
    work.cai_ok(&args);
    let full_metrics = train_records(&work.path("out/metrics.jsonl"));
    let full_weights = std::fs::read(work.path("out").join(weights)).unwrap();
    assert_eq!(full_metrics.len(), 6);

    // A finished run is neither retrained nor overwritten without asking.
    assert!(assert_exit(&work.cai(&args), 2).contains("--overwrite"));
    // As if the run had stopped after step 2 (step 6 crosses an epoch boundary).
    std::fs::remove_file(work.path("out").join(weights)).unwrap();
    for step in [4, 6] {
        std::fs::remove_dir_all(work.path(&format!("out/checkpoints/checkpoint-{step}"))).unwrap();
    }
    assert!(assert_exit(&work.cai(&args), 2).contains("--resume"));

    let mut resume = args.clone();
    resume.push("--resume");
    let mut other = resume.clone();
    other.extend(["--seed", "1"]);
    let err = assert_exit(&work.cai(&other), 2);
    assert!(err.contains("seed was 0, now 1"), "{err}");
    work.cai_ok(&resume);
    let resumed_metrics = train_records(&work.path("out/metrics.jsonl"));
    assert_eq!(resumed_metrics.len(), 6);
    for (full, resumed) in full_metrics.iter().zip(&resumed_metrics) {
        for field in ["step", "loss", "lr", "grad_norm", "epoch"] {
            assert_eq!(full[field], resumed[field], "{field}: {full} vs {resumed}");
        }
    }
    let resumed_weights = std::fs::read(work.path("out").join(weights)).unwrap();
    assert!(
        full_weights == resumed_weights,
        "the resumed run's {weights} differs"
    );
}

#[test]
fn resume_reproduces_the_uninterrupted_run() {
    assert_resume_is_exact(&[], "model.safetensors");
}

#[test]
fn resume_reproduces_the_uninterrupted_lora_run() {
    assert_resume_is_exact(&["--lora"], "adapter_model.safetensors");
}

#[cfg(unix)]
#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_130() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let work = Workdir::new();
    let model = work.tiny_model();
    work.write("data.jsonl", &toy_data());
    let args = endless_sft_args(model);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cai"))
        .args(&args)
        .current_dir(work.path(""))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running cai");
    // Wait until it trains, so that the Ctrl-C handler is installed.
    let metrics = work.path("out/metrics.jsonl");
    let start = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no training step in 60 s"
        );
        if child.try_wait().unwrap().is_some() {
            let output = child.wait_with_output().unwrap();
            panic!("cai exited before the signal:\n{}", stderr(&output));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(sent.success());
    let output = child.wait_with_output().expect("waiting for cai");
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(130), "stderr:\n{err}");
    assert!(
        err.contains("interrupted: saved the checkpoint out/checkpoints/checkpoint-"),
        "{err}"
    );
    assert!(
        err.contains("resume with: cai sft --model model") && err.contains(" --resume"),
        "{err}"
    );

    let last_step = train_records(&metrics).last().unwrap()["step"]
        .as_u64()
        .unwrap();
    let checkpoint = work.path(&format!("out/checkpoints/checkpoint-{last_step}"));
    assert!(
        checkpoint.join("trainer_state.json").is_file(),
        "no {}",
        checkpoint.display()
    );
    assert!(!work.path("out/model.safetensors").exists());
    // Without --resume the unfinished run is not clobbered.
    assert!(assert_exit(&work.cai(&args), 2).contains("--resume"));
}

#[test]
fn an_empty_data_file_is_an_error_naming_it() {
    let work = Workdir::new();
    let model = work.tiny_model();
    for text in ["", "\n \n"] {
        work.write("data.jsonl", text);
        let err = assert_exit(&work.cai(&sft_args(model, "out", "2", &["--overwrite"])), 1);
        assert!(
            err.contains("data.jsonl") && err.contains("no records"),
            "{err}"
        );
        assert!(!work.path("out/model.safetensors").exists());
    }
}

#[test]
fn a_bad_data_line_is_reported_with_file_and_line() {
    let work = Workdir::new();
    let model = work.tiny_model();
    let data = toy_data();
    let mut lines: Vec<&str> = data.lines().collect();
    lines[2] = "{\"prompt\": \"no completion\", \"answer\": \"x\"}";
    work.write("data.jsonl", &(lines.join("\n") + "\n"));
    let output = work.cai(&sft_args(model, "out", "2", &[]));
    let err = assert_exit(&output, 1);
    assert!(err.contains("data.jsonl:3: "), "{err}");
    assert!(err.contains("`prompt` and `completion`"), "{err}");
}

#[test]
fn dialogues_train_in_the_transcript_format() {
    let work = Workdir::new();
    let model = work.tiny_model();
    let dialogue = serde_json::json!({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "How do I bake bread?"},
        {"role": "assistant", "content": "Mix flour, water, salt and yeast."},
        {"role": "user", "content": "And then?"},
        {"role": "assistant", "content": "Bake it."},
    ]});
    work.write("data.jsonl", &format!("{dialogue}\n").repeat(8));
    let args = sft_args(
        model,
        "out",
        "10",
        &["--format", "transcript", "--learning-rate", "1e-3"],
    );
    work.cai_ok(&args);
    let saved: Value = serde_json::from_str(&work.read("out/sft_config.json")).unwrap();
    assert_eq!(saved["sft"]["format"], "transcript");
    let loss = losses(&train_records(&work.path("out/metrics.jsonl")));
    assert_eq!(loss.len(), 10);
    assert!(loss[9] < loss[0], "{loss:?}");

    // The tiny tokenizer has no chat template to render them with.
    let args = sft_args(model, "out2", "10", &["--format", "chat-template"]);
    let err = assert_exit(&work.cai(&args), 1);
    assert!(
        err.contains("data.jsonl:1: ") && err.contains("chat_template"),
        "{err}"
    );
}

#[test]
fn a_config_file_sets_the_settings_and_flags_override_it() {
    let work = Workdir::new();
    let model = work.tiny_model();
    work.write("data.jsonl", &toy_data());
    work.write(
        "sft.toml",
        "learning_rate = 1e-3\nmax_steps = 3\nbatch_size = 4\nschedule = \"cosine\"\n\
         [lora]\nr = 2\n",
    );
    work.cai_ok(&[
        "sft",
        "--model",
        model,
        "--data",
        "data.jsonl",
        "--output",
        "out",
        "--config",
        "sft.toml",
        "--max-steps",
        "2",
        "--lora-alpha",
        "4",
    ]);
    let saved: Value = serde_json::from_str(&work.read("out/sft_config.json")).unwrap();
    let sft = &saved["sft"];
    assert_eq!(sft["learning_rate"], 1e-3);
    assert_eq!(sft["max_steps"], 2);
    assert_eq!(sft["schedule"], "cosine");
    assert_eq!(sft["epochs"], 1, "an unset key keeps its default");
    assert_eq!(sft["lora"]["r"], 2);
    assert_eq!(sft["lora"]["alpha"], 4.0);
    assert_eq!(
        sft["lora"]["target_modules"],
        serde_json::json!(["q_proj", "v_proj"])
    );
    assert_eq!(train_records(&work.path("out/metrics.jsonl")).len(), 2);
}

#[test]
fn bad_settings_are_usage_errors() {
    let work = Workdir::new();
    let model = work.tiny_model();
    work.write("data.jsonl", &toy_data());
    let base = [
        "sft",
        "--model",
        model,
        "--data",
        "data.jsonl",
        "--output",
        "out",
    ];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        work.cai(&args)
    };
    work.write("unknown.toml", "learning_rate = 1e-3\nlearning_rat = 2\n");
    let err = assert_exit(&with(&["--config", "unknown.toml"]), 2);
    assert!(
        err.contains("unknown.toml") && err.contains("learning_rat"),
        "{err}"
    );
    work.write("lora.toml", "[lora]\nrank = 4\n");
    let err = assert_exit(&with(&["--config", "lora.toml"]), 2);
    assert!(err.contains("unknown key `rank` in [lora]"), "{err}");
    let err = assert_exit(&with(&["--lora-r", "4"]), 2);
    assert!(err.contains("--lora-r needs --lora"), "{err}");
    let err = assert_exit(&with(&["--lora", "--lora-dropout", "1.5"]), 2);
    assert!(err.contains("dropout"), "{err}");
    assert_exit(&with(&["--batch-size", "0"]), 2);
    assert_exit(&with(&["--schedule", "step"]), 2);
    assert_exit(&with(&["--resume", "--overwrite"]), 2);
    let err = assert_exit(
        &work.cai(&[
            "sft",
            "--model",
            model,
            "--data",
            "data.jsonl",
            "--output",
            model,
        ]),
        2,
    );
    assert!(err.contains("is the --model directory"), "{err}");
    assert!(!work.path("out").exists());
}

#[cfg(unix)]
#[test]
fn a_second_trainer_on_the_same_output_fails_at_once_naming_the_pid() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let work = Workdir::new();
    let model = work.tiny_model();
    work.write("data.jsonl", &toy_data());
    let args = endless_sft_args(model);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cai"))
        .args(&args)
        .current_dir(work.path(""))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running cai");
    let metrics = work.path("out/metrics.jsonl");
    let start = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < 2 {
        assert!(start.elapsed() < Duration::from_secs(60), "no step in 60 s");
        assert!(child.try_wait().unwrap().is_none(), "the first run ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    // --overwrite would delete the first run's files; the lock refuses before that.
    let mut second = sft_args(model, "out", "2", &["--overwrite"]);
    let epochs = second.iter().position(|a| *a == "--epochs").unwrap() + 1;
    second[epochs] = "1";
    let started = Instant::now();
    // Exit 1 as every other locked output: the arguments are fine, the folder is busy.
    let err = assert_exit(&work.cai(&second), 1);
    let pid = child.id();
    assert!(
        err.contains(&format!(
            "out is being written by another cai process (PID {pid})"
        )),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "not at once");
    assert!(metrics.is_file(), "the first run's metrics were deleted");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first run was disturbed"
    );
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    child.wait().unwrap();
    // The lock died with its holder: the output can be taken over.
    work.cai_ok(&second);
}

#[test]
fn a_diverging_rate_stops_and_its_resume_advice_works() {
    let work = Workdir::new();
    let model = work.tiny_model();
    work.write("data.jsonl", &toy_data());
    // From the start, 1e6 diverges at step 1: nothing is saved, no model is written.
    let flags = [
        "--learning-rate",
        "1e6",
        "--save-every",
        "1",
        "--max-grad-norm",
        "0",
    ];
    let err = assert_exit(&work.cai(&sft_args(model, "fresh", "6", &flags)), 1);
    assert!(err.contains("training diverged at step 1"), "{err}");
    assert!(err.contains("no checkpoint was saved before it"), "{err}");
    assert!(!work.path("fresh/checkpoints/checkpoint-1").exists());
    assert!(!work.path("fresh/model.safetensors").exists());
    let again = err
        .lines()
        .find_map(|l| l.split_once("to start again at a tenth of the rate: "))
        .map(|(_, command)| command.to_owned())
        .unwrap_or_else(|| panic!("no command in:\n{err}"));
    assert!(
        again.ends_with("--overwrite --learning-rate 1e5"),
        "{again}"
    );
    // The command is taken (the folder the failed run left is no obstacle); 1e5 still
    // diverges, and says so.
    let words: Vec<&str> = again.split(' ').collect();
    let err = assert_exit(&work.cai(&words[1..]), 1);
    assert!(err.contains("training diverged at step 1"), "{err}");
    assert!(err.contains("--overwrite --learning-rate 1e4"), "{err}");

    // Two good steps, as if stopped there, then resumed at 1e6.
    let good = [
        "--learning-rate",
        "1e-3",
        "--save-every",
        "2",
        "--keep-last",
        "all",
        "--max-grad-norm",
        "0",
    ];
    work.cai_ok(&sft_args(model, "out", "6", &good));
    std::fs::remove_file(work.path("out/model.safetensors")).unwrap();
    for step in [4, 6] {
        std::fs::remove_dir_all(work.path(&format!("out/checkpoints/checkpoint-{step}"))).unwrap();
    }
    let mut bad = sft_args(model, "out", "6", &good);
    let lr = bad.iter().position(|a| *a == "1e-3").unwrap();
    bad[lr] = "1e6";
    // Without asking, the new rate is refused, and the message says how to ask.
    let mut plain = bad.clone();
    plain.push("--resume");
    let err = assert_exit(&work.cai(&plain), 2);
    assert!(
        err.contains("learning_rate was 0.001, now 1000000.0"),
        "{err}"
    );
    assert!(err.contains("--allow-config-change learning_rate"), "{err}");
    bad.extend(["--resume", "--allow-config-change", "learning_rate"]);
    let output = work.cai(&bad);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "resuming out/checkpoints/checkpoint-2 with a changed setting: \
             learning_rate was 0.001, now 1000000.0"
        ),
        "{err}"
    );
    assert!(err.contains("training diverged at step 3"), "{err}");
    assert!(
        err.contains("the last good checkpoint is out/checkpoints/checkpoint-2"),
        "{err}"
    );
    assert!(!work.path("out/checkpoints/checkpoint-3").exists());
    let advice = err
        .lines()
        .find_map(|l| l.split_once("to resume at the rate that trained well: "))
        .map(|(_, command)| command.to_owned())
        .unwrap_or_else(|| panic!("no resume command in:\n{err}"));
    assert!(
        advice.ends_with("--resume --learning-rate 1e-3 --allow-config-change learning_rate"),
        "{advice}"
    );
    // The advice, run as printed, finishes the run.
    let words: Vec<&str> = advice.split(' ').collect();
    assert_eq!(words[0], "cai");
    let output = work.cai_ok(&words[1..]);
    assert!(
        stdout(&output).contains("trained 6 steps"),
        "{}",
        stdout(&output)
    );
    let records = train_records(&work.path("out/metrics.jsonl"));
    assert_eq!(records.len(), 6);
    assert_eq!(records[2]["lr"], 1e-3);
}

#[test]
fn examples_cut_to_no_target_are_warned_about_and_none_left_fails() {
    let work = Workdir::new();
    let model = work.tiny_model();
    let long = "The assistant should be helpful, honest and harmless. ".repeat(6);
    let record = |id: &str, prompt: &str| {
        serde_json::json!({"id": id, "prompt": prompt, "completion": " Yes."}).to_string()
    };
    work.write(
        "data.jsonl",
        &format!("{}\n{}\n", record("short", "Hi?"), record("long", &long)),
    );
    let output = work.cai_ok(&sft_args(model, "out", "2", &["--max-length", "16"]));
    let err = stderr(&output);
    assert!(
        err.contains("data.jsonl: 1 of 2 examples lose every target token to max_length 16"),
        "{err}"
    );
    assert!(err.contains("id 'long' (line 2)"), "{err}");

    work.write("data.jsonl", &format!("{}\n", record("long", &long)));
    let err = assert_exit(
        &work.cai(&sft_args(model, "none", "2", &["--max-length", "16"])),
        1,
    );
    assert!(
        err.contains("every example loses all its target tokens to max_length 16"),
        "{err}"
    );
    assert!(err.contains("--max-length"), "{err}");
    assert!(!work.path("none/model.safetensors").exists());
}

/// After a SIGKILL (at whatever point of a step or a save it lands) and `--resume`, the
/// losses, gradient norms and final weights are those of an uninterrupted run, bit for bit.
#[cfg(unix)]
#[test]
fn a_run_killed_and_resumed_matches_the_uninterrupted_run_bit_for_bit() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let work = Workdir::new();
    let model = work.tiny_model();
    work.write("data.jsonl", &toy_data());
    let flags = [
        "--learning-rate",
        "1e-3",
        "--save-every",
        "3",
        "--keep-last",
        "2",
        "--grad-accum",
        "2",
    ];
    work.cai_ok(&sft_args(model, "full", "60", &flags));
    let args = sft_args(model, "out", "60", &flags);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cai"))
        .args(&args)
        .current_dir(work.path(""))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("running cai");
    let start = Instant::now();
    while !work.path("out/checkpoints/checkpoint-6").is_dir() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no checkpoint in 60 s"
        );
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    if work.path("out/model.safetensors").exists() {
        // It finished before the signal: cut it back to checkpoint 6 as a kill would have.
        std::fs::remove_file(work.path("out/model.safetensors")).unwrap();
        for dir in std::fs::read_dir(work.path("out/checkpoints")).unwrap() {
            let dir = dir.unwrap().path();
            if dir.file_name().unwrap() != "checkpoint-6" {
                std::fs::remove_dir_all(dir).unwrap();
            }
        }
    }
    let mut resume = args.clone();
    resume.push("--resume");
    work.cai_ok(&resume);
    let full = train_records(&work.path("full/metrics.jsonl"));
    let resumed = train_records(&work.path("out/metrics.jsonl"));
    assert_eq!(full.len(), 60);
    assert_eq!(resumed.len(), 60);
    for (a, b) in full.iter().zip(&resumed) {
        for field in ["step", "loss", "grad_norm", "lr"] {
            assert_eq!(a[field], b[field], "{field}: {a} vs {b}");
        }
    }
    let a = std::fs::read(work.path("full/model.safetensors")).unwrap();
    let b = std::fs::read(work.path("out/model.safetensors")).unwrap();
    assert!(a == b, "the resumed model differs");
}

/// `--gradient-checkpointing` reaches the trainer (recorded in `sft_config.json`, losses as
/// without it), and a run without it writes no such key.
#[test]
fn gradient_checkpointing_is_a_flag_and_trains_alike() {
    let work = Workdir::new();
    let model = work.tiny_model();
    work.write("data.jsonl", &toy_data());
    work.cai_ok(&sft_args(model, "plain", "3", &[]));
    work.cai_ok(&sft_args(
        model,
        "recomputed",
        "3",
        &["--gradient-checkpointing"],
    ));
    let plain: Value = serde_json::from_str(&work.read("plain/sft_config.json")).unwrap();
    let recomputed: Value = serde_json::from_str(&work.read("recomputed/sft_config.json")).unwrap();
    assert_eq!(plain["sft"].get("gradient_checkpointing"), None);
    assert_eq!(recomputed["sft"]["gradient_checkpointing"], true);
    let a = losses(&train_records(&work.path("plain/metrics.jsonl")));
    let b = losses(&train_records(&work.path("recomputed/metrics.jsonl")));
    assert_eq!(a.len(), 3);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-4 * x.abs(), "{a:?} vs {b:?}");
    }
}
