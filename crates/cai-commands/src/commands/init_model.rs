//! `cai init-model`: a new randomly initialised model of any supported architecture and size,
//! with a given or freshly trained tokenizer, written as a Hugging Face model directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cai_core::lock::WriterLock;
use cai_model::config::{Architecture, SUPPORTED_MODEL_TYPES};
use cai_model::init::{check_init_memory, init_model, ModelShape, TokenizerSource};
use cai_model::tokenizer::Tokenizer;
use cai_model::write_atomic;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{ArgGroup, Args};
use serde::{Deserialize, Serialize};

use crate::human;
use crate::model_args::Dtype;
use crate::usage::{ensure, UsageError};

/// The file in the new model directory that records how it was made.
const INIT_CONFIG_FILE: &str = "init_config.json";

/// Raw `cai init-model` arguments. Unset sizes are those of `bench-6m` (docs/BENCH.md).
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("tokenizer_source")
        .required(true)
        .args(["tokenizer", "train_tokenizer"])
))]
pub struct InitModelArgs {
    /// Architecture family
    #[arg(
        long,
        default_value = "llama",
        value_parser = PossibleValuesParser::new(SUPPORTED_MODEL_TYPES)
            .map(|s| Architecture::from_model_type(&s).expect("a listed model_type"))
    )]
    pub arch: Architecture,
    /// Directory to write the model to (created if needed)
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// Residual width [default: 256]
    #[arg(long, value_name = "N")]
    pub hidden_size: Option<usize>,
    /// Decoder blocks [default: 4]
    #[arg(long, value_name = "N")]
    pub layers: Option<usize>,
    /// Attention (query) heads [default: 4]
    #[arg(long, value_name = "N")]
    pub heads: Option<usize>,
    /// Key/value heads, for grouped-query attention [default: as many as --heads]
    #[arg(long, value_name = "N")]
    pub kv_heads: Option<usize>,
    /// MLP width [default: 1024]
    #[arg(long, value_name = "N")]
    pub intermediate_size: Option<usize>,
    /// Embedding rows [default: 4096 with --train-tokenizer, the tokenizer's size with
    /// --tokenizer]
    #[arg(long, value_name = "N")]
    pub vocab_size: Option<usize>,
    /// Context length in tokens [default: 2048]
    #[arg(long, value_name = "N")]
    pub max_positions: Option<usize>,
    /// Share the embedding matrix with the output layer (GPT-2 always does)
    #[arg(long)]
    pub tie_embeddings: bool,
    /// Sliding attention window in tokens (mistral, qwen2, qwen3) [default: full attention]
    #[arg(long, value_name = "N")]
    pub sliding_window: Option<usize>,
    /// Seed of the random weights
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Dtype of the weights on disk
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: Dtype,
    /// Use this tokenizer.json
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Train a byte-level BPE tokenizer of --vocab-size tokens on this UTF-8 text file
    #[arg(long, value_name = "CORPUS")]
    pub train_tokenizer: Option<PathBuf>,
    /// Replace a model already in --output
    #[arg(long)]
    pub force: bool,
}

/// Where the tokenizer comes from, as recorded in `init_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerChoice {
    /// An existing `tokenizer.json`.
    File(PathBuf),
    /// A byte-level BPE trained on this corpus.
    Train(PathBuf),
}

/// A validated `cai init-model` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitModelConfig {
    /// Architecture and sizes.
    pub shape: ModelShape,
    /// The tokenizer's source.
    pub tokenizer: TokenizerChoice,
    /// Seed of the random weights.
    pub seed: u64,
    /// Dtype on disk.
    pub dtype: Dtype,
    /// The model directory.
    pub output: PathBuf,
}

impl InitModelConfig {
    /// Check the arguments and fill in defaults. A `--tokenizer` file is read here, since an
    /// unset `--vocab-size` is its size; the loaded tokenizer is returned for reuse.
    pub fn from_args(args: InitModelArgs) -> anyhow::Result<(Self, TokenizerSource)> {
        for (flag, value) in [
            ("--hidden-size", args.hidden_size),
            ("--layers", args.layers),
            ("--heads", args.heads),
            ("--kv-heads", args.kv_heads),
            ("--intermediate-size", args.intermediate_size),
            ("--vocab-size", args.vocab_size),
            ("--max-positions", args.max_positions),
            ("--sliding-window", args.sliding_window),
        ] {
            ensure(value != Some(0), || {
                format!("{flag} 0: expected at least 1")
            })?;
        }
        let arch = args.arch;
        let has_window = matches!(
            arch,
            Architecture::Mistral | Architecture::Qwen2 | Architecture::Qwen3
        );
        ensure(args.sliding_window.is_none() || has_window, || {
            format!(
                "--sliding-window: {} has no sliding-window attention; use mistral, qwen2 or qwen3",
                arch.model_type()
            )
        })?;
        ensure(
            args.kv_heads.is_none() || arch != Architecture::Gpt2,
            || "--kv-heads: gpt2 has no grouped-query attention".into(),
        )?;
        let (tokenizer, source, tokenizer_vocab) = match (args.tokenizer, args.train_tokenizer) {
            (Some(file), None) => {
                let loaded = Tokenizer::from_tokenizer_json(&file)?;
                let vocab = loaded.vocab_size();
                (
                    TokenizerChoice::File(file),
                    TokenizerSource::Loaded(Box::new(loaded)),
                    Some(vocab),
                )
            }
            (None, Some(corpus)) => (
                TokenizerChoice::Train(corpus.clone()),
                TokenizerSource::Train(corpus),
                None,
            ),
            _ => unreachable!("clap requires exactly one tokenizer source"),
        };
        let bench = ModelShape::default();
        let shape = ModelShape {
            architecture: arch,
            hidden_size: args.hidden_size.unwrap_or(bench.hidden_size),
            num_layers: args.layers.unwrap_or(bench.num_layers),
            num_heads: args.heads.unwrap_or(bench.num_heads),
            num_kv_heads: args.kv_heads,
            intermediate_size: args.intermediate_size.unwrap_or(bench.intermediate_size),
            vocab_size: args
                .vocab_size
                .or(tokenizer_vocab)
                .unwrap_or(bench.vocab_size),
            max_position_embeddings: args.max_positions.unwrap_or(bench.max_position_embeddings),
            tie_word_embeddings: args.tie_embeddings,
            sliding_window: args.sliding_window,
            ..bench
        };
        check_heads(&shape)?;
        shape
            .config()
            .map_err(|e| UsageError(format!("invalid model shape: {e}")))?;
        let config = Self {
            shape,
            tokenizer,
            seed: args.seed,
            dtype: args.dtype,
            output: args.output,
        };
        Ok((config, source))
    }
}

/// The heads must split the width evenly (and into even halves for rotary embeddings), and
/// the key/value heads must split the query heads: said in the flags' terms.
fn check_heads(shape: &ModelShape) -> Result<(), UsageError> {
    let (hidden, heads) = (shape.hidden_size, shape.num_heads);
    ensure(hidden.is_multiple_of(heads), || {
        format!("--heads {heads}: --hidden-size {hidden} must be a multiple of the number of heads")
    })?;
    if let Some(kv) = shape.num_kv_heads {
        ensure(heads.is_multiple_of(kv), || {
            format!("--kv-heads {kv}: --heads {heads} must be a multiple of the key/value heads")
        })?;
    }
    let width = hidden / heads;
    ensure(
        shape.architecture == Architecture::Gpt2 || width.is_multiple_of(2),
        || {
            format!(
                "--hidden-size {hidden} over --heads {heads} gives heads {width} wide; {}'s rotary \
                 embeddings need an even width",
                shape.architecture.model_type()
            )
        },
    )
}

/// Run `cai init-model`.
pub fn run(args: InitModelArgs) -> anyhow::Result<()> {
    let force = args.force;
    let (config, tokenizer) = InitModelConfig::from_args(args)?;
    let dir = &config.output;
    // Before anything is allocated or written: a model larger than memory is refused.
    check_init_memory(&config.shape, config.dtype.to_candle()).context(
        "this model would not fit in memory; pass a smaller --hidden-size, --layers, \
         --intermediate-size or --vocab-size",
    )?;
    // One writer per model folder: two runs would mix their files.
    let _lock = WriterLock::acquire(dir)?;
    anyhow::ensure!(
        force || !dir.join("config.json").exists(),
        "{} already holds a model (config.json); pass --force to replace it",
        dir.display()
    );
    let model_config = init_model(
        &config.shape,
        tokenizer,
        config.seed,
        config.dtype.to_candle(),
        dir,
    )
    .with_context(|| format!("writing a new model to {}", dir.display()))?;
    let record = dir.join(INIT_CONFIG_FILE);
    let json = serde_json::to_string_pretty(&config).expect("configs serialise") + "\n";
    write_atomic(&record, json.as_bytes())?;

    let tokens = Tokenizer::from_dir(dir)?.vocab_size();
    let shape = &config.shape;
    println!(
        "{} model, {} parameters (hidden {}, {} layers, {} heads, vocab {}; tokenizer {} tokens)",
        shape.architecture.model_type(),
        human::thousands(model_config.num_parameters() as u64),
        shape.hidden_size,
        shape.num_layers,
        shape.num_heads,
        shape.vocab_size,
        tokens,
    );
    println!("wrote {}:", dir.display());
    for (name, size) in files_in(dir)? {
        println!("  {name:<26} {:>10}", human::bytes(size));
    }
    Ok(())
}

/// The files directly in `dir`, sorted by name, with their sizes.
fn files_in(dir: &Path) -> anyhow::Result<Vec<(String, u64)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let meta = entry.metadata()?;
        if meta.is_file() {
            files.push((entry.file_name().to_string_lossy().into_owned(), meta.len()));
        }
    }
    files.sort();
    Ok(files)
}
