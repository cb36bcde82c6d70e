//! The data order every trainer shares: a seeded permutation per epoch, walked in micro-batches
//! from the position a [`TrainerState`] keeps (SFT, distillation, the preference model), or
//! read as the slice of an endless stream of such epochs that a step takes (RL's prompts and
//! DPO's pairs), so a resumed run reads what an uninterrupted one would; and the seeded
//! permutations PPO and RLOO split a rollout into minibatches with.

use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::TrainerState;

/// The order of examples in `epoch`: a permutation seeded by (seed, epoch), so a resumed run
/// sees the same order.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    permutation(n, cai_core::rng::derive_seed_u64(seed, &[epoch]))
}

/// A permutation of `0..n` drawn from `seed` (a seed already derived for its use, e.g. RL's
/// minibatch order of one update epoch of one step).
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    order
}

/// The walk through seeded epoch orders of `n` examples, a step's micro-batches at a time, from
/// the position in [`TrainerState`] (`epoch`, `data_position`): an epoch's last micro-batch
/// may be short, and the next step starts the next epoch's order.
#[derive(Debug, Clone)]
pub struct EpochWalk {
    n: usize,
    seed: u64,
    /// The epoch whose order is held, and that order.
    order: Option<(u64, Vec<usize>)>,
}

impl EpochWalk {
    /// A walk over `n` examples (`n` ≥ 1) in orders seeded by `seed`.
    pub fn new(n: usize, seed: u64) -> Self {
        Self {
            n,
            seed,
            order: None,
        }
    }

    /// The example indices of one step's `grad_accum` micro-batches of up to `batch_size`
    /// each, read from `state`'s position, which moves past them.
    pub fn next_step(
        &mut self,
        state: &mut TrainerState,
        batch_size: usize,
        grad_accum: usize,
    ) -> Vec<Vec<usize>> {
        let mut micro = Vec::with_capacity(grad_accum);
        for _ in 0..grad_accum {
            if state.data_position as usize >= self.n {
                state.epoch += 1;
                state.data_position = 0;
            }
            if self.order.as_ref().is_none_or(|(e, _)| *e != state.epoch) {
                self.order = Some((state.epoch, epoch_order(self.n, self.seed, state.epoch)));
            }
            let order = &self.order.as_ref().expect("set above").1;
            let start = state.data_position as usize;
            let end = (start + batch_size).min(self.n);
            micro.push(order[start..end].to_vec());
            state.data_position = end as u64;
        }
        micro
    }

    /// How far `state` is through the run, in epochs (the `epoch` of a metrics record).
    pub fn epochs(&self, state: &TrainerState) -> f64 {
        state.epoch as f64 + state.data_position as f64 / self.n as f64
    }
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
    fn an_epoch_walk_reads_micro_batches_across_epochs_and_resumes_where_it_stopped() {
        // 5 examples, 2 micro-batches of 2 a step: the epoch's last micro-batch is short.
        let (e0, e1) = (epoch_order(5, 7, 0), epoch_order(5, 7, 1));
        let mut state = TrainerState::new(7);
        let mut walk = EpochWalk::new(5, 7);
        assert_eq!(
            walk.next_step(&mut state, 2, 2),
            [e0[..2].to_vec(), e0[2..4].to_vec()]
        );
        assert_eq!((state.epoch, state.data_position), (0, 4));
        assert_eq!(walk.epochs(&state), 0.8);
        assert_eq!(
            walk.next_step(&mut state, 2, 2),
            [e0[4..].to_vec(), e1[..2].to_vec()]
        );
        assert_eq!((state.epoch, state.data_position), (1, 2));
        // A fresh walk from a saved state reads what the first would have read next.
        let mut resumed = state.clone();
        let next = walk.next_step(&mut state, 2, 2);
        assert_eq!(EpochWalk::new(5, 7).next_step(&mut resumed, 2, 2), next);
        assert_eq!(next, [e1[2..4].to_vec(), e1[4..].to_vec()]);
        assert_eq!(resumed, state);
    }

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
