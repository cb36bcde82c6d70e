//! Prefix reuse gives what a fresh prefill gives: greedy tokens equal and log-probabilities
//! within float rounding, for later waves, prompts that leave an entry midway, left-padded
//! batches, evicted entries and a disabled cache.

use cai_core::{OutputFormat, Sampling};
use rand::{Rng, SeedableRng};

use super::*;
use crate::decoder::Decoder;
use crate::generate::{generate_batch, generate_batch_reusing, GenJob, GenOutput, Stopping};
use crate::prefix::Prefix;

const STOPPING: Stopping<'static> = Stopping {
    tokenizer: None,
    eos: &[],
};

fn tokens(seed: u64, n: usize) -> Vec<u32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(1..100)).collect()
}

fn job(prompt: Vec<u32>, max_new_tokens: usize) -> GenJob {
    GenJob {
        prompt,
        max_new_tokens,
        sampling: Sampling::greedy(),
        stop: Vec::new(),
        seed: 0,
        top_logprobs: 0,
        ignore_eos: true,
        format: OutputFormat::Text,
    }
}

/// Generate with `reuse` and afresh; both must agree.
fn both(
    decoder: &Decoder,
    prefix: Option<&Prefix>,
    jobs: &[GenJob],
    reuse: &PrefixCache,
) -> Vec<GenOutput> {
    let got = generate_batch_reusing(decoder, prefix, jobs, STOPPING, Some(reuse)).unwrap();
    let fresh = generate_batch(decoder, prefix, jobs, STOPPING).unwrap();
    for (g, f) in got.iter().zip(&fresh) {
        assert_eq!(g.tokens, f.tokens);
        for (x, y) in g.logprobs.iter().zip(&f.logprobs) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }
    got
}

/// Bytes of `n` tokens' keys and values.
fn token_bytes(decoder: &Decoder, n: usize) -> usize {
    let c = decoder.config();
    n * c.num_layers * 2 * c.num_kv_heads * c.head_dim * 4
}

#[test]
fn later_waves_continue_the_last_waves_rows_as_a_fresh_prefill_would() {
    let decoder = crate::test_util::tiny_decoder(256);
    let prefix = Prefix::compute(&decoder, tokens(1, 12)).unwrap();
    let reuse = PrefixCache::new(1 << 20, 4);
    // Prompts of different lengths: left padding in the rows kept and in the rows continued.
    let mut transcripts: Vec<Vec<u32>> = [3, 7, 5]
        .iter()
        .zip(10..)
        .map(|(&n, seed)| tokens(seed, n))
        .collect();
    let mut expect_reused = 0;
    for wave in 0..3 {
        if wave > 0 {
            let request = tokens(20 + wave, 2);
            // An entry holds everything its row ran: the prefix, the prompt, and the new
            // tokens but the last.
            expect_reused += transcripts.iter().map(|t| 12 + t.len() - 1).sum::<usize>();
            transcripts.iter_mut().for_each(|t| t.extend(&request));
        }
        let jobs: Vec<GenJob> = transcripts.iter().map(|t| job(t.clone(), 6)).collect();
        let outs = both(&decoder, Some(&prefix), &jobs, &reuse);
        for (t, o) in transcripts.iter_mut().zip(&outs) {
            t.extend(&o.tokens);
        }
        // Each row's newer entry replaces the older one it continues.
        assert_eq!(reuse.len(), 3, "wave {wave}");
        assert_eq!(reuse.stats().hits, 3 * wave);
        // The entries hold their rows' own slots; the prefix's, once, stay the prefix's.
        let own: usize = transcripts.iter().map(|t| t.len() - 1).sum();
        assert_eq!(reuse.bytes(), token_bytes(&decoder, own), "wave {wave}");
    }
    assert_eq!(reuse.stats().reused_tokens, expect_reused as u64);
}

#[test]
fn a_row_kept_apart_from_its_prefix_joins_back_to_the_same_keys_and_values() {
    let decoder = crate::test_util::tiny_decoder(256);
    let prefix = Prefix::compute(&decoder, tokens(1, 12)).unwrap();
    let jobs = [job(tokens(2, 5), 4), job(tokens(3, 8), 4)];
    let (apart, whole) = (PrefixCache::new(1 << 20, 4), PrefixCache::new(1 << 20, 4));
    generate_batch_reusing(&decoder, Some(&prefix), &jobs, STOPPING, Some(&apart)).unwrap();
    // The same rows kept whole: the batch's cache as it was, each row compacted.
    let outs = generate_batch(&decoder, Some(&prefix), &jobs, STOPPING).unwrap();
    for (j, o) in jobs.iter().zip(&outs) {
        let t: Vec<u32> = prefix
            .tokens
            .iter()
            .chain(&j.prompt)
            .chain(&o.tokens[..3])
            .copied()
            .collect();
        whole.insert(t.clone(), kept(&decoder, &t), false);
        let (a, w) = (
            apart.lookup(&t, false, 0).unwrap(),
            whole.lookup(&t, false, 0).unwrap(),
        );
        // A lookup leaves the last token to be run.
        assert_eq!((a.len(), w.len()), (t.len() - 1, t.len() - 1));
        assert!(a.head().is_some() && w.head().is_none());
        let (a, w) = (a.cache().unwrap(), w.cache().unwrap());
        assert_eq!(a.positions(), w.positions());
        assert_eq!(a.shared(), 12);
        for layer in 0..decoder.config().num_layers {
            for (x, y) in [
                (a.layer(layer).0, w.layer(layer).0),
                (a.layer(layer).1, w.layer(layer).1),
            ] {
                let d = crate::test_util::max_abs_diff(&x, &y);
                assert!(d < 1e-5, "layer {layer}: {d}");
            }
        }
    }
    assert!(apart.bytes() < whole.bytes());
}

#[test]
fn a_prompt_that_leaves_an_entry_midway_reuses_the_common_part_beside_fresh_rows() {
    let decoder = crate::test_util::tiny_decoder(256);
    let reuse = PrefixCache::new(1 << 20, 4);
    let first = tokens(1, 20);
    both(&decoder, None, &[job(first.clone(), 4)], &reuse);
    assert_eq!(reuse.len(), 1);
    // Shares 10 tokens, then differs (as a retokenised boundary would); beside it a row
    // that shares nothing, prefilled from its prompt in the same batch.
    let mut tail = tokens(2, 8);
    if tail[0] == first[10] {
        tail[0] = tail[0] % 99 + 1;
    }
    let diverging: Vec<u32> = first[..10].iter().chain(&tail).copied().collect();
    let unrelated = tokens(3, 9);
    both(
        &decoder,
        None,
        &[job(diverging, 5), job(unrelated, 5)],
        &reuse,
    );
    assert_eq!(reuse.stats().hits, 1);
    assert_eq!(reuse.stats().reused_tokens, 10);
    // Too little in common (3 < 4 tokens) is prefilled afresh.
    let mut short = first[..3].to_vec();
    short.extend(tokens(4, 6));
    both(&decoder, None, &[job(short, 2)], &reuse);
    assert_eq!(reuse.stats().hits, 1);
}

#[test]
fn an_entry_evicted_by_the_budget_is_prefilled_afresh() {
    let decoder = crate::test_util::tiny_decoder(256);
    // Room for one row of 23 tokens, not two.
    let reuse = PrefixCache::new(token_bytes(&decoder, 30), 4);
    let a = tokens(1, 20);
    let b = tokens(2, 20);
    let out_a = both(&decoder, None, &[job(a.clone(), 4)], &reuse);
    let out_b = both(&decoder, None, &[job(b.clone(), 4)], &reuse);
    assert_eq!((reuse.len(), reuse.stats().evicted), (1, 1));
    assert_eq!(reuse.bytes(), token_bytes(&decoder, 23));
    let more = |p: &[u32], o: &GenOutput| -> Vec<u32> {
        p.iter().chain(&o.tokens).chain(&[7, 8]).copied().collect()
    };
    both(&decoder, None, &[job(more(&b, &out_b[0]), 3)], &reuse);
    assert_eq!(reuse.stats().hits, 1);
    assert_eq!(reuse.stats().reused_tokens, 23);
    both(&decoder, None, &[job(more(&a, &out_a[0]), 3)], &reuse);
    assert_eq!(reuse.stats().hits, 1, "a's entry was evicted");
}

#[test]
fn a_disabled_cache_keeps_nothing_and_changes_nothing() {
    let decoder = crate::test_util::tiny_decoder(256);
    let reuse = PrefixCache::new(0, 4);
    assert!(!reuse.enabled());
    let jobs = [job(tokens(1, 20), 4), job(tokens(2, 9), 4)];
    let got = generate_batch_reusing(&decoder, None, &jobs, STOPPING, Some(&reuse)).unwrap();
    let fresh = generate_batch(&decoder, None, &jobs, STOPPING).unwrap();
    assert_eq!(got, fresh, "bit for bit");
    assert!(reuse.is_empty());
    assert_eq!(reuse.stats(), ReuseStats::default());
}

/// A one-row cache of `tokens`, as a finished row leaves.
fn kept(decoder: &Decoder, tokens: &[u32]) -> KvCache {
    Prefix::compute(decoder, tokens.to_vec()).unwrap().cache
}

#[test]
fn entries_are_kept_per_adapter_state_and_a_continued_entry_replaces_its_start() {
    let decoder = crate::test_util::tiny_decoder(256);
    let t = tokens(1, 30);
    let reuse = PrefixCache::new(1 << 20, 4);
    reuse.insert(t[..10].to_vec(), kept(&decoder, &t[..10]), true);
    assert!(
        reuse.lookup(&t, false, 0).is_none(),
        "computed with adapters on"
    );
    assert_eq!(reuse.lookup(&t, true, 0).unwrap().len(), 10);
    // The longer entry continues everything the shorter one could: it replaces it, and a
    // start of it adds nothing.
    reuse.insert(t[..20].to_vec(), kept(&decoder, &t[..20]), true);
    reuse.insert(t[..15].to_vec(), kept(&decoder, &t[..15]), true);
    assert_eq!(reuse.len(), 1);
    assert_eq!(reuse.bytes(), token_bytes(&decoder, 20));
    // The job's last token is always run; a shared prefix of 18 tokens leaves too little.
    assert_eq!(reuse.lookup(&t[..20], true, 0).unwrap().len(), 19);
    assert!(reuse.lookup(&t, true, 18).is_none());
    reuse.clear();
    assert!(reuse.is_empty() && reuse.lookup(&t, true, 0).is_none());
}
