//! Checks before a resume: the checkpoint's settings and input data against the run's, with
//! the changes the user asked for explicitly (`allow_changes`, the CLI's
//! `--allow-config-change`) let through.
//!
//! A checkpoint's training config holds the method's settings under the method's key
//! (`"sft"`, `"pm"`, …) and, under [`FINGERPRINT_KEY`], a fingerprint of every input file
//! (its record count and a hash of its bytes), so a data file that changed between the run
//! and its resume is noticed.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::{Result, TrainError};

/// Settings a resume may change when the user names them: the optimiser's pace, the run's
/// length and cadence, and activation checkpointing (memory, not the gradients). Every other setting (batch size, seed, lengths, LoRA, dtype, …)
/// changes what a step is, so a resume keeps it.
pub const CHANGEABLE: &[&str] = &[
    "learning_rate",
    "schedule",
    "warmup_steps",
    "max_grad_norm",
    "weight_decay",
    "epochs",
    "max_steps",
    "steps",
    "save_every",
    "keep_last",
    "eval_every",
    "sample_every",
    "gradient_checkpointing",
];

/// The name that lets a resume continue on input data that changed since the checkpoint.
pub const DATA: &str = "data";

/// The key of the input files' fingerprint in a checkpoint's training config.
pub const FINGERPRINT_KEY: &str = "data_fingerprint";

/// Check that `allow` names only [`CHANGEABLE`] settings or [`DATA`].
pub fn validate_allow(allow: &[String]) -> Result<()> {
    for name in allow {
        if name != DATA && !CHANGEABLE.contains(&name.as_str()) {
            return Err(TrainError::Config(format!(
                "allow-config-change '{name}': a resume can change only {} (or '{DATA}' for \
                 changed input data)",
                CHANGEABLE.join(", ")
            )));
        }
    }
    Ok(())
}

/// Refuse to resume from checkpoint `dir` when its `method` settings or input data differ
/// from the run's (`now`, a training config as the trainer saves it), except for the
/// changes `allow` names.
pub fn check(dir: &Path, method: &str, saved: &Value, now: &Value, allow: &[String]) -> Result<()> {
    validate_allow(allow)?;
    check_origin(dir, saved, now)?;
    check_settings(dir, method, saved, now, allow)?;
    check_data(dir, saved, now, allow)
}

/// The entries of a training config that name what is trained and against what: the model
/// (or policy) the run started from, and the reward. A resume never changes them: LoRA
/// adapters belong to their base model, and PPO's value head to its reward.
const ORIGIN_KEYS: &[&str] = &["model", "policy", "reward"];

fn check_origin(dir: &Path, saved: &Value, now: &Value) -> Result<()> {
    for key in ORIGIN_KEYS {
        let (was, is) = (saved.get(*key), now.get(*key));
        if was.is_none() || was == is {
            continue;
        }
        let same_path = match (was.and_then(Value::as_str), is.and_then(Value::as_str)) {
            (Some(a), Some(b)) => {
                match (Path::new(a).canonicalize(), Path::new(b).canonicalize()) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => false,
                }
            }
            _ => false,
        };
        if !same_path {
            let show = |v: Option<&Value>| v.map_or_else(|| "none".to_owned(), Value::to_string);
            return Err(TrainError::checkpoint(
                dir,
                format!(
                    "the run was trained with {key} {}, this one has {}; resume with the same \
                     {key}, or start a new output directory",
                    show(was),
                    show(is)
                ),
            ));
        }
    }
    Ok(())
}

fn check_settings(
    dir: &Path,
    method: &str,
    saved: &Value,
    now: &Value,
    allow: &[String],
) -> Result<()> {
    let as_map = |v: &Value| {
        v.get(method)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let (saved, now) = (as_map(saved), as_map(now));
    let keys: BTreeSet<&String> = saved.keys().chain(now.keys()).collect();
    let show = |v: Option<&Value>| v.map_or_else(|| "unset".to_owned(), Value::to_string);
    let mut refused = Vec::new();
    for key in keys {
        if saved.get(key) == now.get(key) {
            continue;
        }
        let change = format!(
            "{key} was {}, now {}",
            show(saved.get(key)),
            show(now.get(key))
        );
        if allow.iter().any(|a| a == key) {
            tracing::warn!(
                "resuming {} with a changed setting: {change}",
                dir.display()
            );
        } else {
            refused.push((key.clone(), change));
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    let changes: Vec<&str> = refused.iter().map(|(_, c)| c.as_str()).collect();
    let changeable: Vec<&str> = refused
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| CHANGEABLE.contains(k))
        .collect();
    let advice = if changeable.len() == refused.len() {
        format!(
            "resume with the run's settings, or pass --allow-config-change {} to resume with \
             the new ones",
            changeable.join(",")
        )
    } else {
        format!(
            "resume with the run's settings (a resume can change only {}, and only with \
             --allow-config-change), or start a new output directory",
            CHANGEABLE.join(", ")
        )
    };
    Err(TrainError::checkpoint(
        dir,
        format!(
            "was written with other {method} settings ({}); {advice}",
            changes.join("; ")
        ),
    ))
}

fn check_data(dir: &Path, saved: &Value, now: &Value, allow: &[String]) -> Result<()> {
    // Checkpoints written before fingerprints were kept have none to compare.
    let (Some(Value::Object(saved)), Some(Value::Object(now))) =
        (saved.get(FINGERPRINT_KEY), now.get(FINGERPRINT_KEY))
    else {
        return Ok(());
    };
    let keys: BTreeSet<&String> = saved.keys().chain(now.keys()).collect();
    let mut changes = Vec::new();
    for key in keys {
        let (was, is) = (saved.get(key), now.get(key));
        if was == is {
            continue;
        }
        let describe = |v: Option<&Value>| match v {
            Some(Value::Object(f)) => format!(
                "{} ({} records)",
                f.get("path").and_then(Value::as_str).unwrap_or("?"),
                f.get("records")
                    .map_or_else(|| "?".into(), Value::to_string)
            ),
            _ => "none".into(),
        };
        changes.push(format!(
            "{key} was {}, now {}{}",
            describe(was),
            describe(is),
            match (
                was.and_then(|v| v.get("records")),
                is.and_then(|v| v.get("records"))
            ) {
                (Some(a), Some(b)) if a == b => " with other content",
                _ => "",
            }
        ));
    }
    if changes.is_empty() {
        return Ok(());
    }
    if allow.iter().any(|a| a == DATA) {
        tracing::warn!(
            "resuming {} on changed data: {}",
            dir.display(),
            changes.join("; ")
        );
        return Ok(());
    }
    Err(TrainError::checkpoint(
        dir,
        format!(
            "the input data changed since this checkpoint was saved ({}); resume with the data \
             the run started on, pass --allow-config-change {DATA} to continue on the changed \
             data (the run keeps its step and position in the epoch), or start a new output \
             directory",
            changes.join("; ")
        ),
    ))
}

/// The fingerprint of a run's input files, by role (`"data"`, `"eval_data"`, …; files that
/// are `None` are left out): `{"path", "records" (non-blank lines), "fnv1a64"}` each.
pub fn fingerprint(files: &[(&str, Option<&Path>)]) -> Result<Value> {
    let mut out = Map::new();
    for (name, path) in files {
        if let Some(path) = path {
            out.insert((*name).to_owned(), file_fingerprint(path)?);
        }
    }
    Ok(Value::Object(out))
}

/// The fingerprint of text given inline (a distillation context): its length and hash.
pub fn text_fingerprint(text: &str) -> Value {
    let (hash, records) = digest(text.as_bytes(), FNV_OFFSET, 0, &mut false);
    json!({"records": records, "fnv1a64": format!("{hash:016x}")})
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// Continue FNV-1a over `bytes` and the count of non-blank lines; `blank` says whether the
/// current line has only whitespace so far.
fn digest(bytes: &[u8], mut hash: u64, mut records: u64, blank: &mut bool) -> (u64, u64) {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
        if b == b'\n' {
            *blank = true;
        } else if !b.is_ascii_whitespace() && *blank {
            *blank = false;
            records += 1;
        }
    }
    (hash, records)
}

fn file_fingerprint(path: &Path) -> Result<Value> {
    let mut file = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut buf = vec![0u8; 1 << 16];
    let (mut hash, mut records, mut blank) = (FNV_OFFSET, 0, true);
    loop {
        let n = file.read(&mut buf).map_err(|e| TrainError::io(path, e))?;
        if n == 0 {
            break;
        }
        (hash, records) = digest(&buf[..n], hash, records, &mut blank);
    }
    Ok(json!({
        "path": path.display().to_string(),
        "records": records,
        "fnv1a64": format!("{hash:016x}"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(lr: f64, batch: u64, data: &Value) -> Value {
        json!({"sft": {"learning_rate": lr, "batch_size": batch}, FINGERPRINT_KEY: data})
    }

    #[test]
    fn a_changed_setting_is_refused_unless_allowed_and_changeable() {
        let dir = Path::new("out/checkpoints/checkpoint-2");
        let data = json!({});
        let saved = config(1e-3, 4, &data);
        check(dir, "sft", &saved, &config(1e-3, 4, &data), &[]).unwrap();
        let lower = config(1e-4, 4, &data);
        let err = check(dir, "sft", &saved, &lower, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("learning_rate was 0.001, now 0.0001"), "{err}");
        assert!(err.contains("--allow-config-change learning_rate"), "{err}");
        check(dir, "sft", &saved, &lower, &["learning_rate".into()]).unwrap();
        let other = config(1e-3, 8, &data);
        let err = check(dir, "sft", &saved, &other, &["batch_size".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a resume can change only learning_rate"),
            "{err}"
        );
        let err = check(dir, "sft", &saved, &other, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("batch_size was 4, now 8"), "{err}");
        assert!(err.contains("start a new output directory"), "{err}");
    }

    #[test]
    fn changed_data_is_refused_unless_allowed() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data.jsonl");
        std::fs::write(&path, "{\"a\": 1}\n\n  \n{\"a\": 2}\n{\"a\": 3}").unwrap();
        let before = fingerprint(&[("data", Some(&path)), ("eval_data", None)]).unwrap();
        assert_eq!(before["data"]["records"], 3);
        assert!(before.get("eval_data").is_none());
        let dir = tmp.path().join("checkpoint-4");
        check(
            &dir,
            "sft",
            &config(1.0, 1, &before),
            &config(1.0, 1, &before),
            &[],
        )
        .unwrap();

        std::fs::write(&path, "{\"a\": 1}\n").unwrap();
        let after = fingerprint(&[("data", Some(&path))]).unwrap();
        let err = check(
            &dir,
            "sft",
            &config(1.0, 1, &before),
            &config(1.0, 1, &after),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("checkpoint-4"), "{err}");
        assert!(err.contains("(3 records), now"), "{err}");
        assert!(err.contains("(1 records)"), "{err}");
        assert!(err.contains("--allow-config-change data"), "{err}");
        let allow = [DATA.to_string()];
        check(
            &dir,
            "sft",
            &config(1.0, 1, &before),
            &config(1.0, 1, &after),
            &allow,
        )
        .unwrap();

        // Same count, other content.
        std::fs::write(&path, "{\"a\": 9}\n").unwrap();
        let edited = fingerprint(&[("data", Some(&path))]).unwrap();
        let err = check(
            &dir,
            "sft",
            &config(1.0, 1, &after),
            &config(1.0, 1, &edited),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("with other content"), "{err}");
        // A checkpoint without a fingerprint (an older cai) has nothing to compare.
        let old = json!({"sft": {"learning_rate": 1.0, "batch_size": 1}});
        check(&dir, "sft", &old, &config(1.0, 1, &edited), &[]).unwrap();
    }

    #[test]
    fn another_model_or_reward_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("checkpoint-1");
        let at = |model: &Path| json!({"model": model.display().to_string(), "reward": "pm"});
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        check(&dir, "sft", &at(&a), &at(&a), &[]).unwrap();
        // The same folder by another spelling is the same model.
        check(&dir, "sft", &at(&a), &at(&tmp.path().join("b/../a")), &[]).unwrap();
        let err = check(&dir, "sft", &at(&a), &at(&b), &["learning_rate".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("the run was trained with model"), "{err}");
        let mut other = at(&a);
        other["reward"] = json!("other-pm");
        let err = check(&dir, "rl", &at(&a), &other, &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("reward \"pm\", this one has \"other-pm\""),
            "{err}"
        );
    }

    #[test]
    fn only_changeable_names_are_accepted() {
        validate_allow(&["learning_rate".into(), "data".into()]).unwrap();
        let err = validate_allow(&["seed".into()]).unwrap_err().to_string();
        assert!(err.contains("'seed'"), "{err}");
    }
}
