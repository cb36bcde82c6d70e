//! Attention masks from per-row slot validity and positions: causal, padding-aware, and
//! sliding-window, as one additive `[batch, 1, queries, keys]` tensor.

use candle_core::{DType, Device, Tensor};

use crate::Result;

/// Additive mask value for disallowed pairs: `-inf`, whose `exp` is an exact 0 on libm's fast
/// path (a large finite value such as -1e30 underflows through the slow, errno-setting path:
/// measured at ~5% of scoring time). No row is ever fully masked — a query always sees its
/// own slot — so a softmax never meets `-inf - -inf`.
pub fn blocked(_dtype: DType) -> f32 {
    f32::NEG_INFINITY
}

/// Build the additive mask for `s` new queries that occupy the last `s` of `t` key slots.
///
/// Query `i` (slot `t - s + i`) may see key slot `j` when `j` is not after it, `j` holds a real
/// token or is the query's own slot (so no row is ever fully masked), and, with a window `w`,
/// `pos(i) - pos(j) < w`. Returns `None` when nothing is masked (a decode step with no padding
/// and no window in reach), so the caller can skip the add.
///
/// Shapes: `valid`, `positions` `[b][t]` -> `[b, 1, s, t]` in `dtype`.
pub fn attention_mask(
    valid: &[Vec<bool>],
    positions: &[Vec<u32>],
    s: usize,
    window: Option<usize>,
    dtype: DType,
    device: &Device,
) -> Result<Option<Tensor>> {
    let b = valid.len();
    let t = valid.first().map_or(0, Vec::len);
    match mask_values(valid, positions, s, window, blocked(dtype)) {
        None => Ok(None),
        Some(data) => Ok(Some(
            Tensor::from_vec(data, (b, 1, s, t), device)?.to_dtype(dtype)?,
        )),
    }
}

/// The same mask as plain values, row-major `[b, s, t]`, with `neg` for blocked pairs; `None`
/// when nothing is blocked.
pub fn mask_values(
    valid: &[Vec<bool>],
    positions: &[Vec<u32>],
    s: usize,
    window: Option<usize>,
    neg: f32,
) -> Option<Vec<f32>> {
    let b = valid.len();
    let t = valid.first().map_or(0, Vec::len);
    let past = t - s;
    let mut data = vec![0f32; b * s * t];
    let mut any = false;
    for row in 0..b {
        for i in 0..s {
            let qi = past + i;
            let qpos = positions[row][qi] as i64;
            let out = &mut data[(row * s + i) * t..(row * s + i + 1) * t];
            for (j, o) in out.iter_mut().enumerate() {
                let visible = j <= qi
                    && (valid[row][j] || j == qi)
                    && window.is_none_or(|w| qpos - (positions[row][j] as i64) < w as i64);
                if !visible {
                    *o = neg;
                    any = true;
                }
            }
        }
    }
    any.then_some(data)
}

/// Positions of a row's tokens: real tokens count up from `start`; padding takes the position
/// of the next real token (it is masked out anyway). Shapes: `[s]` -> `[s]`.
pub fn positions_for(valid: &[bool], start: u32) -> Vec<u32> {
    let mut next = start;
    valid
        .iter()
        .map(|&v| {
            let p = next;
            if v {
                next += 1;
            }
            p
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(m: Option<Tensor>) -> Vec<Vec<f32>> {
        let m = m.expect("a mask");
        let (b, _, s, t) = m.dims4().unwrap();
        m.reshape((b * s, t)).unwrap().to_vec2().unwrap()
    }

    #[test]
    fn causal_with_left_padding() {
        let valid = vec![vec![false, true, true]];
        let pos = vec![positions_for(&valid[0], 0)];
        assert_eq!(pos[0], vec![0, 0, 1]);
        let m = dense(attention_mask(&valid, &pos, 3, None, DType::F32, &Device::Cpu).unwrap());
        let n = f32::NEG_INFINITY;
        assert_eq!(m, vec![vec![0.0, n, n], vec![n, 0.0, n], vec![n, 0.0, 0.0]]);
    }

    #[test]
    fn sliding_window_and_no_mask_fast_path() {
        let valid = vec![vec![true; 4]];
        let pos = vec![vec![0, 1, 2, 3]];
        let m = dense(attention_mask(&valid, &pos, 1, Some(2), DType::F32, &Device::Cpu).unwrap());
        assert_eq!(
            m,
            vec![vec![f32::NEG_INFINITY, f32::NEG_INFINITY, 0.0, 0.0]]
        );
        assert!(
            attention_mask(&valid, &pos, 1, None, DType::F32, &Device::Cpu)
                .unwrap()
                .is_none()
        );
    }
}
