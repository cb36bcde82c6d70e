//! Tests of the few-row matmul kernels against a naive product, on every instruction set the
//! CPU has, odd shapes, blocked inner dimensions and both thread splits.

use super::*;

fn naive(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k)
                .map(|t| x[i * k + t] as f64 * w[j * k + t] as f64)
                .sum::<f64>() as f32;
        }
    }
    y
}

/// One FMA per `t`, in order: what the SIMD kernels compute, bit for bit.
fn fma_in_order(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k).fold(0f32, |acc, t| x[i * k + t].mul_add(w[j * k + t], acc));
        }
    }
    y
}

/// Deterministic x `[m, k]` and W `[n, k]` with varied values.
fn operands(m: usize, n: usize, k: usize) -> (Vec<f32>, Vec<f32>) {
    let x = (0..m * k)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0)
        .collect();
    let w = (0..n * k)
        .map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.3)
        .collect();
    (x, w)
}

/// W `[n, k]` -> Wᵀ `[k, n]`, row-major.
fn transpose(w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut wt = vec![0f32; k * n];
    for j in 0..n {
        for t in 0..k {
            wt[t * n + j] = w[j * k + t];
        }
    }
    wt
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (idx, (g, e)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - e).abs() < 1e-4 * (1.0 + e.abs()),
            "{what} at {idx}: {g} vs {e}"
        );
    }
}

/// Every instruction set this CPU can run.
fn isas() -> Vec<Isa> {
    let all = [
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2,
        Isa::Portable,
    ];
    all.into_iter().filter(|isa| isa.available()).collect()
}

/// Row counts 1..64 with ragged panels, widths and depths that are not multiples of 16, and
/// sizes past the threshold for a second thread.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 37, 19),
    (5, 100, 64),
    (17, 70, 300),
    (33, 53, 33),
    (64, 200, 31),
    (8, 4096, 40),
    (33, 1000, 40),
    (64, 130, 577),
    (2, 49, 7),
    (3, 24, 16),
];

#[test]
fn transposed_weight_kernel_matches_naive_on_every_isa() {
    for isa in isas() {
        for &(m, n, k) in SHAPES {
            let (x, w) = operands(m, n, k);
            let wt = transpose(&w, n, k);
            let want = naive(&x, &w, m, n, k);
            for (kc, nc) in [(k, n), (7, 16), (16, 100), (k, 48), (20, 24)] {
                let got = matmul_weight_t_with(isa, &x, &wt, m, n, k, kc, nc);
                assert_close(&got, &want, &format!("{isa:?} {m}x{n}x{k} kc {kc} nc {nc}"));
            }
        }
    }
}

#[test]
fn out_in_kernel_matches_naive_on_every_isa() {
    for isa in isas() {
        for &(m, n, k) in SHAPES {
            let (x, w) = operands(m, n, k);
            let got = matmul_transposed_on(isa, &x, &w, m, n, k);
            let want = naive(&x, &w, m, n, k);
            assert_close(&got, &want, &format!("{isa:?} {m}x{n}x{k}"));
        }
    }
}

#[test]
fn simd_kernels_sum_each_output_in_order_blocked_or_not() {
    for isa in isas().into_iter().filter(|&isa| isa != Isa::Portable) {
        for &(m, n, k) in SHAPES {
            let (x, w) = operands(m, n, k);
            let wt = transpose(&w, n, k);
            let want = fma_in_order(&x, &w, m, n, k);
            for (kc, nc) in [(k, n), (5, 48), (33, 96)] {
                let got = matmul_weight_t_with(isa, &x, &wt, m, n, k, kc, nc);
                assert_eq!(got, want, "{isa:?} [in, out] {m}x{n}x{k} kc {kc} nc {nc}");
            }
            // A single row takes dot products (16 or 8 partial sums), not this order.
            if m > 1 {
                let got = matmul_transposed_on(isa, &x, &w, m, n, k);
                assert_eq!(got, want, "{isa:?} [out, in] {m}x{n}x{k}");
            }
        }
    }
}

#[test]
fn public_entry_points_match_naive() {
    let (m, n, k) = (17, 333, 65);
    let (x, w) = operands(m, n, k);
    let want = naive(&x, &w, m, n, k);
    assert_close(&matmul_transposed(&x, &w, m, n, k), &want, "out-in");
    let wt = transpose(&w, n, k);
    assert_close(&matmul_weight_t(&x, &wt, m, n, k), &want, "in-out");
}

#[test]
fn empty_operands_give_empty_or_zero_outputs() {
    for isa in isas() {
        assert!(matmul_weight_t_with(isa, &[], &[], 0, 0, 0, 1, 1).is_empty());
        assert_eq!(matmul_transposed_on(isa, &[], &[], 2, 3, 0), vec![0.0; 6]);
        assert_eq!(
            matmul_weight_t_with(isa, &[], &[], 2, 3, 0, 1, 1),
            vec![0.0; 6]
        );
    }
}

#[test]
fn panels_are_row_interleaved_and_zero_padded() {
    let x: Vec<f32> = (1..=6).map(|v| v as f32).collect(); // [3, 2]
    assert_eq!(
        pack_panels(&x, 3, 2, 2),
        vec![1.0, 3.0, 2.0, 4.0, 5.0, 0.0, 6.0, 0.0]
    );
}

#[test]
fn weight_blocks_fit_l1_and_a_sixteenth_of_l2_and_are_even() {
    let Caches { l1, l2 } = caches();
    assert!(l1 >= 8 << 10 && l2 >= 64 << 10, "L1 {l1}, L2 {l2} bytes");
    // A small weight is one block.
    assert_eq!(weight_block(10, 40, 48, 8), (10, 48));
    for (k, n) in [(576, 49152), (1536, 576), (1 << 16, 4096), (64, 1 << 20)] {
        let (kc, nc) = weight_block(k, n, 48, 8);
        assert!(
            kc * (48 + 8) * 4 <= l1 * 3 / 4 || kc == 16,
            "{k}x{n}: kc {kc}"
        );
        assert!(kc * nc * 4 <= l2 / 16 || nc == 48, "{k}x{n}: {kc}x{nc}");
        assert!(nc % 48 == 0 && kc >= 16.min(k), "{k}x{n}: {kc}x{nc}");
        let blocks = k.div_ceil(kc);
        assert!(blocks * kc - k < blocks, "{k}: uneven blocks of {kc}");
    }
}

#[test]
fn cache_sizes_parse() {
    assert_eq!(parse_cache_size("2048K"), Some(2 << 20));
    assert_eq!(parse_cache_size("1M"), Some(1 << 20));
    assert_eq!(parse_cache_size("512"), Some(512));
    assert_eq!(parse_cache_size("big"), None);
}
