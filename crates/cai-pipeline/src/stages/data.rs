//! The data stage: the lab's world written first if the recipe asks for one, then each prompt
//! set's files joined into one file (ids made unique, thinned to `[data] limit`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::words::Words;
use super::{Job, PlanError, RunContext, StagePlan};
use crate::recipe::{PromptSet, Stage};

/// `cai lab generate`: the lab's world of a seed. Only its assets are needed (prompts,
/// constitution, few-shot examples, context), so the corpus is one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabWorldJob {
    /// The folder written (`@data/lab`).
    pub output: PathBuf,
    /// The world's seed.
    pub seed: u64,
}

impl LabWorldJob {
    /// Corpus documents written: one, since only the assets are read.
    pub const SIZE: usize = 1;

    /// The equivalent command's words.
    pub fn words(&self) -> Vec<String> {
        Words::new(&["lab", "generate"])
            .path("--output", &self.output)
            .flag("--seed", self.seed)
            .flag("--size", Self::SIZE)
            .switch("--overwrite", true)
            .done()
    }
}

pub(super) fn plan(ctx: &RunContext) -> Result<StagePlan, PlanError> {
    let r = ctx.recipe();
    let dir = ctx.stage_dir(Stage::Data);
    let mut p = StagePlan::new(Stage::Data, json!({ "data": r.data }));
    if let Some(seed) = r.data.lab_world {
        p.steps
            .push(super::Step::Job(Box::new(Job::LabGenerate(LabWorldJob {
                output: dir.join("lab"),
                seed,
            }))));
        p.outputs.push(("lab world".into(), dir.join("lab")));
    }
    for set in PromptSet::ALL {
        let files = r.data.files(set);
        if files.is_empty() {
            continue;
        }
        let inputs = files
            .iter()
            .map(|f| ctx.path(f))
            .collect::<Result<Vec<_>, _>>()?;
        for input in &inputs {
            if !input.starts_with(&dir) {
                p.input_path(set.name(), input.clone());
            }
        }
        let output = ctx.prompt_set(set);
        p.join(inputs, output.clone(), r.data.limit);
        p.outputs.push((set.name().into(), output));
    }
    for (role, spec) in [
        ("constitution", Some(r.data.constitution.as_str())),
        ("few-shot", r.data.few_shot.as_deref()),
        ("context", r.data.context.as_deref()),
    ] {
        if let Some(spec) = spec.filter(|s| !s.starts_with('@')) {
            let path = ctx.path(spec)?;
            if path.exists() {
                p.input_path(role, path);
            }
        }
    }
    Ok(p)
}
