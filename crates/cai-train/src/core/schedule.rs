//! Learning-rate schedules with linear warm-up: constant, cosine and linear decay, following
//! the conventions of transformers' `get_*_schedule_with_warmup`.

use serde::{Deserialize, Serialize};

use crate::{Result, TrainError};

/// The shape of the learning rate after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Stay at the base rate.
    Constant,
    /// Half a cosine from the base rate down to `min_lr_ratio × base`.
    Cosine,
    /// A straight line from the base rate down to `min_lr_ratio × base`.
    Linear,
}

impl std::str::FromStr for ScheduleKind {
    type Err = String;

    /// `constant`, `cosine` or `linear`, as a `--schedule` flag or a config's `schedule`.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "constant" => Ok(Self::Constant),
            "cosine" => Ok(Self::Cosine),
            "linear" => Ok(Self::Linear),
            _ => Err(format!(
                "'{s}' is not a schedule; expected constant, cosine or linear"
            )),
        }
    }
}

/// A learning-rate schedule: the factor applied to the base learning rate at each step.
///
/// `step` counts optimiser updates already taken, as transformers' schedulers do: with
/// warm-up, the first update (step 0) uses a learning rate of 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Schedule {
    /// Decay shape. Default `linear`: transformers' `TrainingArguments.lr_scheduler_type`.
    pub kind: ScheduleKind,
    /// Steps of linear warm-up from 0. Default 0: transformers' `warmup_steps`.
    pub warmup_steps: u64,
    /// Total optimiser steps of the run; the decay reaches its floor here. Default 0: a run's
    /// length depends on its data, so the trainer sets it (epochs × updates per epoch);
    /// [`Schedule::validate`] rejects 0 for decaying kinds.
    pub total_steps: u64,
    /// Final learning rate as a fraction of the base. Default 0: decay to zero, as
    /// transformers' linear and cosine schedules do.
    pub min_lr_ratio: f64,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            kind: ScheduleKind::Linear,
            warmup_steps: 0,
            total_steps: 0,
            min_lr_ratio: 0.0,
        }
    }
}

impl Schedule {
    /// The schedule of a run of `epochs` passes over `examples` examples, `per_step` examples
    /// per optimiser step, stopped after `max_steps` if that comes first; validated. The
    /// trainers (SFT, distillation, preference models) all size their runs this way.
    pub fn for_run(
        kind: ScheduleKind,
        warmup_steps: u64,
        examples: usize,
        per_step: usize,
        epochs: u64,
        max_steps: Option<u64>,
    ) -> Result<Self> {
        let steps_per_epoch = examples.div_ceil(per_step.max(1)) as u64;
        let schedule = Self {
            kind,
            warmup_steps,
            total_steps: max_steps.unwrap_or(u64::MAX).min(epochs * steps_per_epoch),
            min_lr_ratio: 0.0,
        };
        schedule.validate()?;
        Ok(schedule)
    }

    /// Check the settings; the error names the field and the accepted range.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(TrainError::Config(format!(
                "schedule: min_lr_ratio is {}, expected a value in [0, 1]",
                self.min_lr_ratio
            )));
        }
        if self.kind != ScheduleKind::Constant && self.total_steps == 0 {
            return Err(TrainError::Config(format!(
                "schedule: total_steps must be > 0 for a {:?} schedule (the number of \
                 optimiser steps of the run)",
                self.kind
            )));
        }
        Ok(())
    }

    /// The multiplier of the base learning rate after `step` updates.
    ///
    /// Warm-up (`step < warmup_steps`): `step / warmup_steps`. After it, with
    /// `progress = (step - warmup) / max(1, total - warmup)` clamped to `[0, 1]` (training
    /// past `total_steps` keeps the final rate): constant `1`, cosine
    /// `0.5 (1 + cos(π progress))`, linear `1 - progress`. A decayed factor `f` is mapped to
    /// `min + (1 - min) f` with `min = min_lr_ratio`, as transformers'
    /// `cosine_with_min_lr` does, so the decay ends exactly at the floor.
    pub fn factor_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return step as f64 / self.warmup_steps.max(1) as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        let decayed = match self.kind {
            ScheduleKind::Constant => return 1.0,
            ScheduleKind::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            ScheduleKind::Linear => 1.0 - progress,
        };
        self.min_lr_ratio + (1.0 - self.min_lr_ratio) * decayed
    }

    /// The learning rate after `step` updates: `base_lr × factor_at(step)`.
    pub fn lr_at(&self, step: u64, base_lr: f64) -> f64 {
        base_lr * self.factor_at(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_sized_by_epochs_batches_and_its_cap() {
        // 10 examples, 4 per step: 3 steps an epoch (the last one short), 2 epochs: 6.
        let run = |max| Schedule::for_run(ScheduleKind::Cosine, 1, 10, 4, 2, max).unwrap();
        assert_eq!(run(None).total_steps, 6);
        assert_eq!(run(Some(5)).total_steps, 5);
        assert_eq!(run(Some(50)).total_steps, 6);
        assert_eq!(run(None).warmup_steps, 1);
        // A decaying schedule over no examples has no steps to decay over.
        assert!(Schedule::for_run(ScheduleKind::Cosine, 0, 0, 4, 1, None).is_err());
    }

    fn schedule(kind: ScheduleKind, warmup_steps: u64, total_steps: u64, min: f64) -> Schedule {
        Schedule {
            kind,
            warmup_steps,
            total_steps,
            min_lr_ratio: min,
        }
    }

    fn assert_close(found: f64, expected: f64) {
        assert!((found - expected).abs() < 1e-12, "{found} != {expected}");
    }

    #[test]
    fn warm_up_is_linear_from_zero() {
        let s = schedule(ScheduleKind::Constant, 4, 0, 0.0);
        assert_close(s.lr_at(0, 2e-3), 0.0);
        assert_close(s.lr_at(1, 2e-3), 5e-4);
        assert_close(s.lr_at(3, 2e-3), 1.5e-3);
        assert_close(s.lr_at(4, 2e-3), 2e-3);
        assert_close(s.lr_at(1_000, 2e-3), 2e-3);
    }

    #[test]
    fn linear_decay_after_warm_up() {
        // Warm-up 10, then 100 steps of decay: factor (110 - step) / 100.
        let s = schedule(ScheduleKind::Linear, 10, 110, 0.0);
        assert_close(s.factor_at(5), 0.5);
        assert_close(s.factor_at(10), 1.0);
        assert_close(s.factor_at(35), 0.75);
        assert_close(s.factor_at(60), 0.5);
        assert_close(s.factor_at(110), 0.0);
        assert_close(s.factor_at(500), 0.0);
    }

    #[test]
    fn cosine_decay_after_warm_up() {
        // progress = (step - 10) / 100; cos(π/4) = 0.7071067811865476.
        let s = schedule(ScheduleKind::Cosine, 10, 110, 0.0);
        assert_close(s.factor_at(10), 1.0);
        assert_close(s.factor_at(35), 0.853_553_390_593_273_8);
        assert_close(s.factor_at(60), 0.5);
        assert_close(s.factor_at(85), 0.146_446_609_406_726_24);
        assert_close(s.factor_at(110), 0.0);
        assert_close(s.factor_at(150), 0.0);
    }

    #[test]
    fn floor_rescales_decay_but_not_warm_up() {
        let s = schedule(ScheduleKind::Cosine, 10, 110, 0.1);
        assert_close(s.factor_at(5), 0.5);
        assert_close(s.factor_at(10), 1.0);
        // 0.1 + 0.9 × 0.5
        assert_close(s.factor_at(60), 0.55);
        assert_close(s.factor_at(110), 0.1);
        let s = schedule(ScheduleKind::Linear, 0, 4, 0.2);
        // 0.2 + 0.8 × (1 - 3/4)
        assert_close(s.factor_at(3), 0.4);
    }

    #[test]
    fn no_warm_up_starts_at_base() {
        let s = schedule(ScheduleKind::Linear, 0, 4, 0.0);
        assert_close(s.lr_at(0, 1e-3), 1e-3);
        assert_close(s.lr_at(1, 1e-3), 7.5e-4);
    }

    #[test]
    fn serde_names_are_lowercase_and_defaults_fill_in() {
        let s: Schedule = serde_json::from_str(r#"{"kind":"cosine","total_steps":50}"#).unwrap();
        assert_eq!(s, schedule(ScheduleKind::Cosine, 0, 50, 0.0));
        let json = serde_json::to_value(Schedule::default()).unwrap();
        assert_eq!(json["kind"], "linear");
        assert!(serde_json::from_str::<Schedule>(r#"{"kind":"Cosine"}"#).is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let err = Schedule::default().validate().unwrap_err().to_string();
        assert!(err.contains("total_steps"), "{err}");
        let err = schedule(ScheduleKind::Constant, 0, 0, 1.5)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("min_lr_ratio"), "{err}");
        assert!(schedule(ScheduleKind::Constant, 3, 0, 0.0)
            .validate()
            .is_ok());
    }
}
