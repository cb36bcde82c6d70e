//! The bf16 kernels against an f64 reference over the same bf16 values, on every kernel this
//! machine has, at sizes that exercise every padding and blocking edge.

use super::*;
use rand::{Rng, SeedableRng};

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// `x Wᵀ` in f64 over bf16-rounded `x` and `w`, and each output's `Σ |x_i w_i|`.
fn reference(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    let r = |v: f32| f64::from(from_bf16(to_bf16(v)));
    let mut out = vec![0f64; m * n];
    let mut mag = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            for t in 0..k {
                let p = r(x[i * k + t]) * r(w[j * k + t]);
                out[i * n + j] += p;
                mag[i * n + j] += p.abs();
            }
        }
    }
    (out, mag)
}

fn kernels() -> Vec<Bf16Isa> {
    let mut all = vec![Bf16Isa::Portable];
    #[cfg(target_arch = "x86_64")]
    all.extend([Bf16Isa::Avx2, Bf16Isa::Avx512Bf16, Bf16Isa::Amx]);
    all.into_iter().filter(|isa| isa.available()).collect()
}

#[test]
fn every_kernel_matches_the_reference_at_edge_sizes() {
    for &(m, n, k) in &[
        (1, 1, 32),
        (1, 48, 64),
        (3, 31, 96),
        (16, 32, 32),
        (17, 100, 64),
        (33, 16, 576),
        (40, 70, 160),
        (300, 40, 64),
        (5, 7, 33),
        (2, 3, 1),
    ] {
        let x = random(m * k, 1);
        let w = random(n * k, 2);
        let wb: Vec<u16> = w.iter().map(|&v| to_bf16(v)).collect();
        let weight = Weight { data: &wb, n, k };
        let (want, mag) = reference(&x, &w, m, n, k);
        let mut ran = 0;
        for isa in kernels().into_iter().filter(|isa| isa.handles(k)) {
            ran += 1;
            let got = matmul_on(isa, &x, m, weight);
            for (idx, (&g, (&r, &a))) in got.iter().zip(want.iter().zip(&mag)).enumerate() {
                let tol = 1e-5 * a + 1e-6;
                assert!(
                    (f64::from(g) - r).abs() <= tol,
                    "{} [{m}, {n}, {k}] at {idx}: {g} against {r}",
                    isa.name()
                );
            }
        }
        assert!(ran >= 1);
        // The dispatching entry point picks a kernel that handles k.
        let got = matmul(&x, m, weight);
        assert!((f64::from(got[0]) - want[0]).abs() <= 1e-5 * mag[0] + 1e-6);
    }
}

#[test]
fn rounding_is_to_nearest_even_and_keeps_specials() {
    assert_eq!(to_bf16(1.0), 0x3f80);
    // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
    assert_eq!(to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
    // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties go up to the even one.
    assert_eq!(to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
    assert_eq!(to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
    assert_eq!(to_bf16(f32::INFINITY), 0x7f80);
    assert_eq!(to_bf16(f32::NEG_INFINITY), 0xff80);
    assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    assert_eq!(
        to_bf16(f32::MAX),
        0x7f80,
        "the largest f32 rounds up to infinity"
    );
    assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
    // The same rounding as the `half` crate's.
    for v in random(1000, 9) {
        assert_eq!(to_bf16(v * 1e3), half::bf16::from_f32(v * 1e3).to_bits());
    }
}

#[test]
fn the_candle_op_checks_operands() {
    let dev = candle_core::Device::Cpu;
    let w = candle_core::Tensor::new(&[[1f32, 2.0, 3.0], [4.0, 5.0, 6.0]], &dev)
        .unwrap()
        .to_dtype(candle_core::DType::BF16)
        .unwrap();
    let x = candle_core::Tensor::new(&[[1f32, 0.5, -1.0]], &dev).unwrap();
    let y: Vec<Vec<f32>> = x
        .apply_op2_no_bwd(&w, &Bf16Matmul)
        .unwrap()
        .to_vec2()
        .unwrap();
    assert_eq!(y, vec![vec![-1.0, 0.5]]);
    let bad = candle_core::Tensor::new(&[[1f32, 0.5]], &dev).unwrap();
    let err = bad
        .apply_op2_no_bwd(&w, &Bf16Matmul)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("2 features") && err.contains("takes 3"),
        "{err}"
    );
    let f32_weight = w.to_dtype(candle_core::DType::F32).unwrap();
    let err = x
        .apply_op2_no_bwd(&f32_weight, &Bf16Matmul)
        .unwrap_err()
        .to_string();
    assert!(err.contains("must be bf16"), "{err}");
}
