//! `POST /v1/completions`: text or token-id prompts, `n` choices each, sampling settings,
//! stop strings, seeds, log-probs with alternatives, `echo` of the prompt with its
//! log-probs (how clients score text), vLLM's `prompt_logprobs`, and streaming.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cai_core::FinishReason;
use cai_model::generate::GenOutput;
use cai_model::score::ScoreOutput;

use crate::app::{unix_now, ApiJson, Shared};
use crate::error::ApiError;
use crate::generation::{self, GenParams, MAX_TOP_LOGPROBS};
use crate::logprobs::{self, char_offsets, LogprobsBuilder};
use crate::protocol::{
    CompletionChoice, CompletionLogprobs, CompletionRequest, CompletionResponse, Prompt, Usage,
};
use crate::stream::{self, Piece};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A request's prompts: the text each stands for and its tokens.
struct Prompts {
    texts: Vec<String>,
    tokens: Vec<Vec<u32>>,
}

fn tokenize(state: &Shared, prompt: Prompt) -> Result<Prompts, ApiError> {
    let tk = state.engine.model().tokenizer();
    let from_texts = |texts: Vec<String>| -> Result<Prompts, ApiError> {
        let tokens = texts
            .iter()
            .map(|t| tk.encode(t, tk.add_bos_token()))
            .collect::<Result<_, _>>()
            .map_err(|e| ApiError::invalid(format!("Could not tokenize the prompt: {e}")))?;
        Ok(Prompts { texts, tokens })
    };
    let from_ids = |tokens: Vec<Vec<u32>>| -> Result<Prompts, ApiError> {
        let vocab = state.engine.model().decoder().config().vocab_size;
        let context = state.context();
        if let Some((i, long)) = tokens.iter().enumerate().find(|(_, t)| t.len() >= context) {
            return Err(ApiError::invalid(format!(
                "prompt[{i}] has {} tokens; this model's context is {context} tokens",
                long.len()
            ))
            .param("prompt")
            .code("context_length_exceeded"));
        }
        if let Some(bad) = tokens.iter().flatten().find(|&&id| id as usize >= vocab) {
            return Err(ApiError::invalid(format!(
                "Token id {bad} is outside the model's vocabulary of {vocab}"
            ))
            .param("prompt"));
        }
        let texts = tokens
            .iter()
            .map(|t| tk.decode(t).unwrap_or_default())
            .collect();
        Ok(Prompts { texts, tokens })
    };
    let prompts = match prompt {
        Prompt::Text(t) => from_texts(vec![t])?,
        Prompt::Texts(ts) => from_texts(ts)?,
        Prompt::Tokens(ids) => from_ids(vec![ids])?,
        Prompt::TokenLists(lists) => from_ids(lists)?,
    };
    if prompts.tokens.is_empty() {
        return Err(ApiError::invalid("prompt: expected at least one prompt").param("prompt"));
    }
    Ok(prompts)
}

/// Handle `POST /v1/completions`.
pub(crate) async fn handle(
    State(state): State<Shared>,
    ApiJson(mut request): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    state.check_model(&request.model)?;
    state.check_generates()?;
    let started = Instant::now();
    let deadline = started + state.options.request_timeout;
    let timeout_s = state.options.request_timeout.as_secs_f64();
    let echo = request.echo.unwrap_or(false);
    let logprobs = request.logprobs;
    // Every check that needs no tokens comes first, so that a body of many or long prompts
    // is refused before the tokenizer sees it.
    let params = generation::params(
        &state,
        request.take_sampling(),
        request.prompt.count(),
        request.max_tokens,
        state.options.default_max_tokens,
        logprobs.unwrap_or(0),
    )?;
    // Each position answers this many alternatives: unbounded, a long prompt over a large
    // vocabulary would answer the whole vocabulary at every position.
    if let Some(k) = request.prompt_logprobs.filter(|&k| k > MAX_TOP_LOGPROBS) {
        return Err(ApiError::invalid(format!(
            "prompt_logprobs {k}: at most {MAX_TOP_LOGPROBS} alternatives per position"
        ))
        .param("prompt_logprobs"));
    }
    match &request.prompt {
        Prompt::Text(t) => state.check_text_fits("prompt", t.len())?,
        Prompt::Texts(ts) => {
            for (i, t) in ts.iter().enumerate() {
                state.check_text_fits(&format!("prompt[{i}]"), t.len())?;
            }
        }
        Prompt::Tokens(_) | Prompt::TokenLists(_) => {}
    }
    let prompts = tokenize(&state, request.prompt)?;
    for p in &prompts.tokens {
        generation::check_fits(&state, p.len(), params.max_tokens)?;
    }
    if params.stream && (echo || request.prompt_logprobs.is_some()) {
        return Err(ApiError::invalid(
            "stream cannot be combined with echo or prompt_logprobs; ask without stream",
        )
        .param("stream"));
    }
    let as_ids = request.return_tokens_as_token_ids.unwrap_or(false);
    let id = format!("cmpl-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let jobs = generation::jobs(&prompts.tokens, &params);
    if params.stream {
        let events = state.engine.generate(jobs, true)?;
        let model = state.options.model_name.clone();
        let tk_engine = state.engine.clone();
        let with_logprobs = logprobs.is_some();
        let rows = params.n * prompts.tokens.len();
        let mut offsets = vec![0usize; rows];
        let stops = params.stop.clone();
        let with_top = params.top_logprobs > 0;
        let chunk_stops = params.stop.clone();
        let chunk = move |choice: usize, piece: Piece<'_>| {
            let tokenizer = tk_engine.model().tokenizer();
            let (text, lp, finish) = match piece {
                Piece::Token(token, text) => {
                    let lp = with_logprobs.then(|| {
                        let mut b = LogprobsBuilder {
                            tokenizer,
                            as_ids,
                            with_top,
                            out: CompletionLogprobs::default(),
                        };
                        b.push(
                            token.token,
                            Some(token.logprob),
                            &token.top,
                            offsets[choice],
                        );
                        b.out
                    });
                    (text, lp, None)
                }
                Piece::End(rest, output) => (rest, None, Some(output)),
            };
            if text.is_empty() && lp.is_none() && finish.is_none() {
                return None;
            }
            offsets[choice] += text.chars().count();
            let (finish_reason, stop_reason) = finish.map_or((None, None), |o| {
                let (f, s) = finish_of(o, &chunk_stops, tokenizer);
                (Some(f), s)
            });
            Some(
                serde_json::to_string(&CompletionResponse {
                    id: id.clone(),
                    object: "text_completion".into(),
                    created: unix_now(),
                    model: model.clone(),
                    choices: vec![CompletionChoice {
                        index: choice,
                        text,
                        logprobs: lp,
                        finish_reason,
                        stop_reason,
                        prompt_logprobs: None,
                        prompt_token_ids: None,
                    }],
                    usage: None,
                })
                .expect("serialisable"),
            )
        };
        let data = stream::pump(
            state.engine.clone(),
            events,
            rows,
            stops,
            deadline,
            timeout_s,
            chunk,
        );
        return Ok(stream::sse(data).into_response());
    }
    let top = logprobs
        .unwrap_or(0)
        .max(request.prompt_logprobs.unwrap_or(0));
    let scored = if (echo && logprobs.is_some()) || request.prompt_logprobs.is_some() {
        let tokens = prompts.tokens.clone();
        let run = state
            .engine
            .run(move |model| logprobs::prompt_scores(model, &tokens, top));
        Some(
            tokio::time::timeout_at(deadline.into(), run)
                .await
                .map_err(|_| ApiError::timeout(timeout_s))??
                .map_err(ApiError::invalid)?,
        )
    } else {
        None
    };
    let outputs = if params.max_tokens == 0 {
        let nothing = GenOutput {
            tokens: Vec::new(),
            logprobs: Vec::new(),
            top_logprobs: Vec::new(),
            text: String::new(),
            finish: FinishReason::Length,
        };
        vec![nothing; jobs.len()]
    } else {
        let events = state.engine.generate(jobs, false)?;
        generation::collect(events, params.n * prompts.tokens.len(), deadline, timeout_s).await?
    };
    let view = View {
        echo,
        logprobs,
        prompt_logprobs: request.prompt_logprobs,
        as_ids,
    };
    let response = respond(
        &state,
        id,
        &prompts,
        &params,
        &view,
        scored.as_deref(),
        outputs,
    );
    Ok(Json(response).into_response())
}

/// What the response shows besides the text.
struct View {
    echo: bool,
    logprobs: Option<usize>,
    prompt_logprobs: Option<usize>,
    as_ids: bool,
}

/// `finish_reason` and vLLM's `stop_reason` (the stop string that ended the text).
fn finish_of(
    output: &GenOutput,
    stops: &[String],
    tokenizer: &cai_model::tokenizer::Tokenizer,
) -> (String, Option<String>) {
    match output.finish {
        FinishReason::Length => ("length".into(), None),
        FinishReason::Eos => ("stop".into(), None),
        FinishReason::Stop => {
            let text = tokenizer.decode(&output.tokens).unwrap_or_default();
            let first = stops
                .iter()
                .filter_map(|s| text.find(s.as_str()).map(|at| (at, s)))
                .min()
                .map(|(_, s)| s.clone());
            ("stop".into(), first)
        }
    }
}

fn respond(
    state: &Shared,
    id: String,
    prompts: &Prompts,
    params: &GenParams,
    view: &View,
    scored: Option<&[ScoreOutput]>,
    outputs: Vec<GenOutput>,
) -> CompletionResponse {
    let tk = state.engine.model().tokenizer();
    let mut choices = Vec::with_capacity(outputs.len());
    let mut usage = Usage::default();
    for (p, tokens) in prompts.tokens.iter().enumerate() {
        usage.prompt_tokens += tokens.len();
        for j in 0..params.n {
            let index = p * params.n + j;
            let output = &outputs[index];
            usage.completion_tokens += output.tokens.len();
            let prompt_text = &prompts.texts[p];
            let text = if view.echo {
                format!("{prompt_text}{}", output.text)
            } else {
                output.text.clone()
            };
            let logprobs = view.logprobs.map(|top| {
                let mut b = LogprobsBuilder {
                    tokenizer: tk,
                    as_ids: view.as_ids,
                    with_top: top > 0,
                    out: CompletionLogprobs::default(),
                };
                let mut base = 0;
                if let (true, Some(scored)) = (view.echo, scored) {
                    let s = &scored[p];
                    for (i, (&t, at)) in tokens.iter().zip(char_offsets(tk, tokens)).enumerate() {
                        let lp = i.checked_sub(1).map(|k| s.logprobs[k]);
                        let alts = i.checked_sub(1).and_then(|k| s.top.get(k));
                        let alts: Vec<(u32, f32)> = alts
                            .map(|a| a.iter().take(top).copied().collect())
                            .unwrap_or_default();
                        b.push(t, lp, &alts, at);
                    }
                    base = prompt_text.chars().count();
                }
                let offsets = char_offsets(tk, &output.tokens);
                for (k, (&t, &lp)) in output.tokens.iter().zip(&output.logprobs).enumerate() {
                    let alts = output.top_logprobs.get(k).map(Vec::as_slice).unwrap_or(&[]);
                    b.push(t, Some(lp), alts, base + offsets[k]);
                }
                b.out
            });
            let (finish_reason, stop_reason) = finish_of(output, &params.stop, tk);
            choices.push(CompletionChoice {
                index,
                text,
                logprobs,
                finish_reason: Some(finish_reason),
                stop_reason,
                prompt_logprobs: match (view.prompt_logprobs, scored) {
                    (Some(_), Some(s)) => Some(logprobs::vllm_prompt_logprobs(tk, tokens, &s[p])),
                    _ => None,
                },
                prompt_token_ids: view.prompt_logprobs.map(|_| tokens.clone()),
            });
        }
    }
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
    CompletionResponse {
        id,
        object: "text_completion".into(),
        created: unix_now(),
        model: state.options.model_name.clone(),
        choices,
        usage: Some(usage),
    }
}
