//! Training throughput at the notebook's sizes, for `cargo xtask bench train`:
//! leave-one-out training windows of MovieLens latest-small (max_len 50,
//! batch 128, dim 64, 2 heads, 2 layers, dropout 0.1, Adam lr 1e-3), timed
//! over whole steps (upload, forward, backward, Adam, loss read back).
//! Prints one JSON line; `scripts/bench_train_torch.py` prints the same for
//! PyTorch.
//!
//! ```text
//! cargo run --release -p sasrec-model --example train_throughput -- [--device cpu|gpu] [--steps 20] [--warmup 3]
//! ```

use std::time::Instant;

use anyhow::{Context, Result, bail};
use sasrec_autograd::Tape;
use sasrec_data::{
    FilterConfig, Order, SplitKind, batches, build_dataset, dataset_ratings_path,
    read_interactions, split,
};
use sasrec_kernels::gpu::{GpuOptions, WgpuBackend};
use sasrec_kernels::{Backend, CpuBackend};
use sasrec_model::{Adam, DeviceBatch, DropoutContext, ModelConfig, SasRec};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .map(|i| args.get(i + 1).cloned())
    };
    let device = flag("--device").flatten().unwrap_or_else(|| "cpu".into());
    let steps: usize = flag("--steps")
        .flatten()
        .map_or(Ok(20), |s| s.parse())
        .context("--steps")?;
    let warmup: usize = flag("--warmup")
        .flatten()
        .map_or(Ok(3), |s| s.parse())
        .context("--warmup")?;
    match device.as_str() {
        "cpu" => measure(&CpuBackend, steps, warmup),
        "gpu" => {
            let gpu = WgpuBackend::new(&GpuOptions::default())?;
            if args.iter().any(|a| a == "--probe") {
                println!("{}", gpu.name());
                return Ok(());
            }
            measure(&gpu, steps, warmup)
        }
        other => bail!("unknown --device {other} (cpu or gpu)"),
    }
}

fn measure<B: Backend>(backend: &B, steps: usize, warmup: usize) -> Result<()> {
    let ratings = read_interactions(&dataset_ratings_path("latest-small")?, &Default::default())?;
    let dataset = build_dataset(&ratings, &FilterConfig::default())?;
    let train = split(&dataset, SplitKind::LeaveOneOut)?.train;
    let config = ModelConfig::notebook(dataset.vocab.num_items());
    let (batch_size, max_len) = (128, config.max_len);

    let mut model = SasRec::new(backend, config, 0);
    let mut adam = Adam::new(backend, &model.params, 1e-3, 0.9, 0.999, 1e-8);
    let all: Vec<_> = (0..)
        .flat_map(|epoch| {
            batches(
                &train,
                max_len,
                batch_size,
                Order::Shuffled { seed: 0, epoch },
                false,
            )
        })
        .filter(|b| b.batch_size == batch_size)
        .take(warmup + steps)
        .collect();
    let mut started = Instant::now();
    for (i, batch) in all.iter().enumerate() {
        if i == warmup {
            started = Instant::now();
        }
        let device =
            DeviceBatch::upload(backend, &batch.inputs, &batch.targets, batch_size, max_len);
        let mut tape = Tape::new(backend, true);
        let vars = tape.params(&model.params);
        let loss = model.loss(
            &mut tape,
            &vars,
            &device,
            Some(DropoutContext {
                seed: 0,
                step: i as u64 + 1,
            }),
        );
        let value = backend.to_vec(tape.value(loss))[0];
        assert!(value.is_finite(), "loss {value} at step {}", i + 1);
        let grads = tape.backward(loss);
        drop(tape);
        adam.step(backend, &mut model.params, &grads, &vars);
    }
    let seconds = started.elapsed().as_secs_f64();
    let tokens = (steps * batch_size * max_len) as f64;
    println!(
        "{{\"impl\":\"sasrec-rs\",\"device\":{:?},\"steps\":{steps},\"step_ms\":{:.2},\"tokens_per_s\":{:.1}}}",
        backend.name(),
        1e3 * seconds / steps as f64,
        tokens / seconds
    );
    Ok(())
}
