//! The data order every trainer shares: a seeded permutation per epoch, and the slice of an
//! endless stream of such epochs that a step reads, so a resumed run reads what an
//! uninterrupted one would.

use rand::seq::SliceRandom;
use rand::SeedableRng;

/// The order of examples in `epoch`: a permutation seeded by (seed, epoch), so a resumed run
/// sees the same order.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng =
        rand_chacha::ChaCha8Rng::seed_from_u64(cai_core::rng::derive_seed_u64(seed, &[epoch]));
    order.shuffle(&mut rng);
    order
}

/// The items of step `step` (0-based) when `per_step` items a step are read from an endless
/// stream of seeded epoch orders of `n` items ([`epoch_order`]): they depend on the step
/// alone, so a resumed run reads what an uninterrupted one would.
pub fn stream_slice(n: usize, per_step: usize, step: u64, seed: u64) -> Vec<usize> {
    let mut order: Option<(u64, Vec<usize>)> = None;
    (0..per_step as u64)
        .map(|i| {
            let at = step * per_step as u64 + i;
            let epoch = at / n as u64;
            if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
                order = Some((epoch, epoch_order(n, seed, epoch)));
            }
            order.as_ref().expect("set above").1[(at % n as u64) as usize]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_slice_walks_the_epoch_orders_across_epoch_boundaries() {
        // 5 items, 3 a step: step 1 takes positions 3, 4 of epoch 0 and 0 of epoch 1.
        let (e0, e1) = (epoch_order(5, 7, 0), epoch_order(5, 7, 1));
        assert_eq!(stream_slice(5, 3, 0, 7), e0[..3]);
        assert_eq!(stream_slice(5, 3, 1, 7), [e0[3], e0[4], e1[0]]);
        // Each epoch visits every item once.
        let mut seen: Vec<usize> = (0..5).flat_map(|s| stream_slice(5, 2, s, 7)).collect();
        seen.truncate(5);
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2, 3, 4]);
    }
}
