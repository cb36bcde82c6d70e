//! Divergence: the checks around every optimiser step that stop a run whose numbers blew up —
//! a non-finite loss, gradient or weight, a loss far above the run's first, or weights whose
//! norm grew far past the run's start — before anything of that step is saved.
//!
//! The yardsticks (the first loss and the first weight norm) live in the
//! [`TrainerState`], so a resumed run compares against the start of the whole run.

use std::path::Path;

use crate::core::optim::AdamW;
use crate::{latest_checkpoint, Result, TrainError, TrainerState};

/// A training loss above this many times the run's first (or above this, when the first was
/// below 1) is divergence: cross-entropy starts near ln V and a KL or a preference loss
/// near 1, and neither grows tenfold in a healthy run.
pub const LOSS_FACTOR: f64 = 10.0;

/// Weights whose L2 norm exceeds this many times the norm at the start of the run (or this,
/// when that norm was below 1) have diverged: fine-tuning moves weights by small fractions.
pub const WEIGHT_FACTOR: f64 = 1000.0;

/// Record the weight norm the run starts from (once per run: a resumed run keeps the
/// original's).
pub fn start(state: &mut TrainerState, optimizer: &AdamW) -> Result<()> {
    if state.first_weight_norm.is_none() {
        state.first_weight_norm = Some(optimizer.weight_norm()?);
    }
    Ok(())
}

/// Check a step's training loss (`what` names it in the message): it must be finite and,
/// with `relative`, at most [`LOSS_FACTOR`] times the run's first (which the first call
/// records). `step` is the 1-based step being taken; `checkpoints` is where the last good
/// checkpoint would be.
pub fn check_loss(
    state: &mut TrainerState,
    step: u64,
    what: &str,
    loss: f64,
    relative: bool,
    checkpoints: &Path,
) -> Result<()> {
    if !loss.is_finite() {
        return Err(diverged(step, format!("the {what} is {loss}"), checkpoints));
    }
    if !relative {
        return Ok(());
    }
    match state.first_loss {
        None => state.first_loss = Some(loss),
        Some(first) => {
            let limit = LOSS_FACTOR * first.abs().max(1.0);
            if loss > limit {
                return Err(diverged(
                    step,
                    format!(
                        "the {what} rose to {loss:.6e}, above {LOSS_FACTOR}× the first step's \
                         {first:.4} (limit {limit:.4})"
                    ),
                    checkpoints,
                ));
            }
        }
    }
    Ok(())
}

/// Check the weights after step `step`'s update: every one finite, and their norm at most
/// [`WEIGHT_FACTOR`] times the run's first.
pub fn check_weights(
    state: &TrainerState,
    step: u64,
    optimizer: &AdamW,
    checkpoints: &Path,
) -> Result<()> {
    let norm = optimizer.weight_norm()?;
    if !norm.is_finite() {
        return Err(diverged(
            step,
            format!("the update made the weights non-finite (norm {norm})"),
            checkpoints,
        ));
    }
    let first = state.first_weight_norm.unwrap_or(norm);
    let limit = WEIGHT_FACTOR * first.max(1.0);
    if norm > limit {
        return Err(diverged(
            step,
            format!(
                "the update blew the weights up: their norm is {norm:.4e}, from {first:.4} at \
                 the start (limit {WEIGHT_FACTOR}×)"
            ),
            checkpoints,
        ));
    }
    Ok(())
}

/// Name the last good checkpoint in a divergence error raised below the trainer (the
/// optimiser's non-finite gradient check); other errors pass unchanged.
pub fn locate(err: TrainError, checkpoints: &Path) -> TrainError {
    match err {
        TrainError::Diverged {
            step,
            what,
            last_good: None,
        } => diverged(step, what, checkpoints),
        other => other,
    }
}

/// A divergence error naming the newest checkpoint in `checkpoints`. Trainers save a step's
/// checkpoint only once the next step's loss has passed [`check_loss`] (or the run ends), so
/// every checkpoint there predates the divergence.
fn diverged(step: u64, what: String, checkpoints: &Path) -> TrainError {
    TrainError::Diverged {
        step,
        what,
        last_good: latest_checkpoint(checkpoints).ok().flatten(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::optim::{AdamWConfig, TrainParam};
    use candle_core::{Device, Tensor, Var};

    fn optimizer(values: &[f32]) -> (AdamW, Var) {
        let var = Var::from_tensor(&Tensor::new(values, &Device::Cpu).unwrap()).unwrap();
        let param = TrainParam {
            name: "w".into(),
            var: var.clone(),
            decay: false,
            lr_scale: 1.0,
        };
        (
            AdamW::new(vec![param], AdamWConfig::default()).unwrap(),
            var,
        )
    }

    #[test]
    fn a_loss_far_above_the_first_or_not_finite_is_divergence() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = TrainerState::new(0);
        check_loss(&mut state, 1, "loss", 5.0, true, dir.path()).unwrap();
        assert_eq!(state.first_loss, Some(5.0));
        check_loss(&mut state, 2, "loss", 49.0, true, dir.path()).unwrap();
        let err = check_loss(&mut state, 3, "loss", 51.0, true, dir.path()).unwrap_err();
        assert!(matches!(err, TrainError::Diverged { step: 3, .. }), "{err}");
        assert!(err.to_string().contains("rose to 5.1"), "{err}");
        let err = check_loss(&mut state, 4, "KL", f64::NAN, true, dir.path()).unwrap_err();
        assert!(err.to_string().contains("the KL is NaN"), "{err}");
        // A small first loss is measured against 1.
        let mut state = TrainerState::new(0);
        check_loss(&mut state, 1, "KL", 0.01, true, dir.path()).unwrap();
        check_loss(&mut state, 2, "KL", 9.0, true, dir.path()).unwrap();
        // Without `relative` only finiteness counts.
        check_loss(&mut state, 3, "policy loss", 1e9, false, dir.path()).unwrap();
    }

    #[test]
    fn weights_far_beyond_their_start_or_not_finite_are_divergence() {
        let dir = tempfile::tempdir().unwrap();
        let (opt, var) = optimizer(&[3.0, 4.0]);
        let mut state = TrainerState::new(0);
        start(&mut state, &opt).unwrap();
        assert_eq!(state.first_weight_norm, Some(5.0));
        check_weights(&state, 1, &opt, dir.path()).unwrap();
        var.set(&Tensor::new(&[3000.0f32, 4000.0], &Device::Cpu).unwrap())
            .unwrap();
        check_weights(&state, 2, &opt, dir.path()).unwrap();
        var.set(&Tensor::new(&[1e30f32, 4.0], &Device::Cpu).unwrap())
            .unwrap();
        let err = check_weights(&state, 3, &opt, dir.path()).unwrap_err();
        assert!(err.to_string().contains("norm is 1.0000e30"), "{err}");
        var.set(&Tensor::new(&[f32::INFINITY, 4.0], &Device::Cpu).unwrap())
            .unwrap();
        let err = check_weights(&state, 4, &opt, dir.path()).unwrap_err();
        assert!(err.to_string().contains("non-finite"), "{err}");
        // The start is kept across a resume.
        start(&mut state, &opt).unwrap();
        assert_eq!(state.first_weight_norm, Some(5.0));
    }
}
