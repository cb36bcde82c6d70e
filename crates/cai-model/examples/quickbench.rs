//! Quick bench-6m throughput check used while optimising (the full harness is `cai bench`).
fn main() -> cai_model::Result<()> {
    let dev = candle_core::Device::Cpu;
    let d = cai_model::bench::bench_6m(candle_core::DType::F32, &dev)?;
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    if which == "all" || which == "gen" {
        for b in [1, 8, 32] {
            let t = cai_model::bench::bench_generate(&d, b, 32, 64, 3)?;
            println!("generate b{b}: {:.0} tok/s", t.tok_s());
        }
    }
    if which == "all" || which == "score" {
        let tokens: usize = std::env::var("MAX_BATCH_TOKENS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4096);
        let limits = cai_model::batching::EngineLimits {
            max_batch: 32,
            max_batch_tokens: tokens,
        };
        let t = cai_model::bench::bench_score(&d, 32, 256, 3, limits)?;
        println!("score 32x256: {:.0} tok/s", t.tok_s());
    }
    println!("peak rss {:?} MiB", cai_model::bench::peak_rss_mib());
    Ok(())
}
