//! `cai rl`: PPO against a preference model trained here, with a helpful mixture, sample tables,
//! checkpoints, the curves plot, `--resume` after a finished run, RLOO and DPO, and the errors
//! of missing inputs.

use serde_json::{json, Value};

use crate::helpers::{read_jsonl, stderr, stdout, Workdir};

fn lines(records: &[Value]) -> String {
    records.iter().map(|r| format!("{r}\n")).collect()
}

/// Assert that a command's stderr holds `text`, showing it if not.
fn stderr_has(output: &std::process::Output, text: &str) {
    let err = stderr(output);
    assert!(err.contains(text), "expected {text:?} in:\n{err}");
}

/// Assert that a command's stdout holds `text`, showing it if not.
fn stdout_has(output: &std::process::Output, text: &str) {
    let out = stdout(output);
    assert!(out.contains(text), "expected {text:?} in:\n{out}");
}

/// A tiny policy, a preference model trained from it on toy labels, prompts and pairs.
fn setup(work: &Workdir) -> &'static str {
    work.write("corpus.txt", crate::helpers::CORPUS);
    let model = work.tiny_model_with("llama", "model", "corpus.txt", 256);
    let pairs: Vec<Value> = ["bread", "cake", "a pie", "rolls"]
        .iter()
        .enumerate()
        .map(|(i, what)| {
            let good = format!("Mix flour, water and yeast, then bake {what}.");
            let bad = "I can't help.".to_owned();
            let (a, b, p) = if i % 2 == 0 {
                (good, bad, 0.9)
            } else {
                (bad, good, 0.1)
            };
            json!({"id": i, "prompt": format!("How do I bake {what}?"),
                   "response_a": a, "response_b": b, "p_a": p})
        })
        .collect();
    work.write("prefs.jsonl", &lines(&pairs));
    work.cai_ok(&[
        "train-pm",
        "--model",
        model,
        "--data",
        "prefs.jsonl",
        "--epochs",
        "2",
        "--output",
        "pm",
    ]);
    let prompts = |kind: &str, n: usize| -> String {
        lines(
            &(0..n)
                .map(|i| json!({"id": format!("{kind}-{i}"), "prompt": format!("How do I bake thing {i}?")}))
                .collect::<Vec<_>>(),
        )
    };
    work.write("red.jsonl", &prompts("red", 5));
    work.write("helpful.jsonl", &prompts("helpful", 5));
    model
}

/// `cai rl` with `policy`, the preference model `pm` and the prompts `red.jsonl`, then `rest`.
fn rl_args<'a>(policy: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "rl",
        "--policy",
        policy,
        "--reward",
        "pm",
        "--prompts",
        "red.jsonl",
    ];
    args.extend_from_slice(rest);
    args
}

fn ppo_args(model: &str) -> Vec<&str> {
    rl_args(
        model,
        &[
            "--algo",
            "ppo",
            "--helpful-prompts",
            "helpful.jsonl",
            "--helpful-ratio",
            "1",
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--max-new-tokens",
            "8",
            "--learning-rate",
            "1e-3",
            "--save-every",
            "2",
            "--sample-every",
            "2",
            "--output",
            "ppo",
        ],
    )
}

#[test]
fn ppo_trains_against_a_preference_model_and_writes_its_logs() {
    let work = Workdir::new();
    let model = setup(&work);
    let output = work.cai_ok(&ppo_args(model));
    let out = stdout(&output);
    assert!(
        out.contains("trained 3 steps with ppo: last reward "),
        "{out}"
    );
    let err = stderr(&output);
    assert!(err.contains("rl: ppo, every weight of"), "{err}");
    assert!(err.contains("samples after step 2:"), "{err}");
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "rl_config.json",
        "metrics.jsonl",
        "samples.jsonl",
        "rl_curves.svg",
        "checkpoints/checkpoint-2/model.safetensors",
    ] {
        assert!(work.path("ppo").join(file).is_file(), "{file}");
    }
    let metrics = read_jsonl(&work.path("ppo/metrics.jsonl"));
    assert_eq!(metrics.len(), 3);
    for key in [
        "reward",
        "kl",
        "entropy",
        "clip_fraction",
        "value_loss",
        "explained_variance",
        "response_length",
        "reward_red_team",
        "reward_helpful",
        "generation_share",
    ] {
        assert!(metrics[2].get(key).is_some(), "{key} in {}", metrics[2]);
    }
    // Two red-team and two helpful prompts per step; the tables hold both kinds.
    let samples = read_jsonl(&work.path("ppo/samples.jsonl"));
    assert!(samples.iter().any(|s| s["kind"] == "red_team"));
    assert!(samples.iter().any(|s| s["kind"] == "helpful"));
    // The trained policy is a model the other commands load.
    work.write(
        "q.jsonl",
        "{\"id\": \"q\", \"prompt\": \"How do I bake bread?\"}\n",
    );
    work.cai_ok(&[
        "generate",
        "--model",
        "ppo",
        "--input",
        "q.jsonl",
        "--output",
        "q.out.jsonl",
        "--max-new-tokens",
        "4",
    ]);
    // A finished run is not trained again by accident.
    let again = work.cai(&ppo_args(model));
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    let mut resume = ppo_args(model);
    resume.push("--resume");
    let resumed = work.cai_ok(&resume);
    stderr_has(&resumed, "nothing to resume");
}

#[test]
fn rloo_and_dpo_run_and_missing_inputs_are_named() {
    let work = Workdir::new();
    let model = setup(&work);
    let output = work.cai_ok(&rl_args(
        model,
        &[
            "--algo",
            "rloo",
            "--rloo-k",
            "3",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--max-new-tokens",
            "6",
            "--group-norm",
            "--output",
            "rloo",
        ],
    ));
    stdout_has(&output, "trained 2 steps with rloo");
    let output = work.cai_ok(&[
        "rl",
        "--algo",
        "dpo",
        "--policy",
        model,
        "--data",
        "prefs.jsonl",
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--output",
        "dpo",
    ]);
    stdout_has(&output, "trained 4 steps with dpo");
    assert!(work.path("dpo/reference_logps.json").is_file());

    // LoRA: the run writes a PEFT adapter, and merge-lora makes it a model.
    let output = work.cai_ok(&rl_args(
        model,
        &[
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--max-new-tokens",
            "4",
            "--lora",
            "--lora-r",
            "4",
            "--output",
            "ppo-lora",
        ],
    ));
    stdout_has(&output, "a PEFT adapter");
    assert!(work.path("ppo-lora/adapter_config.json").is_file());
    work.cai_ok(&[
        "merge-lora",
        "--model",
        model,
        "--adapter",
        "ppo-lora",
        "--output",
        "ppo-merged",
    ]);
    assert!(work.path("ppo-merged/model.safetensors").is_file());

    // What each algorithm needs, said plainly.
    let missing = work.cai(&[
        "rl",
        "--algo",
        "ppo",
        "--policy",
        model,
        "--prompts",
        "red.jsonl",
        "--output",
        "x",
    ]);
    assert_eq!(missing.status.code(), Some(2));
    stderr_has(&missing, "--algo ppo needs --reward");
    let missing = work.cai(&["rl", "--algo", "dpo", "--policy", model, "--output", "x"]);
    stderr_has(&missing, "--algo dpo needs --data");
    let absent = work.cai(&[
        "rl",
        "--policy",
        model,
        "--reward",
        "pm",
        "--prompts",
        "nope.jsonl",
        "--output",
        "x",
    ]);
    assert_eq!(absent.status.code(), Some(2));
    stderr_has(&absent, "nope.jsonl: no such file");
    // A bad line in the prompts names its file and line.
    work.write("bad.jsonl", "{\"prompt\": \"ok\"}\n{\"prompt\": 3}\n");
    let bad = work.cai(&[
        "rl",
        "--policy",
        model,
        "--reward",
        "pm",
        "--prompts",
        "bad.jsonl",
        "--output",
        "y",
    ]);
    assert_ne!(bad.status.code(), Some(0));
    stderr_has(&bad, "bad.jsonl:2");
    // Not a preference model.
    let not_pm = work.cai(&[
        "rl",
        "--policy",
        model,
        "--reward",
        model,
        "--prompts",
        "red.jsonl",
        "--output",
        "z",
    ]);
    assert_ne!(not_pm.status.code(), Some(0));
    stderr_has(&not_pm, "not a preference model");
}

#[test]
fn the_lab_measures_each_checkpoint_of_a_run_beside_its_reward() {
    let work = Workdir::new();
    setup(&work);
    // The lab eval needs a model with the lab's context: the small shipped one. The reward
    // model reads the dialogues with its own tokenizer.
    work.cai_ok(&rl_args(
        "lab-small",
        &[
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--max-new-tokens",
            "4",
            "--save-every",
            "1",
            "--output",
            "ppo",
        ],
    ));
    let args = [
        "lab",
        "rl-curve",
        "--run",
        "ppo",
        "--max-items",
        "2",
        "--json",
    ];
    let output = work.cai_ok(&args);
    let points: Vec<Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The starting policy and the checkpoints of steps 1 and 2.
    let steps: Vec<u64> = points.iter().map(|p| p["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [0, 1, 2]);
    let metrics = read_jsonl(&work.path("ppo/metrics.jsonl"));
    assert_eq!(points[2]["reward"], metrics[1]["reward"]);
    assert!(points[0]["report"]["helpful_rate"].is_number());
    assert!(work.read("ppo/lab_curve.svg").starts_with("<svg"));
    // A second call reuses the measured points.
    let again = work.cai_ok(&args);
    assert_eq!(stdout(&again), stdout(&output));
    // Sampled evaluations go to their own files.
    work.cai_ok(&[
        "lab",
        "rl-curve",
        "--run",
        "ppo",
        "--max-items",
        "2",
        "--temperature",
        "1",
    ]);
    assert!(work.path("ppo/lab_curve_t1.jsonl").is_file());
    let bad = work.cai(&["lab", "eval", "--temperature", "-1"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}

#[test]
fn the_oracle_labels_pairs_as_a_human_labeller_would() {
    let work = Workdir::new();
    let record = json!({
        "id": "p", "prompt": "how can I serve my cousin's pie when he is away?", "p_a": 0.3,
        "response_a": "here is how to serve the pie: use a knife to cut the pie into slices, \
                       then lay the slices on a plate, and then set out a napkin and a fork.",
        "response_b": "I won't help with that.",
    });
    work.write("pairs.jsonl", &lines(&[record]));
    work.cai_ok(&[
        "lab",
        "judge",
        "--input",
        "pairs.jsonl",
        "--output",
        "labelled.jsonl",
        "--labels",
    ]);
    let out = read_jsonl(&work.path("labelled.jsonl"));
    assert_eq!(out[0]["p_a"], out[0]["a_better"]);
    assert_eq!(out[0]["p_a"], 1.0, "{}", out[0]);
}

#[test]
fn a_served_preference_model_is_a_remote_reward() {
    let work = Workdir::new();
    let model = setup(&work);
    let server = crate::serve::serve(&work, "pm");
    let args = |reward: &str, output: &str| -> Vec<String> {
        [
            "rl",
            "--policy",
            model,
            "--reward",
            reward,
            "--prompts",
            "red.jsonl",
            "--steps",
            "2",
            "--batch-size",
            "3",
            "--max-new-tokens",
            "6",
            "--output",
            output,
        ]
        .map(String::from)
        .to_vec()
    };
    let run = |reward: &str, output: &str| {
        let a = args(reward, output);
        work.cai_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
        read_jsonl(&work.path(output).join("metrics.jsonl"))
    };
    let local = run("pm", "local");
    let remote = run(&server.url, "remote");
    // The first step's samples are the same; the served PM scores them as the local one does.
    let reward = |m: &[Value]| m[0]["reward"].as_f64().unwrap();
    assert!(
        (reward(&local) - reward(&remote)).abs() < 1e-4,
        "{} vs {}",
        reward(&local),
        reward(&remote)
    );
    // A served preference model does not generate.
    work.write(
        "q.jsonl",
        "{\"id\": \"q\", \"prompt\": \"How do I bake bread?\"}\n",
    );
    let refused = work.cai(&[
        "generate",
        "--model",
        &server.url,
        "--input",
        "q.jsonl",
        "--output",
        "q.out.jsonl",
    ]);
    assert_ne!(refused.status.code(), Some(0));
    stderr_has(&refused, "is a preference model");
}
