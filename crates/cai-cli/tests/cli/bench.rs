//! `cai bench --json` on the hidden tiny model: one JSON object with a throughput per
//! workload, each workload's peak memory from its own child process, and the thread count.

use serde_json::Value;

use crate::helpers::{stdout, Workdir};

#[test]
fn json_summary_has_throughput_and_peak_memory_per_workload() {
    let work = Workdir::new();
    let output = work.cai_ok(&[
        "bench",
        "--json",
        "--runs",
        "1",
        "--tiny",
        "--workloads",
        "generate_b1,generate_b8",
    ]);
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    let summary: Value = serde_json::from_str(&text).unwrap();
    for workload in ["generate_b1", "generate_b8"] {
        assert!(
            summary[format!("{workload}_tok_s")].as_f64().unwrap() > 0.0,
            "{summary}"
        );
        assert!(
            summary["peak_rss_mib"][workload].as_f64().unwrap() > 0.0,
            "{summary}"
        );
    }
    assert!(summary.get("score_tok_s").is_none(), "{summary}");
    assert!(summary["threads"].as_u64().unwrap() >= 1, "{summary}");
}
