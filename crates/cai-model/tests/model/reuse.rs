//! Prefix reuse through `LocalModel`: a request that continues an earlier one's transcript
//! (retokenised from text, as the critique stage sends it) starts from the kept keys and
//! values and generates what a model without reuse generates, on every architecture.

use cai_core::{GenerateRequest, LanguageModel, Sampling};
use cai_model::batching::EngineLimits;
use cai_model::init::ModelShape;
use cai_model::local::{LoadOptions, LocalModel};

use crate::common::{model_dir, tiny_shape, ARCHS};

const CONTEXT: &str = "The assistant should be helpful, honest and harmless.\n";
const PROMPT: &str = "Human: How do I bake bread? What is the capital of France? \
    Mix flour, water, salt and yeast, then bake it.\nAssistant:";

#[test]
fn a_continued_transcript_starts_from_the_kept_rows_and_generates_the_same() {
    for arch in ARCHS {
        let shape = ModelShape {
            max_position_embeddings: 256,
            ..tiny_shape(arch)
        };
        let dir = model_dir(&shape, 3);
        let reusing = LocalModel::load(dir.spec(), &LoadOptions::default()).unwrap();
        let plain = LocalModel::load(dir.spec(), &LoadOptions::default())
            .unwrap()
            .with_limits(EngineLimits {
                kv_reuse_bytes: 0,
                ..EngineLimits::default()
            });
        let ask = |prompt: &str| GenerateRequest {
            prefix: CONTEXT.into(),
            ..GenerateRequest::new(prompt, 10, Sampling::greedy())
        };
        let mut prompts = [PROMPT.to_string(), format!("{PROMPT} The capital")];
        for wave in 0..3 {
            let requests: Vec<GenerateRequest> = prompts.iter().map(|p| ask(p)).collect();
            let got = reusing.generate(&requests).unwrap();
            let want = plain.generate(&requests).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.token_ids, w.token_ids, "{arch:?} wave {wave}");
                for (x, y) in g.token_logprobs.iter().zip(&w.token_logprobs) {
                    assert!((x - y).abs() < 1e-4, "{arch:?} wave {wave}: {x} vs {y}");
                }
            }
            for (p, g) in prompts.iter_mut().zip(&got) {
                p.push_str(&g.text);
                p.push_str("\nCritique: the answer is helpful.\nRevision:");
            }
        }
        let stats = reusing.kv_reuse().stats();
        assert_eq!(stats.hits, 4, "{arch:?}: both rows in both later waves");
        assert!(plain.kv_reuse().is_empty());
        reusing.clear_prefixes();
        assert!(reusing.kv_reuse().is_empty());
    }
}
