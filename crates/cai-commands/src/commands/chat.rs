//! `cai chat`: an interactive dialogue on stdin/stdout that keeps the history, rendered as a
//! transcript or with the chat template, optionally after a dialogue-prompting context.
//! Reads lines until end of input, so it can be driven from a pipe.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use cai_core::dialogue::{transcript_stop_strings, Message, Role};
use cai_core::rng::derive_seed;
use cai_core::{GenerateRequest, LanguageModel};
use cai_model::tokenizer::DialogueFormat;
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::model_args::{self, ModelArgs, SamplingArgs, SamplingConfig};

/// Raw `cai chat` arguments.
#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text put in front of the dialogue (dialogue prompting, e.g. an HHH prompt); prefilled
    /// once
    #[arg(long, value_name = "FILE")]
    pub context: Option<PathBuf>,
    /// How the dialogue is rendered: the Human:/Assistant: transcript, the tokenizer's chat
    /// template, or auto (the chat template if the tokenizer has one)
    #[arg(long, default_value = "auto", value_parser = model_args::parse_format)]
    pub format: DialogueFormat,
    /// A system message that opens the dialogue
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// A validated `cai chat` session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatConfig {
    /// The model.
    pub model: ModelArgs,
    /// Context file.
    pub context: Option<PathBuf>,
    /// Dialogue rendering.
    pub format: DialogueFormat,
    /// System message.
    pub system: Option<String>,
    /// Sampling as asked for (unset: the model's generation_config.json).
    pub sampling: SamplingConfig,
}

impl ChatConfig {
    /// Check the arguments.
    pub fn from_args(args: ChatArgs) -> anyhow::Result<Self> {
        Ok(Self {
            sampling: args.sampling.validate()?,
            model: args.model,
            context: args.context,
            format: args.format,
            system: args.system,
        })
    }
}

const HELP: &str = "Type a message and press enter. /reset forgets the dialogue, /quit ends.";

/// Run `cai chat`.
pub fn run(args: ChatArgs) -> anyhow::Result<()> {
    let config = ChatConfig::from_args(args)?;
    let context = config
        .context
        .as_deref()
        .map(model_args::read_context)
        .transpose()?
        .unwrap_or_default();
    let model = config.model.load()?;
    if let Some(path) = &config.context {
        model_args::prefill_context(&model, &context, path)?;
    }
    let (sampling, max_new_tokens) = config.sampling.resolve(&model.generation_defaults());
    let stop = if model_args::renders_transcript(&model, config.format) {
        transcript_stop_strings()
    } else {
        Vec::new()
    };
    let opening: Vec<Message> = config.system.iter().map(Message::system).collect();
    let mut dialogue = opening.clone();

    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "{HELP}\n({})",
            model_args::describe_sampling(&sampling, max_new_tokens)
        );
    }
    let mut stdout = std::io::stdout().lock();
    let mut lines = std::io::stdin().lock().lines();
    for turn in 0u64.. {
        if interactive {
            write!(stdout, "> ")?;
            stdout.flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading stdin")?;
        let text = line.trim();
        match text {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                dialogue = opening.clone();
                if interactive {
                    eprintln!("(dialogue forgotten)");
                }
                continue;
            }
            "/help" => {
                eprintln!("{HELP}");
                continue;
            }
            _ => {}
        }
        dialogue.push(Message::user(text));
        let prompt = fit_to_context(
            &model,
            &context,
            &mut dialogue,
            opening.len(),
            max_new_tokens,
            config.format,
        )?;
        let request = GenerateRequest {
            prefix: context.clone(),
            prompt,
            max_new_tokens,
            sampling,
            stop: stop.clone(),
            seed: derive_seed(config.sampling.seed, &["chat", &turn.to_string()]),
            format: cai_core::OutputFormat::Text,
        };
        let reply = match model.generate(std::slice::from_ref(&request)) {
            Ok(mut generations) => generations.pop().expect("one generation per request"),
            // At a terminal a failed turn (e.g. a dialogue past the context length) is
            // reported and forgotten; from a pipe it ends the session with an error.
            Err(e) if interactive => {
                eprintln!(
                    "error: {:#}
(/reset starts a new dialogue)",
                    anyhow::Error::new(e).context(failed_reply(config.context.as_deref()))
                );
                dialogue.pop();
                continue;
            }
            Err(e) => return Err(e).context(failed_reply(config.context.as_deref())),
        };
        let reply = reply.text.trim().to_owned();
        writeln!(stdout, "{reply}")?;
        if interactive {
            writeln!(stdout)?;
        }
        stdout.flush()?;
        dialogue.push(Message::assistant(reply));
    }
    Ok(())
}

/// Render the dialogue for the next reply, first dropping its oldest turns (a user message
/// and the reply to it) while the context, the dialogue and the room a reply wants
/// ([`reply_room`]) do not fit the model's context; the `kept` opening messages (the system
/// message) and the context file stay. Says on stderr what was dropped. The newest message
/// always stays: when it alone leaves too little room the model makes what room allows, or
/// says that nothing fits. Endpoints count no tokens here, so nothing is dropped for them.
fn fit_to_context(
    model: &Backend,
    context: &str,
    dialogue: &mut Vec<Message>,
    kept: usize,
    max_new_tokens: usize,
    format: DialogueFormat,
) -> anyhow::Result<String> {
    let size = model
        .local()
        .map(|m| m.decoder().config().max_position_embeddings);
    let wanted = reply_room(max_new_tokens, size);
    let mut dropped = 0usize;
    let prompt = loop {
        let prompt = model
            .render_dialogue(dialogue, true, format)
            .context("rendering the dialogue")?;
        let room = model
            .room_after(context, &prompt)
            .context("counting the dialogue's tokens")?;
        if room.is_none_or(|room| room >= wanted) || dialogue.len() <= kept + 1 {
            break prompt;
        }
        // The oldest user message, and the reply to it when there is one.
        dialogue.remove(kept);
        if dialogue.len() > kept + 1 && dialogue[kept].role == Role::Assistant {
            dialogue.remove(kept);
        }
        dropped += 1;
    };
    if dropped > 0 {
        let turns = match dropped {
            1 => "turn".to_string(),
            n => format!("{n} turns"),
        };
        let still = match (kept > 0, !context.is_empty()) {
            (true, true) => "; the system message and the context are kept",
            (true, false) => "; the system message is kept",
            (false, true) => "; the context is kept",
            (false, false) => "",
        };
        eprintln!(
            "(the dialogue filled the model's context{}: dropped the oldest {turns}{still})",
            size.map_or_else(String::new, |n| format!(" of {n} tokens")),
        );
    }
    Ok(prompt)
}

/// What failed when a reply could not be made, naming the context file in front of the
/// dialogue (its tokens count against the model's context too).
fn failed_reply(context: Option<&Path>) -> String {
    match context {
        Some(path) => format!("generating a reply after the context {}", path.display()),
        None => "generating a reply".into(),
    }
}

/// The room kept for a reply: the whole `max_new_tokens`, but never more than half of the
/// model's context, so a budget as large as the context still leaves the dialogue half.
fn reply_room(max_new_tokens: usize, context: Option<usize>) -> usize {
    context.map_or(max_new_tokens, |n| max_new_tokens.min(n / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_keeps_its_budget_up_to_half_the_context() {
        assert_eq!(reply_room(128, Some(2048)), 128);
        assert_eq!(reply_room(5000, Some(2048)), 1024);
        assert_eq!(reply_room(5000, None), 5000);
    }
}
