//! The preference model's loss: the cross entropy between σ(r_a − r_b) and the soft label
//! p_a (a soft Bradley–Terry loss; hard labels, p_a ∈ {0, 1}, give Askell et al. 2021's
//! log(1 + e^(r_bad − r_good))), from differentiable candle ops only.

use candle_core::{DType, Tensor};

use crate::{Result, TrainError};

/// `softplus(x) = log(1 + eˣ)`, computed as `max(x, 0) + log(1 + e^(−|x|))` so that it never
/// overflows. Shapes: any -> the same.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    let tail = x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    Ok((x.relu()? + tail)?)
}

/// Mean over pairs of `−[p log σ(d) + (1 − p) log σ(−d)] = p·softplus(−d) + (1 − p)·softplus(d)`
/// with `d = r_a − r_b`. Its gradient in `d` is `(σ(d) − p) / n`, zero only where the margin
/// matches the label: labels of 0.5 push margins to 0.
///
/// Shapes: margins `[n]`, labels `[n]` (p_a in [0, 1]) -> loss `[]` (f32).
pub fn soft_preference_loss(margins: &Tensor, labels: &Tensor) -> Result<Tensor> {
    if margins.dims() != labels.dims() || margins.rank() != 1 {
        return Err(TrainError::Config(format!(
            "soft_preference_loss: margins are {:?} and labels {:?}; expected two [n] vectors",
            margins.dims(),
            labels.dims()
        )));
    }
    let d = margins.to_dtype(DType::F32)?;
    let p = labels.to_dtype(DType::F32)?;
    let win = (softplus(&d.neg()?)? * &p)?;
    let lose = (softplus(&d)? * p.affine(-1.0, 1.0)?)?;
    Ok((win + lose)?.mean_all()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn scalar(t: &Tensor) -> f32 {
        t.to_scalar::<f32>().unwrap()
    }

    fn close(found: f32, expected: f32) {
        assert!((found - expected).abs() < 1e-6, "{found} != {expected}");
    }

    #[test]
    fn loss_matches_hand_values() {
        let dev = Device::Cpu;
        let l3 = 3f32.ln();
        // d = ln 3: σ(d) = 3/4. p = 1: −log(3/4) = ln(4/3). p = 0: −log(1/4) = ln 4.
        // p = 0.5 at d = 0: ln 2. Mean of the three.
        let margins = Tensor::new(&[l3, l3, 0.0], &dev).unwrap();
        let labels = Tensor::new(&[1f32, 0.0, 0.5], &dev).unwrap();
        let loss = soft_preference_loss(&margins, &labels).unwrap();
        close(
            scalar(&loss),
            ((4f32 / 3.0).ln() + 4f32.ln() + 2f32.ln()) / 3.0,
        );
        // Large margins neither overflow nor lose the linear tail: softplus(100) = 100.
        let far = soft_preference_loss(
            &Tensor::new(&[100f32], &dev).unwrap(),
            &Tensor::new(&[0f32], &dev).unwrap(),
        )
        .unwrap();
        close(scalar(&far), 100.0);
    }

    #[test]
    fn gradient_is_sigmoid_of_the_margin_minus_the_label() {
        // d = ln 3 (σ = 0.75) with p = 0.25: (0.75 − 0.25) / 2 = 0.25; d = 0 with p = 0.5: 0.
        let dev = Device::Cpu;
        let margins = Var::new(&[3f32.ln(), 0.0], &dev).unwrap();
        let labels = Tensor::new(&[0.25f32, 0.5], &dev).unwrap();
        let loss = soft_preference_loss(margins.as_tensor(), &labels).unwrap();
        let grads = loss.backward().unwrap();
        let g: Vec<f32> = grads.get(margins.as_tensor()).unwrap().to_vec1().unwrap();
        close(g[0], 0.25);
        close(g[1], 0.0);
    }

    #[test]
    fn labels_of_one_half_pull_a_margin_to_zero() {
        let dev = Device::Cpu;
        let margin = Var::new(&[2f32], &dev).unwrap();
        let half = Tensor::new(&[0.5f32], &dev).unwrap();
        for _ in 0..200 {
            let loss = soft_preference_loss(margin.as_tensor(), &half).unwrap();
            let grad = loss.backward().unwrap();
            let g = grad.get(margin.as_tensor()).unwrap();
            margin
                .set(&(margin.as_tensor() - (g * 4.0).unwrap()).unwrap())
                .unwrap();
        }
        let d: Vec<f32> = margin.as_tensor().to_vec1().unwrap();
        assert!(d[0].abs() < 1e-3, "margin {}", d[0]);
        let err = soft_preference_loss(&Tensor::new(&[1f32, 2.0], &dev).unwrap(), &half)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected two [n] vectors"), "{err}");
    }
}
