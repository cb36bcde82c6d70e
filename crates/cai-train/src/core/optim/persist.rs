//! Saving and restoring AdamW's state exactly: moments, master weights and update counts as
//! named f32/i64 tensors in one safetensors file.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};

use super::AdamW;
use crate::{Result, TrainError};

impl AdamW {
    /// The optimiser state as named tensors: `{name}.exp_avg`, `{name}.exp_avg_sq`,
    /// `{name}.step` (an i64 scalar) and, for bf16/f16 parameters, `{name}.master` (f32).
    /// The tensors share storage with the optimiser, which updates them in place: they hold
    /// this state until the next step (save them before it).
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for slot in &self.slots {
            let name = &slot.param.name;
            let device = slot.exp_avg.device();
            out.insert(format!("{name}.exp_avg"), slot.exp_avg.clone());
            out.insert(format!("{name}.exp_avg_sq"), slot.exp_avg_sq.clone());
            out.insert(
                format!("{name}.step"),
                Tensor::new(slot.steps as i64, device)?,
            );
            if let Some(master) = &slot.master {
                out.insert(format!("{name}.master"), master.clone());
            }
        }
        Ok(out)
    }

    /// Restore state saved by [`state_tensors`](Self::state_tensors); bf16/f16 variables are
    /// set from the restored master weights. Every parameter must have all its entries with
    /// matching shapes; entries for other names are an error too (a different model).
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let mut used = 0;
        let mut take = |key: String, shape: &[usize], dtype: DType| -> Result<Tensor> {
            let t = tensors.get(&key).ok_or_else(|| {
                TrainError::OptimizerState(format!("missing '{key}'; was it saved for this model?"))
            })?;
            if t.dims() != shape || t.dtype() != dtype {
                return Err(TrainError::OptimizerState(format!(
                    "'{key}' is {:?} {:?}, expected {dtype:?} {shape:?}",
                    t.dtype(),
                    t.dims()
                )));
            }
            used += 1;
            Ok(t.clone())
        };
        let mut restored = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let name = &slot.param.name;
            let shape = slot.param.var.dims().to_vec();
            let exp_avg = take(format!("{name}.exp_avg"), &shape, DType::F32)?;
            let exp_avg_sq = take(format!("{name}.exp_avg_sq"), &shape, DType::F32)?;
            let steps = take(format!("{name}.step"), &[], DType::I64)?.to_scalar::<i64>()?;
            let master = match slot.master {
                Some(_) => Some(take(format!("{name}.master"), &shape, DType::F32)?),
                None => None,
            };
            restored.push((exp_avg, exp_avg_sq, steps.max(0) as u64, master));
        }
        if used != tensors.len() {
            let mut extra: Vec<_> = tensors
                .keys()
                .filter(|k| !self.expects(k))
                .cloned()
                .collect();
            extra.sort();
            return Err(TrainError::OptimizerState(format!(
                "entries for parameters this optimizer does not have: {}",
                extra.join(", ")
            )));
        }
        for (slot, (exp_avg, exp_avg_sq, steps, master)) in self.slots.iter_mut().zip(restored) {
            let device = slot.param.var.device().clone();
            // Copies of their own: the update writes them in place.
            slot.exp_avg = exp_avg.to_device(&device)?.copy()?;
            slot.exp_avg_sq = exp_avg_sq.to_device(&device)?.copy()?;
            slot.steps = steps;
            if let Some(master) = master {
                let master = master.to_device(&device)?.copy()?;
                slot.param
                    .var
                    .set(&master.to_dtype(slot.param.var.dtype())?)?;
                slot.master = Some(master);
            }
        }
        Ok(())
    }

    fn expects(&self, key: &str) -> bool {
        self.slots.iter().any(|s| {
            let name = &s.param.name;
            ["exp_avg", "exp_avg_sq", "step", "master"]
                .iter()
                .any(|suffix| key == format!("{name}.{suffix}"))
        })
    }

    /// Write the state to a safetensors file (see [`state_tensors`](Self::state_tensors)),
    /// atomically and with the mode of any new file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors = self.state_tensors()?.into_iter().collect();
        cai_model::checkpoint::save_safetensors(&tensors, path)
            .map_err(|e| TrainError::checkpoint(path, format!("cannot write optimizer state: {e}")))
    }

    /// Read state written by [`save`](Self::save).
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let device = self
            .slots
            .first()
            .map(|s| s.param.var.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let tensors = candle_core::safetensors::load(path, &device).map_err(|e| {
            TrainError::checkpoint(path, format!("not a readable optimizer state file ({e})"))
        })?;
        self.load_state(&tensors)
            .map_err(|e| TrainError::checkpoint(path, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{config, grads_of, param, value};
    use crate::core::optim::{AdamW, AdamWConfig};
    use candle_core::DType;

    #[test]
    fn save_and_load_resume_bitwise() {
        let make = || {
            vec![
                param("a", 0.7, DType::F32, true),
                param("b", -0.3, DType::BF16, true),
            ]
        };
        let gradients = [[0.3f32, -1.2], [0.5, 0.1], [-0.7, 0.4], [1.1, 0.9]];
        let straight = make();
        let mut opt = AdamW::new(straight.clone(), config(0.05, 0.1)).unwrap();
        for g in &gradients {
            opt.step(&grads_of(&straight, g), 0.05).unwrap();
        }

        let first = make();
        let mut opt = AdamW::new(first.clone(), config(0.05, 0.1)).unwrap();
        for g in &gradients[..2] {
            opt.step(&grads_of(&first, g), 0.05).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optimizer.safetensors");
        opt.save(&path).unwrap();

        // A fresh process: f32 weights come from the model file; the bf16 one is restored
        // from the master, whatever the variable held.
        let resumed = make();
        resumed[0].var.set(first[0].var.as_tensor()).unwrap();
        let mut opt = AdamW::new(resumed.clone(), config(0.05, 0.1)).unwrap();
        opt.load(&path).unwrap();
        for g in &gradients[2..] {
            opt.step(&grads_of(&resumed, g), 0.05).unwrap();
        }
        for (a, b) in straight.iter().zip(&resumed) {
            assert_eq!(value(a).to_bits(), value(b).to_bits(), "{}", a.name);
        }
        let state = opt.state_tensors().unwrap();
        assert_eq!(state["b.step"].to_scalar::<i64>().unwrap(), 4);
    }

    #[cfg(unix)]
    #[test]
    fn the_state_file_gets_the_mode_of_any_new_file() {
        use std::os::unix::fs::PermissionsExt;
        let params = vec![param("a", 0.7, DType::F32, true)];
        let opt = AdamW::new(params, config(0.05, 0.1)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optimizer.safetensors");
        opt.save(&path).unwrap();
        let probe = dir.path().join("probe");
        std::fs::File::create(&probe).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), mode(&probe));
    }

    #[test]
    fn load_rejects_state_of_another_model() {
        let params = vec![param("a", 1.0, DType::F32, true)];
        let opt = AdamW::new(params, AdamWConfig::default()).unwrap();
        let mut state = opt.state_tensors().unwrap();
        let other = vec![param("z", 1.0, DType::F32, true)];
        let mut other_opt = AdamW::new(other, AdamWConfig::default()).unwrap();
        let err = other_opt.load_state(&state).unwrap_err().to_string();
        assert!(err.contains("missing 'z.exp_avg'"), "{err}");

        let two = vec![
            param("a", 1.0, DType::F32, true),
            param("b", 1.0, DType::F32, true),
        ];
        let mut bigger = AdamW::new(two, AdamWConfig::default()).unwrap();
        state.extend(bigger.state_tensors().unwrap());
        state.insert("c.exp_avg".into(), state["a.exp_avg"].clone());
        let err = bigger.load_state(&state).unwrap_err().to_string();
        assert!(err.ends_with("does not have: c.exp_avg"), "{err}");
    }
}
