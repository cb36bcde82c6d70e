//! Context distillation's loss: the per-token KL divergence KL(p_teacher ‖ p_student) of the
//! next-token distributions, over the full vocabulary or over the teacher's top-k
//! log-probabilities plus the mass they leave to every other token; and how often teacher and
//! student agree on the most likely token. Built from differentiable candle ops only, so the
//! student's logits get gradients on every device.

use candle_core::{DType, Tensor, D};

use crate::core::loss::log_softmax_last;
use crate::{Result, TrainError};

/// What the frozen teacher predicts at each of `n` positions.
#[derive(Debug, Clone)]
pub enum TeacherTargets {
    /// Log-probabilities over the whole vocabulary, `[n, V]` f32 (finite: a log-softmax of
    /// finite logits).
    Full(Tensor),
    /// The teacher's `k` most likely tokens at each position, best first.
    TopK {
        /// Token ids, `[n, k]` u32.
        ids: Tensor,
        /// Their log-probabilities, `[n, k]` f32.
        logprobs: Tensor,
    },
}

impl TeacherTargets {
    /// Positions covered.
    pub fn rows(&self) -> Result<usize> {
        Ok(match self {
            Self::Full(t) => t.dim(0)?,
            Self::TopK { ids, .. } => ids.dim(0)?,
        })
    }
}

/// Mean over positions of KL(p_teacher ‖ p_student), in nats.
///
/// Shapes: student_logits `[n, V]` (any float dtype; computed in f32), teacher targets for the
/// same `n` positions -> `[]` f32.
///
/// Full vocabulary: `Σ_v p(v) (log p(v) − log q(v))`; its gradient with respect to the
/// student's logits is `q − p`.
///
/// Top-k plus tail: with K the teacher's top-k ids and `r = 1 − Σ_{v∈K} p(v)` the mass the
/// teacher leaves to the other tokens, `Σ_{v∈K} p(v) (log p(v) − log q(v)) +
/// r (log r − log q(∉K))`, where `q(∉K)` is the student's mass outside K. This is the KL
/// between the two distributions coarsened to K plus one "other" bucket; it equals the full
/// KL when the teacher's tail is spread over the other tokens as the student spreads its own,
/// and its gradient is `q − p` on K and `q(v) (1 − r / q(∉K))` elsewhere. Without a tail
/// (`k = V`) it is the full KL.
pub fn distill_kl(student_logits: &Tensor, teacher: &TeacherTargets) -> Result<Tensor> {
    let (n, vocab) = student_logits.dims2()?;
    if teacher.rows()? != n {
        return Err(TrainError::Config(format!(
            "distill_kl: {n} student positions but {} teacher positions",
            teacher.rows()?
        )));
    }
    if n == 0 {
        return Ok(Tensor::zeros((), DType::F32, student_logits.device())?);
    }
    let log_q = log_softmax_last(&student_logits.to_dtype(DType::F32)?)?;
    let per_position = match teacher {
        TeacherTargets::Full(log_p) => {
            if log_p.dims() != [n, vocab] {
                return Err(TrainError::Config(format!(
                    "distill_kl: teacher log-probs are {:?}; expected [{n}, {vocab}]",
                    log_p.dims()
                )));
            }
            let log_p = log_p.to_dtype(DType::F32)?;
            (log_p.exp()? * (&log_p - &log_q)?)?.sum(1)?
        }
        TeacherTargets::TopK { ids, logprobs } => {
            let k = ids.dim(1)?;
            if ids.dims() != [n, k] || logprobs.dims() != [n, k] || k == 0 || k > vocab {
                return Err(TrainError::Config(format!(
                    "distill_kl: top-k ids {:?} and log-probs {:?}; expected both [{n}, k] \
                     with 1 ≤ k ≤ {vocab}",
                    ids.dims(),
                    logprobs.dims()
                )));
            }
            let top = checked_ids(ids, vocab)?;
            let log_p = logprobs.to_dtype(DType::F32)?;
            let p = log_p.exp()?;
            let head = (&p * (&log_p - log_q.gather(ids, 1)?)?)?.sum(1)?;
            if k == vocab {
                head
            } else {
                // The teacher's tail mass is a constant; clamping before the log makes an
                // empty tail contribute 0 · log(1e-30) = 0.
                let r = p.sum(1)?.affine(-1.0, 1.0)?.clamp(0f32, 1f32)?;
                let r_log_r = (&r * r.clamp(1e-30f32, 1f32)?.log()?)?;
                let log_q_tail = tail_log_mass(&log_q, &top)?;
                ((head + r_log_r)? - (r * log_q_tail)?)?
            }
        }
    };
    Ok(per_position.mean_all()?)
}

/// `log Σ_{v∉K} q(v)` per row: a log-sum-exp of the student's log-probs with the top-k ids
/// masked to −∞. Some token is always outside K (k < V), so each row's max is finite and no
/// `−∞ − (−∞)` arises; the masked entries get an exact zero gradient.
///
/// Shapes: log_q `[n, V]`, top `[n][k]` (ids below V) -> `[n]`.
fn tail_log_mass(log_q: &Tensor, top: &[Vec<u32>]) -> Result<Tensor> {
    let (n, vocab) = log_q.dims2()?;
    let mut mask = vec![0f32; n * vocab];
    for (row, ids) in top.iter().enumerate() {
        for &id in ids {
            mask[row * vocab + id as usize] = f32::NEG_INFINITY;
        }
    }
    let masked = (log_q + Tensor::from_vec(mask, (n, vocab), log_q.device())?)?;
    let max = masked.max_keepdim(D::Minus1)?.detach();
    let sum = masked.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?;
    Ok((sum.log()? + max)?.squeeze(1)?)
}

/// The top-k ids as host rows, each checked to be below `vocab`.
fn checked_ids(ids: &Tensor, vocab: usize) -> Result<Vec<Vec<u32>>> {
    let top: Vec<Vec<u32>> = ids.to_vec2()?;
    for (row, ids) in top.iter().enumerate() {
        if let Some(id) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(TrainError::Config(format!(
                "distill_kl: teacher token id {id} at position {row} is outside the \
                 vocabulary of {vocab}"
            )));
        }
    }
    Ok(top)
}

/// [`distill_kl`] and [`top1_agreement`] for a full teacher distribution straight from the
/// student's hidden states, through the fused, chunked output layer
/// ([`cai_model::kernels::head_nll::head_kl`]): the student's `[n, V]` logits, their
/// log-softmax and the KL's element-wise products (and all their gradients) never exist, only
/// a few MiB of logits at a time. `None` when the fused op does not apply (top-k targets, or
/// tensors that are not f32 on the CPU): compose from the logits then.
///
/// Shapes: hidden `[n, h]`, head `[V, h]` (the output layer) -> (`[]` mean KL, agreements).
pub fn fused_full_kl(
    hidden: &Tensor,
    head: &Tensor,
    teacher: &TeacherTargets,
) -> Result<Option<(Tensor, usize)>> {
    let TeacherTargets::Full(log_p) = teacher else {
        return Ok(None);
    };
    let cpu_f32 = [hidden, head, log_p]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32);
    if !cpu_f32 || hidden.dim(0)? == 0 {
        return Ok(None);
    }
    let (kl, student) = cai_model::kernels::head_nll::head_kl(hidden, head, log_p)?;
    let agree = agreement(&student, teacher)?;
    Ok(Some((kl.mean_all()?, agree)))
}

/// Positions at which the student's most likely token is the teacher's.
///
/// Shapes: student_logits `[n, V]`, teacher targets for `n` positions -> a count ≤ n.
pub fn top1_agreement(student_logits: &Tensor, teacher: &TeacherTargets) -> Result<usize> {
    let student: Vec<u32> = student_logits
        .to_dtype(DType::F32)?
        .argmax(D::Minus1)?
        .to_vec1()?;
    agreement(&student, teacher)
}

/// How many of the student's most likely tokens are the teacher's.
fn agreement(student: &[u32], teacher: &TeacherTargets) -> Result<usize> {
    let teacher: Vec<u32> = match teacher {
        TeacherTargets::Full(log_p) => log_p.argmax(D::Minus1)?.to_vec1()?,
        TeacherTargets::TopK { ids, .. } => ids.narrow(1, 0, 1)?.squeeze(1)?.to_vec1()?,
    };
    Ok(student
        .iter()
        .zip(&teacher)
        .filter(|(s, t)| *s == *t)
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn approx(found: f32, expected: f64) {
        assert!(
            (f64::from(found) - expected).abs() < 1e-5,
            "{found} != {expected}"
        );
    }

    fn ln(x: f64) -> f64 {
        x.ln()
    }

    fn log_probs(p: &[[f64; 3]], dev: &Device) -> Tensor {
        let rows: Vec<f32> = p.iter().flatten().map(|&x| x.ln() as f32).collect();
        Tensor::from_vec(rows, (p.len(), 3), dev).unwrap()
    }

    /// Row A: teacher [1/2, 1/4, 1/4], student logits [0, 0, 0] (q = 1/3 each).
    /// Row B: teacher [1/6, 2/6, 3/6], student logits [0, ln 2, ln 3] (q = p).
    fn two_rows(dev: &Device) -> (Var, Tensor) {
        let (l2, l3) = (2f32.ln(), 3f32.ln());
        let student = Var::new(&[[0f32, 0.0, 0.0], [0.0, l2, l3]], dev).unwrap();
        let teacher = log_probs(&[[0.5, 0.25, 0.25], [1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0]], dev);
        (student, teacher)
    }

    #[test]
    fn full_kl_matches_hand_values_and_its_gradient_is_q_minus_p() {
        // Row A: ½ ln(½ / ⅓) + 2 · ¼ ln(¼ / ⅓) = ½ ln 1.5 + ½ ln 0.75 = ½ ln 1.125;
        // row B: 0. Mean over the two rows: ¼ ln 1.125 = 0.029445.
        let dev = Device::Cpu;
        let (student, teacher) = two_rows(&dev);
        let kl = distill_kl(student.as_tensor(), &TeacherTargets::Full(teacher)).unwrap();
        approx(kl.to_scalar().unwrap(), 0.25 * ln(1.125));
        // d KL / d z = (q − p) / n: row A [⅓ − ½, ⅓ − ¼, ⅓ − ¼] / 2, row B 0.
        let grads = kl.backward().unwrap();
        let g: Vec<Vec<f32>> = grads.get(student.as_tensor()).unwrap().to_vec2().unwrap();
        let expected = [[-1.0 / 12.0, 1.0 / 24.0, 1.0 / 24.0], [0.0; 3]];
        for (row, want) in g.iter().zip(expected) {
            for (&found, want) in row.iter().zip(want) {
                approx(found, want);
            }
        }
    }

    /// Teacher [1/2, 3/8, 1/8], student logits [0, 0, ln 2] (q = [1/4, 1/4, 1/2]).
    fn one_row(dev: &Device) -> (Var, Tensor) {
        let student = Var::new(&[[0f32, 0.0, 2f32.ln()]], dev).unwrap();
        (student, log_probs(&[[0.5, 0.375, 0.125]], dev))
    }

    fn top_k(log_p: &Tensor, ids: &[u32]) -> TeacherTargets {
        let dev = log_p.device();
        let k = ids.len();
        let ids = Tensor::from_vec(ids.to_vec(), (1, k), dev).unwrap();
        let logprobs = log_p.gather(&ids, 1).unwrap();
        TeacherTargets::TopK { ids, logprobs }
    }

    #[test]
    fn top_k_with_tail_matches_hand_values() {
        let dev = Device::Cpu;
        let (student, log_p) = one_row(&dev);
        // Full: ½ ln(½/¼) + ⅜ ln(⅜/¼) + ⅛ ln(⅛/½) = ½ ln 2 + ⅜ ln 1.5 − ¼ ln 2.
        let full = 0.5 * ln(2.0) + 0.375 * ln(1.5) + 0.125 * ln(0.25);
        let kl = distill_kl(student.as_tensor(), &TeacherTargets::Full(log_p.clone())).unwrap();
        approx(kl.to_scalar().unwrap(), full);

        // k = 1: K = {0}, r = ½, q(∉K) = ¾: ½ ln(½/¼) + ½ ln(½/¾) = ½ ln(4/3).
        let kl = distill_kl(student.as_tensor(), &top_k(&log_p, &[0])).unwrap();
        approx(kl.to_scalar().unwrap(), 0.5 * ln(4.0 / 3.0));
        // Gradient: q − p on K (¼ − ½); q(v)(1 − r/q(∉K)) elsewhere: ¼(1 − ⅔) = 1/12 and
        // ½(1 − ⅔) = 1/6. It sums to 0, as a softmax gradient must.
        let grads = kl.backward().unwrap();
        let g: Vec<Vec<f32>> = grads.get(student.as_tensor()).unwrap().to_vec2().unwrap();
        for (&found, want) in g[0].iter().zip([-0.25, 1.0 / 12.0, 1.0 / 6.0]) {
            approx(found, want);
        }

        // k = 2: one token in the tail, so the coarsened KL is the full KL; k = V likewise.
        let kl = distill_kl(student.as_tensor(), &top_k(&log_p, &[0, 1])).unwrap();
        approx(kl.to_scalar().unwrap(), full);
        let kl = distill_kl(student.as_tensor(), &top_k(&log_p, &[0, 1, 2])).unwrap();
        approx(kl.to_scalar().unwrap(), full);
    }

    #[test]
    fn an_empty_tail_adds_nothing_and_stays_finite() {
        // Teacher all on token 0 (top-1 log-prob 0, r = 0): KL = −log q(0) = ln 4.
        let dev = Device::Cpu;
        let (student, _) = one_row(&dev);
        let targets = TeacherTargets::TopK {
            ids: Tensor::new(&[[0u32]], &dev).unwrap(),
            logprobs: Tensor::new(&[[0f32]], &dev).unwrap(),
        };
        let kl = distill_kl(student.as_tensor(), &targets).unwrap();
        approx(kl.to_scalar().unwrap(), ln(4.0));
        let grads = kl.backward().unwrap();
        let g: Vec<Vec<f32>> = grads.get(student.as_tensor()).unwrap().to_vec2().unwrap();
        for (&found, want) in g[0].iter().zip([-0.75, 0.25, 0.5]) {
            approx(found, want);
        }
    }

    #[test]
    fn agreement_counts_matching_argmaxes() {
        let dev = Device::Cpu;
        let student = Tensor::new(&[[1f32, 0.0, 0.0], [0.0, 0.0, 2.0]], &dev).unwrap();
        // Teacher argmaxes 0 and 2: both agree.
        let full = TeacherTargets::Full(log_probs(
            &[[0.5, 0.25, 0.25], [1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0]],
            &dev,
        ));
        assert_eq!(top1_agreement(&student, &full).unwrap(), 2);
        let targets = TeacherTargets::TopK {
            ids: Tensor::new(&[[1u32], [2]], &dev).unwrap(),
            logprobs: Tensor::new(&[[-1f32], [-1.0]], &dev).unwrap(),
        };
        assert_eq!(top1_agreement(&student, &targets).unwrap(), 1);
    }

    #[test]
    fn mismatched_shapes_are_named() {
        let dev = Device::Cpu;
        let (student, teacher) = two_rows(&dev);
        let one = TeacherTargets::Full(teacher.narrow(0, 0, 1).unwrap());
        let err = distill_kl(student.as_tensor(), &one)
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 student positions but 1"), "{err}");
        let bad = TeacherTargets::TopK {
            ids: Tensor::new(&[[7u32], [0]], &dev).unwrap(),
            logprobs: Tensor::new(&[[-1f32], [-1.0]], &dev).unwrap(),
        };
        let err = distill_kl(student.as_tensor(), &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("token id 7 at position 0"), "{err}");
    }
}
