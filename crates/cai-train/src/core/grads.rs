//! Gradient accumulation across micro-batches, global-norm clipping and the finiteness check,
//! all on f32 copies of the gradients whatever the compute dtype.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Storage, Tensor, TensorId, Var};
use rayon::prelude::*;

use crate::core::optim::TrainParam;
use crate::Result;

/// Summed f32 gradients of the trainable parameters, keyed by the variable's tensor id.
///
/// Entries keep the order in which parameters first received a gradient (the order of the
/// `params` slice), so norms are summed in the same order on every run: a resumed run
/// reproduces an uninterrupted one bit for bit.
#[derive(Debug, Default)]
pub struct GradAccumulator {
    index: HashMap<TensorId, usize>,
    grads: Vec<Tensor>,
}

impl GradAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add the gradients of one backward pass for `params` (converted to f32). Parameters the
    /// loss does not depend on have no gradient in `grads` and are left out.
    pub fn add(&mut self, grads: &GradStore, params: &[TrainParam]) -> Result<()> {
        for param in params {
            let Some(grad) = grads.get(param.var.as_tensor()) else {
                continue;
            };
            let grad = grad.detach().to_dtype(DType::F32)?;
            let id = param.var.as_tensor().id();
            match self.index.get(&id) {
                Some(&i) => self.grads[i] = (&self.grads[i] + grad)?,
                None => {
                    self.index.insert(id, self.grads.len());
                    self.grads.push(grad);
                }
            }
        }
        Ok(())
    }

    /// The summed f32 gradient of `var`, if any micro-batch gave it one.
    pub fn get(&self, var: &Var) -> Option<&Tensor> {
        self.index
            .get(&var.as_tensor().id())
            .map(|&i| &self.grads[i])
    }

    /// Number of parameters holding a gradient.
    pub fn len(&self) -> usize {
        self.grads.len()
    }

    /// True when no gradient has been added since the last [`clear`](Self::clear).
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }

    /// Multiply every gradient by `factor` (e.g. `1 / micro_batches` to average).
    pub fn scale(&mut self, factor: f64) -> Result<()> {
        for grad in &mut self.grads {
            *grad = grad.affine(factor, 0.0)?;
        }
        Ok(())
    }

    /// The L2 norm of all gradients taken together: `sqrt(Σ_params Σ_i g_i²)`, summed in f64
    /// in a fixed order (see [`sum_of_squares`]). Non-finite if any gradient is.
    pub fn global_norm(&self) -> Result<f64> {
        let mut sum_sq = 0f64;
        for grad in &self.grads {
            sum_sq += sum_of_squares(grad)?;
        }
        Ok(sum_sq.sqrt())
    }

    /// Clip the global norm to `max_norm` as PyTorch's `clip_grad_norm_` does: when the norm
    /// exceeds `max_norm`, scale every gradient by `max_norm / (norm + 1e-6)`. Returns the norm
    /// before clipping and whether clipping happened. A non-finite norm is returned with the
    /// gradients untouched: the caller stops on it (see [`is_finite`](Self::is_finite)).
    pub fn clip_to(&mut self, max_norm: f64) -> Result<(f64, bool)> {
        let norm = self.global_norm()?;
        if !norm.is_finite() || norm <= max_norm {
            return Ok((norm, false));
        }
        self.scale(max_norm / (norm + 1e-6))?;
        Ok((norm, true))
    }

    /// True when every gradient entry is finite (no NaN or ±inf). Exact: the squares of
    /// finite f32 values summed in f64 cannot overflow, so the global norm is finite exactly
    /// when every entry is.
    pub fn is_finite(&self) -> Result<bool> {
        Ok(self.global_norm()?.is_finite())
    }

    /// Drop all gradients (after an optimiser step).
    pub fn clear(&mut self) {
        self.index.clear();
        self.grads.clear();
    }
}

/// Elements per parallel chunk of [`sum_of_squares`]: the partial sums are added in chunk
/// order, so the result does not depend on the thread count.
const CHUNK: usize = 1 << 16;

/// `Σ t_i²` in f64, in one read-only pass for a contiguous f32 CPU tensor (no temporaries);
/// other tensors are converted to f64 first. Finite f32 squares cannot overflow an f64 sum, so
/// the result is non-finite exactly when an entry is.
pub(crate) fn sum_of_squares(t: &Tensor) -> Result<f64> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(data)), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        {
            let partial: Vec<f64> = data[start..end]
                .par_chunks(CHUNK)
                .map(chunk_sum_of_squares)
                .collect();
            return Ok(partial.into_iter().sum());
        }
    }
    Ok(t.to_dtype(DType::F64)?
        .sqr()?
        .sum_all()?
        .to_scalar::<f64>()?)
}

/// `Σ c_i²` in f64 over eight interleaved lanes (vectorisable, in a fixed order).
fn chunk_sum_of_squares(c: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let mut blocks = c.chunks_exact(8);
    for block in &mut blocks {
        for (lane, &x) in lanes.iter_mut().zip(block) {
            *lane += f64::from(x) * f64::from(x);
        }
    }
    let tail: f64 = blocks
        .remainder()
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum();
    lanes.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Parameters `a` [2] and `b` [1, 1] and an unused `c` [1]; the loss
    /// `3 a0 + 4 a1 + 12 b00` has gradients a = [3, 4], b = [[12]] (global norm 13).
    fn setup() -> (Vec<TrainParam>, Tensor) {
        let dev = Device::Cpu;
        let a = Var::new(&[1f32, 2.0], &dev).unwrap();
        let b = Var::new(&[[0.5f32]], &dev).unwrap();
        let c = Var::new(&[7f32], &dev).unwrap();
        let loss = ((a.as_tensor() * Tensor::new(&[3f32, 4.0], &dev).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            + (b.as_tensor() * 12.0).unwrap().sum_all().unwrap())
        .unwrap();
        let params = [("a", a), ("b", b), ("c", c)]
            .into_iter()
            .map(|(name, var)| TrainParam {
                name: name.into(),
                var,
                decay: true,
                lr_scale: 1.0,
            })
            .collect();
        (params, loss)
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn sums_micro_batches_and_scales() {
        let (params, loss) = setup();
        let grads = loss.backward().unwrap();
        let mut acc = GradAccumulator::new();
        acc.add(&grads, &params).unwrap();
        acc.add(&grads, &params).unwrap();
        assert_eq!(acc.len(), 2, "the unused parameter has no gradient");
        assert!(acc.get(&params[2].var).is_none());
        assert_eq!(values(acc.get(&params[0].var).unwrap()), [6.0, 8.0]);
        assert_eq!(values(acc.get(&params[1].var).unwrap()), [24.0]);
        acc.scale(0.5).unwrap();
        assert_eq!(values(acc.get(&params[0].var).unwrap()), [3.0, 4.0]);
        acc.clear();
        assert!(acc.is_empty());
    }

    #[test]
    fn global_norm_and_clipping() {
        let (params, loss) = setup();
        let mut acc = GradAccumulator::new();
        acc.add(&loss.backward().unwrap(), &params).unwrap();
        // sqrt(3² + 4² + 12²) = sqrt(169) = 13
        assert_eq!(acc.global_norm().unwrap(), 13.0);
        assert_eq!(acc.clip_to(20.0).unwrap(), (13.0, false));
        assert_eq!(values(acc.get(&params[0].var).unwrap()), [3.0, 4.0]);
        assert_eq!(acc.clip_to(13.0).unwrap(), (13.0, false));

        // Clipping to 6.5 scales by 6.5 / (13 + 1e-6) ≈ 0.5: a -> [1.5, 2], b -> [6].
        let (norm, clipped) = acc.clip_to(6.5).unwrap();
        assert_eq!((norm, clipped), (13.0, true));
        let a = values(acc.get(&params[0].var).unwrap());
        let b = values(acc.get(&params[1].var).unwrap());
        for (found, expected) in a.iter().chain(&b).zip([1.5f32, 2.0, 6.0]) {
            assert!((found - expected).abs() < 1e-5, "{found} vs {expected}");
        }
        assert!((acc.global_norm().unwrap() - 6.5).abs() < 1e-5);
    }

    #[test]
    fn non_finite_gradients_are_detected_and_not_clipped() {
        let (params, loss) = setup();
        let mut acc = GradAccumulator::new();
        acc.add(&loss.backward().unwrap(), &params).unwrap();
        assert!(acc.is_finite().unwrap());
        acc.scale(f64::INFINITY).unwrap();
        assert!(!acc.is_finite().unwrap());
        let (norm, clipped) = acc.clip_to(1.0).unwrap();
        assert!(norm.is_infinite() && !clipped);

        let mut acc = GradAccumulator::new();
        acc.add(&loss.backward().unwrap(), &params).unwrap();
        acc.scale(f64::NAN).unwrap();
        assert!(!acc.is_finite().unwrap());
        assert!(acc.global_norm().unwrap().is_nan());
    }

    /// One pass in f64 over every layout: the fast path (more than one chunk) and the
    /// fallback (a transposed view, bf16) agree with a plain f64 sum; values whose squares
    /// overflow f32 stay finite; a non-finite entry makes the sum non-finite.
    #[test]
    fn sums_of_squares_are_taken_in_f64() {
        let dev = Device::Cpu;
        let n = CHUNK * 2 + 13;
        let data: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin() * 3e20).collect();
        let want: f64 = data.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        let got = sum_of_squares(&Tensor::from_vec(data, n, &dev).unwrap()).unwrap();
        assert!(want.is_finite() && want > 1e40);
        assert!((got - want).abs() <= want * 1e-12, "{got} against {want}");

        let m = Tensor::new(&[[1f32, 2.0, 3.0], [4.0, 5.0, 6.0]], &dev).unwrap();
        assert_eq!(sum_of_squares(&m.t().unwrap()).unwrap(), 91.0);
        let half = m.to_dtype(DType::BF16).unwrap();
        assert_eq!(sum_of_squares(&half).unwrap(), 91.0);
        for bad in [f32::INFINITY, f32::NAN] {
            let t = Tensor::new(&[1f32, bad, 2.0], &dev).unwrap();
            assert!(!sum_of_squares(&t).unwrap().is_finite());
        }
    }

    #[test]
    fn bf16_gradients_are_accumulated_in_f32() {
        let dev = Device::Cpu;
        let w = Var::from_tensor(
            &Tensor::new(&[1f32], &dev)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap(),
        )
        .unwrap();
        // d/dw (w × 1/3) = 1/3 in bf16 = 0.333984375; summed three times in f32.
        let loss = (w.as_tensor() * (1.0 / 3.0)).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let params = [TrainParam {
            name: "w".into(),
            var: w.clone(),
            decay: false,
            lr_scale: 1.0,
        }];
        let mut acc = GradAccumulator::new();
        for _ in 0..3 {
            acc.add(&grads, &params).unwrap();
        }
        let g = acc.get(&w).unwrap();
        assert_eq!(g.dtype(), DType::F32);
        assert_eq!(values(g), [1.001_953_1]);
    }
}
