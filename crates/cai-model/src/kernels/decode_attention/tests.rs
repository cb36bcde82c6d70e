//! Tests of the attention kernels against softmax attention and against each other.

use super::*;
use candle_core::{Device, Tensor, D};

#[test]
fn matches_softmax_attention_with_gqa_mask_and_strided_cache() {
    let dev = Device::Cpu;
    let (b, nh, nkv, s, t, d) = (2, 4, 2, 2, 5, 20);
    let q = Tensor::randn(0f32, 1.0, (b, nh, s, d), &dev).unwrap();
    // k and v as views into a larger cache, like the KV cache hands out.
    let kc = Tensor::randn(0f32, 1.0, (b, nkv, t + 3, d), &dev).unwrap();
    let vc = Tensor::randn(0f32, 1.0, (b, nkv, t + 3, d), &dev).unwrap();
    let (k, v) = (kc.narrow(2, 0, t).unwrap(), vc.narrow(2, 0, t).unwrap());
    // Causal: query i (slot t - s + i) sees slots up to its own.
    let mut mask = vec![0f32; b * s * t];
    for row in 0..b {
        for i in 0..s {
            for j in (t - s + i + 1)..t {
                mask[(row * s + i) * t + j] = -1e30;
            }
        }
    }
    mask[1] = -1e30; // row 0, query 0 cannot see key 1
    mask[(s + 1) * t - 2] = -1e30; // row 1, query 1 cannot see key 3
    let op = DecodeAttention {
        scale: 0.3,
        mask: Some(std::sync::Arc::new(mask.clone())),
        shared: 0,
        head: None,
    };
    let got = q.apply_op3_no_bwd(&k, &v, &op).unwrap();

    let rep = nh / nkv;
    let kr = k
        .unsqueeze(2)
        .unwrap()
        .repeat((1, 1, rep, 1, 1))
        .unwrap()
        .reshape((b, nh, t, d))
        .unwrap();
    let vr = v
        .unsqueeze(2)
        .unwrap()
        .repeat((1, 1, rep, 1, 1))
        .unwrap()
        .reshape((b, nh, t, d))
        .unwrap();
    let m = Tensor::from_vec(mask, (b, 1, s, t), &dev).unwrap();
    let scores = (q.matmul(&kr.t().unwrap()).unwrap() * 0.3)
        .unwrap()
        .broadcast_add(&m)
        .unwrap();
    let want = candle_nn::ops::softmax(&scores, D::Minus1)
        .unwrap()
        .matmul(&vr)
        .unwrap();
    let diff = crate::test_util::max_abs_diff(&got, &want);
    assert!(diff < 1e-5, "max difference {diff}");
}

#[test]
fn backward_matches_the_gradients_of_softmax_attention() {
    use candle_core::Var;
    let dev = Device::Cpu;
    let (b, nh, nkv, s, d) = (2, 4, 2, 5, 12);
    let q = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, nh, s, d), &dev).unwrap()).unwrap();
    let k = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, nkv, s, d), &dev).unwrap()).unwrap();
    let v = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, nkv, s, d), &dev).unwrap()).unwrap();
    // Causal, and row 1 is left-padded by two slots (a query still sees itself).
    let mut mask = vec![0f32; b * s * s];
    for row in 0..b {
        for i in 0..s {
            for j in 0..s {
                let padded = row == 1 && j < 2 && j != i;
                if j > i || padded {
                    mask[(row * s + i) * s + j] = f32::NEG_INFINITY;
                }
            }
        }
    }
    let probe = Tensor::randn(0f32, 1.0, (b, nh, s, d), &dev).unwrap();
    let op = DecodeAttention {
        scale: 0.3,
        mask: Some(std::sync::Arc::new(mask.clone())),
        shared: 0,
        head: None,
    };
    let fused = q
        .as_tensor()
        .apply_op3(k.as_tensor(), v.as_tensor(), op)
        .unwrap();
    let gf = (fused * &probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();

    let rep = nh / nkv;
    let expand = |x: &Tensor| {
        x.unsqueeze(2)
            .unwrap()
            .repeat((1, 1, rep, 1, 1))
            .unwrap()
            .reshape((b, nh, s, d))
            .unwrap()
    };
    let m = Tensor::from_vec(mask, (b, 1, s, s), &dev).unwrap();
    let scores = (q
        .as_tensor()
        .matmul(&expand(k.as_tensor()).t().unwrap())
        .unwrap()
        * 0.3)
        .unwrap()
        .broadcast_add(&m)
        .unwrap();
    let plain = candle_nn::ops::softmax(&scores, D::Minus1)
        .unwrap()
        .matmul(&expand(v.as_tensor()))
        .unwrap();
    let gp = (plain * &probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (name, var) in [("q", &q), ("k", &k), ("v", &v)] {
        let a = gf.get(var.as_tensor()).unwrap();
        let e = gp.get(var.as_tensor()).unwrap();
        let diff = crate::test_util::max_abs_diff(a, e);
        assert!(diff < 1e-4, "d{name} differs by {diff}");
    }
}

/// Keys read from each row's own slots.
fn plain(own: View<'_>) -> Keys<'_> {
    Keys {
        own,
        head: None,
        shared: 0,
    }
}

/// A prefix held apart (one copy, the rows' own slots after it) gives what every row's own
/// copy gives: query by query (the same bits), grouped by key-value head and blocked.
#[test]
fn a_prefix_held_apart_reads_as_every_rows_copy() {
    let (rep, t, d, shared) = (3, 90, 64, 37);
    let (b, nkv) = (2, 2);
    let nh = rep * nkv;
    for s in [1, 2, 20, 53] {
        let kv = b * nkv * t * d;
        let q_len = b * nh * s * d;
        let mut data: Vec<f32> = (0..q_len + 2 * kv)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        // Row 1's first `shared` slots are row 0's (the prefix every row holds).
        for base in [q_len, q_len + kv] {
            for g in 0..nkv {
                for j in 0..shared * d {
                    data[base + nkv * t * d + g * t * d + j] = data[base + g * t * d + j];
                }
            }
        }
        let view = |strides: [usize; 4], offset: usize| View {
            data: &data,
            offset,
            strides,
        };
        let q = view([nh * s * d, s * d, d, 1], 0);
        let st = [nkv * t * d, t * d, d, 1];
        let dense = |base| plain(view(st, base));
        // The prefix: row 0's first slots; the rows' own: slots from `shared` on.
        let apart = |base| Keys {
            own: view(st, base + shared * d),
            head: Some(view(st, base)),
            shared,
        };
        let mut mask = vec![0f32; b * s * t];
        for (i, m) in mask.iter_mut().enumerate() {
            if i % 5 == 0 && i % t >= shared && i % t < t - s {
                *m = f32::NEG_INFINITY;
            }
        }
        let dims = Dims { rep, s, t, d };
        let (dk, dv, ak, av) = (
            dense(q_len),
            dense(q_len + kv),
            apart(q_len),
            apart(q_len + kv),
        );
        for m in [None, Some(mask.as_slice())] {
            for (row, g) in [(0, 0), (1, 1), (1, 0)] {
                let mut want = vec![0f32; rep * s * d];
                let mut same = vec![0f32; rep * s * d];
                let mut blocked = vec![0f32; rep * s * d];
                for (r, ((w, x), y)) in want
                    .chunks_mut(s * d)
                    .zip(same.chunks_mut(s * d))
                    .zip(blocked.chunks_mut(s * d))
                    .enumerate()
                {
                    let at = Head {
                        row,
                        head: g * rep + r,
                    };
                    head_generic::<Scalar>(&q, &dk, &dv, m, 0.3, dims, at, w);
                    head_generic::<Scalar>(&q, &ak, &av, m, 0.3, dims, at, x);
                    head_blocked(&q, &ak, &av, m, 0.3, dims, at, y);
                }
                assert_eq!(same, want, "s {s}");
                let close = |got: &[f32], what: &str| {
                    for (a, w) in got.iter().zip(&want) {
                        assert!((a - w).abs() < 1e-5, "{what}, s {s}: {a} vs {w}");
                    }
                };
                close(&blocked, "blocked");
                #[cfg(target_arch = "x86_64")]
                if is_x86_feature_detected!("avx512f") {
                    let mut grouped = vec![f32::NAN; rep * s * d];
                    // SAFETY: AVX-512F is available and d ≤ 128.
                    unsafe {
                        grouped::group(&q, &ak, &av, m, 0.3, dims, (row, g), None, &mut grouped)
                    };
                    close(&grouped, "grouped");
                }
            }
        }
    }
}

/// The prefix's part as two products over every row's queries (`cascade`) gives what the
/// query-by-query kernel gives over every row's own copy, with the mask on both parts.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_prefix_as_products_matches_every_rows_copy() {
    if !is_x86_feature_detected!("avx512f") {
        return;
    }
    let (rep, nkv, t, d, shared) = (3, 2, 70, 64, 29);
    let nh = rep * nkv;
    for (b, s) in [(4, 1), (3, 2), (2, 3)] {
        let kv = b * nkv * t * d;
        let q_len = b * nh * s * d;
        let mut data: Vec<f32> = (0..q_len + 2 * kv)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        for base in [q_len, q_len + kv] {
            for row in 1..b {
                for g in 0..nkv {
                    for j in 0..shared * d {
                        data[base + row * nkv * t * d + g * t * d + j] = data[base + g * t * d + j];
                    }
                }
            }
        }
        let view = |strides: [usize; 4], offset: usize| View {
            data: &data,
            offset,
            strides,
        };
        let q = view([nh * s * d, s * d, d, 1], 0);
        let st = [nkv * t * d, t * d, d, 1];
        let apart = |base| Keys {
            own: view(st, base + shared * d),
            head: Some(view(st, base)),
            shared,
        };
        let (dk, dv) = (plain(view(st, q_len)), plain(view(st, q_len + kv)));
        let (ak, av) = (apart(q_len), apart(q_len + kv));
        let mut mask = vec![0f32; b * s * t];
        for (i, m) in mask.iter_mut().enumerate() {
            *m = match (i % 7, i % t) {
                (0, j) if j >= shared && j < t - s => f32::NEG_INFINITY,
                (3, j) if j < shared => -0.7,
                _ => 0.0,
            };
        }
        let dims = Dims { rep, s, t, d };
        assert!(cascade::applies(&ak, dims, b));
        for m in [None, Some(mask.as_slice())] {
            let mut want = vec![0f32; b * nh * s * d];
            for (bh, chunk) in want.chunks_mut(s * d).enumerate() {
                let at = Head {
                    row: bh / nh,
                    head: bh % nh,
                };
                head_generic::<Scalar>(&q, &dk, &dv, m, 0.3, dims, at, chunk);
            }
            for parallel in [false, true] {
                let mut got = vec![f32::NAN; b * nh * s * d];
                // SAFETY: AVX-512F is available, d ≤ 128, and `applies` holds.
                unsafe { cascade::run(&q, &ak, &av, m, 0.3, dims, (b, nkv), &mut got, parallel) };
                for (a, w) in got.iter().zip(&want) {
                    assert!((a - w).abs() < 1e-5, "b {b}, s {s}: {a} vs {w}");
                }
            }
        }
    }
}

#[test]
fn the_blocked_kernel_matches_the_query_by_query_kernel() {
    // Two query blocks (70 > 64) over a longer cache, grouped heads, padding masked.
    let (rep, s, t, d) = (3, 70, 75, 24);
    let data: Vec<f32> = (0..2 * 6 * t * d)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 60.0)
        .collect();
    let view = |strides: [usize; 4], offset: usize| View {
        data: &data,
        offset,
        strides,
    };
    // q [2, 6, s, d] dense; k and v [2, 2, t, d] views with a row stride of 2 d.
    let q = view([6 * s * d, s * d, d, 1], 0);
    let k = view([2 * t * 2 * d, t * 2 * d, 2 * d, 1], 3);
    let v = view([2 * t * 2 * d, t * 2 * d, 2 * d, 1], d + 1);
    let mut mask = vec![0f32; 2 * s * t];
    for i in 0..s {
        for j in 0..4 {
            mask[(s + i) * t + j] = f32::NEG_INFINITY; // row 1 left-padded by 4
        }
    }
    let (k, v) = (plain(k), plain(v));
    let dims = Dims { rep, s, t, d };
    for (row, head) in [(0, 0), (1, 4), (1, 5)] {
        let at = Head { row, head };
        for m in [None, Some(mask.as_slice())] {
            let mut want = vec![0f32; s * d];
            head_generic::<Scalar>(&q, &k, &v, m, 0.3, dims, at, &mut want);
            let mut got = vec![0f32; s * d];
            head_blocked(&q, &k, &v, m, 0.3, dims, at, &mut got);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_grouped_kernel_matches_the_query_by_query_kernel() {
    if !is_x86_feature_detected!("avx512f") {
        return;
    }
    // Head dimensions with and without a partial vector, up to the limit; one to seven
    // heads per group; key counts around multiples of 16; a few queries.
    let cases = [
        (3, 1, 37, 64),
        (1, 1, 5, 20),
        (4, 2, 50, 128),
        (2, 3, 17, 24),
        (7, 1, 33, 48),
        (3, 1, 1, 64),
        (2, 1, 16, 100),
        (6, 2, 32, 112),
    ];
    for (rep, s, t, d) in cases {
        let (nkv, b) = (2, 2);
        let nh = rep * nkv;
        let data: Vec<f32> = (0..b * nh * (t + 2) * 2 * d + 2 * d)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        let view = |strides: [usize; 4], offset: usize| View {
            data: &data,
            offset,
            strides,
        };
        // q dense; k and v views of a cache with spare slots and a row stride of 2 d.
        let q = view([nh * s * d, s * d, d, 1], 0);
        let kv_strides = [nkv * (t + 2) * 2 * d, (t + 2) * 2 * d, 2 * d, 1];
        let (k, v) = (plain(view(kv_strides, 5)), plain(view(kv_strides, d + 3)));
        let mut mask = vec![0f32; b * s * t];
        for (i, m) in mask.iter_mut().enumerate() {
            *m = match i % 7 {
                0 if i % t < t - s => f32::NEG_INFINITY, // never a query's own slot
                3 => -0.5,
                _ => 0.0,
            };
        }
        let dims = Dims { rep, s, t, d };
        for m in [None, Some(mask.as_slice())] {
            for (row, g) in [(0, 0), (1, 1)] {
                let mut want = vec![0f32; rep * s * d];
                for (r, chunk) in want.chunks_mut(s * d).enumerate() {
                    let at = Head {
                        row,
                        head: g * rep + r,
                    };
                    head_generic::<Scalar>(&q, &k, &v, m, 0.3, dims, at, chunk);
                }
                let mut got = vec![f32::NAN; rep * s * d];
                // SAFETY: AVX-512F is available and d ≤ 128.
                unsafe { grouped::group(&q, &k, &v, m, 0.3, dims, (row, g), None, &mut got) };
                for (a, w) in got.iter().zip(&want) {
                    assert!(
                        (a - w).abs() < 1e-5,
                        "{a} vs {w} (rep {rep}, s {s}, t {t}, d {d})"
                    );
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_shared_prefix_is_read_from_the_first_row() {
    if !is_x86_feature_detected!("avx512f") {
        return;
    }
    let (rep, s, t, d, shared) = (3, 1, 40, 64, 23);
    let (b, nkv) = (2, 2);
    let nh = rep * nkv;
    let kv = b * nkv * t * d;
    let mut data: Vec<f32> = (0..nh * b * s * d + 2 * kv)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
        .collect();
    let (q_len, row) = (b * nh * s * d, nkv * t * d);
    // Row 1's first `shared` slots of k and v are row 0's.
    for base in [q_len, q_len + kv] {
        for g in 0..nkv {
            for j in 0..shared * d {
                data[base + row + g * t * d + j] = data[base + g * t * d + j];
            }
        }
    }
    let run = |data: &[f32], shared: usize| {
        let view = |strides: [usize; 4], offset: usize| View {
            data,
            offset,
            strides,
        };
        let q = view([nh * s * d, s * d, d, 1], 0);
        let kv_strides = [nkv * t * d, t * d, d, 1];
        let keys = |offset| Keys {
            own: view(kv_strides, offset),
            head: None,
            shared,
        };
        let (k, v) = (keys(q_len), keys(q_len + kv));
        let mut out = vec![0f32; rep * s * d];
        let dims = Dims { rep, s, t, d };
        // SAFETY: AVX-512F is available and d ≤ 128.
        unsafe { grouped::group(&q, &k, &v, None, 0.3, dims, (1, 1), None, &mut out) };
        out
    };
    let own = run(&data, 0);
    assert_eq!(run(&data, shared), own);
    // Spoil row 1's copy: with the prefix shared, row 1 never reads it.
    let mut spoiled = data.clone();
    for base in [q_len, q_len + kv] {
        for j in 0..shared * d {
            spoiled[base + row + t * d + j] += 1.0;
        }
    }
    assert_eq!(run(&spoiled, shared), own);
    assert_ne!(run(&spoiled, 0), own);
}

#[test]
fn the_portable_kernel_matches_the_vector_kernel() {
    let (rep, s, t, d) = (2, 3, 7, 20);
    let data: Vec<f32> = (0..2 * 4 * t * d)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 60.0)
        .collect();
    let view = |strides: [usize; 4]| View {
        data: &data,
        offset: 0,
        strides,
    };
    let (q, kv) = (
        view([4 * s * d, s * d, d, 1]),
        plain(view([2 * t * d, t * d, d, 1])),
    );
    let mut mask = vec![0f32; 2 * s * t];
    mask[3] = f32::NEG_INFINITY;
    let dims = Dims { rep, s, t, d };
    for head in 0..4 {
        let at = Head { row: 1, head };
        let mut portable = vec![0f32; s * d];
        head_generic::<Scalar>(&q, &kv, &kv, Some(&mask), 0.2, dims, at, &mut portable);
        let mut reference = vec![0f32; s * d];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is available.
            unsafe { head_avx512(&q, &kv, &kv, Some(&mask), 0.2, dims, at, &mut reference) };
        } else {
            head_generic::<Scalar>(&q, &kv, &kv, Some(&mask), 0.2, dims, at, &mut reference);
        }
        for (a, b) in portable.iter().zip(&reference) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        assert!(portable.iter().all(|v| v.is_finite()));
    }
}
