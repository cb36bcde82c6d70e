//! Time the few-row matmul kernels — the ones before the register-blocked rewrite (`old`), the
//! current ones (`new`) — against candle's GEMM on a model's decode shapes, with enough
//! distinct weights (≥ 256 MiB) that they stream from memory as in a model:
//! `cargo run --release -p cai-model --example matmul_shapes [hidden inter vocab kv]`
//! (SmolLM2-135M's shape by default). Prints GFLOP/s for 1, 8, 16, 32 and 64 rows, both weight
//! layouts: `[in, out]` (`SmallMatmulT`, the projections after `prepare_for_inference`) and
//! `[out, in]` (`SmallMatmul`, the tied output layer). `MATMUL_SHAPES=head,down` and
//! `MATMUL_ROWS=32,64` pick shapes and row counts; `MATMUL_REPS` sets the runs per timing (the
//! best counts; default 5); `MATMUL_MIB` the total size of the distinct weights (default 256;
//! a few MiB measure the kernels on weights from cache).

mod old;

use std::time::Instant;

use cai_model::kernels::small_matmul::{self, Isa};
use candle_core::{Device, Storage, Tensor};

/// A comma-separated list from the environment variable `name`, if set.
fn env_list(name: &str) -> Option<Vec<String>> {
    let v = std::env::var(name).ok()?;
    Some(v.split(',').map(|s| s.trim().to_owned()).collect())
}

/// A few-row kernel: `(x, weight, m, n, k) -> [m, n]`.
type Kernel = dyn Fn(&[f32], &[f32], usize, usize, usize) -> Vec<f32>;

/// Best of `MATMUL_REPS` (default 5) runs after a warm-up, in seconds.
fn time(f: &mut dyn FnMut()) -> f64 {
    let reps: usize = std::env::var("MATMUL_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    f();
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

/// The f32 elements of a contiguous CPU tensor.
fn with_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> R {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        panic!("CPU tensor expected")
    };
    let data = cpu.as_slice::<f32>().expect("f32 tensor");
    let (start, end) = layout.contiguous_offsets().expect("contiguous tensor");
    f(&data[start..end])
}

/// Kernels timed per layout: old, new (widest ISA), new on AVX2, candle's GEMM.
const KERNELS: usize = 4;

/// One row of the table: GFLOP/s of every kernel for `flops` done in the given seconds.
fn print_line(label: &str, flops: f64, in_out: &[f64; KERNELS], out_in: &[f64; KERNELS]) {
    let g = |s: &f64| format!("{:>6.1}", flops / s / 1e9);
    let cols = |t: &[f64; KERNELS]| t.iter().map(g).collect::<Vec<_>>().join(" ");
    println!(
        "{label} | [in,out]: {} | [out,in]: {}",
        cols(in_out),
        cols(out_in)
    );
}

fn main() -> candle_core::Result<()> {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().expect("sizes are integers"))
        .collect();
    let (h, i, v, kv) = match a[..] {
        [h, i, v, kv] => (h, i, v, kv),
        _ => (576, 1536, 49152, 192),
    };
    let dev = Device::Cpu;
    let rows: Vec<usize> = match env_list("MATMUL_ROWS") {
        Some(list) => list
            .iter()
            .map(|s| s.parse().expect("MATMUL_ROWS: integers"))
            .collect(),
        None => vec![1, 8, 16, 32, 64],
    };
    let only = env_list("MATMUL_SHAPES");
    let mib: usize = std::env::var("MATMUL_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let shapes = [
        ("q/o", h, h),
        ("k/v", h, kv),
        ("gate/up", h, i),
        ("down", i, h),
        ("head", h, v),
    ];
    println!(
        "GFLOP/s, weights streamed from memory; threads: {}",
        rayon::current_num_threads()
    );
    let avx2 = Isa::Avx2;
    let has_avx2 = avx2.available();
    println!(
        "{:>3} {:<8} {:>5} {:>6} | [in,out]: {:>6} {:>6} {:>6} {:>6} | [out,in]: {:>6} {:>6} {:>6} {:>6}",
        "m", "shape", "k", "n", "old", "new", "avx2", "gemm", "old", "new", "avx2", "gemm"
    );
    // Totals per m over all shapes: flops and seconds per kernel.
    let mut totals = vec![(0f64, [0f64; KERNELS], [0f64; KERNELS]); rows.len()];
    for (name, k, n) in shapes {
        if only.as_ref().is_some_and(|o| !o.iter().any(|s| s == name)) {
            continue;
        }
        let copies = ((mib << 20) / (4 * n * k)).max(2);
        let w = Tensor::randn(0f32, 0.02, (copies, n, k), &dev)?;
        let ws: Vec<Tensor> = (0..copies).map(|c| w.get(c).unwrap()).collect();
        let wts: Vec<Tensor> = ws
            .iter()
            .map(|w| w.t().unwrap().contiguous().unwrap())
            .collect();
        drop(w);
        for (r, &m) in rows.iter().enumerate() {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
            let xs = x.flatten_all()?.to_vec1::<f32>()?;
            let flops = 2.0 * (m * n * k * copies) as f64;
            let run = |weights: &[Tensor], f: &Kernel| {
                time(&mut || {
                    for w in weights {
                        with_slice(w, |s| f(&xs, s, m, n, k));
                    }
                })
            };
            let skip = f64::NAN;
            let in_out = [
                run(&wts, &old::matmul_weight_t),
                run(&wts, &small_matmul::matmul_weight_t),
                if has_avx2 {
                    run(&wts, &move |x, w, m, n, k| {
                        small_matmul::matmul_weight_t_on(avx2, x, w, m, n, k)
                    })
                } else {
                    skip
                },
                time(&mut || {
                    for wt in &wts {
                        x.matmul(wt).unwrap();
                    }
                }),
            ];
            let out_in = [
                run(&ws, &old::matmul_transposed),
                run(&ws, &small_matmul::matmul_transposed),
                if has_avx2 {
                    run(&ws, &move |x, w, m, n, k| {
                        small_matmul::matmul_transposed_on(avx2, x, w, m, n, k)
                    })
                } else {
                    skip
                },
                time(&mut || {
                    for w in &ws {
                        x.matmul(&w.t().unwrap()).unwrap();
                    }
                }),
            ];
            print_line(
                &format!("{m:>3} {name:<8} {k:>5} {n:>6}"),
                flops,
                &in_out,
                &out_in,
            );
            let total = &mut totals[r];
            total.0 += flops;
            for c in 0..KERNELS {
                total.1[c] += in_out[c];
                total.2[c] += out_in[c];
            }
        }
    }
    println!("all shapes (total flops / total time):");
    for (&m, (flops, in_out, out_in)) in rows.iter().zip(&totals) {
        print_line(
            &format!("{m:>3} {:<8} {:>5} {:>6}", "all", "", ""),
            *flops,
            in_out,
            out_in,
        );
    }
    Ok(())
}
