//! Tests of the KV cache: a prefix held apart and shared, joins, rows that leave.

use candle_core::Tensor;

use super::KvCache;
use crate::decoder::{Batch, Decoder};
use crate::layers::Mode;
use crate::prefix::Prefix;

/// One token per row through `decoder` at each row's next position; the hidden states.
/// Shapes: -> `[rows * hidden]`.
fn step(decoder: &Decoder, cache: &mut KvCache, ids: &[u32]) -> Vec<f32> {
    let batch = Batch {
        valid: vec![vec![true]; ids.len()],
        positions: cache
            .next_positions()
            .into_iter()
            .map(|p| vec![p])
            .collect(),
    };
    let ids = Tensor::from_vec(ids.to_vec(), (ids.len(), 1), decoder.device()).unwrap();
    decoder
        .forward_hidden(&ids, &batch, Some(cache), Mode::Infer)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn an_expanded_prefix_is_shared_by_every_row() {
    let decoder = crate::test_util::tiny_decoder(64);
    let prefix = Prefix::compute(&decoder, vec![1, 2, 3, 4, 5]).unwrap();
    assert_eq!(prefix.cache.shared(), 5);
    let mut cache = prefix.cache.expand(3, 16).unwrap();
    assert_eq!(cache.shared(), 5);
    // On the CPU the prefix is held once: 5 slots, then 3 rows of 11 own slots (not 16).
    assert!(cache.holds_prefix_apart());
    let slot_bytes = prefix.cache.bytes() / 5;
    assert_eq!(cache.bytes(), (5 + 3 * 11) * slot_bytes);
    // Rows that go their own ways after the prefix still share it.
    let mut own = cache.clone().unshared();
    assert!(!own.holds_prefix_apart());
    assert_eq!(own.bytes(), 3 * 16 * slot_bytes);
    for ids in [[7, 8, 9], [10, 11, 12], [13, 14, 15]] {
        // Reading the prefix from row 0 gives every row what its own copy gives.
        assert_eq!(
            step(&decoder, &mut cache, &ids),
            step(&decoder, &mut own, &ids)
        );
    }
    assert_eq!((cache.len(), cache.shared()), (8, 5));
    assert_eq!(cache.select_rows(&[2, 0]).unwrap().shared(), 5);
    assert_eq!(cache.truncated(3).unwrap().shared(), 3);
    assert_eq!(cache.compact_row(1).unwrap().unwrap().shared(), 5);
    // Every view of the rows holds the same slots as the rows' own copies.
    let same = |a: &KvCache, b: &KvCache| {
        for l in 0..2 {
            let ((ak, av), (bk, bv)) = (a.layer(l), b.layer(l));
            for (x, y) in [(ak, bk), (av, bv)] {
                let (x, y) = (x.flatten_all().unwrap(), y.flatten_all().unwrap());
                assert_eq!(x.to_vec1::<f32>().unwrap(), y.to_vec1::<f32>().unwrap());
            }
        }
    };
    same(
        &cache.select_rows(&[2, 0]).unwrap(),
        &own.select_rows(&[2, 0]).unwrap(),
    );
    same(&cache.truncated(3).unwrap(), &own.truncated(3).unwrap());
    same(&cache.truncated(6).unwrap(), &own.truncated(6).unwrap());
    same(
        &cache.compact_row(1).unwrap().unwrap(),
        &own.compact_row(1).unwrap().unwrap(),
    );
    same(
        &cache.compact_row_from(2, 5).unwrap().unwrap(),
        &own.compact_row_from(2, 5).unwrap().unwrap(),
    );
}

/// Rows leave a running batch by moving kept rows from above into the holes: the cache
/// then holds what selecting those rows in that order holds, and decodes the same.
#[test]
fn retained_rows_move_into_the_holes_and_decode_the_same() {
    let decoder = crate::test_util::tiny_decoder(64);
    let prefix = Prefix::compute(&decoder, vec![1, 2, 3]).unwrap();
    for apart in [true, false] {
        let mut cache = prefix.cache.expand(5, 8).unwrap();
        if !apart {
            cache = cache.unshared();
        }
        step(&decoder, &mut cache, &[7, 8, 9, 10, 11]);
        step(&decoder, &mut cache, &[12, 13, 14, 15, 16]);
        let mut moved = cache.clone();
        // `clone` shares memory: give `moved` its own, as a running batch has.
        moved.layers = moved
            .layers
            .iter()
            .map(|(k, v)| (k.force_contiguous().unwrap(), v.force_contiguous().unwrap()))
            .collect();
        let order = moved.retain_rows(&[0, 2, 4]).unwrap();
        assert_eq!(order, [0, 4, 2]);
        let mut selected = cache.select_rows(&order).unwrap();
        assert_eq!(moved.valid(), selected.valid());
        assert_eq!(moved.positions(), selected.positions());
        for l in 0..2 {
            let ((mk, mv), (sk, sv)) = (moved.layer(l), selected.layer(l));
            for (a, b) in [(mk, sk), (mv, sv)] {
                let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
                assert_eq!(a, b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            }
        }
        // The original keeps its rows (it shared no memory with the moved copy).
        assert_eq!(cache.batch(), 5);
        assert_eq!(
            step(&decoder, &mut moved, &[20, 21, 22]),
            step(&decoder, &mut selected, &[20, 21, 22])
        );
    }
}

#[test]
fn rows_that_continue_one_prefix_are_joined_left_aligned_and_stay_shared() {
    let decoder = crate::test_util::tiny_decoder(64);
    let prefix = Prefix::compute(&decoder, vec![1, 2, 3, 4, 5]).unwrap();
    // A kept row two tokens past the prefix, and a fresh batch one token past it.
    let mut done = prefix.cache.expand(2, 16).unwrap();
    step(&decoder, &mut done, &[7, 8]);
    step(&decoder, &mut done, &[9, 10]);
    let kept = done.compact_row(1).unwrap().unwrap();
    let mut fresh = prefix.cache.expand(2, 16).unwrap();
    step(&decoder, &mut fresh, &[11, 12]);
    let mut joined = KvCache::concat_rows(&[&kept, &fresh], 4).unwrap();
    assert_eq!((joined.len(), joined.shared()), (7, 5));
    // A whole kept row (its prefix copied) joins rows that hold the prefix apart: the
    // result holds it apart too.
    assert!(!kept.holds_prefix_apart() && fresh.holds_prefix_apart());
    assert!(joined.holds_prefix_apart());
    assert_eq!(joined.valid()[0], [true; 7]);
    assert_eq!(
        joined.valid()[1],
        [true, true, true, true, true, true, false]
    );
    assert_eq!(joined.next_positions(), [7, 6, 6]);
    // The same rows right-aligned, unshared: the same states up to the order of sums.
    let mut aligned =
        KvCache::concat_rows(&[&kept.clone().unshared(), &fresh.clone().unshared()], 4).unwrap();
    assert_eq!(aligned.shared(), 0);
    assert_eq!(
        aligned.valid()[1],
        [false, true, true, true, true, true, true]
    );
    for ids in [[20, 21, 22], [23, 24, 25]] {
        let (a, b) = (
            step(&decoder, &mut joined, &ids),
            step(&decoder, &mut aligned, &ids),
        );
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "{diff}");
    }
    // Joined again after its longer row left, the slot no remaining row uses goes.
    let rest = joined.select_rows(&[1, 2]).unwrap();
    let again = KvCache::concat_rows(&[&rest, &fresh], 0).unwrap();
    assert_eq!((rest.len(), again.len(), again.shared()), (9, 8, 5));
    assert_eq!(again.valid()[..2], [[true; 8], [true; 8]]);
    assert_eq!(
        again.valid()[2],
        [true, true, true, true, true, true, false, false]
    );
    // Rows of another prefix are joined as before, right-aligned.
    let other = Prefix::compute(&decoder, vec![1, 2, 3, 4, 5]).unwrap();
    let mixed = KvCache::concat_rows(&[&kept, &other.cache.expand(1, 8).unwrap()], 0).unwrap();
    assert_eq!(mixed.shared(), 0);
    assert_eq!(
        mixed.valid()[1],
        [false, false, true, true, true, true, true]
    );
}
