//! What a stage's plan promises, checked: its outputs before it is marked finished (each
//! written, every JSONL output whole, one record per input id where the plan says so), a
//! finished stage's outputs against its manifest, and the stage's fingerprint.

use std::path::{Path, PathBuf};

use super::StagePlan;
use crate::manifest::{Input, Manifest, Output};
use crate::runner::{
    check_jsonl_output, check_model_output, count_records, hash_path, jsonl_ids, size_on_disk,
    Hasher, RunError,
};

/// The roles of outputs that are model folders (config and weights).
const MODEL_ROLES: [&str; 2] = ["model", "preference model"];

/// Whether `path` is a JSONL file.
pub fn is_jsonl(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "jsonl") && path.is_file()
}

/// The records of a JSONL file (`None` for anything else).
pub fn count_jsonl(path: &Path) -> Option<usize> {
    is_jsonl(path).then(|| count_records(path)).flatten()
}

/// The stage's fingerprint: its name, resolved config, jobs (as their command words) and
/// inputs' hashes.
pub fn fingerprint(plan: &StagePlan, inputs: &[Input]) -> String {
    let mut h = Hasher::default();
    h.field(plan.stage.name()).field(&plan.config.to_string());
    for job in plan.jobs() {
        h.field(&job.words().join("\u{1f}"));
    }
    for input in inputs {
        h.field(&input.role).field(&input.hash);
    }
    h.hex()
}

/// Check a stage's outputs before it is marked finished — each exists, every JSONL output is
/// whole (no torn line, no id twice) and holds one record per input id where the plan says
/// so — and describe them, with their hashes.
pub fn check_outputs(plan: &StagePlan) -> Result<Vec<Output>, RunError> {
    for (role, path) in &plan.outputs {
        if !path.exists() {
            return Err(RunError::NotWritten {
                path: path.clone(),
                role: role.clone(),
            });
        }
        check_output_records(plan, path)?;
        if MODEL_ROLES.contains(&role.as_str()) {
            check_model_output(path)?;
        }
    }
    plan.outputs
        .iter()
        .map(|(role, path)| {
            Ok(Output {
                role: role.clone(),
                path: path.clone(),
                records: count_jsonl(path),
                bytes: size_on_disk(path),
                hash: Some(hash_path(path)?),
            })
        })
        .collect()
}

/// A JSONL output is whole (no torn line, no id twice) and, where the plan says so, holds
/// one record per input id.
pub fn check_output_records(plan: &StagePlan, path: &Path) -> Result<(), RunError> {
    if !is_jsonl(path) {
        return Ok(());
    }
    let sources = plan
        .expect_ids
        .iter()
        .find(|(out, _)| out == path)
        .map(|(_, sources)| sources);
    let expected = match sources {
        Some(sources) => {
            let mut ids = Vec::new();
            for source in sources {
                ids.extend(jsonl_ids(source)?);
            }
            Some(ids)
        }
        None => None,
    };
    check_jsonl_output(path, expected.as_deref())?;
    Ok(())
}

/// Whether a finished stage's outputs are still what it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intact {
    /// Every output is as recorded.
    Yes,
    /// An output is gone.
    Missing(PathBuf),
    /// An output's contents differ from what the manifest recorded.
    Changed(PathBuf),
}

/// Compare the plan's outputs with those the manifest recorded: each must exist, with the
/// recorded hash (manifests of older versions recorded none: the record count, for JSONL).
pub fn outputs_intact(plan: &StagePlan, manifest: &Manifest) -> Result<Intact, RunError> {
    for (role, path) in &plan.outputs {
        if !path.exists() {
            return Ok(Intact::Missing(path.clone()));
        }
        let Some(recorded) = manifest.outputs.iter().find(|o| &o.role == role) else {
            continue;
        };
        let changed = match &recorded.hash {
            Some(hash) => &hash_path(path)? != hash,
            None => {
                // A manifest of an older version, which marked stages finished unchecked
                // (two runs at once could leave ids twice and a torn line).
                check_output_records(plan, path).map_err(|e| RunError::FinishedIncomplete {
                    stage: plan.stage.name().into(),
                    source: Box::new(e),
                })?;
                recorded.records.is_some() && recorded.records != count_jsonl(path)
            }
        };
        if changed {
            return Ok(Intact::Changed(path.clone()));
        }
    }
    Ok(Intact::Yes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Status;
    use crate::recipe::Stage;

    fn plan(out: &Path) -> StagePlan {
        let mut p = StagePlan::new(Stage::Critique, serde_json::Value::Null);
        p.outputs.push(("revisions".into(), out.to_owned()));
        p
    }

    fn manifest(outputs: Vec<Output>) -> Manifest {
        Manifest {
            stage: "critique".into(),
            status: Status::Finished,
            fingerprint: "f".into(),
            inputs: vec![],
            outputs,
            writes: vec![],
            commands: vec![],
            jobs: vec![],
            attempts: 1,
            seconds: 1.0,
            peak_rss_mib: None,
            started_at: 0,
            finished_at: Some(1),
            error: None,
        }
    }

    #[test]
    fn a_missing_output_is_named_with_its_role() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sl.jsonl");
        let err = check_outputs(&plan(&out)).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("{} (revisions) was not written", out.display())
        );
        std::fs::write(&out, "{\"id\":\"a\"}\n").unwrap();
        let described = check_outputs(&plan(&out)).unwrap();
        assert_eq!(described[0].records, Some(1));
        assert!(described[0].hash.is_some());
    }

    #[test]
    fn a_finished_output_is_compared_with_its_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sl.jsonl");
        std::fs::write(&out, "{\"id\":\"a\"}\n").unwrap();
        let p = plan(&out);
        let recorded = manifest(check_outputs(&p).unwrap());
        assert_eq!(outputs_intact(&p, &recorded).unwrap(), Intact::Yes);
        std::fs::write(&out, "{\"id\":\"b\"}\n").unwrap();
        assert_eq!(
            outputs_intact(&p, &recorded).unwrap(),
            Intact::Changed(out.clone())
        );
        // An older manifest recorded no hash: a torn line is an error naming the stage.
        let mut old = recorded.clone();
        old.outputs[0].hash = None;
        std::fs::write(&out, "{\"id\":\"a\"}\n{\"id\":").unwrap();
        let err = outputs_intact(&p, &old).unwrap_err().to_string();
        assert!(
            err.starts_with("the critique stage was marked finished by an earlier cai"),
            "{err}"
        );
        std::fs::remove_file(&out).unwrap();
        assert_eq!(outputs_intact(&p, &old).unwrap(), Intact::Missing(out));
    }
}
