//! `cai score --reward-model PM`: a preference model's reward for each response (or each pair
//! of responses) of a JSONL file, written incrementally and resumable.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use cai_core::dialogue::{Message, Role};
use cai_model::batching::EngineLimits;
use cai_model::reward_model::{is_preference_model, RewardModel};
use cai_model::tokenizer::{DialogueFormat, Tokenizer};
use cai_train::pm::data::conversation_of;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::ScoreArgs;
use crate::human;
use crate::model_args::{DeviceName, Dtype};
use crate::progress;
use crate::resume::{self, InputRecord};
use crate::usage::ensure;

/// A validated `cai score --reward-model` run; saved beside the output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardScoreConfig {
    /// The preference model.
    pub reward_model: String,
    /// Device.
    pub device: DeviceName,
    /// Compute dtype.
    pub dtype: Option<Dtype>,
    /// How dialogues become text.
    pub format: DialogueFormat,
    /// Input JSONL.
    pub input: PathBuf,
    /// Output JSONL.
    pub output: PathBuf,
    /// Records per model call.
    pub batch_size: usize,
}

/// The dialogues of one record: one (`reward`) or two (`reward_a`, `reward_b`).
fn dialogues(path: &Path, record: &InputRecord) -> anyhow::Result<Vec<Vec<Message>>> {
    let object = &record.object;
    let at = || format!("{}:{}", path.display(), record.line);
    if object.contains_key("messages") {
        let messages: Vec<Message> = serde_json::from_value(object["messages"].clone())
            .with_context(|| format!("{}: \"messages\" is not a list of messages", at()))?;
        ensure(
            messages.last().is_some_and(|m| m.role == Role::Assistant),
            || {
                format!(
                    "{}: \"messages\" must end with the assistant's answer",
                    at()
                )
            },
        )?;
        return Ok(vec![messages]);
    }
    let conversation = conversation_of(object).map_err(|m| anyhow::anyhow!("{}: {m}", at()))?;
    let keys: &[&str] = if object.contains_key("response_a") {
        &["response_a", "response_b"]
    } else {
        &["response"]
    };
    keys.iter()
        .map(|&key| {
            let response = resume::string_field(path, record, key)?;
            let mut dialogue = conversation.clone();
            dialogue.push(Message::assistant(response));
            Ok(dialogue)
        })
        .collect()
}

/// Run `cai score --reward-model`.
pub fn run(args: ScoreArgs, reward_model: String) -> anyhow::Result<()> {
    ensure(args.batch_size > 0, || {
        "--batch-size 0: expected at least 1".into()
    })?;
    let config = RewardScoreConfig {
        reward_model,
        device: args.model.device,
        dtype: args.model.dtype,
        format: args.format,
        input: args.input,
        output: args.output,
        batch_size: args.batch_size,
    };
    let claim = resume::claim(&config.output, &[&config.input])?;
    let jobs = resume::read_input(&config.input)?
        .into_iter()
        .map(|record| Ok((dialogues(&config.input, &record)?, record)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dir = crate::lab_models::resolve_model_dir(&config.reward_model)?;
    if !is_preference_model(&dir) {
        bail!(
            "{}: not a preference model (config.json names no *ForSequenceClassification class); \
             train one with cai train-pm",
            dir.display()
        );
    }
    let device = cai_model::device::device_from_name(&config.device.to_string())
        .with_context(|| format!("opening device {}", config.device))?;
    let dtype = config
        .dtype
        .map_or(candle_core::DType::F32, Dtype::to_candle);
    let spinner = progress::spinner(format!("loading {}", config.reward_model));
    let mut model = RewardModel::load(&dir, dtype, &device, 0)
        .with_context(|| format!("loading the preference model {}", dir.display()))?;
    model.prepare_for_inference()?;
    let tokenizer = Tokenizer::from_dir(&dir)?;
    spinner.finish_and_clear();

    let mut out = claim.open(
        jobs,
        |(_, record)| &record.id,
        args.overwrite,
        &resume::OutputKind {
            command: "cai score --reward-model",
            config: &config,
            volatile: &["batch_size", "device"],
            marks: &["reward", "reward_a"],
        },
    )?;
    if out.all_done(&config.output) {
        return Ok(());
    }
    let bar = progress::records_bar(out.total(), out.done, "reward");
    let start = Instant::now();
    for chunk in out.todo.chunks(config.batch_size) {
        let sequences = chunk
            .iter()
            .flat_map(|(dialogues, _)| dialogues)
            .map(|dialogue| {
                let text = tokenizer.render_dialogue(dialogue, false, config.format)?;
                Ok(tokenizer.encode(&text, tokenizer.add_bos_token())?)
            })
            .collect::<anyhow::Result<Vec<Vec<u32>>>>()?;
        let mut rewards = model
            .score_sequences(&sequences, EngineLimits::default())?
            .into_iter();
        for (dialogues, record) in chunk {
            let mut object = record.object.clone();
            let mut next = || f64::from(rewards.next().expect("one reward per dialogue"));
            if dialogues.len() == 2 {
                let (a, b) = (next(), next());
                object.insert("reward_a".into(), json!(a));
                object.insert("reward_b".into(), json!(b));
                object.insert("reward_p_a".into(), json!(1.0 / (1.0 + (b - a).exp())));
            } else {
                object.insert("reward".into(), json!(next()));
            }
            out.writer.write(&Value::Object(object))?;
        }
        out.writer.sync()?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    eprintln!(
        "wrote {} to {} in {:.1} s",
        human::count(out.todo.len(), "reward record"),
        config.output.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
