//! What completions and chat share: checking the sampling fields into [`GenParams`], one
//! [`GenJob`] per prompt and choice, and collecting the choices' results within the
//! request's deadline.

use std::time::Instant;

use cai_core::{OutputFormat, Sampling};
use cai_model::generate::{GenJob, GenOutput};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::app::AppState;
use crate::engine::Event;
use crate::error::ApiError;
use crate::protocol::SamplingFields;

/// Checked generation settings of one request.
#[derive(Debug, Clone)]
pub(crate) struct GenParams {
    pub sampling: Sampling,
    pub n: usize,
    pub stop: Vec<String>,
    pub seed: u64,
    pub max_tokens: usize,
    pub top_logprobs: usize,
    pub stream: bool,
    pub ignore_eos: bool,
    pub format: OutputFormat,
}

/// Most alternatives per position a request may ask for (vLLM's limit).
pub(crate) const MAX_TOP_LOGPROBS: usize = 20;

/// Check the sampling fields of a request for `prompts` prompts. `max_tokens` is what the
/// request asked for; `None` takes `default_max_tokens`.
pub(crate) fn params(
    state: &AppState,
    fields: SamplingFields,
    prompts: usize,
    max_tokens: Option<usize>,
    default_max_tokens: usize,
    top_logprobs: usize,
) -> Result<GenParams, ApiError> {
    for (name, value) in [
        ("presence_penalty", fields.presence_penalty),
        ("frequency_penalty", fields.frequency_penalty),
    ] {
        if value.is_some_and(|v| v != 0.0) {
            return Err(ApiError::invalid(format!(
                "{name} is not supported; leave it out or send 0"
            ))
            .param(name));
        }
    }
    let temperature = fields.temperature.unwrap_or(1.0);
    if !temperature.is_finite() || temperature < 0.0 {
        return Err(ApiError::invalid(format!(
            "temperature {temperature}: expected a number ≥ 0 (0 is greedy)"
        ))
        .param("temperature"));
    }
    let top_p = fields.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(
            ApiError::invalid(format!("top_p {top_p}: expected a probability in (0, 1]"))
                .param("top_p"),
        );
    }
    let top_k = match fields.top_k {
        None | Some(0) | Some(-1) => None,
        Some(k) if k > 0 => Some(k as usize),
        Some(k) => {
            return Err(ApiError::invalid(format!(
                "top_k {k}: expected a positive number, or 0 or -1 for no limit"
            ))
            .param("top_k"))
        }
    };
    let n = fields.n.unwrap_or(1);
    let rows = n.saturating_mul(prompts);
    let most = state.options.max_rows_per_request;
    if n == 0 || rows > most {
        return Err(ApiError::invalid(format!(
            "n {n} × {prompts} prompt(s): expected at least 1 and at most {most} choices in all"
        ))
        .param("n"));
    }
    let cap = state.max_tokens_cap();
    let max_tokens = match max_tokens {
        Some(m) if m > cap => {
            return Err(ApiError::invalid(format!(
                "max_tokens {m} is more than this server allows ({cap})"
            ))
            .param("max_tokens")
            .code("invalid_value"))
        }
        Some(m) => m,
        None => default_max_tokens.min(cap),
    };
    if top_logprobs > MAX_TOP_LOGPROBS {
        return Err(ApiError::invalid(format!(
            "{top_logprobs} log-prob alternatives asked for; at most {MAX_TOP_LOGPROBS}"
        ))
        .param("logprobs"));
    }
    let format =
        match fields.response_format.as_ref().map(|f| f.kind.as_str()) {
            None | Some("text") => OutputFormat::Text,
            Some("json_object") => OutputFormat::JsonObject,
            Some("json_schema") => return Err(ApiError::invalid(
                "response_format json_schema is not supported: cai constrains an answer to one \
                 JSON object of any shape; send {\"type\": \"json_object\"} and check the \
                 shape yourself",
            )
            .param("response_format")),
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "response_format type '{other}': expected text or json_object"
                ))
                .param("response_format"))
            }
        };
    let stop = fields.stop.map(|s| s.into_vec()).unwrap_or_default();
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid("stop: a stop string is empty").param("stop"));
    }
    Ok(GenParams {
        sampling: Sampling {
            temperature,
            top_k,
            top_p: (top_p < 1.0).then_some(top_p),
        },
        n,
        stop,
        seed: fields.seed.unwrap_or_else(rand::random),
        max_tokens,
        top_logprobs,
        stream: fields.stream.unwrap_or(false),
        ignore_eos: fields.ignore_eos.unwrap_or(false),
        format,
    })
}

/// Refuse a prompt that leaves no room for `max_tokens` in the model's context.
pub(crate) fn check_fits(
    state: &AppState,
    prompt_tokens: usize,
    max_tokens: usize,
) -> Result<(), ApiError> {
    let context = state.context();
    if prompt_tokens == 0 {
        return Err(ApiError::invalid("The prompt is empty").param("prompt"));
    }
    if prompt_tokens + max_tokens > context {
        return Err(ApiError::invalid(format!(
            "This model's maximum context length is {context} tokens; the prompt has \
             {prompt_tokens} and max_tokens asks for {max_tokens} more"
        ))
        .param("max_tokens")
        .code("context_length_exceeded"));
    }
    Ok(())
}

/// One job per prompt and choice, prompt-major; choice `j` samples with seed `seed + j`, so a
/// request for one choice with seed `s` samples what choice `j` of seed `s - j` samples.
pub(crate) fn jobs(prompts: &[Vec<u32>], p: &GenParams) -> Vec<GenJob> {
    prompts
        .iter()
        .flat_map(|prompt| {
            (0..p.n).map(move |j| GenJob {
                prompt: prompt.clone(),
                max_new_tokens: p.max_tokens,
                sampling: p.sampling,
                stop: p.stop.clone(),
                seed: p.seed.wrapping_add(j as u64),
                top_logprobs: p.top_logprobs,
                ignore_eos: p.ignore_eos,
                format: p.format,
            })
        })
        .collect()
}

/// Wait for every choice's result, in choice order, until `deadline`.
pub(crate) async fn collect(
    mut events: UnboundedReceiver<Event>,
    choices: usize,
    deadline: Instant,
    timeout_s: f64,
) -> Result<Vec<GenOutput>, ApiError> {
    let mut outputs: Vec<Option<GenOutput>> = vec![None; choices];
    let mut left = choices;
    let deadline = tokio::time::Instant::from_std(deadline);
    while left > 0 {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| ApiError::timeout(timeout_s))?;
        match event {
            Some(Event::Done { choice, output }) => {
                outputs[choice] = Some(output);
                left -= 1;
            }
            Some(Event::Token { .. }) => {}
            Some(Event::Rejected(message)) => return Err(ApiError::invalid(message)),
            Some(Event::Failed(message)) => return Err(ApiError::internal(message)),
            None => return Err(ApiError::unavailable()),
        }
    }
    Ok(outputs
        .into_iter()
        .map(|o| o.expect("every choice answered"))
        .collect())
}
