//! A recipe turned into stage plans: each stage's resolved config, its inputs (for the
//! fingerprint), the `cai` commands it runs (built as argument lists and run in-process) and
//! its outputs. Every path of the run directory is fixed here.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cai_pipeline::manifest::{CONFIG_FILE, MANIFEST_FILE, METRICS_FILE};
use cai_pipeline::recipe::{
    resolve_path, LoadedRecipe, ModelRef, PromptSet, Recipe, Stage, Training,
};
use serde_json::{json, Value};

/// The pipeline's checkpoint interval when a recipe sets none: a killed training stage
/// resumes from at most this many steps back.
const DEFAULT_SAVE_EVERY: u64 = 20;

/// A recipe in a run directory.
pub(super) struct Ctx<'a> {
    pub loaded: &'a LoadedRecipe,
    pub run_dir: PathBuf,
}

/// One step of a stage.
#[derive(Debug, Clone)]
pub(super) enum Step {
    /// A `cai` command run in-process. A training command's output folder gets `--resume`
    /// when it holds a checkpoint or a finished model, else `--overwrite`.
    Cai {
        argv: Vec<String>,
        training_output: Option<PathBuf>,
    },
    /// Prompt files joined into one (ids made unique, thinned to `limit`).
    Join {
        inputs: Vec<PathBuf>,
        output: PathBuf,
        limit: Option<usize>,
    },
    /// The eval stage's measures.
    Eval,
}

/// An input of a stage, hashed into its fingerprint.
#[derive(Debug, Clone)]
pub(super) enum InputSpec {
    /// A file or folder (of the recipe, or of an earlier stage).
    Path { role: String, path: PathBuf },
    /// A model spec as the commands take it (a directory, an alias, a cache id, endpoints).
    Model { role: String, spec: String },
}

/// What a stage does.
#[derive(Debug, Clone)]
pub(super) struct StagePlan {
    pub stage: Stage,
    pub config: Value,
    pub inputs: Vec<InputSpec>,
    pub steps: Vec<Step>,
    pub outputs: Vec<(String, PathBuf)>,
    /// JSONL outputs that must hold exactly the ids of these files (one record per prompt)
    /// before the stage is marked finished.
    pub expect_ids: Vec<(PathBuf, Vec<PathBuf>)>,
    /// The names in the stage folder the stage writes (see `cai_pipeline::rundir::owns`).
    pub writes: Vec<String>,
    /// A trainer's metrics file, copied to the stage's `metrics.jsonl`.
    pub metrics_from: Option<PathBuf>,
}

impl Ctx<'_> {
    fn recipe(&self) -> &Recipe {
        &self.loaded.recipe
    }

    /// A stage's folder.
    pub fn stage_dir(&self, stage: Stage) -> PathBuf {
        self.run_dir.join(stage.name())
    }

    /// A recipe path, resolved.
    fn path(&self, spec: &str) -> anyhow::Result<PathBuf> {
        Ok(resolve_path(spec, &self.loaded.base_dir(), &self.run_dir)?)
    }

    /// The joined file of a prompt set.
    pub fn prompt_set(&self, set: PromptSet) -> PathBuf {
        self.stage_dir(Stage::Data)
            .join(format!("{}.jsonl", set.name()))
    }

    /// The model a trained stage leaves for later stages (merged when trained with LoRA).
    pub fn stage_model(&self, stage: Stage) -> PathBuf {
        let lora = match stage {
            Stage::Distill => self.recipe().distill.as_ref().is_some_and(|s| s.lora),
            Stage::Sft => self.recipe().sft.as_ref().is_some_and(|s| s.lora),
            Stage::Rl => self.recipe().rl.as_ref().is_some_and(|s| s.lora),
            _ => false,
        };
        self.stage_dir(stage)
            .join(if lora { "merged" } else { "model" })
    }

    /// The model spec a reference names.
    pub fn model(&self, model: ModelRef) -> String {
        let models = &self.recipe().models;
        match (model, model.stage()) {
            (ModelRef::Base, _) => models.base.clone(),
            (ModelRef::Feedback, _) => models.feedback.clone().unwrap_or(models.base.clone()),
            (_, Some(stage)) => self.stage_model(stage).display().to_string(),
            (_, None) => unreachable!("only base and feedback have no stage"),
        }
    }

    fn device_flags(&self, dtype: bool) -> Vec<String> {
        let models = &self.recipe().models;
        let mut flags = vec!["--device".into(), models.device.clone()];
        if let (true, Some(d)) = (dtype, &models.dtype) {
            flags.extend(["--dtype".into(), d.clone()]);
        }
        flags
    }

    fn context_path(&self) -> anyhow::Result<Option<PathBuf>> {
        self.recipe()
            .data
            .context
            .as_deref()
            .map(|c| self.path(c))
            .transpose()
    }

    fn constitution(&self) -> anyhow::Result<String> {
        let c = &self.recipe().data.constitution;
        // A built-in name stays a name; anything else is a path of the recipe.
        if c.starts_with('@') || c.contains('/') || c.ends_with(".toml") || c.ends_with(".json") {
            Ok(self.path(c)?.display().to_string())
        } else {
            Ok(c.clone())
        }
    }
}

/// Push `--flag value` when the value is set.
fn opt<T: ToString>(argv: &mut Vec<String>, flag: &str, value: Option<T>) {
    if let Some(v) = value {
        argv.push(flag.into());
        argv.push(v.to_string());
    }
}

fn training_flags(argv: &mut Vec<String>, t: &Training) {
    opt(argv, "--learning-rate", t.learning_rate);
    opt(argv, "--epochs", t.epochs);
    opt(argv, "--max-steps", t.max_steps);
    opt(argv, "--batch-size", t.batch_size);
    opt(
        argv,
        "--save-every",
        Some(t.save_every.unwrap_or(DEFAULT_SAVE_EVERY)),
    );
}

fn path_text(p: &Path) -> String {
    p.display().to_string()
}

fn model_input(role: &str, spec: String) -> InputSpec {
    InputSpec::Model {
        role: role.into(),
        spec,
    }
}

fn path_input(role: &str, path: PathBuf) -> InputSpec {
    InputSpec::Path {
        role: role.into(),
        path,
    }
}

/// A LoRA stage's merge into a plain model for the stages after it.
fn merge_step(ctx: &Ctx, stage: Stage, base: &str) -> Step {
    let dir = ctx.stage_dir(stage);
    Step::Cai {
        argv: vec![
            "merge-lora".into(),
            "--model".into(),
            base.into(),
            "--adapter".into(),
            path_text(&dir.join("model")),
            "--output".into(),
            path_text(&dir.join("merged")),
            "--overwrite".into(),
        ],
        training_output: None,
    }
}

/// The plan of every stage the recipe has, in order.
pub(super) fn plan_all(ctx: &Ctx) -> anyhow::Result<Vec<StagePlan>> {
    ctx.recipe()
        .stages()
        .into_iter()
        .map(|stage| plan(ctx, stage).with_context(|| format!("planning the {stage} stage")))
        .collect()
}

fn plan(ctx: &Ctx, stage: Stage) -> anyhow::Result<StagePlan> {
    let r = ctx.recipe();
    let dir = ctx.stage_dir(stage);
    let mut p = StagePlan {
        stage,
        config: Value::Null,
        inputs: Vec::new(),
        steps: Vec::new(),
        outputs: Vec::new(),
        expect_ids: Vec::new(),
        writes: Vec::new(),
        metrics_from: None,
    };
    match stage {
        Stage::Data => {
            p.config = json!({ "data": r.data });
            if let Some(seed) = r.data.lab_world {
                p.steps.push(Step::Cai {
                    argv: vec![
                        "lab".into(),
                        "generate".into(),
                        "--output".into(),
                        path_text(&dir.join("lab")),
                        "--seed".into(),
                        seed.to_string(),
                        // Only the world's assets are needed: one corpus document.
                        "--size".into(),
                        "1".into(),
                        "--overwrite".into(),
                    ],
                    training_output: None,
                });
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
                    .collect::<anyhow::Result<Vec<_>>>()?;
                for input in &inputs {
                    if !input.starts_with(&dir) {
                        p.inputs.push(path_input(set.name(), input.clone()));
                    }
                }
                let output = ctx.prompt_set(set);
                p.steps.push(Step::Join {
                    inputs,
                    output: output.clone(),
                    limit: r.data.limit,
                });
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
                        p.inputs.push(path_input(role, path));
                    }
                }
            }
        }
        Stage::Distill => {
            let s = r.distill.as_ref().expect("planned stages exist");
            p.config = json!({ "distill": s });
            let model = ctx.model(s.model);
            let context = ctx
                .context_path()?
                .expect("validated: distill has a context");
            let sets = r.data.sets_or_default(s.data.as_deref());
            let data = dir.join("data.jsonl");
            p.steps.push(Step::Join {
                inputs: sets.iter().map(|s| ctx.prompt_set(*s)).collect(),
                output: data.clone(),
                limit: None,
            });
            let out = dir.join("model");
            let mut argv = vec![
                "distill".into(),
                "--model".into(),
                model.clone(),
                "--context".into(),
                path_text(&context),
                "--data".into(),
                path_text(&data),
                "--output".into(),
                path_text(&out),
            ];
            if s.sample {
                argv.push("--sample".into());
            }
            if s.lora {
                argv.push("--lora".into());
            }
            training_flags(&mut argv, &s.training());
            argv.extend(ctx.device_flags(true));
            argv.extend(s.args.iter().cloned());
            p.steps.push(Step::Cai {
                argv,
                training_output: Some(out.clone()),
            });
            if s.lora {
                p.steps.push(merge_step(ctx, stage, &model));
            }
            p.inputs.push(model_input("model", model));
            p.inputs.push(path_input("context", context));
            for set in sets {
                p.inputs.push(path_input(set.name(), ctx.prompt_set(set)));
            }
            p.outputs.push(("model".into(), ctx.stage_model(stage)));
            p.metrics_from = Some(out.join("metrics.jsonl"));
        }
        Stage::Critique => {
            let s = r.critique.as_ref().expect("planned stages exist");
            p.config = json!({ "critique": s });
            let model = ctx.model(s.model);
            let out = dir.join("sl.jsonl");
            let mut argv = vec![
                "critique".into(),
                "--model".into(),
                model.clone(),
                "--prompts".into(),
                path_text(&ctx.prompt_set(PromptSet::RedTeam)),
                "--constitution".into(),
                ctx.constitution()?,
                "--output".into(),
                path_text(&out),
            ];
            if let Some(f) = &r.data.few_shot {
                argv.extend(["--few-shot".into(), path_text(&ctx.path(f)?)]);
            }
            let helpful = s.helpful && !r.data.helpful.is_empty();
            if helpful {
                argv.extend([
                    "--helpful-prompts".into(),
                    path_text(&ctx.prompt_set(PromptSet::Helpful)),
                ]);
                p.inputs
                    .push(path_input("helpful", ctx.prompt_set(PromptSet::Helpful)));
            }
            opt(&mut argv, "--rounds", s.rounds);
            opt(&mut argv, "--max-new-tokens", s.max_new_tokens);
            opt(&mut argv, "--temperature", s.temperature);
            opt(&mut argv, "--batch-size", s.batch_size);
            argv.extend(ctx.device_flags(true));
            argv.extend(s.args.iter().cloned());
            p.steps.push(Step::Cai {
                argv,
                training_output: None,
            });
            p.inputs.push(model_input("model", model));
            p.inputs
                .push(path_input("red_team", ctx.prompt_set(PromptSet::RedTeam)));
            p.expect_ids
                .push((out.clone(), vec![ctx.prompt_set(PromptSet::RedTeam)]));
            p.outputs.push(("revisions".into(), out));
            if helpful {
                let answers = dir.join("sl.helpful.jsonl");
                p.expect_ids
                    .push((answers.clone(), vec![ctx.prompt_set(PromptSet::Helpful)]));
                p.outputs.push(("helpful answers".into(), answers));
            }
        }
        Stage::Sft => {
            let s = r.sft.as_ref().expect("planned stages exist");
            p.config = json!({ "sft": s });
            let model = ctx.model(s.model);
            let critique = ctx.stage_dir(Stage::Critique);
            let out = dir.join("model");
            let mut argv = vec![
                "sft".into(),
                "--model".into(),
                model.clone(),
                "--data".into(),
                path_text(&critique.join("sl.jsonl")),
                "--output".into(),
                path_text(&out),
            ];
            let helpful = critique.join("sl.helpful.jsonl");
            let has_helpful =
                r.critique.as_ref().is_some_and(|c| c.helpful) && !r.data.helpful.is_empty();
            if has_helpful {
                argv.extend(["--helpful-data".into(), path_text(&helpful)]);
                opt(&mut argv, "--helpful-ratio", s.helpful_ratio);
            }
            opt(&mut argv, "--revision-rounds", s.revision_rounds);
            if s.lora {
                argv.push("--lora".into());
            }
            training_flags(&mut argv, &s.training());
            argv.extend(ctx.device_flags(true));
            argv.extend(s.args.iter().cloned());
            p.steps.push(Step::Cai {
                argv,
                training_output: Some(out.clone()),
            });
            if s.lora {
                p.steps.push(merge_step(ctx, stage, &model));
            }
            p.inputs.push(model_input("model", model));
            p.inputs
                .push(path_input("revisions", critique.join("sl.jsonl")));
            p.outputs.push(("model".into(), ctx.stage_model(stage)));
            p.metrics_from = Some(out.join("metrics.jsonl"));
        }
        Stage::Label => {
            let s = r.label.as_ref().expect("planned stages exist");
            p.config = json!({ "label": s });
            let policy = ctx.model(s.policy);
            let feedback = ctx.model(s.feedback);
            let sets = r.data.sets_or_default(s.prompts.as_deref());
            let prompts = dir.join("prompts.jsonl");
            p.steps.push(Step::Join {
                inputs: sets.iter().map(|s| ctx.prompt_set(*s)).collect(),
                output: prompts.clone(),
                limit: None,
            });
            let out = dir.join("prefs.jsonl");
            let mut argv = vec![
                "label".into(),
                "--policy".into(),
                policy.clone(),
                "--feedback".into(),
                feedback.clone(),
                "--prompts".into(),
                path_text(&prompts),
                "--constitution".into(),
                ctx.constitution()?,
                "--output".into(),
                path_text(&out),
            ];
            opt(&mut argv, "--ensemble", s.ensemble.as_deref());
            if s.swap {
                argv.push("--swap".into());
            }
            if s.context_b {
                let context = ctx
                    .context_path()?
                    .expect("validated: context_b has a context");
                argv.extend(["--context-b".into(), path_text(&context)]);
                p.inputs.push(path_input("context", context));
            }
            opt(&mut argv, "--max-new-tokens", s.max_new_tokens);
            argv.extend(ctx.device_flags(true));
            argv.extend(s.args.iter().cloned());
            p.steps.push(Step::Cai {
                argv,
                training_output: None,
            });
            p.inputs.push(model_input("policy", policy));
            p.inputs.push(model_input("feedback", feedback));
            for set in sets {
                p.inputs.push(path_input(set.name(), ctx.prompt_set(set)));
            }
            p.expect_ids.push((out.clone(), vec![prompts.clone()]));
            p.outputs.push(("labels".into(), out));
        }
        Stage::TrainPm => {
            let s = r.train_pm.as_ref().expect("planned stages exist");
            p.config = json!({ "train-pm": s });
            let model = ctx.model(s.model);
            let labels = ctx.stage_dir(Stage::Label).join("prefs.jsonl");
            let out = dir.join("model");
            let mut argv = vec![
                "train-pm".into(),
                "--model".into(),
                model.clone(),
                "--data".into(),
                path_text(&labels),
                "--output".into(),
                path_text(&out),
            ];
            training_flags(&mut argv, &s.training());
            argv.extend(ctx.device_flags(true));
            argv.extend(s.args.iter().cloned());
            p.steps.push(Step::Cai {
                argv,
                training_output: Some(out.clone()),
            });
            p.inputs.push(model_input("model", model));
            p.inputs.push(path_input("labels", labels));
            p.outputs.push(("preference model".into(), out.clone()));
            p.metrics_from = Some(out.join("metrics.jsonl"));
        }
        Stage::Rl => {
            let s = r.rl.as_ref().expect("planned stages exist");
            p.config = json!({ "rl": s });
            let policy = ctx.model(s.policy);
            let out = dir.join("model");
            let mut argv = vec![
                "rl".into(),
                "--algo".into(),
                s.algo.clone(),
                "--policy".into(),
                policy.clone(),
                "--output".into(),
                path_text(&out),
            ];
            if s.algo == "dpo" {
                let labels = ctx.stage_dir(Stage::Label).join("prefs.jsonl");
                argv.extend(["--data".into(), path_text(&labels)]);
                p.inputs.push(path_input("labels", labels));
            } else {
                let pm = ctx.stage_dir(Stage::TrainPm).join("model");
                argv.extend(["--reward".into(), path_text(&pm)]);
                p.inputs.push(path_input("reward", pm));
            }
            let prompts = dir.join("prompts.jsonl");
            p.steps.push(Step::Join {
                inputs: s.prompts.iter().map(|set| ctx.prompt_set(*set)).collect(),
                output: prompts.clone(),
                limit: None,
            });
            argv.extend(["--prompts".into(), path_text(&prompts)]);
            let helpful_sets = s.helpful_prompts.clone().unwrap_or_else(|| {
                if r.data.helpful.is_empty() {
                    Vec::new()
                } else {
                    vec![PromptSet::Helpful]
                }
            });
            if !helpful_sets.is_empty() {
                let helpful = dir.join("helpful_prompts.jsonl");
                p.steps.push(Step::Join {
                    inputs: helpful_sets
                        .iter()
                        .map(|set| ctx.prompt_set(*set))
                        .collect(),
                    output: helpful.clone(),
                    limit: None,
                });
                argv.extend(["--helpful-prompts".into(), path_text(&helpful)]);
                opt(&mut argv, "--helpful-ratio", s.helpful_ratio);
            }
            opt(&mut argv, "--steps", s.steps);
            opt(&mut argv, "--kl-coef", s.kl_coef);
            opt(&mut argv, "--learning-rate", s.learning_rate);
            opt(&mut argv, "--save-every", s.save_every);
            if r.eval.as_ref().is_some_and(|e| e.rl_checkpoints) {
                // Every checkpoint is a snapshot of the Elo line.
                argv.extend(["--keep-last".into(), "all".into()]);
            }
            if s.lora {
                argv.push("--lora".into());
            }
            argv.extend(ctx.device_flags(true));
            argv.extend(s.args.iter().cloned());
            p.steps.push(Step::Cai {
                argv,
                training_output: Some(out.clone()),
            });
            if s.lora {
                p.steps.push(merge_step(ctx, stage, &policy));
            }
            p.inputs.push(model_input("policy", policy));
            for set in s.prompts.iter().chain(&helpful_sets) {
                p.inputs.push(path_input(set.name(), ctx.prompt_set(*set)));
            }
            p.outputs.push(("model".into(), ctx.stage_model(stage)));
            p.metrics_from = Some(out.join("metrics.jsonl"));
        }
        Stage::Eval => {
            let s = r.eval.as_ref().expect("planned stages exist");
            p.config = json!({ "eval": s, "models": r.models });
            for snapshot in super::eval::snapshots(ctx) {
                p.inputs
                    .push(model_input(snapshot.name.as_str(), snapshot.model));
            }
            if s.elo.is_some() {
                for set in [PromptSet::EvalRedTeam, PromptSet::EvalHelpful] {
                    p.inputs.push(path_input(set.name(), ctx.prompt_set(set)));
                }
                if let Some(context) = ctx.context_path()? {
                    p.inputs.push(path_input("context", context));
                }
                p.outputs.push((
                    "elo".into(),
                    dir.join(super::eval::ELO_DIR).join("elo.json"),
                ));
            }
            p.steps.push(Step::Eval);
            p.outputs
                .push(("lab eval".into(), dir.join(super::eval::LAB_EVAL_FILE)));
        }
    }
    p.writes = stage_writes(&p, &dir);
    Ok(p)
}

/// The files every stage writes in its folder.
const STAGE_FILES: [&str; 3] = [MANIFEST_FILE, CONFIG_FILE, METRICS_FILE];

/// The names in the stage folder `dir` that a plan writes: the stage's own files, each
/// step's output and each output, by their first component under `dir`.
fn stage_writes(p: &StagePlan, dir: &Path) -> Vec<String> {
    let mut paths: Vec<&Path> = p.outputs.iter().map(|(_, path)| path.as_path()).collect();
    for step in &p.steps {
        match step {
            Step::Join { output, .. } => paths.push(output),
            Step::Cai { argv, .. } => paths.extend(command_output(argv)),
            Step::Eval => {}
        }
    }
    let mut names: Vec<String> = STAGE_FILES.iter().map(|f| f.to_string()).collect();
    for path in paths {
        let first = path
            .strip_prefix(dir)
            .ok()
            .and_then(|p| p.components().next());
        if let Some(std::path::Component::Normal(name)) = first {
            let name = name.to_string_lossy().into_owned();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// The `--output` of a command's words.
fn command_output(argv: &[String]) -> Option<&Path> {
    argv.iter()
        .position(|a| a == "--output")
        .and_then(|i| argv.get(i + 1))
        .map(Path::new)
}

/// `path` made absolute, with `.` and `..` resolved and links resolved as far as it exists,
/// so that two spellings of one place compare equal.
fn normal(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut lexical = PathBuf::new();
    for part in absolute.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
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

/// Refuse a recipe whose inputs lie where the run writes: in a stage's folder (a stage
/// started afresh deletes what it wrote there, and its outputs would overwrite them) or one
/// of the run directory's own files. Paths inside what a command writes earlier in the run
/// (`@data/lab/…` of `lab_world`) are the run's own and allowed.
pub(super) fn check_inputs(ctx: &Ctx, plans: &[StagePlan]) -> anyhow::Result<()> {
    let r = ctx.recipe();
    let mut named: Vec<(String, String)> = Vec::new();
    for set in PromptSet::ALL {
        for file in r.data.files(set) {
            named.push((format!("[data] {}", set.name()), file.clone()));
        }
    }
    let c = &r.data.constitution;
    if c.starts_with('@') || c.contains('/') || c.ends_with(".toml") || c.ends_with(".json") {
        named.push(("[data] constitution".into(), c.clone()));
    }
    for (what, spec) in [("few_shot", &r.data.few_shot), ("context", &r.data.context)] {
        if let Some(spec) = spec {
            named.push((format!("[data] {what}"), spec.clone()));
        }
    }
    let mut paths: Vec<(String, String, PathBuf)> = named
        .into_iter()
        .map(|(what, spec)| {
            let path = ctx.path(&spec)?;
            Ok((what, spec, path))
        })
        .collect::<anyhow::Result<_>>()?;
    for (what, spec) in [
        ("[models] base", Some(&r.models.base)),
        ("[models] feedback", r.models.feedback.as_ref()),
    ] {
        if let Some(spec) = spec.filter(|s| Path::new(s.as_str()).exists()) {
            paths.push((what.into(), spec.clone(), PathBuf::from(spec)));
        }
    }
    let run = normal(&ctx.run_dir);
    for (what, spec, path) in paths {
        let path = normal(&path);
        let Ok(inner) = path.strip_prefix(&run) else {
            continue;
        };
        let Some(std::path::Component::Normal(first)) = inner.components().next() else {
            anyhow::bail!(
                "the recipe's {what} ({spec}) is the run directory {} itself; name a file \
                 outside it, or choose another --run-dir",
                ctx.run_dir.display()
            );
        };
        let first = first.to_string_lossy();
        let stage = cai_pipeline::recipe::STAGES
            .into_iter()
            .find(|s| s.name() == first);
        if let Some(stage) = stage {
            let made_earlier = plans
                .iter()
                .filter(|p| p.stage == stage)
                .flat_map(|p| commands(p).filter_map(|a| command_output(a)))
                .any(|out| {
                    let out = normal(out);
                    path != out && path.starts_with(&out)
                });
            anyhow::ensure!(
                made_earlier,
                "the recipe's {what} ({spec}) lies in {}, the folder of the {stage} stage, which \
                 cai writes and clears when the stage starts afresh; cai does not read inputs \
                 from there. Move the file out of the run directory {} (or choose another \
                 --run-dir)",
                ctx.stage_dir(stage).display(),
                ctx.run_dir.display()
            );
            continue;
        }
        let top = cai_pipeline::rundir::RUN_TOP_FILES.contains(&first.as_ref())
            || first == cai_pipeline::rundir::FIGURES_DIR
            || first == cai_pipeline::rundir::MARKER_FILE;
        anyhow::ensure!(
            !top,
            "the recipe's {what} ({spec}) is {}, a file cai pipeline writes in its run \
             directory; move it out of the run directory (or choose another --run-dir)",
            ctx.run_dir.join(first.as_ref()).display()
        );
    }
    Ok(())
}

/// The words of every `cai` command of a plan (for checking them before anything runs).
pub(super) fn commands(plan: &StagePlan) -> impl Iterator<Item = &Vec<String>> {
    plan.steps.iter().filter_map(|step| match step {
        Step::Cai { argv, .. } => Some(argv),
        _ => None,
    })
}

/// `cai` followed by the words, for manifests and the report.
pub(super) fn command_line(argv: &[String]) -> String {
    let mut all = vec!["cai".to_owned()];
    all.extend(argv.iter().cloned());
    super::shell_words(&all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_recipe_plans_every_stage_with_run_directory_paths() {
        let loaded = LoadedRecipe::load(None, false).unwrap();
        let ctx = Ctx {
            loaded: &loaded,
            run_dir: PathBuf::from("runs/x"),
        };
        let plans = plan_all(&ctx).unwrap();
        assert_eq!(plans.len(), 8);
        let sft: Vec<&Vec<String>> = commands(&plans[3]).collect();
        let line = command_line(sft[0]);
        assert!(
            line.starts_with("cai sft --model lab --data runs/x/critique/sl.jsonl"),
            "{line}"
        );
        assert!(line.contains("--helpful-ratio 2"), "{line}");
        assert!(line.contains("--learning-rate 0.00003"), "{line}");
        let label = command_line(commands(&plans[4]).next().unwrap());
        assert!(label.contains("--policy runs/x/sft/model"), "{label}");
        assert!(
            label.contains("--context-b runs/x/data/lab/hhh_context.txt"),
            "{label}"
        );
        let rl = command_line(commands(&plans[6]).next().unwrap());
        assert!(rl.contains("--reward runs/x/train-pm/model"), "{rl}");
        // What each stage writes in its folder, for deleting only that on a restart.
        let writes = |i: usize| plans[i].writes.join(" ");
        assert_eq!(
            writes(0),
            "manifest.json config.json metrics.jsonl lab red_team.jsonl helpful.jsonl \
             eval_red_team.jsonl eval_helpful.jsonl"
        );
        assert_eq!(
            writes(2),
            "manifest.json config.json metrics.jsonl sl.jsonl sl.helpful.jsonl"
        );
        assert_eq!(
            writes(7),
            "manifest.json config.json metrics.jsonl elo lab_eval.jsonl"
        );
        assert_eq!(plans[2].expect_ids.len(), 2);
    }

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
            let loaded = recipe(red_team);
            let ctx = Ctx {
                loaded: &loaded,
                run_dir: run.clone(),
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
