//! `/v1/chat/completions` and `/v1/score`: a dialogue is rendered as the local model renders
//! it (the transcript with its stop strings, for a model without a chat template) and
//! answered the same, whole or streamed; scores equal the local model's.

use cai_core::dialogue::{render_transcript, transcript_stop_strings, Message};
use cai_core::{GenerateRequest, LanguageModel, Sampling, ScoreRequest};
use serde_json::{json, Value};

use crate::common::{load, post, serve, NAME};
use crate::completions::sse_data;

#[test]
fn a_chat_reply_is_the_local_models_reply_to_the_rendered_dialogue() {
    let s = serve();
    let local = load(&s.model);
    let dialogue = [
        Message::user("How do I bake bread?"),
        Message::assistant("Mix flour and water."),
        Message::user("Then what?"),
    ];
    let expected = local
        .generate(&[GenerateRequest {
            stop: transcript_stop_strings(),
            ..GenerateRequest::new(render_transcript(&dialogue, true), 20, Sampling::greedy())
        }])
        .unwrap()
        .remove(0);
    let messages = json!([
        {"role": "user", "content": "How do I bake bread?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Mix flour and water."}]},
        {"role": "user", "content": "Then what?"},
    ]);
    let request = |stream: bool| {
        json!({"model": NAME, "messages": messages, "max_tokens": 20, "temperature": 0,
               "logprobs": true, "top_logprobs": 2, "stream": stream})
    };
    let (status, body) = post(&s.url(), "/chat/completions", &request(false));
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], expected.text.as_str());
    assert_eq!(body["object"], "chat.completion");
    let content = choice["logprobs"]["content"].as_array().unwrap();
    assert!(!content.is_empty() && content.len() <= expected.token_ids.len());
    assert_eq!(content[0]["top_logprobs"].as_array().unwrap().len(), 2);

    let url = format!("{}/chat/completions", s.url());
    let text = ureq::post(&url)
        .send_json(request(true))
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let chunks = sse_data(&text);
    let deltas: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["delta"]).collect();
    assert_eq!(deltas[0]["role"], "assistant");
    let joined: String = deltas
        .iter()
        .filter_map(|d| d["content"].as_str())
        .collect();
    assert_eq!(joined, expected.text);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        choice["finish_reason"]
    );
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
}

#[test]
fn scores_are_the_local_models_scores() {
    let s = serve();
    let local = load(&s.model);
    let question = "Human: What is the capital of France?\n\nAssistant: The answer is:";
    let items = [
        (question, " (A)"),
        (question, " (B)"),
        ("Human: hi", " Paris"),
    ];
    let expected = local
        .score(
            &items
                .iter()
                .map(|(p, c)| ScoreRequest {
                    top_k: 2,
                    ..ScoreRequest::new(*p, *c)
                })
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let (status, body) = post(
        &s.url(),
        "/score",
        &json!({"model": NAME, "top_logprobs": 2, "items": items.iter()
            .map(|(p, c)| json!({"prompt": p, "continuation": c})).collect::<Vec<_>>()}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["score_type"], "logprob");
    for (i, e) in expected.iter().enumerate() {
        let d = &body["data"][i];
        assert_eq!(d["index"], i);
        assert!((d["score"].as_f64().unwrap() - e.logprob).abs() < 1e-5);
        assert_eq!(d["token_ids"], json!(e.token_ids));
        assert_eq!(d["top_logprobs"][0].as_array().unwrap().len(), 2);
    }
    let (status, body) = post(&s.url(), "/score", &json!({"model": NAME, "items": []}));
    assert_eq!(status, 400, "{body}");
}

/// `response_format: {"type": "json_object"}`: every choice is one JSON object or, cut by
/// `max_tokens`, the start of one; a whole one ends the choice with `stop`.
#[test]
fn json_object_responses_are_json() {
    let s = crate::common::serve();
    let body = serde_json::json!({
        "model": crate::common::NAME,
        "messages": [{"role": "user", "content": "Rate this answer as JSON."}],
        "max_tokens": 80,
        "n": 8,
        "seed": 3,
        "response_format": {"type": "json_object"},
    });
    let (status, answer) = crate::common::post(&s.url(), "/chat/completions", &body);
    assert_eq!(status, 200, "{answer}");
    let mut whole = 0;
    for choice in answer["choices"].as_array().unwrap() {
        let text = choice["message"]["content"].as_str().unwrap();
        match choice["finish_reason"].as_str().unwrap() {
            "stop" => {
                let value: serde_json::Value =
                    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
                assert!(value.is_object(), "{text:?}");
                whole += 1;
            }
            reason => {
                assert_eq!(reason, "length", "{text:?}");
                assert_ne!(
                    cai_model::json_prefix::check(text),
                    cai_model::json_prefix::JsonPrefix::Invalid,
                    "{text:?}"
                );
            }
        }
    }
    assert!(whole > 0, "no choice finished an object: {answer}");
}
