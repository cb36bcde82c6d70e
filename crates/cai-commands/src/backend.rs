//! The model a command runs on: a local model, or OpenAI-compatible endpoints
//! (`--model http://host:port/v1[,…]`). Commands that only generate and score see a
//! [`Backend`] through the `LanguageModel` trait; what differs between the two (defaults,
//! dialogue rendering, prefilling a context) is answered here. Remote settings come from the
//! environment, so that keys never land in the configs saved beside outputs.

use std::time::Duration;

use anyhow::{bail, Context};
use cai_core::chat_template::ChatTemplate;
use cai_core::dialogue::{render_transcript, Message};
use cai_core::{Error, GenerateRequest, Generation, LanguageModel, Score, ScoreRequest};
use cai_model::local::{GenerationDefaults, LocalModel};
use cai_model::tokenizer::DialogueFormat;
use cai_remote::{RemoteModel, RemoteOptions};

use crate::usage::UsageError;

/// A local model or remote endpoints.
pub enum Backend {
    /// A model loaded in this process.
    Local(Box<LocalModel>),
    /// OpenAI-compatible endpoints.
    Remote(RemoteModel),
}

impl Backend {
    /// The local model, if this is one.
    pub fn local(&self) -> Option<&LocalModel> {
        match self {
            Backend::Local(m) => Some(m),
            Backend::Remote(_) => None,
        }
    }

    /// The local model, or an error saying that `what` needs one.
    pub fn into_local(self, what: &str) -> anyhow::Result<LocalModel> {
        match self {
            Backend::Local(m) => Ok(*m),
            Backend::Remote(r) => bail!(UsageError(format!(
                "{what} needs a local model, not the endpoint(s) {}",
                r.endpoints().join(", ")
            ))),
        }
    }

    /// Sampling defaults: the model's `generation_config.json`, none for endpoints (each
    /// server applies its own).
    pub fn generation_defaults(&self) -> GenerationDefaults {
        self.local()
            .map(|m| m.generation_defaults().clone())
            .unwrap_or_default()
    }

    /// The chat template, if the model is local and has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.local().and_then(|m| m.tokenizer().chat_template())
    }

    /// Whether dialogues are rendered as `Human:`/`Assistant:` transcripts in `format`. An
    /// endpoint's chat template is not known here, so endpoints get transcripts (and
    /// `chat-template` is refused when rendering).
    pub fn renders_transcript(&self, format: DialogueFormat) -> bool {
        match (self, format) {
            (Backend::Remote(_), DialogueFormat::ChatTemplate) => false,
            (Backend::Remote(_), _) | (_, DialogueFormat::Transcript) => true,
            (Backend::Local(_), DialogueFormat::ChatTemplate) => false,
            (Backend::Local(m), DialogueFormat::Auto) => m.tokenizer().chat_template().is_none(),
        }
    }

    /// Render a dialogue as the text the model continues.
    pub fn render_dialogue(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        format: DialogueFormat,
    ) -> anyhow::Result<String> {
        match self {
            Backend::Local(m) => {
                Ok(m.tokenizer()
                    .render_dialogue(messages, add_generation_prompt, format)?)
            }
            Backend::Remote(_) if format == DialogueFormat::ChatTemplate => {
                bail!(UsageError(remote_chat_template()))
            }
            Backend::Remote(_) => Ok(render_transcript(messages, add_generation_prompt)),
        }
    }
}

/// Why `--format chat-template` does not work with endpoints.
pub fn remote_chat_template() -> String {
    "--format chat-template: an endpoint's chat template is not known to cai (the completions \
     API takes rendered text); use --format transcript, or render the prompts into \"prompt\" \
     yourself"
        .into()
}

impl LanguageModel for Backend {
    fn generate(&self, requests: &[GenerateRequest]) -> Result<Vec<Generation>, Error> {
        match self {
            Backend::Local(m) => m.generate(requests),
            Backend::Remote(r) => r.generate(requests),
        }
    }

    fn score(&self, requests: &[ScoreRequest]) -> Result<Vec<Score>, Error> {
        match self {
            Backend::Local(m) => m.score(requests),
            Backend::Remote(r) => r.score(requests),
        }
    }

    fn room_after(&self, prefix: &str, prompt: &str) -> Result<Option<usize>, Error> {
        match self {
            Backend::Local(m) => m.room_after(prefix, prompt),
            Backend::Remote(r) => r.room_after(prefix, prompt),
        }
    }
}

/// Open endpoints with the settings in the environment.
pub fn open_remote(spec: &str) -> anyhow::Result<RemoteModel> {
    let options = remote_options()?;
    let model = RemoteModel::open(spec, options)
        .with_context(|| format!("opening the endpoint(s) {spec}"))?;
    tracing::info!(endpoints = spec, models = ?model.model_ids(), "remote model ready");
    Ok(model)
}

/// Remote settings: `CAI_API_KEY` (else `OPENAI_API_KEY`), `CAI_REMOTE_MODEL`,
/// `CAI_REMOTE_CONCURRENCY`, `CAI_REMOTE_ATTEMPTS`, and in seconds `CAI_REMOTE_TIMEOUT` (a
/// whole request), `CAI_REMOTE_CONNECT_TIMEOUT`, `CAI_REMOTE_FIRST_BYTE_TIMEOUT` (an
/// endpoint's first answer when opened), `CAI_REMOTE_BACKOFF` (the first wait before a
/// retry) and `CAI_REMOTE_PROGRESS` (between progress lines while requests wait).
pub fn remote_options() -> anyhow::Result<RemoteOptions> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let number = |name: &str| -> anyhow::Result<Option<f64>> {
        var(name)
            .map(|v| {
                v.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x > 0.0)
                    .ok_or_else(|| {
                        anyhow::Error::new(UsageError(format!(
                            "{name}={v}: expected a positive number"
                        )))
                    })
            })
            .transpose()
    };
    let mut options = RemoteOptions {
        api_key: var("CAI_API_KEY").or_else(|| var("OPENAI_API_KEY")),
        model: var("CAI_REMOTE_MODEL"),
        ..RemoteOptions::default()
    };
    if let Some(n) = number("CAI_REMOTE_CONCURRENCY")? {
        options.concurrency = n as usize;
    }
    if let Some(s) = number("CAI_REMOTE_TIMEOUT")? {
        options.request_timeout = Duration::from_secs_f64(s);
    }
    if let Some(n) = number("CAI_REMOTE_ATTEMPTS")? {
        options.attempts = (n as u32).max(1);
    }
    for (name, field) in [
        ("CAI_REMOTE_CONNECT_TIMEOUT", &mut options.connect_timeout),
        (
            "CAI_REMOTE_FIRST_BYTE_TIMEOUT",
            &mut options.first_byte_timeout,
        ),
        ("CAI_REMOTE_BACKOFF", &mut options.backoff),
        ("CAI_REMOTE_PROGRESS", &mut options.progress_interval),
    ] {
        if let Some(s) = number(name)? {
            *field = Duration::from_secs_f64(s);
        }
    }
    Ok(options)
}
