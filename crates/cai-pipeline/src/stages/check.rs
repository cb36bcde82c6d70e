//! Refusing a recipe whose prompt source files do not exist, or whose inputs lie where the
//! run writes: in a stage's folder (a stage started afresh deletes what it wrote there, and
//! its outputs would overwrite them) or one of the run directory's own files.

use std::path::{Component, Path, PathBuf};

use super::data::{missing, named, Named};
use super::{is_constitution_path, PlanError, RunContext, StagePlan};
use crate::recipe::{PromptSet, STAGES};

/// `path` made absolute, with `.` and `..` resolved and links resolved as far as it exists,
/// so that two spellings of one place compare equal.
fn normal(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut lexical = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                lexical.pop();
            }
            other => lexical.push(other),
        }
    }
    let mut existing = lexical.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return lexical,
        }
    }
    let mut out = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.to_owned());
    out.extend(rest.iter().rev());
    out
}

/// Refuse a recipe whose prompt source files (other than run paths, `@stage/…`) do not
/// exist, or whose inputs lie where the run writes. Paths inside what a job writes
/// earlier in the run (`@data/lab/…` of `lab_world`) are the run's own and allowed.
pub fn check_inputs(ctx: &RunContext, plans: &[StagePlan]) -> Result<(), PlanError> {
    let r = ctx.recipe();
    let mut paths: Vec<(String, String, PathBuf)> = Vec::new();
    // A prompt source's file (a Hub dataset is no path of the run).
    for set in PromptSet::ALL {
        for spec in r.data.files(set) {
            if let Named::File { path, .. } = named(ctx, set, spec)? {
                if !spec.starts_with('@') && !path.is_file() {
                    return Err(missing(set, spec, &path));
                }
                paths.push((format!("[data] {}", set.name()), spec.clone(), path));
            }
        }
    }
    let mut others: Vec<(String, String)> = Vec::new();
    if is_constitution_path(&r.data.constitution) {
        others.push(("[data] constitution".into(), r.data.constitution.clone()));
    }
    for (what, spec) in [("few_shot", &r.data.few_shot), ("context", &r.data.context)] {
        if let Some(spec) = spec {
            others.push((format!("[data] {what}"), spec.clone()));
        }
    }
    for (what, spec) in others {
        let path = ctx.path(&spec)?;
        paths.push((what, spec, path));
    }
    for (what, spec) in [
        ("[models] base", Some(&r.models.base)),
        ("[models] feedback", r.models.feedback.as_ref()),
        ("[models] critic", r.models.critic.as_ref()),
    ] {
        if let Some(spec) = spec.filter(|s| Path::new(s.as_str()).exists()) {
            paths.push((what.into(), spec.clone(), PathBuf::from(spec)));
        }
    }
    let run = normal(ctx.run_dir);
    for (what, spec, path) in paths {
        let refuse = |problem: String| PlanError::InputInRun {
            what: what.clone(),
            spec: spec.clone(),
            problem,
        };
        let path = normal(&path);
        let Ok(inner) = path.strip_prefix(&run) else {
            continue;
        };
        let Some(Component::Normal(first)) = inner.components().next() else {
            return Err(refuse(format!(
                "is the run directory {} itself; name a file outside it, or choose another \
                 --run-dir",
                ctx.run_dir.display()
            )));
        };
        let first = first.to_string_lossy();
        if let Some(stage) = STAGES.into_iter().find(|s| s.name() == first) {
            let made_earlier = plans
                .iter()
                .filter(|p| p.stage == stage)
                .flat_map(|p| p.jobs().map(|j| normal(j.output())))
                .any(|out| path != out && path.starts_with(&out));
            if !made_earlier {
                return Err(refuse(format!(
                    "lies in {}, the folder of the {stage} stage, which cai writes and clears \
                     when the stage starts afresh; cai does not read inputs from there. Move \
                     the file out of the run directory {} (or choose another --run-dir)",
                    ctx.stage_dir(stage).display(),
                    ctx.run_dir.display()
                )));
            }
            continue;
        }
        let top = crate::rundir::RUN_TOP_FILES.contains(&first.as_ref())
            || first == crate::rundir::FIGURES_DIR
            || first == crate::rundir::MARKER_FILE;
        if top {
            return Err(refuse(format!(
                "is {}, a file cai pipeline writes in its run directory; move it out of the \
                 run directory (or choose another --run-dir)",
                ctx.run_dir.join(first.as_ref()).display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::plan_all;
    use super::*;
    use crate::recipe::LoadedRecipe;

    #[test]
    fn recipe_inputs_where_the_run_writes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let recipe = |red_team: &str| {
            let text = format!(
                "name = \"t\"\n[models]\nbase = \"lab\"\n[data]\nlab_world = 0\n\
                 red_team = [\"{red_team}\"]\nconstitution = \"default\"\n"
            );
            let path = dir.path().join("r.toml");
            std::fs::write(&path, text).unwrap();
            LoadedRecipe::load(Some(&path), false).unwrap()
        };
        let check = |red_team: &str| {
            // The file exists (a missing one is refused first, naming the key).
            if !red_team.starts_with('@') {
                let file = dir.path().join(red_team);
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(&file, "{\"prompt\": \"p\"}\n").unwrap();
            }
            let loaded = recipe(red_team);
            let ctx = RunContext {
                loaded: &loaded,
                run_dir: &run,
            };
            let plans = plan_all(&ctx).unwrap();
            check_inputs(&ctx, &plans).map_err(|e| e.to_string())
        };
        check("p.jsonl").unwrap();
        check("@data/lab/prompts/red_team_train.jsonl").unwrap();
        check("run/mine/p.jsonl").unwrap();
        for bad in [
            "run/data/p.jsonl",
            "@data/p.jsonl",
            "run/./sft/../critique/x.jsonl",
        ] {
            let err = check(bad).unwrap_err();
            assert!(
                err.contains("clears when the stage starts afresh"),
                "{bad}: {err}"
            );
        }
        let err = check("run/report.md").unwrap_err();
        assert!(err.contains("a file cai pipeline writes"), "{err}");
    }
}
