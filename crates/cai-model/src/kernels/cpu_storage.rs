//! Reading the f32 data of a contiguous CPU tensor inside a custom op.

use candle_core::{CpuStorage, Layout};

/// The elements of a contiguous f32 tensor, or an error naming the op and the operand.
pub(crate) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
    operand: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: {operand} must be f32");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: {operand} must be contiguous");
    };
    Ok(&data[start..end])
}
