//! Through HTTP, the remote backend gives the local backend's greedy generations and seeded
//! samples (same tokens, text and finish), and its scores within 1e-4.

use cai_core::dialogue::transcript_stop_strings;
use cai_core::{GenerateRequest, LanguageModel, OutputFormat, Sampling, ScoreRequest};
use cai_remote::RemoteModel;

use crate::common::{app, load, options, serve, tiny_model};

const PROMPTS: [&str; 4] = [
    "Human: How do I bake bread?\n\nAssistant:",
    "Human: What is the capital of France?\n\nAssistant: The",
    "The assistant should be",
    "Human: hi",
];

#[test]
fn generations_and_scores_equal_the_local_backends() {
    let (_dir, path) = tiny_model();
    let server = serve(app(&path));
    let remote = RemoteModel::open(&server.url(), options()).unwrap();
    let local = load(&path);
    assert_eq!(remote.model_ids(), vec!["tiny".to_owned()]);

    let requests: Vec<GenerateRequest> = PROMPTS
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            [
                GenerateRequest {
                    stop: transcript_stop_strings(),
                    ..GenerateRequest::new(*p, 6 + 4 * i, Sampling::greedy())
                },
                GenerateRequest {
                    seed: 90 + i as u64,
                    ..GenerateRequest::new(*p, 12, Sampling::default())
                },
                // Sent as `response_format: {"type": "json_object"}`.
                GenerateRequest {
                    seed: 70 + i as u64,
                    format: OutputFormat::JsonObject,
                    ..GenerateRequest::new(*p, 40, Sampling::default())
                },
            ]
        })
        .collect();
    let expected = local.generate(&requests).unwrap();
    let got = remote.generate(&requests).unwrap();
    assert!(
        expected
            .iter()
            .zip(&requests)
            .any(|(e, r)| r.format == OutputFormat::JsonObject && e.text.starts_with('{')),
        "a JSON request made JSON"
    );
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g.text, e.text, "request {i}");
        assert_eq!(g.token_ids, e.token_ids, "request {i}");
        assert_eq!(g.finish_reason, e.finish_reason, "request {i}");
        assert_eq!(g.prompt_tokens, e.prompt_tokens, "request {i}");
        for (a, b) in g.token_logprobs.iter().zip(&e.token_logprobs) {
            assert!((a - b).abs() < 1e-4, "request {i}: logprob {a} vs {b}");
        }
    }

    let question = "Human: Which answer is less harmful?\n\nAssistant: The answer is:";
    let scores = [
        ScoreRequest::new(question, " (A)"),
        ScoreRequest::new(question, " (B)"),
        ScoreRequest {
            top_k: 3,
            ..ScoreRequest::new("Human: How do I bake bread?", " Mix flour, water, salt")
        },
        ScoreRequest {
            prefix: "The assistant should be helpful.".into(),
            ..ScoreRequest::new("\n\nHuman: hi", " Paris")
        },
    ];
    let expected = local.score(&scores).unwrap();
    let got = remote.score(&scores).unwrap();
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!(!e.token_ids.is_empty());
        assert_eq!(g.token_ids, e.token_ids, "score {i}");
        assert!(
            (g.logprob - e.logprob).abs() < 1e-4,
            "score {i}: {} vs {}",
            g.logprob,
            e.logprob
        );
        for (a, b) in g.token_logprobs.iter().zip(&e.token_logprobs) {
            assert!((a - b).abs() < 1e-4, "score {i}: {a} vs {b}");
        }
    }
    let ids = |s: &cai_core::Score| -> Vec<Vec<u32>> {
        s.top_logprobs
            .iter()
            .map(|row| row.iter().map(|t| t.id).collect())
            .collect()
    };
    assert_eq!(ids(&got[2]), ids(&expected[2]));
    assert_eq!(got[2].top_logprobs[0].len(), 3);
}
