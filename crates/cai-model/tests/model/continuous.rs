//! Continuous batching: rows that join a running [`DecodeBatch`] between decode steps, or leave
//! it early, generate exactly what they generate alone — greedy or seeded sampling, with or
//! without a shared prefix, on every architecture (Mistral's sliding window included).

use std::collections::HashMap;

use cai_core::Sampling;
use cai_model::batching::EngineLimits;
use cai_model::decode_batch::DecodeBatch;
use cai_model::generate::{generate_batch, generate_continuous, GenJob, GenOutput, Stopping};
use cai_model::prefix::Prefix;
use cai_model::prefix_cache::PrefixCache;
use candle_core::DType;

use crate::common::{noisy_decoder, tiny_config, token_rows, ARCHS};

const NO_STOP: Stopping<'static> = Stopping {
    tokenizer: None,
    eos: &[],
};

fn job(prompt: Vec<u32>, max_new_tokens: usize, sampling: Sampling, seed: u64) -> GenJob {
    GenJob {
        prompt,
        max_new_tokens,
        sampling,
        stop: Vec::new(),
        seed,
        top_logprobs: 0,
        ignore_eos: false,
        format: cai_core::OutputFormat::Text,
    }
}

/// Jobs of different lengths and budgets: greedy and sampled at temperature 1.
fn jobs() -> Vec<GenJob> {
    token_rows()
        .into_iter()
        .cycle()
        .take(6)
        .enumerate()
        .map(|(i, prompt)| {
            let sampling = if i % 2 == 0 {
                Sampling::greedy()
            } else {
                Sampling::default()
            };
            job(prompt, 3 + 2 * i, sampling, 40 + i as u64)
        })
        .collect()
}

fn assert_same(got: &GenOutput, alone: &GenOutput, what: &str) {
    assert_eq!(got.tokens, alone.tokens, "{what}");
    assert_eq!(got.finish, alone.finish, "{what}");
    for (a, b) in got.logprobs.iter().zip(&alone.logprobs) {
        assert!((a - b).abs() < 1e-4, "{what}: logprob {a} vs {b}");
    }
}

#[test]
fn rows_joining_between_steps_generate_what_they_generate_alone() {
    for arch in ARCHS {
        let decoder = noisy_decoder(tiny_config(arch, false), 21, DType::F32);
        let jobs = jobs();
        let alone: Vec<GenOutput> = jobs
            .iter()
            .map(|j| generate_batch(&decoder, None, std::slice::from_ref(j), NO_STOP).unwrap())
            .map(|mut o| o.remove(0))
            .collect();
        // Job i joins before step 2i (two at a time for the last pair); the batch keeps running.
        let mut batch = DecodeBatch::new(&decoder);
        let mut done: HashMap<u64, GenOutput> = HashMap::new();
        let mut next = 0;
        for step in 0.. {
            let joining: Vec<(u64, GenJob)> = (next..jobs.len())
                .take_while(|&i| 2 * i <= step || i == 5)
                .map(|i| (i as u64, jobs[i].clone()))
                .collect();
            next += joining.len();
            batch.add(None, joining).unwrap();
            if batch.is_empty() && next == jobs.len() {
                break;
            }
            let out = batch.step(NO_STOP).unwrap();
            assert!(out.tokens.len() >= out.finished.len());
            done.extend(out.finished);
        }
        assert_eq!(done.len(), jobs.len());
        for (i, a) in alone.iter().enumerate() {
            assert_same(&done[&(i as u64)], a, &format!("{arch:?} job {i}"));
        }
    }
}

/// Many jobs through a bounded batch: at most 2 rows decode together and prefill passes hold
/// at most 12 padded tokens, so jobs wait, join as rows finish, and are prefilled in several
/// passes; each still generates what it generates alone, with and without a shared prefix
/// and with kept rows to continue.
#[test]
fn jobs_waiting_for_room_generate_what_they_generate_alone() {
    let limits = EngineLimits {
        max_batch: 2,
        max_batch_tokens: 12,
        ..EngineLimits::default()
    };
    for arch in ARCHS {
        let decoder = noisy_decoder(tiny_config(arch, false), 24, DType::F32);
        let prefix = Prefix::compute(&decoder, vec![1, 44, 250, 9, 17, 120]).unwrap();
        let jobs = jobs();
        for pre in [None, Some(&prefix)] {
            let alone: Vec<GenOutput> = jobs
                .iter()
                .map(|j| generate_batch(&decoder, pre, std::slice::from_ref(j), NO_STOP))
                .map(|o| o.unwrap().remove(0))
                .collect();
            let reuse = PrefixCache::new(64 << 20, 2);
            let got =
                generate_continuous(&decoder, pre, &jobs, NO_STOP, Some(&reuse), limits).unwrap();
            assert_eq!(got.len(), jobs.len());
            for (i, (g, a)) in got.iter().zip(&alone).enumerate() {
                assert_same(g, a, &format!("{arch:?} job {i}, prefix {}", pre.is_some()));
            }
            // The same jobs again, each continuing its own kept row.
            let again =
                generate_continuous(&decoder, pre, &jobs, NO_STOP, Some(&reuse), limits).unwrap();
            assert!(
                reuse.stats().hits >= jobs.len() as u64 / 2,
                "{:?}",
                reuse.stats()
            );
            for (i, (g, a)) in again.iter().zip(&alone).enumerate() {
                assert_same(
                    g,
                    a,
                    &format!("{arch:?} job {i} reused, prefix {}", pre.is_some()),
                );
            }
        }
    }
}

/// Every job of a call is looked up when the call starts: with room for one row at a time and
/// a reuse budget that holds exactly the first wave's rows, the second wave's rows that
/// finish first (and keep their longer rows) evict kept rows that later jobs continue, yet
/// every job of the wave still starts from its own.
#[test]
fn waiting_jobs_hold_the_kept_rows_they_continue() {
    let decoder = noisy_decoder(
        tiny_config(cai_model::config::Architecture::Llama, false),
        25,
        DType::F32,
    );
    let one_at_a_time = EngineLimits {
        max_batch: 1,
        ..EngineLimits::default()
    };
    let first: Vec<GenJob> = token_rows()
        .into_iter()
        .chain([vec![9, 99, 199, 299, 3]])
        .enumerate()
        .map(|(i, p)| job(p, 6, Sampling::greedy(), i as u64))
        .collect();
    let wave = |reuse: &PrefixCache| {
        generate_continuous(&decoder, None, &first, NO_STOP, Some(reuse), one_at_a_time).unwrap()
    };
    let measure = PrefixCache::new(64 << 20, 2);
    wave(&measure);
    let reuse = PrefixCache::new(measure.bytes(), 2);
    let outs = wave(&reuse);
    assert_eq!(reuse.len(), first.len(), "the budget holds the first wave");
    let second: Vec<GenJob> = first
        .iter()
        .zip(&outs)
        .map(|(j, o)| {
            let prompt = [&j.prompt[..], &o.tokens[..], &[7, 8]].concat();
            job(prompt, 6, Sampling::greedy(), 0)
        })
        .collect();
    let before = reuse.stats();
    let got = generate_continuous(
        &decoder,
        None,
        &second,
        NO_STOP,
        Some(&reuse),
        one_at_a_time,
    )
    .unwrap();
    let after = reuse.stats();
    assert_eq!(after.hits - before.hits, second.len() as u64, "{after:?}");
    assert!(
        after.evicted > before.evicted,
        "nothing was evicted: {after:?}"
    );
    for (i, (g, j)) in got.iter().zip(&second).enumerate() {
        let alone = generate_batch(&decoder, None, std::slice::from_ref(j), NO_STOP).unwrap();
        assert_same(g, &alone[0], &format!("second wave job {i}"));
    }
}

#[test]
fn prefix_rows_join_rows_without_one_and_removed_rows_leave_the_others_unchanged() {
    for arch in ARCHS {
        let decoder = noisy_decoder(tiny_config(arch, false), 22, DType::F32);
        let prefix = Prefix::compute(&decoder, vec![1, 44, 250, 9, 17, 120]).unwrap();
        let plain = GenJob {
            top_logprobs: 3,
            ..job(vec![5, 6, 7], 8, Sampling::greedy(), 0)
        };
        let after_prefix = job(vec![77, 3], 6, Sampling::default(), 9);
        let doomed = job(vec![8, 8, 8, 8], 8, Sampling::greedy(), 0);
        let expect_plain =
            generate_batch(&decoder, None, std::slice::from_ref(&plain), NO_STOP).unwrap();
        let expect_prefix = generate_batch(
            &decoder,
            Some(&prefix),
            std::slice::from_ref(&after_prefix),
            NO_STOP,
        )
        .unwrap();

        let mut batch = DecodeBatch::new(&decoder);
        batch
            .add(None, vec![(1, plain.clone()), (2, doomed)])
            .unwrap();
        let mut done: HashMap<u64, GenOutput> = HashMap::new();
        done.extend(batch.step(NO_STOP).unwrap().finished);
        batch.remove(&[2]).unwrap();
        assert_eq!(batch.ids(), vec![1]);
        done.extend(batch.step(NO_STOP).unwrap().finished);
        batch.add(Some(&prefix), vec![(3, after_prefix)]).unwrap();
        assert_eq!(batch.ids(), vec![1, 3]);
        while !batch.is_empty() {
            let step = batch.step(NO_STOP).unwrap();
            assert!(step.tokens.iter().all(|t| t.id != 2));
            done.extend(step.finished);
        }
        assert!(!done.contains_key(&2));
        assert_same(&done[&1], &expect_plain[0], &format!("{arch:?} plain row"));
        // Greedy: the best alternative is the token taken, three alternatives per position.
        let plain_out = &done[&1];
        assert_eq!(plain_out.top_logprobs.len(), plain_out.tokens.len());
        for ((top, &tok), &lp) in plain_out
            .top_logprobs
            .iter()
            .zip(&plain_out.tokens)
            .zip(&plain_out.logprobs)
        {
            assert_eq!(top.len(), 3);
            assert_eq!(top[0].0, tok);
            assert!((top[0].1 - lp).abs() < 1e-5 && top[1].1 <= top[0].1);
        }
        assert!(done[&3].top_logprobs.is_empty());
        assert_same(
            &done[&3],
            &expect_prefix[0],
            &format!("{arch:?} prefix row"),
        );
    }
}

#[test]
fn a_job_past_the_context_is_refused_and_the_batch_runs_on() {
    let decoder = noisy_decoder(
        tiny_config(cai_model::config::Architecture::Llama, false),
        23,
        DType::F32,
    );
    let max = decoder.config().max_position_embeddings;
    let mut batch = DecodeBatch::new(&decoder);
    batch
        .add(None, vec![(1, job(vec![3, 4], 4, Sampling::greedy(), 0))])
        .unwrap();
    let err = batch
        .add(None, vec![(2, job(vec![3; 8], max, Sampling::greedy(), 0))])
        .unwrap_err();
    assert!(
        err.to_string().contains("exceed the model's context"),
        "{err}"
    );
    assert_eq!(batch.ids(), vec![1]);
    let mut steps = 0;
    while !batch.is_empty() {
        batch.step(NO_STOP).unwrap();
        steps += 1;
    }
    assert_eq!(steps, 4);
}

#[test]
fn ignore_eos_runs_past_end_of_sequence_to_the_budget() {
    let decoder = noisy_decoder(
        tiny_config(cai_model::config::Architecture::Llama, false),
        24,
        DType::F32,
    );
    let plain = job(vec![3, 4, 5], 5, Sampling::greedy(), 0);
    let free = generate_batch(&decoder, None, std::slice::from_ref(&plain), NO_STOP).unwrap();
    let eos = [free[0].tokens[0]];
    let stopping = Stopping {
        tokenizer: None,
        eos: &eos,
    };
    let stopped = generate_batch(&decoder, None, std::slice::from_ref(&plain), stopping).unwrap();
    assert_eq!(
        (stopped[0].tokens.as_slice(), stopped[0].finish),
        (&eos[..], cai_core::FinishReason::Eos)
    );
    let ignoring = GenJob {
        ignore_eos: true,
        ..plain
    };
    let ran = generate_batch(&decoder, None, &[ignoring], stopping).unwrap();
    assert_eq!(ran[0].tokens, free[0].tokens);
    assert_eq!(ran[0].finish, cai_core::FinishReason::Length);
}
