//! Time the few-row matmul kernels against candle's GEMM on a model's decode shapes:
//! `cargo run --release -p cai-model --example matmul_shapes [hidden inter vocab kv]`.

use std::time::Instant;

use cai_model::kernels::small_matmul::{SmallMatmul, SmallMatmulT};
use candle_core::{Device, Tensor};

fn time(f: &mut dyn FnMut()) -> f64 {
    f();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn main() -> candle_core::Result<()> {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (h, i, v, kv) = match a[..] {
        [h, i, v, kv] => (h, i, v, kv),
        _ => (576, 1536, 49152, 192),
    };
    let dev = Device::Cpu;
    for m in [1usize, 8, 32] {
        for (name, k, n) in [
            ("q/o", h, h),
            ("k/v", h, kv),
            ("gate/up", h, i),
            ("down", i, h),
            ("head", h, v),
        ] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
            // Enough distinct weights (≥ 256 MiB) that they come from memory, as in a model.
            let copies = ((256usize << 20) / (4 * n * k)).max(2);
            let w = Tensor::randn(0f32, 0.02, (copies, n, k), &dev)?;
            let ws: Vec<Tensor> = (0..copies).map(|c| w.get(c).unwrap()).collect();
            let wts: Vec<Tensor> = ws
                .iter()
                .map(|w| w.t().unwrap().contiguous().unwrap())
                .collect();
            drop(w);
            let flops = 2.0 * (m * n * k * copies) as f64;
            let t_small = time(&mut || {
                for w in &ws {
                    x.apply_op2_no_bwd(w, &SmallMatmul).unwrap();
                }
            });
            let t_small_t = time(&mut || {
                for wt in &wts {
                    x.apply_op2_no_bwd(wt, &SmallMatmulT).unwrap();
                }
            });
            let t_gemm = time(&mut || {
                for wt in &wts {
                    x.matmul(wt).unwrap();
                }
            });
            let t_gemm_t = time(&mut || {
                for w in &ws {
                    x.matmul(&w.t().unwrap()).unwrap();
                }
            });
            println!(
                "m {m:>2} {name:<8} k {k:>5} n {n:>6}: GFLOP/s small {:>6.1} small_t {:>6.1} gemm[k,n] {:>6.1} gemm w.t {:>6.1}",
                flops / t_small / 1e9,
                flops / t_small_t / 1e9,
                flops / t_gemm / 1e9,
                flops / t_gemm_t / 1e9
            );
        }
    }
    Ok(())
}
