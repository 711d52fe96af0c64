//! Training throughput at the notebook's sizes, for `cargo xtask bench train`:
//! batch 128, max_len 50, dim 64, 2 heads, 2 layers, dropout 0.1, Adam lr
//! 1e-3, timed over whole steps of the trainer (`Trainer::step`: upload,
//! forward, backward, gradient checks, Adam, loss read back). Prints one JSON line; `scripts/bench_train_torch.py` prints the
//! same for PyTorch.
//!
//! Data: `--data latest-small` (default: MovieLens latest-small,
//! leave-one-out training windows) or `--data FILE`, any interaction log
//! (the bench gives the seed-scale synthetic log), trained on the
//! notebook's split: 10% of users held out at random (seed 42), the rest
//! train.
//!
//! `--sgemm` instead times the output layer's three products alone, at the
//! step's shapes for this data (one chunk of the fused cross-entropy: `rows`
//! = the CPU backend's chunk rows), with the backend's sgemm and with
//! matrixmultiply: the machine's sgemm rate that a step is compared with;
//! and, on x86-64 CPUs with FMA, the cores' peak: fused multiply-adds in
//! registers on every thread of the pool, the most any product can reach.
//! `--validation` times one validation pass (ranking all items for every
//! validation user) on the CPU, to compare with an epoch's training steps.
//! `--precision bf16` runs the CPU backend's output-layer products in bf16
//! on the fastest kernel the CPU has, or on `--bf16-kernel amx|avx512-bf16`;
//! the JSON line's `device` names it.
//!
//! ```text
//! cargo run --release -p sasrec-model --example train_throughput -- \
//!     [--device cpu|gpu] [--data latest-small|FILE] [--steps 20] [--warmup 3] \
//!     [--threads N] [--precision fp32|bf16] [--bf16-kernel amx|avx512-bf16] \
//!     [--profile-ops] [--sgemm | --validation]
//! ```

use std::time::Instant;

use anyhow::{Context, Result, bail};
use sasrec_data::{
    Batch, FilterConfig, InputSpec, Order, Split, SplitKind, UserSequence, batches, build_dataset,
    dataset_ratings_path, read_interactions, split,
};
use sasrec_kernels::cpu::{Bf16Kernel, CpuTensor, Precision, ce_chunk_rows};
use sasrec_kernels::gpu::{GpuOptions, WgpuBackend};
use sasrec_kernels::{Backend, CpuBackend};
use sasrec_model::{ModelConfig, SasRec, TrainConfig, Trainer, evaluate};

const BATCH: usize = 128;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let number = |name: &str, default: usize| -> Result<usize> {
        flag(name).map_or(Ok(default), |s| s.parse().with_context(|| name.to_string()))
    };
    let has = |name: &str| args.iter().any(|a| a == name);
    sasrec_kernels::cpu::retain_freed_memory();
    let device = flag("--device").unwrap_or_else(|| "cpu".into());
    let data = flag("--data").unwrap_or_else(|| "latest-small".into());
    let (steps, warmup) = (number("--steps", 20)?, number("--warmup", 3)?);
    if let Some(threads) = flag("--threads") {
        let threads: usize = threads.parse().context("--threads")?;
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("MATMUL_NUM_THREADS", threads.to_string()) };
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()?;
    }
    let precision: Precision = flag("--precision")
        .unwrap_or_else(|| "fp32".into())
        .parse()
        .map_err(anyhow::Error::msg)?;
    let cpu = match flag("--bf16-kernel").as_deref() {
        None => CpuBackend::with_precision(precision)?,
        Some("amx") => CpuBackend::with_bf16_kernel(Bf16Kernel::Amx)?,
        Some("avx512-bf16") => CpuBackend::with_bf16_kernel(Bf16Kernel::Avx512Bf16)?,
        Some(other) => bail!("unknown --bf16-kernel {other} (amx or avx512-bf16)"),
    };
    if device == "cpu" && has("--probe") {
        println!("{}", cpu.name());
        return Ok(());
    }
    let (split, num_items) = training_sequences(&data)?;
    let config = ModelConfig::notebook(num_items);
    if has("--validation") {
        if has("--profile-ops") {
            CpuBackend.enable_profiling();
        }
        validation_time(&split, config, data == "latest-small")?;
        if has("--profile-ops") {
            print_profile(1);
        }
        return Ok(());
    }
    let all = step_batches(&split.train, config.max_len, warmup + steps);
    if has("--sgemm") {
        return sgemm_rate(&all, config.vocab(), config.dim);
    }
    match device.as_str() {
        "cpu" => {
            if has("--profile-ops") {
                cpu.enable_profiling();
            }
            measure(&cpu, config, &split, &all, warmup)?;
            if has("--profile-ops") {
                print_profile(steps);
            }
            Ok(())
        }
        "gpu" => {
            let gpu = WgpuBackend::new(&GpuOptions::default())?;
            if has("--probe") {
                println!("{}", gpu.name());
                return Ok(());
            }
            measure(&gpu, config, &split, &all, warmup)
        }
        other => bail!("unknown --device {other} (cpu or gpu)"),
    }
}

/// The split of `data` and the number of items.
fn training_sequences(data: &str) -> Result<(Split, usize)> {
    let (path, kind) = if data == "latest-small" {
        (
            dataset_ratings_path("latest-small")?,
            SplitKind::LeaveOneOut,
        )
    } else {
        let kind = SplitKind::RandomUsers {
            valid_fraction: 0.1,
            seed: 42,
        };
        (data.into(), kind)
    };
    let log = read_interactions(&path, &InputSpec::default())?;
    let dataset = build_dataset(&log, &FilterConfig::default())?;
    Ok((split(&dataset, kind)?, dataset.vocab.num_items()))
}

/// `count` full batches, shuffled epoch after epoch.
fn step_batches(train: &[UserSequence], max_len: usize, count: usize) -> Vec<Batch> {
    (0..)
        .flat_map(|epoch| {
            batches(
                train,
                max_len,
                BATCH,
                Order::Shuffled { seed: 0, epoch },
                false,
            )
        })
        .filter(|b| b.batch_size == BATCH)
        .take(count)
        .collect()
}

/// Multiply-adds x 2 of one step over `batch` with `config`'s model: the
/// encoder's products at every position (forward, then two products per
/// product backward), causal attention, and the output layer's three
/// products at the positions that have a target (the only ones the fused
/// cross-entropy computes).
fn step_flops(config: &ModelConfig, batch: &Batch) -> f64 {
    let (d, f, len) = (
        config.dim as f64,
        config.ff_dim as f64,
        config.max_len as f64,
    );
    let positions = batch.inputs.len() as f64;
    let targets = batch.targets.iter().filter(|&&t| t != 0).count() as f64;
    // Per position and layer: in-projection 3d x d, out-projection d x d,
    // feed-forward 2 x d x f; scores and context over len / 2 keys on average.
    let layer = 2.0 * (3.0 * d * d + d * d + 2.0 * d * f) + 2.0 * 2.0 * (len / 2.0) * d;
    let encoder = 3.0 * positions * config.layers as f64 * layer;
    let output = 3.0 * 2.0 * targets * d * config.vocab() as f64;
    encoder + output
}

/// Times `Trainer::step`, the trainer's own step, over `all` after `warmup`
/// untimed steps.
fn measure<B: Backend>(
    backend: &B,
    config: ModelConfig,
    split: &Split,
    all: &[Batch],
    warmup: usize,
) -> Result<()> {
    let max_len = config.max_len;
    let model = SasRec::new(backend, config.clone(), 0);
    let train = TrainConfig {
        seed: 0,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(backend, model, train, &split.train, &split.train, false)?;
    let mut started = Instant::now();
    let mut cpu_started = cpu_seconds();
    for (i, batch) in all.iter().enumerate() {
        if i == warmup {
            // The CPU profile (when on) covers the timed steps only.
            CpuBackend.reset_profile();
            started = Instant::now();
            cpu_started = cpu_seconds();
        }
        trainer.step(batch)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_started;
    let timed = &all[warmup..];
    let steps = timed.len() as f64;
    let flops: f64 = timed.iter().map(|b| step_flops(&config, b)).sum::<f64>() / steps;
    let targets: usize = timed
        .iter()
        .map(|b| b.targets.iter().filter(|&&t| t != 0).count())
        .sum();
    println!(
        "{{\"impl\":\"sasrec-rs\",\"device\":{:?},\"vocab\":{},\"steps\":{},\"step_ms\":{:.2},\"tokens_per_s\":{:.1},\"cpu_s_per_step\":{:.3},\"targets_per_step\":{:.0},\"gflop_per_step\":{:.2},\"gflops\":{:.2},\"peak_rss_bytes\":{}}}",
        backend.name(),
        config.vocab(),
        timed.len(),
        1e3 * seconds / steps,
        steps * (BATCH * max_len) as f64 / seconds,
        cpu / steps,
        targets as f64 / steps,
        flops / 1e9,
        flops / (seconds / steps) / 1e9,
        peak_rss_bytes()
    );
    Ok(())
}

/// Times one validation pass of the trainer (`evaluate`: loss and ranking of
/// all items for every validation user, batch 128, k = 10, 20) with an
/// initial model on the CPU backend; prints it beside the number of training
/// steps of an epoch, as one JSON line.
fn validation_time(split: &Split, config: ModelConfig, leave_one_out: bool) -> Result<()> {
    let model = SasRec::new(&CpuBackend, config.clone(), 0);
    let started = Instant::now();
    let cpu_started = cpu_seconds();
    let valid = evaluate(
        &CpuBackend,
        &model,
        &split.valid,
        leave_one_out,
        &[10, 20],
        BATCH,
    );
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_started;
    let steps = batches(
        &split.train,
        config.max_len,
        BATCH,
        Order::Sequential,
        false,
    )
    .count();
    println!(
        "{{\"valid_users\":{},\"valid_seconds\":{seconds:.3},\"valid_cpu_s\":{cpu:.3},\"loss\":{:.4},\"train_steps_per_epoch\":{steps}}}",
        split.valid.len(),
        valid.loss
    );
    Ok(())
}

/// Prints the CPU backend's op profile per step (stderr).
fn print_profile(steps: usize) {
    let report = CpuBackend.profile_report();
    let total: f64 = report.iter().map(|t| t.total_ms).sum();
    let steps = steps.max(1) as f64;
    eprintln!("CPU op time per step: {:.1} ms", total / steps);
    for t in report {
        eprintln!(
            "  {:>9.2} ms  {:>5.1}%  {:>6.1} calls  {}",
            t.total_ms / steps,
            100.0 * t.total_ms / total.max(1e-12),
            t.calls as f64 / steps,
            t.op
        );
    }
}

/// Times the output layer's three products at one chunk of the step's
/// shapes, with the backend's sgemm and with matrixmultiply, best of five
/// each; prints GFLOP/s as one JSON line.
fn sgemm_rate(all: &[Batch], vocab: usize, dim: usize) -> Result<()> {
    let targets = all
        .iter()
        .map(|b| b.targets.iter().filter(|&&t| t != 0).count())
        .max()
        .unwrap_or(0);
    let rows = ce_chunk_rows(vocab).min(targets).max(1);
    let values = |n: usize, seed: u32| -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 9) as f32 / (1 << 23) as f32 * 0.2 - 0.1
            })
            .collect()
    };
    let (h, table, z) = (
        values(rows * dim, 1),
        values(vocab * dim, 2),
        values(rows * vocab, 3),
    );
    let be = CpuBackend;
    let tensor = |v: &[f32], shape: &[usize]| CpuTensor::new(v.to_vec(), shape);
    let (ht, tt, zt) = (
        tensor(&h, &[rows, dim]),
        tensor(&table, &[vocab, dim]),
        tensor(&z, &[rows, vocab]),
    );
    let flops = 3.0 * 2.0 * (rows * dim * vocab) as f64;
    // Best of five runs of 20 calls each, by wall time and by CPU time (on a
    // shared machine the CPU time is the steadier figure).
    let best = |f: &mut dyn FnMut()| {
        f();
        (0..5)
            .map(|_| {
                let (t, c) = (Instant::now(), cpu_seconds());
                for _ in 0..20 {
                    f();
                }
                (t.elapsed().as_secs_f64() / 20.0, (cpu_seconds() - c) / 20.0)
            })
            .fold((f64::INFINITY, f64::INFINITY), |a, b| {
                (a.0.min(b.0), a.1.min(b.1))
            })
    };
    let ours = best(&mut || {
        std::hint::black_box(be.matmul(&ht, &tt, false, true));
        std::hint::black_box(be.matmul(&zt, &tt, false, false));
        std::hint::black_box(be.matmul(&zt, &ht, true, false));
    });
    let mut out = (
        vec![0.0f32; rows * vocab],
        vec![0.0f32; rows * dim],
        vec![0.0f32; vocab * dim],
    );
    let reference = best(&mut || {
        // SAFETY: every operand is exactly as large as its shape and strides say.
        unsafe {
            matrixmultiply::sgemm(
                rows,
                dim,
                vocab,
                1.0,
                h.as_ptr(),
                dim as isize,
                1,
                table.as_ptr(),
                1,
                dim as isize,
                0.0,
                out.0.as_mut_ptr(),
                vocab as isize,
                1,
            );
            matrixmultiply::sgemm(
                rows,
                vocab,
                dim,
                1.0,
                z.as_ptr(),
                vocab as isize,
                1,
                table.as_ptr(),
                dim as isize,
                1,
                0.0,
                out.1.as_mut_ptr(),
                dim as isize,
                1,
            );
            matrixmultiply::sgemm(
                vocab,
                rows,
                dim,
                1.0,
                z.as_ptr(),
                1,
                vocab as isize,
                h.as_ptr(),
                dim as isize,
                1,
                1.0,
                out.2.as_mut_ptr(),
                dim as isize,
                1,
            );
        }
    });
    std::hint::black_box(&out);
    let peak = fma_peak_gflop_per_cpu_s().map_or("null".to_string(), |p| format!("{p:.2}"));
    println!(
        "{{\"sgemm_rows\":{rows},\"vocab\":{vocab},\"dim\":{dim},\"threads\":{},\"ours_gflops\":{:.2},\"matrixmultiply_gflops\":{:.2},\"ours_gflop_per_cpu_s\":{:.2},\"matrixmultiply_gflop_per_cpu_s\":{:.2},\"fma_peak_gflop_per_cpu_s\":{peak}}}",
        rayon::current_num_threads(),
        flops / ours.0 / 1e9,
        flops / reference.0 / 1e9,
        flops / ours.1 / 1e9,
        flops / reference.1 / 1e9
    );
    Ok(())
}

/// The cores' peak rate per CPU second: every thread of the pool runs
/// independent chains of fused multiply-adds on the widest registers the
/// CPU has, with no memory operands (best of five runs of about 50 GFLOP
/// per thread). `None` on CPUs without FMA.
fn fma_peak_gflop_per_cpu_s() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        // Flops per iteration of each kernel: chains x lanes x 2.
        let (flops_per_iteration, chains): (usize, fn(usize) -> f32) =
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                (24 * 16 * 2, |n| unsafe { fma_chains_avx512(n) })
            } else if std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU has FMA (and so AVX).
                (12 * 8 * 2, |n| unsafe { fma_chains_fma(n) })
            } else {
                return None;
            };
        let iterations = 50_000_000_000 / flops_per_iteration;
        let threads = rayon::current_num_threads();
        let flops = (iterations * flops_per_iteration * threads) as f64;
        let best = (0..5)
            .map(|_| {
                let cpu = cpu_seconds();
                std::hint::black_box(rayon::broadcast(|_| chains(iterations)));
                flops / (cpu_seconds() - cpu) / 1e9
            })
            .fold(0.0, f64::max);
        Some(best)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// 24 chains of `c = a c + b` in zmm registers (latency 4, two pipes: eight
/// chains would keep them busy), `n` steps each, added up once at the end
/// (a horizontal sum per chain made the compiler keep some on the stack).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_chains_avx512(n: usize) -> f32 {
    use std::arch::x86_64::*;
    // c -> 1: no overflow, no subnormals.
    let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-6));
    let mut c = [_mm512_set1_ps(0.5); 24];
    for _ in 0..n {
        for c in &mut c {
            *c = _mm512_fmadd_ps(a, *c, b);
        }
    }
    _mm512_reduce_add_ps(
        c.iter()
            .fold(_mm512_setzero_ps(), |s, &c| _mm512_add_ps(s, c)),
    )
}

/// 12 chains in ymm registers (16 of them: 12 chains, `a` and `b`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_chains_fma(n: usize) -> f32 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-6));
    let mut c = [_mm256_set1_ps(0.5); 12];
    for _ in 0..n {
        for c in &mut c {
            *c = _mm256_fmadd_ps(a, *c, b);
        }
    }
    let mut lanes = [0.0f32; 8];
    let sum = c
        .iter()
        .fold(_mm256_setzero_ps(), |s, &c| _mm256_add_ps(s, c));
    // SAFETY: `lanes` holds eight f32.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    lanes.iter().sum()
}

/// User plus system CPU time of this process so far, in seconds (0 where
/// /proc is missing).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the
    // 14th field overall, stime the 15th, in clock ticks (100 per second).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident set size of this process, from /proc/self/status (0 elsewhere).
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
