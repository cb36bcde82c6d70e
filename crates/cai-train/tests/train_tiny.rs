//! End to end on a tiny random Llama: the training core learns a toy sequence, changes every
//! parameter, and a run resumed from a checkpoint reproduces the uninterrupted run bit for bit.

use std::collections::BTreeMap;

use cai_model::decoder::{Batch, Decoder};
use cai_model::init::ModelShape;
use cai_train::{
    load_checkpoint, masked_cross_entropy, save_checkpoint, AdamW, AdamWConfig, Checkpoint,
    CheckpointOptions, GradAccumulator, Schedule, ScheduleKind, TrainParam, TrainerState,
};
use candle_core::{DType, Device, Tensor};

const VOCAB: usize = 64;
const SEQ: usize = 16;

fn tiny_model(seed: u64, dtype: DType) -> (Decoder, Vec<TrainParam>) {
    let config = ModelShape {
        hidden_size: 32,
        num_layers: 2,
        num_heads: 4,
        intermediate_size: 64,
        vocab_size: VOCAB,
        max_position_embeddings: 64,
        ..Default::default()
    }
    .config()
    .unwrap();
    let mut decoder =
        cai_model::weights::random_decoder(config, seed, dtype, &Device::Cpu).unwrap();
    let params = decoder
        .make_trainable()
        .unwrap()
        .into_iter()
        .map(|(spec, var)| TrainParam::from_spec(&spec, var))
        .collect();
    (decoder, params)
}

/// One micro-batch of two rows of a repeating pattern: ids `[2, SEQ]`, next-token targets
/// `[2, SEQ]`, and a mask that leaves out row 1's first position.
struct MicroBatch {
    ids: Tensor,
    targets: Tensor,
    mask: Tensor,
    batch: Batch,
}

fn micro_batch(offset: u32) -> MicroBatch {
    let pattern = [3u32, 17, 42, 8, 25, 61, 11, 30];
    let row = |start: u32| -> Vec<u32> {
        (0..=SEQ as u32)
            .map(|i| pattern[((start + i) % 8) as usize])
            .collect()
    };
    let rows = [row(offset), row(offset + 3)];
    let ids: Vec<u32> = rows.iter().flat_map(|r| r[..SEQ].to_vec()).collect();
    let targets: Vec<u32> = rows.iter().flat_map(|r| r[1..].to_vec()).collect();
    let mut mask = vec![1f32; 2 * SEQ];
    mask[SEQ] = 0.0;
    let dev = Device::Cpu;
    MicroBatch {
        ids: Tensor::from_vec(ids, (2, SEQ), &dev).unwrap(),
        targets: Tensor::from_vec(targets, (2, SEQ), &dev).unwrap(),
        mask: Tensor::from_vec(mask, (2, SEQ), &dev).unwrap(),
        batch: Batch::from_valid(vec![vec![true; SEQ]; 2]),
    }
}

/// The flat loop of one optimiser step: forward, loss, backward per micro-batch (each loss
/// weighted by its share of the tokens), clip, step. Returns the token-mean loss.
fn train_step(
    decoder: &Decoder,
    params: &[TrainParam],
    optimizer: &mut AdamW,
    schedule: &Schedule,
    step: u64,
    micro_batches: &[MicroBatch],
) -> f64 {
    let mut grads = GradAccumulator::new();
    let total: usize = micro_batches
        .iter()
        .map(|mb| mb.mask.sum_all().unwrap().to_scalar::<f32>().unwrap() as usize)
        .sum();
    let mut loss_sum = 0.0;
    for mb in micro_batches {
        let logits = decoder.forward_train(&mb.ids, &mb.batch).unwrap();
        let (loss, count) = masked_cross_entropy(&logits, &mb.targets, &mb.mask).unwrap();
        let share = count as f64 / total as f64;
        let weighted = (loss * share).unwrap();
        loss_sum += f64::from(weighted.to_scalar::<f32>().unwrap());
        grads.add(&weighted.backward().unwrap(), params).unwrap();
    }
    assert!(grads.is_finite().unwrap());
    grads.clip_to(1.0).unwrap();
    let lr = schedule.lr_at(step, optimizer.config().lr);
    optimizer.step(&grads, lr).unwrap();
    loss_sum
}

fn snapshot(params: &[TrainParam]) -> Vec<Vec<f32>> {
    params
        .iter()
        .map(|p| {
            let t = p.var.as_tensor().to_dtype(DType::F32).unwrap();
            t.flatten_all().unwrap().to_vec1().unwrap()
        })
        .collect()
}

fn adamw(params: &[TrainParam]) -> AdamW {
    let config = AdamWConfig {
        lr: 1e-2,
        weight_decay: 0.01,
        ..AdamWConfig::default()
    };
    AdamW::new(params.to_vec(), config).unwrap()
}

/// 30 steps at lr 1e-2 with clipping on the toy sequence; bf16 and f16 train through the
/// optimiser's f32 master weights. Returns the trained weights.
fn check_learns(dtype: DType) -> Vec<Vec<f32>> {
    let (decoder, params) = tiny_model(1, dtype);
    let before = snapshot(&params);
    let mut optimizer = adamw(&params);
    let schedule = Schedule {
        kind: ScheduleKind::Cosine,
        warmup_steps: 2,
        total_steps: 30,
        min_lr_ratio: 0.1,
    };
    let batches = [micro_batch(0)];
    let losses: Vec<f64> = (0..30)
        .map(|step| train_step(&decoder, &params, &mut optimizer, &schedule, step, &batches))
        .collect();
    let (first, last) = (losses[0], losses[29]);
    assert!(
        (first - (VOCAB as f64).ln()).abs() < 0.2,
        "{dtype:?}: a random model starts near ln V: {first}"
    );
    assert!(
        last < first / 10.0,
        "{dtype:?}: loss {first} -> {last}: {losses:?}"
    );
    for ((param, old), new) in params.iter().zip(&before).zip(snapshot(&params)) {
        assert_eq!(param.var.dtype(), dtype);
        assert!(
            old.iter().zip(&new).any(|(a, b)| a != b),
            "{dtype:?}: {} did not change",
            param.name
        );
    }
    snapshot(&params)
}

#[test]
fn loss_goes_down_and_every_parameter_changes() {
    check_learns(DType::F32);
}

/// `dtype = "bf16"` on the CPU: an f32 model whose linear layers multiply in bf16 (AMX)
/// learns the toy sequence as f32 does; where AMX runs, its weights end up near but not
/// equal to the f32 run's.
#[test]
fn bf16_products_train_like_f32() {
    let precision = cai_train::core::precision::Precision::of("bf16", &Device::Cpu).unwrap();
    assert_eq!(precision.build, DType::F32);
    let exact = check_learns(DType::F32);
    let mixed = {
        let _scope = precision.scope();
        check_learns(precision.build)
    };
    let amx = cai_model::autocast::bf16_training_products_available();
    let mut largest = 0f32;
    for (e, m) in exact.iter().zip(&mixed) {
        for (a, b) in e.iter().zip(m) {
            largest = largest.max((a - b).abs());
        }
    }
    assert!(
        largest < 0.05,
        "bf16 products moved a weight {largest} from f32's"
    );
    assert_eq!(largest > 0.0, amx, "bf16 products ran: {}", largest > 0.0);
}

#[test]
fn half_precision_trains_through_f32_master_weights() {
    check_learns(DType::BF16);
    check_learns(DType::F16);
}

#[test]
fn resumed_run_reproduces_uninterrupted_run_bitwise() {
    let schedule = Schedule {
        kind: ScheduleKind::Linear,
        warmup_steps: 3,
        total_steps: 10,
        min_lr_ratio: 0.0,
    };
    let step_batches = |step: u64| [micro_batch(step as u32), micro_batch(step as u32 + 1)];

    let (straight_decoder, straight_params) = tiny_model(7, DType::F32);
    let mut optimizer = adamw(&straight_params);
    let straight: Vec<f64> = (0..10)
        .map(|step| {
            let batches = step_batches(step);
            train_step(
                &straight_decoder,
                &straight_params,
                &mut optimizer,
                &schedule,
                step,
                &batches,
            )
        })
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let (decoder, params) = tiny_model(7, DType::F32);
    let mut optimizer = adamw(&params);
    let mut resumed: Vec<f64> = (0..5)
        .map(|step| {
            train_step(
                &decoder,
                &params,
                &mut optimizer,
                &schedule,
                step,
                &step_batches(step),
            )
        })
        .collect();
    let weights: BTreeMap<String, Tensor> = params
        .iter()
        .map(|p| (p.name.clone(), p.var.as_tensor().copy().unwrap()))
        .collect();
    let mut state = TrainerState::new(7);
    state.step = 5;
    let checkpoint = Checkpoint {
        weights: &weights,
        optimizer: &optimizer,
        state: &state,
        config: &serde_json::to_value(&schedule).unwrap(),
        extra_files: &[],
    };
    let path = save_checkpoint(dir.path(), &checkpoint, &CheckpointOptions::default()).unwrap();
    drop((decoder, params, optimizer));

    // A fresh process: a model with different random weights, overwritten from the checkpoint.
    let loaded = load_checkpoint(&path, "model.safetensors", &Device::Cpu).unwrap();
    let (decoder, params) = tiny_model(99, DType::F32);
    for p in &params {
        p.var.set(&loaded.weights[&p.name]).unwrap();
    }
    let mut optimizer = adamw(&params);
    loaded.restore_optimizer(&mut optimizer).unwrap();
    let schedule: Schedule = serde_json::from_value(loaded.config.clone()).unwrap();
    for step in loaded.state.step..10 {
        resumed.push(train_step(
            &decoder,
            &params,
            &mut optimizer,
            &schedule,
            step,
            &step_batches(step),
        ));
    }
    assert_eq!(
        straight.iter().map(|l| l.to_bits()).collect::<Vec<_>>(),
        resumed.iter().map(|l| l.to_bits()).collect::<Vec<_>>(),
        "losses {straight:?} vs {resumed:?}"
    );
    for ((p, a), b) in params
        .iter()
        .zip(snapshot(&straight_params))
        .zip(snapshot(&params))
    {
        let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{} differs after resume", p.name);
    }
}
