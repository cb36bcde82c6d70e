//! The trainer's progress counters — step, epoch, data position, seed, recent losses — saved
//! as `trainer_state.json` in every checkpoint so that a resumed run continues exactly.

use serde::{Deserialize, Serialize};

/// Where a run is, in the units a resume needs.
///
/// No random-generator stream is stored: cai derives every random choice from the run seed
/// and a position (`cai_core::rng::derive_seed(seed, &["shuffle", epoch])`, per-step
/// dropout seeds from `step`), so `seed`, `epoch`, `data_position` and `step` restore it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainerState {
    /// Optimiser updates completed.
    pub step: u64,
    /// Epochs completed (the current epoch's index).
    pub epoch: u64,
    /// Examples of the current epoch already consumed (in the epoch's shuffled order).
    pub data_position: u64,
    /// The run seed every random choice derives from.
    pub seed: u64,
    /// Loss-bearing tokens trained on so far.
    pub tokens_seen: u64,
    /// Training loss of the last update (`None` before the first).
    pub last_train_loss: Option<f64>,
    /// Loss of the last evaluation (`None` before the first).
    pub last_eval_loss: Option<f64>,
    /// Lowest evaluation loss so far and the step it was reached at.
    pub best_eval: Option<(f64, u64)>,
    /// The training loss of the run's first step: the divergence check's yardstick.
    pub first_loss: Option<f64>,
    /// The L2 norm of the trained weights when the run started: the divergence check's
    /// yardstick for exploding weights.
    pub first_weight_norm: Option<f64>,
}

impl TrainerState {
    /// A fresh run with this seed.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            ..Self::default()
        }
    }

    /// Record an evaluation loss; returns true when it is the best so far.
    pub fn record_eval(&mut self, loss: f64) -> bool {
        self.last_eval_loss = Some(loss);
        let better = self.best_eval.is_none_or(|(best, _)| loss < best);
        if better {
            self.best_eval = Some((loss, self.step));
        }
        better
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_missing_fields_default() {
        let mut state = TrainerState::new(7);
        state.step = 12;
        state.last_train_loss = Some(1.25);
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<TrainerState>(&json).unwrap(), state);
        let old: TrainerState = serde_json::from_str(r#"{"step": 3, "seed": 1}"#).unwrap();
        assert_eq!((old.step, old.seed, old.epoch), (3, 1, 0));
    }

    #[test]
    fn best_eval_tracks_the_lowest_loss() {
        let mut state = TrainerState::new(0);
        state.step = 10;
        assert!(state.record_eval(2.0));
        state.step = 20;
        assert!(!state.record_eval(2.5));
        state.step = 30;
        assert!(state.record_eval(1.5));
        assert_eq!(state.best_eval, Some((1.5, 30)));
        assert_eq!(state.last_eval_loss, Some(1.5));
    }
}
