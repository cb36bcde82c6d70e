//! `cai lab pretrain` as a library call: the recipe of the lab's base models — the world's
//! corpus, a byte-level BPE trained on it, a Llama of the chosen size, the training core on the
//! packed corpus, the result written in f16 — and the record of how a model was made.
//!
//! ```text
//! OUT/config.json, model.safetensors, tokenizer.json, …   the model (Hugging Face layout)
//! OUT/lab_model.json                                       recipe, sizes, timings, lab eval
//! OUT/work/recipe.json                                     the recipe this directory is for
//! OUT/work/world/                                          `cai lab generate`'s files
//! OUT/work/init/                                           the random initial model
//! OUT/work/train/                                          checkpoints, metrics.jsonl, f32 model
//! ```
//!
//! Every step is skipped when its output is complete, and training resumes from its newest
//! checkpoint, so an interrupted run continues where it stopped.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use cai_model::config::{Architecture, ModelConfig};
use cai_model::init::{init_model, ModelShape, TokenizerSource};
use cai_model::local::{LoadOptions, LocalModel};
use cai_model::tokenizer::Tokenizer;
use cai_model::weights::{load_decoder, save_decoder};
use cai_train::sft::{run_sft, SftConfig, SftOutcome, SftRun};
use cai_train::{MetricRecord, ScheduleKind};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::eval::{evaluate, EvalOptions, LabReport};
use crate::generate::{generate, GenerateConfig};
use crate::world::World;
use crate::LabError;

/// The name of the record written beside a pre-trained lab model.
pub const LAB_MODEL_RECORD: &str = "lab_model.json";

/// The lab's model sizes: the same recipe at three widths, for the seed's comparison across
/// model sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabSize {
    /// Hidden 128, 4 layers, 4 heads, MLP 512: about 1.6M parameters.
    Small,
    /// Hidden 256, 4 layers, 4 heads, MLP 1024: about 5.2M parameters (the shipped `lab`).
    Base,
    /// Hidden 384, 6 layers, 6 heads, MLP 1536: about 15.7M parameters.
    Large,
}

impl LabSize {
    /// Every size, smallest first.
    pub const ALL: [LabSize; 3] = [LabSize::Small, LabSize::Base, LabSize::Large];

    /// The size's name ("small", "base", "large").
    pub fn name(self) -> &'static str {
        match self {
            LabSize::Small => "small",
            LabSize::Base => "base",
            LabSize::Large => "large",
        }
    }

    /// The size named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The model alias a shipped model of this size answers to (`--model lab-small`).
    pub fn alias(self) -> &'static str {
        match self {
            LabSize::Small => "lab-small",
            LabSize::Base => "lab",
            LabSize::Large => "lab-large",
        }
    }

    /// The model shape of this size with `vocab_size` embedding rows.
    pub fn shape(self, vocab_size: usize) -> ModelShape {
        let (hidden_size, num_layers, num_heads) = match self {
            LabSize::Small => (128, 4, 4),
            LabSize::Base => (256, 4, 4),
            LabSize::Large => (384, 6, 6),
        };
        ModelShape {
            architecture: Architecture::Llama,
            hidden_size,
            num_layers,
            num_heads,
            num_kv_heads: None,
            intermediate_size: 4 * hidden_size,
            vocab_size,
            // The HHH context and a dialogue take ~600 tokens; 1024 leaves room for
            // critique/revision rounds.
            max_position_embeddings: 1024,
            tie_word_embeddings: false,
            rope_theta: 10_000.0,
            norm_eps: 1e-5,
            sliding_window: None,
        }
    }
}

/// How a lab model is made. Saved in `work/recipe.json` and in [`LAB_MODEL_RECORD`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainRecipe {
    /// The size preset (recorded; `shape` is what is built).
    pub size: LabSize,
    /// The model's shape.
    pub shape: ModelShape,
    /// The world and its corpus (the world's seed is the recipe's seed).
    pub world: GenerateConfig,
    /// Seed of the random initial weights.
    pub init_seed: u64,
    /// Training on the corpus.
    pub train: SftConfig,
    /// Dtype of the weights written (`f16`: half the bytes, enough for inference and
    /// fine-tuning from, which loads them into f32).
    pub dtype: String,
}

impl PretrainRecipe {
    /// The recipe of the shipped models at `size` from `seed`.
    pub fn new(size: LabSize, seed: u64) -> Self {
        let mut world = GenerateConfig {
            seed,
            ..GenerateConfig::default()
        };
        // 10 000 documents are ~1.7M tokens: three passes take ~20 minutes for the base size
        // on 2 CPU cores.
        world.corpus.size = 10_000;
        Self {
            size,
            // The BPE of the lab's ~650 words stops near 1 700 tokens; 2 048 rows cover it.
            shape: size.shape(2048),
            world,
            init_seed: seed,
            train: SftConfig {
                // Three passes: one leaves the model memorising which objects go with each
                // action; by the third it copies the request's object into its answer.
                epochs: 3,
                learning_rate: 1e-3,
                schedule: ScheduleKind::Cosine,
                warmup_steps: 30,
                batch_size: 8,
                max_length: 512,
                packing: true,
                save_every: 200,
                seed,
                ..SftConfig::default()
            },
            dtype: "f16".into(),
        }
    }
}

/// What [`pretrain`] reports as it goes.
#[derive(Debug)]
pub enum PretrainEvent<'a> {
    /// A step starts ("generating the corpus", …).
    Step(&'static str),
    /// Training logged a metric; the second field is the run's total optimiser steps.
    Metric(&'a MetricRecord, u64),
}

/// The record of a pre-trained lab model, written to [`LAB_MODEL_RECORD`] beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabModelRecord {
    /// How it was made.
    pub recipe: PretrainRecipe,
    /// Parameters of the model.
    pub parameters: usize,
    /// Tokens of the tokenizer.
    pub tokenizer_vocab: usize,
    /// Corpus documents.
    pub corpus_documents: usize,
    /// Corpus tokens under the model's tokenizer (end-of-text tokens included).
    pub corpus_tokens: usize,
    /// Optimiser steps of training.
    pub train_steps: u64,
    /// Last training loss.
    pub final_train_loss: Option<f64>,
    /// Seconds spent training (the run that finished training; a resumed run counts from
    /// its resumption).
    pub train_seconds: f64,
    /// Rayon threads training used.
    pub threads: usize,
    /// `cai lab eval` on the written model (the world's held-out prompt sets).
    pub eval: LabReport,
}

/// How a [`pretrain`] call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum PretrainOutcome {
    /// The model and its record are in the output directory.
    Finished(Box<LabModelRecord>),
    /// The stop flag was raised during training; rerun to resume from this checkpoint.
    Interrupted {
        /// The checkpoint written.
        checkpoint: PathBuf,
    },
}

/// Where and how a [`pretrain`] call runs (none of it changes the model).
#[derive(Debug, Clone)]
pub struct PretrainRun {
    /// Output directory (see the module docs for the layout).
    pub output: PathBuf,
    /// Device to train and evaluate on.
    pub device: Device,
    /// At most this many items per measure in the final lab eval (`None`: every prompt).
    pub eval_max_items: Option<usize>,
}

/// Make the lab model of `recipe` in `run.output`, resuming whatever an earlier call with the
/// same recipe left there. `stop` is polled between training steps.
pub fn pretrain(
    recipe: &PretrainRecipe,
    run: &PretrainRun,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(PretrainEvent<'_>),
) -> Result<PretrainOutcome, LabError> {
    let (out, device) = (run.output.as_path(), &run.device);
    let work = out.join("work");
    claim_work_dir(recipe, &work)?;

    let world_dir = work.join("world");
    let manifest = world_dir.join("manifest.json");
    if !manifest.exists() {
        progress(PretrainEvent::Step("generating the corpus"));
        generate(&recipe.world, &world_dir)?;
    }
    let corpus_txt = world_dir.join("corpus/corpus.txt");

    let init_dir = work.join("init");
    if !init_dir.join("model.safetensors").exists() {
        progress(PretrainEvent::Step("training the tokenizer"));
        let partial = work.join("init.partial");
        remove_dir_if_exists(&partial)?;
        init_model(
            &recipe.shape,
            TokenizerSource::Train(corpus_txt.clone()),
            recipe.init_seed,
            DType::F32,
            &partial,
        )?;
        std::fs::rename(&partial, &init_dir).map_err(|e| LabError::io(&init_dir, e))?;
    }

    let train_dir = work.join("train");
    let trained = work.join("trained.json");
    let done: TrainingDone = match std::fs::read_to_string(&trained) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            LabError::Config(format!(
                "{}: {e}; delete it to train again",
                trained.display()
            ))
        })?,
        Err(_) => match train(
            recipe, &init_dir, &world_dir, &train_dir, device, stop, progress,
        )? {
            Some(done) => {
                write_json(&trained, &done)?;
                done
            }
            None => {
                let checkpoint = cai_train::latest_checkpoint(&train_dir.join("checkpoints"))?
                    .unwrap_or(train_dir);
                return Ok(PretrainOutcome::Interrupted { checkpoint });
            }
        },
    };

    progress(PretrainEvent::Step("writing the model"));
    let dtype = cai_model::weights::parse_dtype(&recipe.dtype).ok_or_else(|| {
        LabError::Config(format!(
            "dtype '{}': expected f32, bf16 or f16",
            recipe.dtype
        ))
    })?;
    export(&train_dir, &init_dir, out, dtype)?;

    progress(PretrainEvent::Step("evaluating on the held-out prompts"));
    let model = LocalModel::load(
        &out.display().to_string(),
        &LoadOptions {
            device: device.clone(),
            dtype: None,
        },
    )?;
    let world = World::with_split(recipe.world.seed, recipe.world.split)?;
    let eval_options = EvalOptions {
        max_items: run.eval_max_items,
        ..EvalOptions::new(&world)
    };
    let eval = evaluate(&model, &world, &eval_options)?;
    let tokenizer = Tokenizer::from_dir(out)?;
    let corpus = std::fs::read_to_string(&corpus_txt).map_err(|e| LabError::io(&corpus_txt, e))?;
    let record = LabModelRecord {
        recipe: recipe.clone(),
        parameters: model.decoder().config().num_parameters(),
        tokenizer_vocab: tokenizer.vocab_size(),
        corpus_documents: recipe.world.corpus.size,
        corpus_tokens: tokenizer.encode(&corpus, false)?.len(),
        train_steps: done.steps,
        final_train_loss: done.final_loss,
        train_seconds: done.seconds,
        threads: rayon_threads(),
        eval,
    };
    write_json(&out.join(LAB_MODEL_RECORD), &record)?;
    Ok(PretrainOutcome::Finished(Box::new(record)))
}

/// What a finished training run left, kept in `work/trained.json` so a later call skips it.
#[derive(Debug, Serialize, Deserialize)]
struct TrainingDone {
    steps: u64,
    final_loss: Option<f64>,
    seconds: f64,
}

/// Train the initial model on the corpus (resuming from the newest checkpoint); `None` when
/// the stop flag interrupted it.
fn train(
    recipe: &PretrainRecipe,
    init_dir: &Path,
    world_dir: &Path,
    train_dir: &Path,
    device: &Device,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(PretrainEvent<'_>),
) -> Result<Option<TrainingDone>, LabError> {
    let run = SftRun {
        model_dir: init_dir.to_owned(),
        data: world_dir.join("corpus/corpus.jsonl"),
        eval_data: None,
        output: train_dir.to_owned(),
        resume: true,
        allow_changes: Vec::new(),
        device: device.clone(),
    };
    progress(PretrainEvent::Step("training on the corpus"));
    let started = Instant::now();
    let outcome = run_sft(&run, &recipe.train, stop, &mut |record, total| {
        progress(PretrainEvent::Metric(record, total))
    })?;
    Ok(match outcome {
        SftOutcome::Finished {
            steps, train_loss, ..
        } => Some(TrainingDone {
            steps,
            final_loss: train_loss,
            seconds: started.elapsed().as_secs_f64(),
        }),
        SftOutcome::Interrupted { .. } => None,
    })
}

/// Write the trained model in `dtype` with the initial model's tokenizer and generation
/// defaults into `out`.
fn export(train_dir: &Path, init_dir: &Path, out: &Path, dtype: DType) -> Result<(), LabError> {
    let config = ModelConfig::from_file(&train_dir.join("config.json"))?;
    let ckpt = cai_model::checkpoint::Checkpoint::open_dir(train_dir)?;
    let decoder = load_decoder(config, &ckpt, DType::F32, &Device::Cpu)?;
    save_decoder(&decoder, out, dtype)?;
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        let (from, to) = (init_dir.join(name), out.join(name));
        std::fs::copy(&from, &to).map_err(|e| LabError::io(&from, e))?;
    }
    Ok(())
}

/// Record `recipe` in `work/recipe.json`, or check that the directory was started with it.
fn claim_work_dir(recipe: &PretrainRecipe, work: &Path) -> Result<(), LabError> {
    let path = work.join("recipe.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let earlier: PretrainRecipe = serde_json::from_str(&text).map_err(|e| {
                LabError::Config(format!(
                    "{}: {e}; expected the recipe of an earlier `cai lab pretrain`",
                    path.display()
                ))
            })?;
            if earlier != *recipe {
                return Err(LabError::Config(format!(
                    "{} holds a run of another recipe (size {}, seed {}); resume it with the \
                     same settings, or choose a new output directory",
                    work.parent().unwrap_or(work).display(),
                    earlier.size.name(),
                    earlier.world.seed
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(work).map_err(|e| LabError::io(work, e))?;
            write_json(&path, recipe)
        }
        Err(e) => Err(LabError::io(&path, e)),
    }
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), LabError> {
    let text = serde_json::to_string_pretty(value).expect("serialisable") + "\n";
    std::fs::write(path, text).map_err(|e| LabError::io(path, e))
}

fn remove_dir_if_exists(dir: &Path) -> Result<(), LabError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LabError::io(dir, e)),
        _ => Ok(()),
    }
}

fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_grow_and_name_their_aliases() {
        let params: Vec<usize> = LabSize::ALL
            .iter()
            .map(|s| s.shape(2048).config().unwrap().num_parameters())
            .collect();
        assert!(params.windows(2).all(|w| w[0] < w[1]), "{params:?}");
        // The shipped base model must fit the repository's 16 MiB cap in f16.
        assert!(params[1] * 2 < 16 << 20, "{}", params[1]);
        assert_eq!(LabSize::from_name("large"), Some(LabSize::Large));
        assert_eq!(LabSize::Base.alias(), "lab");
    }

    #[test]
    fn a_work_dir_refuses_another_recipe() {
        let dir = tempfile::tempdir().unwrap();
        let recipe = PretrainRecipe::new(LabSize::Small, 1);
        claim_work_dir(&recipe, dir.path()).unwrap();
        claim_work_dir(&recipe, dir.path()).unwrap();
        let other = PretrainRecipe::new(LabSize::Small, 2);
        let err = claim_work_dir(&other, dir.path()).unwrap_err().to_string();
        assert!(err.contains("another recipe"), "{err}");
    }
}
