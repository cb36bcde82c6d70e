//! The training path is differentiable end to end: every parameter of every architecture
//! receives a non-zero gradient, and gradients agree with finite differences in f64.

use cai_model::config::Architecture;
use cai_model::decoder::Decoder;
use candle_core::{DType, Tensor, Var};

use crate::common::{lm_loss, noisy_decoder, tiny_config, token_rows};

/// Turn every parameter into a `Var`; returns them by name (the decoder shares their storage).
fn make_vars(decoder: &mut Decoder) -> Vec<(String, Var)> {
    let mut vars = Vec::new();
    decoder
        .visit_params(&mut |spec, t| {
            let var = Var::from_tensor(t)?;
            *t = var.as_tensor().clone();
            vars.push((spec.name.clone(), var));
            Ok(())
        })
        .expect("making vars");
    vars
}

#[test]
fn every_parameter_of_every_architecture_gets_a_nonzero_gradient() {
    let cases = [
        (Architecture::Llama, false),
        (Architecture::Llama, true),
        (Architecture::Mistral, false),
        (Architecture::Qwen2, true),
        (Architecture::Qwen3, false),
        (Architecture::Gpt2, true),
    ];
    for (arch, tied) in cases {
        let config = tiny_config(arch, tied);
        assert_eq!(config.tie_word_embeddings, tied);
        let mut decoder = noisy_decoder(config, 1, DType::F32);
        let vars = make_vars(&mut decoder);
        assert_eq!(
            vars.iter().any(|(n, _)| n == "lm_head.weight"),
            !tied,
            "{arch:?}"
        );
        let loss = lm_loss(&decoder, &token_rows());
        let grads = loss.backward().expect("backward");
        for (name, var) in &vars {
            let grad = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{arch:?} tied={tied}: no gradient for {name}"));
            assert_eq!(grad.dims(), var.as_tensor().dims(), "{name}");
            let norm: f32 = grad
                .abs()
                .and_then(|g| g.max_all())
                .and_then(|m| m.to_scalar())
                .expect("norm");
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{arch:?} tied={tied}: gradient of {name} is {norm}"
            );
        }
    }
}

/// Loss with one entry of one parameter replaced.
fn loss_with(decoder: &Decoder, name: &str, index: usize, value: f64) -> f64 {
    let mut copy = decoder.clone();
    copy.visit_params(&mut |spec, t| {
        if spec.name == name {
            let mut data: Vec<f64> = t.flatten_all()?.to_vec1()?;
            data[index] = value;
            *t = Tensor::from_vec(data, t.shape(), t.device())?;
        }
        Ok(())
    })
    .expect("replacing one entry");
    lm_loss(&copy, &token_rows())
        .to_scalar::<f64>()
        .expect("scalar loss")
}

/// Compare the analytic gradient of the largest-gradient entry of each named tensor with a
/// central difference.
fn check_finite_differences(arch: Architecture, tied: bool, names: &[&str]) {
    let decoder = noisy_decoder(tiny_config(arch, tied), 2, DType::F64);
    let mut with_vars = decoder.clone();
    let vars = make_vars(&mut with_vars);
    let grads = lm_loss(&with_vars, &token_rows())
        .backward()
        .expect("backward");
    let eps = 1e-5;
    for &name in names {
        let (_, var) = vars
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{arch:?} has no {name}"));
        let grad: Vec<f64> = grads
            .get(var.as_tensor())
            .expect("a gradient")
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let weights: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        // The entry with the largest gradient, so the relative error is meaningful.
        let (index, &analytic) = grad
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .expect("non-empty");
        let w = weights[index];
        let numeric = (loss_with(&decoder, name, index, w + eps)
            - loss_with(&decoder, name, index, w - eps))
            / (2.0 * eps);
        let rel = (analytic - numeric).abs() / analytic.abs().max(numeric.abs());
        assert!(
            rel < 1e-4,
            "{arch:?} {name}[{index}]: analytic {analytic:e}, numeric {numeric:e}, relative error {rel:e}"
        );
    }
}

#[test]
fn llama_gradients_match_finite_differences_in_f64() {
    check_finite_differences(
        Architecture::Llama,
        false,
        &[
            "model.embed_tokens.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.1.input_layernorm.weight",
            "model.layers.0.mlp.down_proj.weight",
            "model.norm.weight",
            "lm_head.weight",
        ],
    );
}

#[test]
fn gpt2_gradients_match_finite_differences_in_f64() {
    check_finite_differences(
        Architecture::Gpt2,
        true,
        &[
            "transformer.wte.weight",
            "transformer.wpe.weight",
            "transformer.h.0.attn.c_attn.weight",
            "transformer.h.1.attn.c_attn.bias",
            "transformer.h.0.ln_1.weight",
            "transformer.h.1.mlp.c_fc.weight",
            "transformer.ln_f.bias",
        ],
    );
}
