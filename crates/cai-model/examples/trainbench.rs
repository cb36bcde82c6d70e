//! Forward + backward timing on bench-6m (8 × 256), used while optimising the training path.
use cai_model::decoder::Batch;
use candle_core::{DType, Device, Tensor};

fn main() -> cai_model::Result<()> {
    let dev = Device::Cpu;
    let cfg = cai_model::init::ModelShape::default().config()?;
    let mut d = cai_model::weights::random_decoder(cfg, 0, DType::F32, &dev)?;
    let vars = d.make_trainable()?;
    let (b, s) = (8usize, 256usize);
    let ids: Vec<u32> = (0..b * s).map(|i| (i * 7919 % 4095 + 1) as u32).collect();
    let ids = Tensor::from_vec(ids, (b, s), &dev)?;
    let batch = Batch::from_valid(vec![vec![true; s]; b]);
    for run in 0..4 {
        let t0 = std::time::Instant::now();
        let logits = d.forward_train(&ids, &batch)?;
        let t1 = t0.elapsed().as_secs_f64();
        let loss =
            candle_nn::loss::cross_entropy(&logits.reshape((b * s, 4096))?, &ids.flatten_all()?)?;
        let t2 = t0.elapsed().as_secs_f64();
        let grads = loss.backward()?;
        let t3 = t0.elapsed().as_secs_f64();
        for (_, v) in &vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                v.set(&(v.as_tensor() - (g * 1e-3)?)?)?;
            }
        }
        let t4 = t0.elapsed().as_secs_f64();
        println!("run {run}: fwd {t1:.3}s loss {:.3}s bwd {:.3}s sgd {:.3}s total {t4:.3}s -> {:.0} tok/s", t2 - t1, t3 - t2, t4 - t3, (b * s) as f64 / t4);
    }
    println!("peak rss {:?} MiB", cai_model::bench::peak_rss_mib());
    Ok(())
}
