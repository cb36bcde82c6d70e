//! `POST /v1/chat/completions`: the dialogue rendered with the model's chat template (or, for
//! a model without one, the `Human:`/`Assistant:` transcript with its stop strings), then
//! generated like a completion; whole replies or a stream of server-sent chunks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cai_core::dialogue::{transcript_stop_strings, Message, Role};
use cai_core::FinishReason;
use cai_model::generate::GenOutput;
use cai_model::tokenizer::DialogueFormat;

use crate::app::{unix_now, ApiJson, Shared};
use crate::error::ApiError;
use crate::generation;
use crate::logprobs::chat_token;
use crate::protocol::{
    ChatChoice, ChatDelta, ChatLogprobs, ChatMessage, ChatRequest, ChatResponse, Content, Usage,
};
use crate::stream::{self, Piece};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The request's messages as cai dialogue turns.
fn dialogue(messages: Vec<ChatMessage>) -> Result<Vec<Message>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid("messages: expected at least one message").param("messages"));
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "system" | "developer" if i == 0 => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(ApiError::invalid(format!(
                        "messages[{i}].role '{other}': expected user or assistant (system only \
                         first)"
                    ))
                    .param("messages"))
                }
            };
            let content = match m.content {
                Content::Text(t) => t,
                Content::Parts(parts) => parts
                    .into_iter()
                    .map(|p| match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => Ok(t),
                        (kind, _) => Err(ApiError::invalid(format!(
                            "messages[{i}]: a content part of type '{kind}'; only text parts \
                             are supported"
                        ))
                        .param("messages")),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .join(""),
            };
            Ok(Message { role, content })
        })
        .collect()
}

/// `stop` for a choice: `length` or `stop`.
fn finish_reason(output: &GenOutput) -> String {
    match output.finish {
        FinishReason::Length => "length".into(),
        FinishReason::Eos | FinishReason::Stop => "stop".into(),
    }
}

/// Handle `POST /v1/chat/completions`.
pub(crate) async fn handle(
    State(state): State<Shared>,
    ApiJson(mut request): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    state.check_model(&request.model)?;
    state.check_generates()?;
    let started = Instant::now();
    let deadline = started + state.options.request_timeout;
    let timeout_s = state.options.request_timeout.as_secs_f64();
    let model = state.engine.model();
    let tk = model.tokenizer();
    let messages = dialogue(std::mem::take(&mut request.messages))?;
    // Before rendering and tokenizing: every message takes at least one token, and the text
    // must fit the context.
    let context = state.context();
    if messages.len() > context {
        return Err(ApiError::invalid(format!(
            "messages: {} messages cannot fit this model's context of {context} tokens",
            messages.len()
        ))
        .param("messages")
        .code("context_length_exceeded"));
    }
    let text: usize = messages.iter().map(|m| m.content.len()).sum();
    state.check_text_fits("messages", text)?;
    let prompt = tk
        .render_dialogue(&messages, true, DialogueFormat::Auto)
        .map_err(|e| ApiError::invalid(format!("Could not render the dialogue: {e}")))?;
    let tokens = tk
        .encode(&prompt, tk.add_bos_token())
        .map_err(|e| ApiError::invalid(format!("Could not tokenize the dialogue: {e}")))?;
    let with_logprobs = request.logprobs.unwrap_or(false);
    let top = if with_logprobs {
        request.top_logprobs.unwrap_or(0)
    } else {
        0
    };
    // A reply may run to the end of the context unless the request or the server says less.
    let room = state.context().saturating_sub(tokens.len()).max(1);
    let mut params = generation::params(
        &state,
        request.take_sampling(),
        1,
        request.max_completion_tokens.or(request.max_tokens),
        room,
        top,
    )?;
    generation::check_fits(&state, tokens.len(), params.max_tokens)?;
    if tk.chat_template().is_none() {
        params.stop.extend(transcript_stop_strings());
    }
    let id = format!("chatcmpl-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let jobs = generation::jobs(std::slice::from_ref(&tokens), &params);
    let served = state.options.model_name.clone();
    if params.stream {
        let events = state.engine.generate(jobs, true)?;
        let engine = state.engine.clone();
        let mut opened = vec![false; params.n];
        let chunk = move |choice: usize, piece: Piece<'_>| {
            let tokenizer = engine.model().tokenizer();
            let role = (!std::mem::replace(&mut opened[choice], true)).then(|| "assistant".into());
            let (content, logprobs, finish) = match piece {
                Piece::Token(t, text) => {
                    let lp = with_logprobs.then(|| ChatLogprobs {
                        content: if tokenizer.is_eos(t.token) {
                            Vec::new()
                        } else {
                            vec![chat_token(
                                tokenizer,
                                t.token,
                                t.logprob,
                                (top > 0).then_some(t.top.as_slice()),
                            )]
                        },
                    });
                    (text, lp, None)
                }
                Piece::End(rest, output) => (rest, None, Some(finish_reason(output))),
            };
            if content.is_empty() && logprobs.is_none() && finish.is_none() && role.is_none() {
                return None;
            }
            Some(
                serde_json::to_string(&ChatResponse {
                    id: id.clone(),
                    object: "chat.completion.chunk".into(),
                    created: unix_now(),
                    model: served.clone(),
                    choices: vec![ChatChoice {
                        index: choice,
                        message: None,
                        delta: Some(ChatDelta {
                            role,
                            content: (!content.is_empty()).then_some(content),
                        }),
                        logprobs,
                        finish_reason: finish,
                    }],
                    usage: None,
                })
                .expect("serialisable"),
            )
        };
        let data = stream::pump(
            state.engine.clone(),
            events,
            params.n,
            params.stop.clone(),
            deadline,
            timeout_s,
            chunk,
        );
        return Ok(stream::sse(data).into_response());
    }
    let events = state.engine.generate(jobs, false)?;
    let outputs = generation::collect(events, params.n, deadline, timeout_s).await?;
    let mut usage = Usage {
        prompt_tokens: tokens.len(),
        ..Usage::default()
    };
    let choices = outputs
        .iter()
        .enumerate()
        .map(|(index, output)| {
            usage.completion_tokens += output.tokens.len();
            let logprobs = with_logprobs.then(|| ChatLogprobs {
                content: output
                    .tokens
                    .iter()
                    .zip(&output.logprobs)
                    .enumerate()
                    .filter(|(_, (&t, _))| !tk.is_eos(t))
                    .map(|(k, (&t, &lp))| {
                        let alts = output.top_logprobs.get(k).map(Vec::as_slice);
                        chat_token(tk, t, lp, alts.filter(|_| top > 0))
                    })
                    .collect(),
            });
            ChatChoice {
                index,
                message: Some(ChatDelta {
                    role: Some("assistant".into()),
                    content: Some(output.text.clone()),
                }),
                delta: None,
                logprobs,
                finish_reason: Some(finish_reason(output)),
            }
        })
        .collect();
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
    Ok(Json(ChatResponse {
        id,
        object: "chat.completion".into(),
        created: unix_now(),
        model: served,
        choices,
        usage: Some(usage),
    })
    .into_response())
}
