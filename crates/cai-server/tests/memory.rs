//! A request body at the server's 4 MiB default limit costs memory bounded by what the
//! model's context can use, not by the body's size: the process's resident memory grows by
//! well under what tokenizing 4 MiB of text costs (about 600 MB on this tokenizer), one
//! request at a time or four at once. Its own test binary, so that no other test's memory
//! shows in the process's resident size.

#[path = "server/common.rs"]
#[allow(dead_code)]
mod common;

use serde_json::json;

use crate::common::{post, serve};

/// The process's resident memory in MiB, from /proc/self/status.
fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap()
        / 1024
}

#[test]
fn bodies_at_the_limit_cost_bounded_memory() {
    let s = serve();
    let text = "How do I bake bread? ".repeat((4 << 20) / 22);
    let many = vec!["a"; (4 << 20) / 5];
    let bodies = [
        (
            "/completions",
            json!({"model": "tiny", "prompt": text, "max_tokens": 1}),
        ),
        (
            "/chat/completions",
            json!({"model": "tiny", "messages": [{"role": "user", "content": text}]}),
        ),
        (
            "/completions",
            json!({"model": "tiny", "prompt": many, "max_tokens": 1}),
        ),
        (
            "/completions",
            json!({"model": "tiny", "prompt": "hi", "stop": many, "max_tokens": 1}),
        ),
    ];
    let before = rss_mib();
    for (path, body) in &bodies {
        assert!(body.to_string().len() < 4 << 20);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let (status, answer) = post(&s.url(), path, body);
                    assert_eq!(status, 400, "{path}: {answer}");
                });
            }
        });
    }
    let grown = rss_mib().saturating_sub(before);
    assert!(grown < 150, "resident memory grew by {grown} MiB");
}
