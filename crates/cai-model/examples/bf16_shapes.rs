//! Times the bf16 kernels (`kernels::bf16`) on SmolLM2-135M's matmul shapes at decode and
//! prefill row counts, beside the f32 product candle runs, weights larger than the caches.
//!
//! `cargo run --release -p cai-model --example bf16_shapes [-- ROWS...]`

use std::time::Instant;

use cai_model::kernels::bf16::{matmul_on, to_bf16, Bf16Isa, Weight};
use candle_core::{Device, Tensor};

fn main() {
    let rows: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = if rows.is_empty() {
        vec![1, 8, 32, 256, 2048]
    } else {
        rows
    };
    // (outputs, inputs) of SmolLM2-135M: q/o, k/v, gate/up, down, the tied head.
    let shapes = [
        (576, 576),
        (192, 576),
        (1536, 576),
        (576, 1536),
        (49152, 576),
    ];
    let mut kernels = vec![Bf16Isa::Portable];
    #[cfg(target_arch = "x86_64")]
    kernels.extend([Bf16Isa::Avx2, Bf16Isa::Avx512Bf16, Bf16Isa::Amx]);
    kernels.retain(|k| k.available());
    println!("GFLOP/s, {} threads", rayon::current_num_threads());
    print!("{:>14} {:>5} {:>8}", "shape", "rows", "f32");
    for k in &kernels {
        print!(" {:>12}", k.name());
    }
    println!();
    for &(n, k) in &shapes {
        // Enough copies of the weight that each call reads it from memory (≥ 64 MiB).
        let copies = ((64 << 20) / (4 * n * k)).clamp(1, 64);
        let ws: Vec<Tensor> = (0..copies)
            .map(|_| Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu).unwrap())
            .collect();
        let bf16: Vec<Vec<u16>> = ws
            .iter()
            .map(|w| {
                let v: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
                v.into_iter().map(to_bf16).collect()
            })
            .collect();
        for &m in &rows {
            let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
            let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
            let flops = 2.0 * (m * n * k) as f64;
            let reps = ((4e9 / flops) as usize).clamp(copies, 2000);
            let time = |f: &mut dyn FnMut(usize)| {
                f(0);
                let t = Instant::now();
                for i in 0..reps {
                    f(i % copies);
                }
                flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9
            };
            let f32_rate = time(&mut |i| {
                let _ = x.matmul(&ws[i].t().unwrap()).unwrap();
            });
            print!("{:>14} {m:>5} {f32_rate:>8.0}", format!("{n}x{k}"));
            for &isa in &kernels {
                let rate = time(&mut |i| {
                    let _ = matmul_on(
                        isa,
                        &xs,
                        m,
                        Weight {
                            data: &bf16[i],
                            n,
                            k,
                        },
                    );
                });
                print!(" {rate:>12.0}");
            }
            println!();
        }
    }
}
