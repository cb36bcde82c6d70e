//! Choosing a device by name: `cpu`, `cuda` or `cuda:N` (the latter need the `cuda` feature).

use candle_core::Device;

use crate::{ModelError, Result};

/// Parse a device name.
pub fn device_from_name(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        other => {
            let ordinal = match other.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| {
                        ModelError::Request(format!(
                            "device '{other}': expected cpu, cuda or cuda:N"
                        ))
                    })?,
                None => {
                    return Err(ModelError::Request(format!(
                        "device '{other}': expected cpu, cuda or cuda:N"
                    )))
                }
            };
            cuda(ordinal)
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> Result<Device> {
    Ok(Device::new_cuda(ordinal)?)
}

#[cfg(not(feature = "cuda"))]
fn cuda(_ordinal: usize) -> Result<Device> {
    Err(ModelError::Request(
        "this cai was built without CUDA; rebuild with `cargo build --release --features cuda`"
            .into(),
    ))
}
