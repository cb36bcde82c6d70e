//! `cai eval mc`: accuracy on multiple-choice files in Anthropic's shape (`{"prompt",
//! "corrects", "incorrects"}`, as the HHH evaluation): an item is right when its best right
//! option beats its best wrong one — by the model's log-probability of the option after the
//! prompt, or with `--reward-model` by a preference model's reward of prompt and option
//! (or of Anthropic's `text_correct`/`text_incorrect` dialogues where the file has them).

use std::path::PathBuf;

use anyhow::{bail, Context};
use cai_core::multiple_choice::ChoiceItem;
use cai_core::{LanguageModel, ScoreRequest};
use cai_model::batching::EngineLimits;
use cai_model::reward_model::{is_preference_model, RewardModel};
use cai_model::tokenizer::Tokenizer;
use clap::Args;
use serde_json::json;

use crate::model_args::{Dtype, ModelArgs};
use crate::progress;
use crate::usage::ensure;

/// Raw `cai eval mc` arguments.
#[derive(Debug, Args)]
// --model or --reward-model names the judge; one of them is needed.
#[command(mut_arg("model", |a| a.required(false).default_value("").hide_default_value(true)))]
#[command(group(clap::ArgGroup::new("judge").args(["model", "reward_model"]).required(true)))]
pub struct McArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Judge by this preference model's rewards instead of log-probabilities
    #[arg(long, value_name = "PM", conflicts_with = "model")]
    pub reward_model: Option<String>,
    /// Multiple-choice items: JSONL (or a JSON list) of {"prompt", "corrects", "incorrects"},
    /// a BIG-bench task.json, or any dataset source (Parquet, .jsonl.gz, a Hub dataset
    /// `org/name?subset=S&split=S`) of those rows or Hugging Face's {"input", "targets"}
    #[arg(long, value_name = "SOURCE")]
    pub data: PathBuf,
    /// Print {"accuracy", "n"} as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
    /// Items per model call
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub batch_size: usize,
}

/// Whether an item is right: its best right option scores above its best wrong one (1), the
/// two tie (0.5), or not (0).
fn credit(corrects: &[f64], incorrects: &[f64]) -> f64 {
    let best = |xs: &[f64]| xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (right, wrong) = (best(corrects), best(incorrects));
    if right > wrong {
        1.0
    } else if right == wrong {
        0.5
    } else {
        0.0
    }
}

/// Run `cai eval mc`.
pub fn run(args: McArgs) -> anyhow::Result<()> {
    ensure(args.batch_size > 0, || {
        "--batch-size 0: expected at least 1".into()
    })?;
    let items = cai_data::read_choice_items(&args.data)?;
    let bar = progress::records_bar(items.len(), 0, "eval mc");
    let mut credits = Vec::with_capacity(items.len());
    let judge = match &args.reward_model {
        Some(pm) => {
            let (model, tokenizer) = load_preference_model(pm, &args)?;
            for chunk in items.chunks(args.batch_size) {
                credits.extend(by_reward(&model, &tokenizer, chunk)?);
                bar.inc(chunk.len() as u64);
            }
            format!("by the rewards of {pm}")
        }
        None => {
            let model = args.model.load()?;
            for chunk in items.chunks(args.batch_size) {
                credits.extend(by_logprob(&model, chunk).with_context(|| {
                    format!(
                        "scoring items {}-{} of {}",
                        chunk[0].line,
                        chunk[chunk.len() - 1].line,
                        args.data.display()
                    )
                })?);
                bar.inc(chunk.len() as u64);
            }
            format!("by the log-probabilities of {}", args.model.model)
        }
    };
    bar.finish_and_clear();
    let n = credits.len();
    let accuracy = credits.iter().sum::<f64>() / n as f64;
    if args.json {
        println!("{}", json!({"accuracy": accuracy, "n": n}));
    } else {
        println!(
            "accuracy {accuracy:.4} on {n} items of {} ({judge})",
            args.data.display()
        );
    }
    Ok(())
}

/// Each item's credit from the log-probabilities of its options after its prompt (the
/// options of one item share the prompt, which a local model prefills once).
fn by_logprob(model: &dyn LanguageModel, items: &[ChoiceItem]) -> anyhow::Result<Vec<f64>> {
    let requests: Vec<ScoreRequest> = items
        .iter()
        .flat_map(|item| {
            item.corrects
                .iter()
                .chain(&item.incorrects)
                .map(|option| ScoreRequest::new(item.prompt.clone(), option.clone()))
        })
        .collect();
    let mut scores = model.score(&requests)?.into_iter().map(|s| s.logprob);
    Ok(items
        .iter()
        .map(|item| {
            let mut take = |n: usize| (&mut scores).take(n).collect::<Vec<f64>>();
            let corrects = take(item.corrects.len());
            let incorrects = take(item.incorrects.len());
            credit(&corrects, &incorrects)
        })
        .collect())
}

/// Each item's credit from a preference model: the rewards of its two dialogues where the
/// file gives them, else of the prompt followed by each option.
fn by_reward(
    model: &RewardModel,
    tokenizer: &Tokenizer,
    items: &[ChoiceItem],
) -> anyhow::Result<Vec<f64>> {
    let texts: Vec<(Vec<String>, Vec<String>)> = items
        .iter()
        .map(|item| match &item.texts {
            Some((right, wrong)) => (vec![right.clone()], vec![wrong.clone()]),
            None => {
                let with = |options: &[String]| {
                    options
                        .iter()
                        .map(|o| format!("{}{o}", item.prompt))
                        .collect()
                };
                (with(&item.corrects), with(&item.incorrects))
            }
        })
        .collect();
    let sequences = texts
        .iter()
        .flat_map(|(right, wrong)| right.iter().chain(wrong))
        .map(|text| Ok(tokenizer.encode(text, tokenizer.add_bos_token())?))
        .collect::<anyhow::Result<Vec<Vec<u32>>>>()?;
    let rewards = model.score_sequences(&sequences, EngineLimits::default())?;
    let mut rewards = rewards.into_iter().map(f64::from);
    Ok(texts
        .iter()
        .map(|(right, wrong)| {
            let mut take = |n: usize| (&mut rewards).take(n).collect::<Vec<f64>>();
            let corrects = take(right.len());
            let incorrects = take(wrong.len());
            credit(&corrects, &incorrects)
        })
        .collect())
}

/// A preference model and its tokenizer, on the flags' device and dtype.
fn load_preference_model(spec: &str, args: &McArgs) -> anyhow::Result<(RewardModel, Tokenizer)> {
    let dir = crate::lab_models::resolve_model_dir(spec)?;
    if !is_preference_model(&dir) {
        bail!(
            "{}: not a preference model (config.json names no *ForSequenceClassification class); \
             train one with cai train-pm",
            dir.display()
        );
    }
    let device = cai_model::device::device_from_name(&args.model.device.to_string())
        .with_context(|| format!("opening device {}", args.model.device))?;
    let dtype = args
        .model
        .dtype
        .map_or(candle_core::DType::F32, Dtype::to_candle);
    let mut model = RewardModel::load(&dir, dtype, &device, 0)
        .with_context(|| format!("loading the preference model {}", dir.display()))?;
    model.prepare_for_inference()?;
    Ok((model, Tokenizer::from_dir(&dir)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_is_right_when_its_best_right_option_wins() {
        assert_eq!(credit(&[-1.0], &[-2.0]), 1.0);
        assert_eq!(credit(&[-3.0], &[-2.0, -5.0]), 0.0);
        assert_eq!(credit(&[-3.0, -1.5], &[-2.0, -5.0]), 1.0);
        assert_eq!(credit(&[-2.0], &[-2.0]), 0.5);
    }
}
