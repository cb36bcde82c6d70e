//! The pipeline's typed jobs run in this process: each [`Job`] becomes its command's typed
//! arguments and runs through that command's own code — no command line is built or parsed.
//! The one exception is a recipe's `args = [...]` (flags the recipe has no key for), the
//! documented last resort: the job's command line with those words is parsed as `cai` would.

use std::process::ExitCode;

use anyhow::Context;
use cai_pipeline::stages::{DeviceFlags, Job, TrainingFlags};
use cai_train::distill::DistillConfig;
use cai_train::pm::data::DataSource;
use cai_train::pm::PmConfig;
use cai_train::rl::config::Algo;
use cai_train::rl::config::RlConfig;
use clap::{Parser, ValueEnum};

use crate::cli::{Cli, Command};
use crate::commands::critique::CritiqueArgs;
use crate::commands::distill::DistillArgs;
use crate::commands::eval::elo::EloArgs;
use crate::commands::eval::judges::JudgeSpec;
use crate::commands::eval::safety::SafetyArgs;
use crate::commands::eval::{EvalArgs, EvalCommand};
use crate::commands::lab::generate::LabGenerateArgs;
use crate::commands::lab::{LabArgs, LabCommand};
use crate::commands::label::{parse_ensemble, LabelArgs};
use crate::commands::merge_lora::MergeLoraArgs;
use crate::commands::rl::RlArgs;
use crate::commands::sft::SftArgs;
use crate::commands::train_pm::TrainPmArgs;
use crate::model_args::{DeviceName, Dtype, ModelArgs};
use crate::train_flags::{parse_config, RunFlags};

/// What a training job does about what an earlier attempt left in its output folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// Continue from its checkpoint or finished model.
    Resume,
    /// Delete it and start afresh.
    Afresh,
}

/// The words a training job's start adds to its command line.
pub(super) fn start_word(start: Start) -> &'static str {
    match start {
        Start::Resume => "--resume",
        Start::Afresh => "--overwrite",
    }
}

/// The command `job` is, with its typed arguments. A training job resumes or starts afresh
/// as `start` says (other jobs ignore it). Every value the recipe gave as text (device,
/// dtype, algorithm, ensemble) is checked here, so that a bad one fails before any stage
/// runs.
pub(super) fn command(job: &Job, start: Start) -> anyhow::Result<Command> {
    if !job.extra_args().is_empty() {
        return parse_with_args(job, start);
    }
    let device = |d: &DeviceFlags| -> anyhow::Result<(DeviceName, Option<Dtype>)> {
        let name = d
            .device
            .parse::<DeviceName>()
            .map_err(|e| anyhow::anyhow!("[models] device: {e}"))?;
        let dtype = d
            .dtype
            .as_deref()
            .map(|t| {
                Dtype::from_str(t, false).map_err(|_| {
                    anyhow::anyhow!(
                        "[models] dtype: '{t}' is not a dtype; expected f32, f16 or bf16"
                    )
                })
            })
            .transpose()?;
        Ok((name, dtype))
    };
    let run_flags = |d: &DeviceFlags| -> anyhow::Result<RunFlags> {
        let (device, dtype) = device(d)?;
        Ok(RunFlags {
            device,
            dtype,
            resume: start == Start::Resume,
            overwrite: start == Start::Afresh,
            ..RunFlags::default()
        })
    };
    // The shared flags of a training job with the shared settings.
    let training_run = |d: &DeviceFlags, t: &TrainingFlags| -> anyhow::Result<RunFlags> {
        Ok(RunFlags {
            learning_rate: t.learning_rate,
            save_every: t.save_every,
            config: job.config_file().map(|c| c.path.clone()),
            ..run_flags(d)?
        })
    };
    Ok(match job {
        Job::LabGenerate(j) => Command::Lab(LabArgs {
            command: LabCommand::Generate(LabGenerateArgs {
                output: j.output.clone(),
                seed: j.seed,
                size: cai_pipeline::stages::data::LabWorldJob::SIZE,
                prompts_per_task: cai_lab::generate::GenerateConfig::default().prompts_per_task,
                mix: Vec::new(),
                overwrite: true,
            }),
        }),
        Job::Distill(j) => {
            let run = training_run(&j.device, &j.training)?;
            Command::Distill(Box::new(DistillArgs {
                model: j.model.clone(),
                context: j.context.clone(),
                data: j.data.clone(),
                output: j.output.clone(),
                sample: j.sample,
                lora: j.lora,
                epochs: j.training.epochs,
                max_steps: j.training.max_steps,
                batch_size: j.training.batch_size,
                run,
                ..DistillArgs::default()
            }))
        }
        Job::Critique(j) => {
            let (device, dtype) = device(&j.device)?;
            let model = ModelArgs {
                model: j.model.clone(),
                device,
                dtype,
            };
            let mut args = CritiqueArgs::new(
                model,
                j.prompts.clone(),
                j.constitution.clone(),
                j.output.clone(),
            );
            args.critic = j.critic.clone();
            args.few_shot = j.few_shot.as_ref().map(|p| p.display().to_string());
            args.helpful_prompts = j.helpful_prompts.clone();
            args.rounds = j.rounds.unwrap_or(args.rounds);
            args.max_new_tokens = j.max_new_tokens.unwrap_or(args.max_new_tokens);
            args.temperature = j.temperature.unwrap_or(args.temperature);
            args.batch_size = j.batch_size.unwrap_or(args.batch_size);
            Command::Critique(Box::new(args))
        }
        Job::Sft(j) => {
            let run = training_run(&j.device, &j.training)?;
            Command::Sft(Box::new(SftArgs {
                model: j.model.clone(),
                data: j.data.clone(),
                output: j.output.clone(),
                helpful_data: j.helpful_data.clone(),
                helpful_ratio: j.helpful_ratio,
                revision_rounds: j.revision_rounds,
                lora: j.lora,
                epochs: j.training.epochs,
                max_steps: j.training.max_steps,
                batch_size: j.training.batch_size,
                run,
                ..SftArgs::default()
            }))
        }
        Job::Label(j) => {
            let (device, dtype) = device(&j.device)?;
            let mut args = LabelArgs::new(
                j.policy.clone(),
                j.prompts.clone(),
                j.constitution.clone(),
                j.output.clone(),
            );
            args.feedback = Some(j.feedback.clone());
            args.ensemble = j
                .ensemble
                .as_deref()
                .map(parse_ensemble)
                .transpose()
                .map_err(|e| anyhow::anyhow!("[label] ensemble: {e}"))?;
            args.swap = j.swap;
            args.context_b = j.context_b.clone();
            args.max_new_tokens = j.max_new_tokens.unwrap_or(args.max_new_tokens);
            args.device = device;
            args.dtype = dtype;
            Command::Label(Box::new(args))
        }
        Job::TrainPm(j) => {
            let run = training_run(&j.device, &j.training)?;
            Command::TrainPm(Box::new(TrainPmArgs {
                model: j.model.clone(),
                data: vec![DataSource {
                    path: j.data.clone(),
                    weight: 1.0,
                }],
                output: j.output.clone(),
                epochs: j.training.epochs,
                max_steps: j.training.max_steps,
                batch_size: j.training.batch_size,
                run,
                ..TrainPmArgs::default()
            }))
        }
        Job::Rl(j) => {
            let mut run = run_flags(&j.device)?;
            run.learning_rate = j.learning_rate;
            run.save_every = j.save_every;
            run.config = j.config.as_ref().map(|c| c.path.clone());
            let algo = Algo::from_str(&j.algo, false).map_err(|_| {
                anyhow::anyhow!(
                    "[rl] algo: '{}' is not an algorithm; expected ppo, rloo or dpo",
                    j.algo
                )
            })?;
            Command::Rl(Box::new(RlArgs {
                algo: Some(algo),
                policy: j.policy.clone(),
                output: j.output.clone(),
                data: j.data.clone(),
                reward: j.reward.clone(),
                prompts: Some(j.prompts.clone()),
                helpful_prompts: j.helpful_prompts.clone(),
                helpful_ratio: j.helpful_ratio,
                steps: j.steps,
                kl_coef: j.kl_coef,
                keep_last: j.keep_all.then(|| "all".to_owned()),
                lora: j.lora,
                run,
                ..RlArgs::default()
            }))
        }
        Job::MergeLora(j) => Command::MergeLora(MergeLoraArgs {
            model: j.model.clone(),
            adapter: j.adapter.clone(),
            output: j.output.clone(),
            dtype: None,
            overwrite: true,
        }),
        Job::Elo(j) => {
            let (device, dtype) = device(&j.device)?;
            let judge = j
                .judge
                .parse::<JudgeSpec>()
                .map_err(|e| anyhow::anyhow!("[eval.elo] judge: {e}"))?;
            let mut snapshots = Vec::new();
            let mut contexts = Vec::new();
            for (snapshot, context) in &j.snapshots {
                snapshots.push(format!("{}={}", snapshot.name, snapshot.model));
                if let Some(context) = context {
                    contexts.push(format!("{}={}", snapshot.name, context.display()));
                }
            }
            let mut args = EloArgs::new(snapshots, judge, j.output.clone());
            args.contexts = contexts;
            args.red_team = Some(j.red_team.clone());
            args.benign = Some(j.benign.clone());
            args.samples = j.samples;
            args.bootstrap = j.bootstrap.map_or(args.bootstrap, |b| b as usize);
            args.max_new_tokens = j.max_new_tokens.unwrap_or(args.max_new_tokens);
            args.device = device;
            args.dtype = dtype;
            Command::Eval(EvalArgs {
                command: EvalCommand::Elo(Box::new(args)),
            })
        }
        Job::Safety(j) => {
            let (device, dtype) = device(&j.device)?;
            let judges = j
                .judges
                .iter()
                .map(|judge| judge.parse::<JudgeSpec>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("[eval.safety] judges: {e}"))?;
            let models = j
                .snapshots
                .iter()
                .map(|s| format!("{}={}", s.name, s.model))
                .collect();
            let mut args = SafetyArgs::new(models, judges, j.output.clone());
            args.red_team = Some(j.red_team.display().to_string());
            args.benign = Some(j.benign.clone());
            args.samples = j.samples;
            args.max_new_tokens = j.max_new_tokens.unwrap_or(args.max_new_tokens);
            args.bootstrap = j.bootstrap.map_or(args.bootstrap, |b| b as usize);
            args.device = device;
            args.dtype = dtype;
            Command::Eval(EvalArgs {
                command: EvalCommand::Safety(Box::new(args)),
            })
        }
    })
}

/// The last resort: the job's command line (with the recipe's `args`, and a training job's
/// `--resume` or `--overwrite`) parsed as `cai` would.
fn parse_with_args(job: &Job, start: Start) -> anyhow::Result<Command> {
    let mut words = job.words();
    if job.training_output().is_some() {
        words.push(start_word(start).into());
    }
    let line = cai_pipeline::stages::command_line(&words);
    let all = std::iter::once("cai".to_owned()).chain(words);
    Cli::try_parse_from(all)
        .map(|cli| cli.command)
        .map_err(|e| anyhow::anyhow!("`{line}` does not parse:\n{}", e.render()))
}

/// Check a training job's `[stage.config]` table as its command will read it (unknown keys,
/// wrong types), so that a mistake fails before any stage runs.
pub(super) fn check_config(job: &Job) -> anyhow::Result<()> {
    let Some(file) = job.config_file() else {
        return Ok(());
    };
    let origin = format!("the recipe's [{}.config]", job.words()[0]);
    match job {
        Job::Sft(_) => drop(crate::commands::sft::parse_config(&file.text, &origin)?),
        Job::Distill(_) => drop(parse_config::<DistillConfig>(&file.text, &origin)?),
        Job::TrainPm(_) => drop(parse_config::<PmConfig>(&file.text, &origin)?),
        Job::Rl(_) => drop(parse_config::<RlConfig>(&file.text, &origin)?),
        _ => {}
    }
    Ok(())
}

/// Run `job` in this process (its `[stage.config]` table written first as its `--config`
/// file).
pub(super) fn run(job: &Job, start: Start) -> anyhow::Result<ExitCode> {
    if let Some(file) = job.config_file() {
        if let Some(dir) = file.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        cai_pipeline::runner::write_atomic(&file.path, file.text.as_bytes())?;
    }
    let command = command(job, start).with_context(|| job.command_line())?;
    let code = crate::run(command);
    crate::interrupt::release_ctrl_c();
    code
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use cai_pipeline::recipe::LoadedRecipe;
    use cai_pipeline::stages::eval::{jobs as eval_jobs, snapshots};
    use cai_pipeline::stages::{plan_all, RunContext};

    use super::*;

    /// `f` of a recipe's text planned in run directory `run` (with `[quick]` applied) and the
    /// planned stages' jobs.
    fn with_plan<T>(text: &str, quick: bool, f: impl FnOnce(&RunContext, Vec<Job>) -> T) -> T {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.toml");
        std::fs::write(&path, text).unwrap();
        let loaded = LoadedRecipe::load(Some(&path), quick).unwrap();
        let ctx = RunContext {
            loaded: &loaded,
            run_dir: Path::new("run"),
        };
        let jobs = plan_all(&ctx)
            .unwrap()
            .iter()
            .flat_map(|p| p.jobs().cloned().collect::<Vec<_>>())
            .collect();
        f(&ctx, jobs)
    }

    /// The typed arguments of every job equal what clap makes of the job's command line: the
    /// text in the manifests is the command that ran. Returns the command lines checked.
    fn typed_equals_parsed(recipe: &str, quick: bool) -> Vec<String> {
        let jobs = with_plan(recipe, quick, |ctx, mut jobs| {
            // The eval stage's jobs are made when it runs (over the RL checkpoints there are).
            jobs.extend(eval_jobs(ctx, &snapshots(ctx)).unwrap());
            jobs
        });
        let mut checked = 0;
        for job in &jobs {
            for start in [Start::Resume, Start::Afresh] {
                let typed = command(job, start).unwrap();
                let parsed = parse_with_args(job, start).unwrap();
                assert_eq!(
                    format!("{typed:?}"),
                    format!("{parsed:?}"),
                    "{}",
                    job.command_line()
                );
                checked += 1;
            }
        }
        assert!(checked >= 12, "only {checked} jobs");
        jobs.iter().map(Job::command_line).collect()
    }

    #[test]
    fn the_lab_recipes_jobs_are_their_command_lines() {
        for quick in [true, false] {
            let lines = typed_equals_parsed(cai_pipeline::recipe::LAB_RECIPE, quick);
            assert!(lines.iter().any(|l| l.starts_with("cai eval elo ")));
        }
    }

    #[test]
    fn lora_dpo_and_every_setting_are_their_command_lines() {
        let recipe = r#"
name = "all"
[models]
base = "lab"
feedback = "other"
critic = "strong"
device = "cuda:1"
dtype = "bf16"
[data]
red_team = ["p.jsonl"]
helpful = ["h.jsonl"]
constitution = "default"
context = "c.txt"
[distill]
sample = false
lora = true
max_steps = 7
batch_size = 3
save_every = 5
learning_rate = 0.5
[critique]
rounds = 2
max_new_tokens = 9
temperature = 0.25
batch_size = 4
[sft]
lora = true
helpful_ratio = 0.5
revision_rounds = 1
epochs = 2
[label]
ensemble = "3"
context_b = true
max_new_tokens = 5
[train-pm]
batch_size = 2
max_steps = 3
[rl]
algo = "dpo"
lora = true
steps = 3
kl_coef = 0.1
learning_rate = 0.01
save_every = 1
[eval]
snapshots = ["base", "sl-cai", "rl-cai"]
[eval.safety]
judges = ["refusal", "pm", "classifier:wildguard@guard", "llm:http://127.0.0.1:9/v1#j"]
red_team = "red_team"
benign = "helpful"
samples = 5
max_new_tokens = 7
bootstrap = 30
"#;
        let lines = typed_equals_parsed(recipe, false);
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("cai critique --model lab --critic strong ")),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("cai eval safety ")
                && l.contains("--benign run/data/helpful.jsonl")),
            "{lines:?}"
        );
        // Defaults: the held-out red-team set and the shipped over-refusal set.
        let defaults = r#"
name = "d"
[models]
base = "lab"
[data]
red_team = ["p.jsonl"]
eval_red_team = ["e.jsonl"]
constitution = "default"
[critique]
[sft]
[label]
[train-pm]
[rl]
[eval]
snapshots = ["base", "rl-cai"]
safety = { judges = ["refusal"] }
"#;
        let lines = typed_equals_parsed(defaults, false);
        assert!(
            lines.iter().any(|l| l.contains("--benign over-refusal")
                && l.contains("--red-team run/data/eval_red_team.jsonl")),
            "{lines:?}"
        );
    }

    #[test]
    fn a_bad_device_dtype_ensemble_or_flag_is_named_before_anything_runs() {
        let recipe = |models: &str, label: &str, rl: &str| {
            format!(
                "name = \"t\"\n[models]\nbase = \"lab\"\n{models}\n[data]\n\
                 red_team = [\"p.jsonl\"]\nconstitution = \"default\"\n\
                 [critique]\n[sft]\n[label]\n{label}\n[train-pm]\n[rl]\n{rl}\n"
            )
        };
        let first_error = |text: String| {
            planned(&text, false)
                .iter()
                .find_map(|job| command(job, Start::Afresh).err())
                .map(|e| format!("{e:#}"))
        };
        let err = first_error(recipe("device = \"gpu\"", "", "")).unwrap();
        assert!(
            err.contains("[models] device") && err.contains("gpu"),
            "{err}"
        );
        let err = first_error(recipe("", "ensemble = \"none\"", "")).unwrap();
        assert!(
            err.contains("[label] ensemble") && err.contains("none"),
            "{err}"
        );
        let err = first_error(recipe("", "", "args = [\"--no-such-flag\"]")).unwrap();
        assert!(err.contains("--no-such-flag"), "{err}");
        assert_eq!(first_error(recipe("", "", "")), None);
    }

    /// `[models] inference_dtype` reaches the stages that only run models (critique, label
    /// and the eval stage's jobs); the training stages keep `[models] dtype`.
    #[test]
    fn the_inference_dtype_reaches_only_the_inference_stages() {
        let text = cai_pipeline::recipe::LAB_RECIPE.replacen(
            "[models]\n",
            "[models]\ninference_dtype = \"bf16\"\n",
            1,
        );
        let dtypes = with_plan(&text, false, |ctx, mut jobs| {
            jobs.extend(eval_jobs(ctx, &snapshots(ctx)).unwrap());
            jobs.iter()
                .map(|job| {
                    let words = job.words();
                    let command = words
                        .iter()
                        .find(|w| *w != "cai")
                        .cloned()
                        .unwrap_or_default();
                    let bf16 = words
                        .windows(2)
                        .any(|w| w[0] == "--dtype" && w[1] == "bf16");
                    (command, bf16)
                })
                .collect::<Vec<_>>()
        });
        let bf16: Vec<&str> = dtypes
            .iter()
            .filter(|(_, b)| *b)
            .map(|(c, _)| c.as_str())
            .collect();
        let f32: Vec<&str> = dtypes
            .iter()
            .filter(|(_, b)| !*b)
            .map(|(c, _)| c.as_str())
            .collect();
        for stage in ["critique", "label", "eval"] {
            assert!(bf16.contains(&stage), "{stage} not in bf16: {dtypes:?}");
        }
        for stage in ["distill", "sft", "train-pm", "rl"] {
            assert!(
                f32.contains(&stage),
                "{stage} not in the default dtype: {dtypes:?}"
            );
        }
    }

    /// The jobs a recipe's text plans (run directory `run`), with `[quick]` applied.
    fn planned(text: &str, quick: bool) -> Vec<Job> {
        with_plan(text, quick, |_, jobs| jobs)
    }

    #[test]
    fn a_stages_config_table_is_its_commands_config_file() {
        let recipe = |sft_config: &str| {
            format!(
                "name = \"c\"\n[models]\nbase = \"lab\"\n[data]\nred_team = [\"p.jsonl\"]\n\
                 context = \"c.txt\"\nconstitution = \"default\"\n\
                 [distill]\n[distill.config]\ngrad_accum = 2\n\
                 [critique]\n[sft]\nepochs = 2\n[sft.config]\n{sft_config}\n\
                 [label]\n[train-pm]\n[train-pm.config]\nwarmup_steps = 1\n\
                 [rl]\n[rl.config]\nkl_estimator = \"k3\"\n\
                 [quick.sft.config]\nwarmup_steps = 1\n"
            )
        };
        let good = recipe("warmup_steps = 3\nschedule = \"linear\"\n[sft.config.lora]\nr = 4");
        // Typed and parsed agree, with `--config` naming the file in the stage's folder.
        let lines = typed_equals_parsed(&good, false);
        for stage in ["distill", "sft", "train-pm", "rl"] {
            let flag = format!("--config run/{stage}/trainer.toml");
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with(&format!("cai {stage} ")) && l.contains(&flag)),
                "{stage}: {lines:?}"
            );
        }
        let jobs = planned(&good, false);
        let sft = jobs.iter().find(|j| matches!(j, Job::Sft(_))).unwrap();
        let file = sft.config_file().unwrap();
        let (config, _) = crate::commands::sft::parse_config(&file.text, "t").unwrap();
        assert_eq!(config.warmup_steps, 3);
        assert_eq!(config.schedule, cai_train::ScheduleKind::Linear);
        assert_eq!(config.lora.unwrap().r, 4);
        for job in &jobs {
            check_config(job).unwrap();
        }
        // A `[lora]` table trains adapters as `lora = true` does: the stage says `--lora`
        // and its adapter is merged for the stages after it.
        assert!(matches!(sft, Job::Sft(j) if j.lora), "{sft:?}");
        assert!(
            jobs.iter()
                .any(|j| matches!(j, Job::MergeLora(m) if m.adapter.starts_with("run/sft"))),
            "{lines:?}"
        );
        // A `save_every` in the table is the command's: the pipeline passes no interval.
        let saving = planned(&recipe("save_every = 7"), false);
        let sft_line = saving
            .iter()
            .find(|j| matches!(j, Job::Sft(_)))
            .unwrap()
            .command_line();
        assert!(!sft_line.contains("--save-every"), "{sft_line}");
        let distill_line = saving
            .iter()
            .find(|j| matches!(j, Job::Distill(_)))
            .unwrap()
            .command_line();
        assert!(distill_line.contains("--save-every 20"), "{distill_line}");
        // `[quick]` merges into the table like any other key.
        let quick = planned(&good, true);
        let text = &quick.iter().find_map(|j| match j {
            Job::Sft(s) => s.config.clone(),
            _ => None,
        });
        assert!(
            text.as_ref().unwrap().text.contains("warmup_steps = 1"),
            "{text:?}"
        );
        // A typo is named with the table it is in, before anything runs.
        let bad = planned(&recipe("warmup_step = 3"), false);
        let err = bad.iter().find_map(|j| check_config(j).err()).unwrap();
        let err = format!("{err:#}");
        assert!(
            err.contains("[sft.config]") && err.contains("warmup_step"),
            "{err}"
        );
        let bad = planned(&recipe("[sft.config.lora]\nrank = 4"), false);
        let err = format!(
            "{:#}",
            bad.iter().find_map(|j| check_config(j).err()).unwrap()
        );
        assert!(
            err.contains("[sft.config]") && err.contains("rank"),
            "{err}"
        );
    }
}
