//! `POST /v1/score`: a score for each (prompt, continuation) pair — for a language model the
//! continuation's log-probability, computed exactly as the local backend computes it (prompt
//! and continuation tokenized apart, shared prefixes prefilled once). The response names its
//! `score_type`; a served preference model answers the same request with rewards.

use std::time::Instant;

use axum::extract::State;
use axum::Json;
use cai_core::{LanguageModel, ScoreRequest};

use crate::app::{ApiJson, Shared};
use crate::error::ApiError;
use crate::generation::MAX_TOP_LOGPROBS;
use crate::protocol::{ScoreData, ScoreRequestBody, ScoreResponse, Usage};

/// Handle `POST /v1/score`.
pub(crate) async fn handle(
    State(state): State<Shared>,
    ApiJson(request): ApiJson<ScoreRequestBody>,
) -> Result<Json<ScoreResponse>, ApiError> {
    state.check_model(&request.model)?;
    if request.items.is_empty() {
        return Err(ApiError::invalid("items: expected at least one pair").param("items"));
    }
    let most = state.options.max_rows_per_request;
    if request.items.len() > most {
        return Err(ApiError::invalid(format!(
            "items: {} pairs; expected at most {most} per request",
            request.items.len()
        ))
        .param("items"));
    }
    for (i, item) in request.items.iter().enumerate() {
        let bytes = item.prefix.len() + item.prompt.len() + item.continuation.len();
        state.check_text_fits(&format!("items[{i}]"), bytes)?;
    }
    if request.top_logprobs > MAX_TOP_LOGPROBS {
        return Err(ApiError::invalid(format!(
            "top_logprobs {}: at most {MAX_TOP_LOGPROBS}",
            request.top_logprobs
        ))
        .param("top_logprobs"));
    }
    if let Some(head) = &state.reward_head {
        return rewards(&state, head.clone(), request).await;
    }
    let requests: Vec<ScoreRequest> = request
        .items
        .into_iter()
        .map(|item| ScoreRequest {
            prefix: item.prefix,
            prompt: item.prompt,
            continuation: item.continuation,
            top_k: request.top_logprobs,
        })
        .collect();
    let deadline = Instant::now() + state.options.request_timeout;
    let timeout_s = state.options.request_timeout.as_secs_f64();
    let run = state.engine.run(move |model| {
        let prompt_tokens: usize = requests
            .iter()
            .map(|r| {
                let tk = model.tokenizer();
                let text = format!("{}{}", r.prefix, r.prompt);
                tk.encode(&text, tk.add_bos_token()).map_or(0, |t| t.len())
            })
            .sum();
        model
            .score(&requests)
            .map(|scores| (scores, prompt_tokens))
            .map_err(|e| e.to_string())
    });
    let (scores, prompt_tokens) = tokio::time::timeout_at(deadline.into(), run)
        .await
        .map_err(|_| ApiError::timeout(timeout_s))??
        .map_err(ApiError::invalid)?;
    let scored: usize = scores.iter().map(|s| s.token_ids.len()).sum();
    Ok(Json(ScoreResponse {
        object: "list".into(),
        model: state.options.model_name.clone(),
        score_type: "logprob".into(),
        data: scores
            .into_iter()
            .enumerate()
            .map(|(index, s)| ScoreData {
                index,
                score: s.logprob,
                token_ids: s.token_ids,
                token_logprobs: s.token_logprobs,
                top_logprobs: s
                    .top_logprobs
                    .into_iter()
                    .map(|row| row.into_iter().map(|t| (t.token, t.logprob)).collect())
                    .collect(),
            })
            .collect(),
        usage: Usage {
            prompt_tokens: prompt_tokens + scored,
            completion_tokens: 0,
            total_tokens: prompt_tokens + scored,
        },
    }))
}

/// `POST /v1/score` on a preference model: each item's reward, the model's score of
/// `prefix + prompt + continuation` (tokenized with its beginning-of-sequence token).
async fn rewards(
    state: &Shared,
    head: candle_core::Tensor,
    request: ScoreRequestBody,
) -> Result<Json<ScoreResponse>, ApiError> {
    if request.top_logprobs > 0 {
        return Err(ApiError::invalid(
            "top_logprobs: a preference model gives rewards, not log-probs",
        )
        .param("top_logprobs"));
    }
    let texts: Vec<String> = request
        .items
        .into_iter()
        .map(|item| format!("{}{}{}", item.prefix, item.prompt, item.continuation))
        .collect();
    let context = state.context();
    let deadline = Instant::now() + state.options.request_timeout;
    let timeout_s = state.options.request_timeout.as_secs_f64();
    let run = state.engine.run(move |model| {
        let tk = model.tokenizer();
        let sequences = texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let ids = tk
                    .encode(text, tk.add_bos_token())
                    .map_err(|e| e.to_string())?;
                if ids.is_empty() || ids.len() > context {
                    return Err(format!(
                        "items[{i}]: {} tokens; expected 1 to the model's context of {context}",
                        ids.len()
                    ));
                }
                Ok(ids)
            })
            .collect::<Result<Vec<_>, String>>()?;
        let pm =
            cai_model::reward_model::RewardModel::from_parts(model.decoder().clone(), head, None)
                .map_err(|e| e.to_string())?;
        let tokens: usize = sequences.iter().map(Vec::len).sum();
        pm.score_sequences(&sequences, cai_model::batching::EngineLimits::default())
            .map(|r| (r, tokens))
            .map_err(|e| e.to_string())
    });
    let (rewards, tokens) = tokio::time::timeout_at(deadline.into(), run)
        .await
        .map_err(|_| ApiError::timeout(timeout_s))??
        .map_err(ApiError::invalid)?;
    Ok(Json(ScoreResponse {
        object: "list".into(),
        model: state.options.model_name.clone(),
        score_type: "reward".into(),
        data: rewards
            .into_iter()
            .enumerate()
            .map(|(index, r)| ScoreData {
                index,
                score: f64::from(r),
                token_ids: Vec::new(),
                token_logprobs: Vec::new(),
                top_logprobs: Vec::new(),
            })
            .collect(),
        usage: Usage {
            prompt_tokens: tokens,
            completion_tokens: 0,
            total_tokens: tokens,
        },
    }))
}
