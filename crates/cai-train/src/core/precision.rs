//! What a trainer's `dtype` setting means for the model it builds: on the CPU, `bf16` trains
//! an f32 model whose linear layers multiply in bf16 on AMX ([`cai_model::autocast`], as
//! PyTorch's CPU autocast does), because candle's bf16 CPU ops are slower than f32; elsewhere
//! (CUDA) and for `f32` / `f16` the model is built and trained in the dtype asked for.

use cai_model::autocast::Bf16Matmuls;
use cai_model::weights::parse_dtype;
use candle_core::{DType, Device};

use crate::{Result, TrainError};

/// How a training run computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Precision {
    /// The dtype the model's parameters and activations are built in.
    pub build: DType,
    /// Whether the linear layers' training products round their operands to bf16.
    pub bf16_matmuls: bool,
}

impl Precision {
    /// The precision of a `dtype` setting (`f32`, `bf16`, `f16`) on `device`; an unknown name
    /// is an error naming it.
    pub fn of(dtype: &str, device: &Device) -> Result<Self> {
        let parsed = parse_dtype(dtype).ok_or_else(|| {
            TrainError::Config(format!("dtype '{dtype}': expected f32, bf16 or f16"))
        })?;
        Ok(Self::for_dtype(parsed, device))
    }

    /// The precision of `dtype` on `device`.
    pub fn for_dtype(dtype: DType, device: &Device) -> Self {
        if device.is_cpu() && dtype == DType::BF16 {
            Self {
                build: DType::F32,
                bf16_matmuls: true,
            }
        } else {
            Self {
                build: dtype,
                bf16_matmuls: false,
            }
        }
    }

    /// Enter the bf16-products scope on this thread when asked for (keep the guard for the
    /// whole run).
    pub fn scope(&self) -> Option<Bf16Matmuls> {
        self.bf16_matmuls.then(Bf16Matmuls::enter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_on_the_cpu_is_an_f32_model_with_bf16_products() {
        let cpu = Device::Cpu;
        let p = Precision::of("bf16", &cpu).unwrap();
        assert_eq!((p.build, p.bf16_matmuls), (DType::F32, true));
        let scope = p.scope();
        assert!(cai_model::autocast::bf16_matmuls());
        drop(scope);
        assert!(!cai_model::autocast::bf16_matmuls());
        let p = Precision::of("f32", &cpu).unwrap();
        assert_eq!((p.build, p.bf16_matmuls), (DType::F32, false));
        assert!(p.scope().is_none());
        let err = Precision::of("fp8", &cpu).unwrap_err().to_string();
        assert!(err.contains("'fp8'") && err.contains("bf16"), "{err}");
    }
}
