//! Bad requests get OpenAI-style error bodies (`{"error": {"message", "type", "param",
//! "code"}}`) with the right status: malformed JSON, wrong fields, an unknown model,
//! `max_tokens` over the cap or past the context, a missing or wrong key, a body over the
//! limit, unknown routes and methods.

use serde_json::json;

use crate::common::{assert_error, get, post, post_raw, serve, serve_with, NAME};

#[test]
fn malformed_and_invalid_requests_are_400() {
    let s = serve();
    let url = format!("{}/completions", s.url());
    let (status, body) = post_raw(&url, b"{\"model\": \"tiny\", \"prompt\": ", None);
    let e = assert_error(status, &body, 400, "invalid_request_error");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("not a valid request"),
        "{e}"
    );
    let (status, body) = post(&s.url(), "/completions", &json!({"model": NAME}));
    let e = assert_error(status, &body, 400, "invalid_request_error");
    assert!(e["message"].as_str().unwrap().contains("prompt"), "{e}");
    for (field, value) in [
        ("temperature", json!(-1.0)),
        ("top_p", json!(0.0)),
        ("n", json!(0)),
        ("top_k", json!(-5)),
        ("presence_penalty", json!(0.5)),
        ("logprobs", json!(21)),
        ("prompt_logprobs", json!(1_000_000)),
        (
            "response_format",
            json!({"type": "json_schema", "json_schema": {}}),
        ),
        ("response_format", json!({"type": "yaml"})),
    ] {
        let mut body = json!({"model": NAME, "prompt": "Human: hi", "max_tokens": 2});
        body[field] = value;
        let (status, answer) = post(&s.url(), "/completions", &body);
        let e = assert_error(status, &answer, 400, "invalid_request_error");
        assert_eq!(e["param"], field, "{e}");
    }
    let (status, body) = post(
        &s.url(),
        "/chat/completions",
        &json!({"model": NAME, "messages": [{"role": "tool", "content": "x"}]}),
    );
    assert_error(status, &body, 400, "invalid_request_error");
}

#[test]
fn an_unknown_model_is_404_model_not_found() {
    let s = serve();
    for path in ["/completions", "/chat/completions", "/score"] {
        let body = json!({
            "model": "gpt-4",
            "prompt": "Human: hi",
            "messages": [{"role": "user", "content": "hi"}],
            "items": [{"prompt": "a", "continuation": " b"}],
        });
        let (status, answer) = post(&s.url(), path, &body);
        let e = assert_error(status, &answer, 404, "invalid_request_error");
        assert_eq!(
            (e["param"].as_str(), e["code"].as_str()),
            (Some("model"), Some("model_not_found"))
        );
        assert!(e["message"].as_str().unwrap().contains("gpt-4"), "{e}");
    }
}

#[test]
fn max_tokens_over_the_cap_or_past_the_context_is_400() {
    let s = serve_with(|o| o.max_tokens_cap = Some(20));
    let (status, body) = post(
        &s.url(),
        "/completions",
        &json!({"model": NAME, "prompt": "Human: hi", "max_tokens": 21}),
    );
    let e = assert_error(status, &body, 400, "invalid_request_error");
    assert_eq!(
        (e["param"].as_str(), e["code"].as_str()),
        (Some("max_tokens"), Some("invalid_value"))
    );
    assert!(e["message"].as_str().unwrap().contains("20"), "{e}");
    let (status, _) = post(
        &s.url(),
        "/completions",
        &json!({"model": NAME, "prompt": "Human: hi", "max_tokens": 20}),
    );
    assert_eq!(status, 200);
    // The tiny model has 128 positions: a long prompt leaves no room for 20 more.
    let long = "bake bread ".repeat(60);
    let (status, body) = post(
        &s.url(),
        "/completions",
        &json!({"model": NAME, "prompt": long, "max_tokens": 20}),
    );
    let e = assert_error(status, &body, 400, "invalid_request_error");
    assert_eq!(e["code"], "context_length_exceeded", "{e}");
}

#[test]
fn a_missing_or_wrong_key_is_401_and_health_needs_none() {
    let s = serve_with(|o| o.api_key = Some("sesame".into()));
    let url = format!("{}/completions", s.url());
    let body = json!({"model": NAME, "prompt": "Human: hi", "max_tokens": 1}).to_string();
    let (status, answer) = post_raw(&url, body.as_bytes(), None);
    let e = assert_error(status, &answer, 401, "authentication_error");
    assert_eq!(e["code"], "invalid_api_key");
    assert!(e["message"].as_str().unwrap().contains("Bearer"), "{e}");
    let (status, answer) = post_raw(&url, body.as_bytes(), Some("open"));
    assert_error(status, &answer, 401, "authentication_error");
    let (status, _) = post_raw(&url, body.as_bytes(), Some("sesame"));
    assert_eq!(status, 200);
    let (status, _) = get(&format!("{}/models", s.url()), None);
    assert_eq!(status, 401);
    let (status, text) = get(&format!("{}/models", s.url()), Some("sesame"));
    assert_eq!(status, 200, "{text}");
    let health = s.url().replace("/v1", "/health");
    assert_eq!(get(&health, None).0, 200);
}

#[test]
fn a_body_over_the_limit_is_413_and_unknown_routes_404_and_405() {
    let s = serve_with(|o| o.max_body_bytes = 1000);
    let body = json!({"model": NAME, "prompt": "x".repeat(2000)}).to_string();
    let (status, answer) = post_raw(&format!("{}/completions", s.url()), body.as_bytes(), None);
    let e = assert_error(status, &answer, 413, "invalid_request_error");
    assert!(e["message"].as_str().unwrap().contains("1000"), "{e}");
    let (status, answer) = post(&s.url(), "/embeddings", &json!({}));
    assert_error(status, &answer, 404, "not_found_error");
    let (status, text) = get(&format!("{}/completions", s.url()), None);
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_error(status, &answer, 405, "invalid_request_error");
}

#[test]
fn a_field_of_the_wrong_shape_is_named_with_what_was_expected() {
    let s = serve();
    for (path, body, field, expected) in [
        (
            "/chat/completions",
            json!({"model": NAME, "messages": [{"role": "user", "content": 12}]}),
            "messages[0].content",
            "expected a string or a list of content parts",
        ),
        (
            "/completions",
            json!({"model": NAME, "prompt": {"text": "hi"}}),
            "prompt",
            "expected a string, a list of strings, a list of token ids, or a list of token-id lists",
        ),
        (
            "/completions",
            json!({"model": NAME, "prompt": "hi", "stop": 3}),
            "stop",
            "expected a string or a list of strings",
        ),
        (
            "/completions",
            json!({"model": NAME, "prompt": "hi", "temperature": "hot"}),
            "temperature",
            "expected f32",
        ),
        (
            "/score",
            json!({"model": NAME, "items": [{"prompt": "a", "continuation": 1}]}),
            "items[0].continuation",
            "expected a string",
        ),
    ] {
        let (status, answer) = post(&s.url(), path, &body);
        let e = assert_error(status, &answer, 400, "invalid_request_error");
        let message = e["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("{field}: ")) && message.contains(expected),
            "{path} {body}: {message}"
        );
        let top = field.split(['[', '.']).next().unwrap();
        assert_eq!(e["param"], top, "{e}");
    }
}

#[test]
fn every_name_the_server_answers_to_is_accepted_and_listed() {
    let s = serve_with(|o| o.aliases = vec!["lab".into()]);
    let (status, text) = get(&format!("{}/models", s.url()), None);
    assert_eq!(status, 200, "{text}");
    let list: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [NAME, "lab"]);
    for name in [NAME, "lab"] {
        let (status, answer) = post(
            &s.url(),
            "/completions",
            &json!({"model": name, "prompt": "Human: hi", "max_tokens": 1}),
        );
        assert_eq!(status, 200, "{name}: {answer}");
    }
    let (status, answer) = post(
        &s.url(),
        "/completions",
        &json!({"model": "lab-f7f8", "prompt": "Human: hi", "max_tokens": 1}),
    );
    let e = assert_error(status, &answer, 404, "invalid_request_error");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("'tiny' or 'lab'"), "{message}");
}
