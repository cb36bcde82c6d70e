//! Batches of distillation sequences for the student, and the held-out measures of a student:
//! mean KL to the teacher and top-1 agreement.

use cai_model::decoder::{Batch, Decoder};
use cai_model::layers::Mode;
use candle_core::{Device, Tensor};

use crate::distill::data::DistillExample;
use crate::distill::loss::{distill_kl, top1_agreement};
use crate::distill::teacher::TargetSource;
use crate::Result;

/// Right-pad a micro-batch for the student. Shapes: ids `[b, L]`, and the flat indices
/// `[Σ positions]` of the compared positions in `[b·L]` order (each example's `0..len − 1`).
pub fn collate(examples: &[&DistillExample], device: &Device) -> Result<(Tensor, Batch, Tensor)> {
    let b = examples.len();
    let l = examples.iter().map(|e| e.ids.len()).max().unwrap_or(1);
    let mut ids = Vec::with_capacity(b * l);
    let mut valid = Vec::with_capacity(b);
    let mut rows = Vec::new();
    for (r, e) in examples.iter().enumerate() {
        ids.extend(
            e.ids
                .iter()
                .copied()
                .chain(std::iter::repeat_n(0, l - e.ids.len())),
        );
        valid.push((0..l).map(|t| t < e.ids.len()).collect());
        rows.extend((0..e.positions()).map(|t| (r * l + t) as u32));
    }
    let n = rows.len();
    Ok((
        Tensor::from_vec(ids, (b, l), device)?,
        Batch::from_valid(valid),
        Tensor::from_vec(rows, n, device)?,
    ))
}

/// Mean KL to the teacher and top-1 agreement over every compared position of `examples`,
/// without gradients or dropout; `teacher` gives the targets of `examples`.
pub fn evaluate(
    student: &Decoder,
    examples: &[DistillExample],
    batch_size: usize,
    device: &Device,
    teacher: &TargetSource<'_>,
) -> Result<(f64, f64)> {
    let (mut kl_sum, mut agree, mut count) = (0.0, 0, 0);
    let indices: Vec<usize> = (0..examples.len()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch: Vec<&DistillExample> = chunk.iter().map(|&i| &examples[i]).collect();
        let (ids, positions, rows) = collate(&batch, device)?;
        let hidden = student.forward_hidden(&ids, &positions, None, Mode::Infer)?;
        let h = hidden.dim(2)?;
        let picked = hidden
            .reshape((hidden.elem_count() / h, h))?
            .index_select(&rows, 0)?;
        let logits = student.logits(&picked)?;
        let teacher = teacher.targets(chunk, &batch, device)?;
        let n = rows.dim(0)?;
        kl_sum += f64::from(distill_kl(&logits, &teacher)?.to_scalar::<f32>()?) * n as f64;
        agree += top1_agreement(&logits, &teacher)?;
        count += n;
    }
    let count = count.max(1) as f64;
    Ok((kl_sum / count, agree as f64 / count))
}
