//! `cargo xtask bench`: every benchmark the docs report, run the same way
//! each time. Timings are medians of several runs; comparisons with other
//! tools (pandas, PyTorch) run side by side in one invocation.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

use crate::synth::{SynthArgs, synth};
use crate::util::{bench_dir, cargo, check, env_number, median, release_dir, root};

/// Which benchmarks to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// Reading logs: a 10M-row MovieLens-shaped CSV (ours vs pandas), and a
    /// 32M-row log with string ids as CSV and Parquet (ours vs pandas and
    /// pyarrow, time and peak memory).
    Data,
    /// The fused cross-entropy (time and peak memory), criterion.
    Kernels,
    /// Training throughput (tokens/s) at the notebook's sizes: ours vs PyTorch.
    Train,
    /// `sasrec serve` under 1, 16 and 64 concurrent clients: requests/s,
    /// p50/p99 latency and the batch sizes formed; then 16 clients alone
    /// and beside 600 connections held open by idle and slow clients.
    Serve,
    /// All of the above (not scale and quality, which take hours).
    All,
    /// A MovieLens-32M-shaped log trained one epoch with the sampled softmax
    /// and evaluated (wall clock, peak RSS), beside the full softmax's time
    /// per step (about 1 hour on 2 cores).
    Scale,
    /// Test NDCG@10 / HR@10 of every training loss on latest-small and a
    /// synthetic log, 3 seeds each, resumable (about 3 hours on 2 cores).
    Quality,
}

/// The data `bench train` trains on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TrainData {
    /// MovieLens latest-small, leave-one-out training windows.
    LatestSmall,
    /// Seed scale: the planted-signal synthetic log (20k users, 40k items,
    /// 2.3M events, written to target/bench once), the notebook's 90/10
    /// random-users split.
    Synth,
}

/// Runs the chosen benchmarks.
pub fn run(which: Which, train_data: TrainData) -> Result<()> {
    if matches!(which, Which::Data | Which::All) {
        data()?;
    }
    if matches!(which, Which::Kernels | Which::All) {
        check(cargo().args(["bench", "-p", "sasrec-kernels", "--bench", "cross_entropy"]))?;
    }
    if matches!(which, Which::Train | Which::All) {
        train(train_data)?;
    }
    if matches!(which, Which::Serve | Which::All) {
        crate::serve_bench::serve()?;
    }
    match which {
        Which::Scale => crate::scale::run(),
        Which::Quality => crate::quality::run(),
        _ => Ok(()),
    }
}

/// Output of a command, which must succeed.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn data() -> Result<()> {
    let file = bench_dir().join("ratings_10m.csv");
    if !file.exists() {
        std::fs::create_dir_all(file.parent().expect("has a parent"))?;
        check(
            cargo()
                .args([
                    "run",
                    "--release",
                    "-p",
                    "sasrec-data",
                    "--example",
                    "gen_ratings",
                    "--",
                ])
                .arg(&file)
                .arg("10000000"),
        )?;
    }
    check(
        cargo()
            .args(["bench", "-p", "sasrec-data", "--bench", "read"])
            .env("SASREC_BENCH_FILE", &file),
    )?;
    python(&[
        "scripts/bench_read_pandas.py",
        &file.display().to_string(),
        "--runs",
        "7",
    ])?;
    logs()
}

/// A MovieLens-32M-sized log with string ids (200k users, 87k items; rows
/// from SASREC_BENCH_LOG_ROWS, default 32M) as CSV and as Parquet, read by
/// ours, pandas and pyarrow, each read in its own process (peak memory is
/// that read's), three rounds alternating; medians.
fn logs() -> Result<()> {
    let rows = env_number("SASREC_BENCH_LOG_ROWS", 32_000_000)? as usize;
    let dir = bench_dir();
    std::fs::create_dir_all(&dir)?;
    let files: Vec<_> = ["csv", "parquet"]
        .iter()
        .map(|ext| dir.join(format!("events_{rows}.{ext}")))
        .collect();
    for file in &files {
        if !file.exists() {
            synth(&SynthArgs {
                users: 200_000,
                items: 87_000,
                rows,
                seed: 0,
                out: file.clone(),
                string_ids: true,
                long_range: false,
            })?;
        }
    }
    check(cargo().args([
        "build",
        "--release",
        "-p",
        "sasrec-data",
        "--example",
        "read_log",
    ]))?;
    let ours = release_dir().join("examples/read_log");
    let tools = ["sasrec", "pandas", "pyarrow"];
    // (file, tool) -> seconds and peak RSS of each round.
    let mut results = vec![vec![(Vec::new(), Vec::new()); tools.len()]; files.len()];
    let mut column_bytes = 0.0;
    for round in 1..=3 {
        for (f, file) in files.iter().enumerate() {
            for (t, tool) in tools.iter().enumerate() {
                let line = if *tool == "sasrec" {
                    output(Command::new(&ours).arg(file))?
                } else {
                    output(
                        Command::new("python3")
                            .arg("scripts/bench_read_log.py")
                            .arg(tool)
                            .arg(file)
                            .current_dir(root()),
                    )?
                };
                eprintln!("round {round}: {}", line.trim());
                let (seconds, rss) = (
                    json_number(&line, "seconds")?,
                    json_number(&line, "peak_rss_bytes")?,
                );
                results[f][t].0.push(seconds);
                results[f][t].1.push(rss);
                if *tool == "sasrec" {
                    column_bytes = json_number(&line, "column_bytes")?;
                }
            }
        }
    }
    println!("{rows} rows, string ids; medians of 3 (read + ids to dense codes):");
    println!(
        "{:<10} {:<8} {:>9} {:>12} {:>14}",
        "file", "tool", "seconds", "M rows/s", "peak RSS MiB"
    );
    for (f, file) in files.iter().enumerate() {
        let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
        for (t, tool) in tools.iter().enumerate() {
            let (seconds, rss) = &mut results[f][t];
            let (s, m) = (median(seconds), median(rss));
            println!(
                "{ext:<10} {tool:<8} {s:>9.2} {:>12.2} {:>14.0}",
                rows as f64 / s / 1e6,
                m / (1 << 20) as f64
            );
        }
    }
    println!(
        "final columns (user and item codes, times): {:.0} MiB",
        column_bytes / (1 << 20) as f64
    );
    Ok(())
}

fn python(args: &[&str]) -> Result<()> {
    check(Command::new("python3").args(args).current_dir(root()))
        .context("python3 with pandas/torch is needed for the comparison (pip install torch pandas safetensors)")
}

/// PyTorch's CPU modes the train bench runs: name and flags of
/// `scripts/bench_train_torch.py`.
const TORCH_MODES: [(&str, &[&str]); 4] = [
    ("PyTorch eager", &[]),
    ("PyTorch eager + bf16 autocast", &["--autocast", "bf16"]),
    ("PyTorch compile", &["--compile"]),
    (
        "PyTorch compile + bf16 autocast",
        &["--compile", "--autocast", "bf16"],
    ),
];

/// Training throughput, ours (f32, and bf16 where the CPU has it) vs
/// PyTorch's CPU modes (eager and torch.compile, each with and without
/// bf16 autocast), alternating, 5 rounds (`SASREC_BENCH_ROUNDS`), each run
/// in its own process: on the CPU at 1 thread and at all threads (with the
/// sgemm rate at the step's shapes measured in the same rounds), then on
/// the GPU when there is one. Medians of step time, tokens/s, CPU time per
/// step and peak RSS.
fn train(data: TrainData) -> Result<()> {
    check(cargo().args([
        "build",
        "--release",
        "-p",
        "sasrec-model",
        "--example",
        "train_throughput",
    ]))?;
    let ours = release_dir().join("examples/train_throughput");
    // Seed scale: a PyTorch step takes seconds, so fewer steps per run.
    let (data_arg, steps, warmup) = match data {
        TrainData::LatestSmall => ("latest-small".to_string(), "20", "3"),
        TrainData::Synth => (seed_scale_log()?.display().to_string(), "3", "1"),
    };
    let common = ["--data", &data_arg, "--steps", steps, "--warmup", warmup];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut threads = vec![1];
    if cores > 1 {
        threads.push(cores);
    }
    let rounds = env_number("SASREC_BENCH_ROUNDS", 5)?.max(1);
    // Our bf16 products, where this CPU has them (else the reason, once).
    let bf16 = match output(Command::new(&ours).args(["--precision", "bf16", "--probe"])) {
        Ok(_) => true,
        Err(why) => {
            eprintln!("not running our bf16 step: {why:#}");
            false
        }
    };
    for &count in &threads {
        let n = count.to_string();
        let (mut a, mut a16) = (Runs::default(), Runs::default());
        let mut torch = TORCH_MODES.map(|_| Runs::default());
        let (mut sgemm, mut peak) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            let line = output(
                Command::new(&ours)
                    .args(["--device", "cpu", "--threads", &n])
                    .args(common),
            )?;
            a.push(&line)?;
            eprintln!("round {round}, {n} threads:\n  {}", line.trim());
            if bf16 {
                let line = output(
                    Command::new(&ours)
                        .args(["--device", "cpu", "--precision", "bf16", "--threads", &n])
                        .args(common),
                )?;
                a16.push(&line)?;
                eprintln!("  {}", line.trim());
            }
            for ((_, flags), runs) in TORCH_MODES.iter().zip(&mut torch) {
                let line = output(
                    Command::new("python3")
                        .args(["scripts/bench_train_torch.py", "--device", "cpu"])
                        .args(["--threads", &n])
                        .args(common)
                        .args(*flags)
                        .current_dir(root()),
                )?;
                runs.push(&line)?;
                eprintln!("  {}", line.trim());
            }
            let rate = output(
                Command::new(&ours)
                    .args(["--sgemm", "--threads", &n])
                    .args(common),
            )?;
            // The machine's sgemm rate: the better of ours and matrixmultiply,
            // per CPU second (steady under other jobs' load).
            sgemm.push(
                json_number(&rate, "ours_gflop_per_cpu_s")?
                    .max(json_number(&rate, "matrixmultiply_gflop_per_cpu_s")?),
            );
            // The cores' FMA peak (absent on CPUs without FMA).
            if let Ok(p) = json_number(&rate, "fma_peak_gflop_per_cpu_s") {
                peak.push(p);
            }
            eprintln!("  {}", rate.trim());
        }
        let sgemm = median(&mut sgemm);
        // The step's rate per CPU second, comparable with the sgemm's.
        let step_gflops = median(&mut a.gflop_per_cpu_s);
        // PyTorch eager, the reference of the earlier tables.
        let torch_ms = median(&mut torch[0].step_ms.clone());
        println!("{data:?}, CPU, {n} thread(s), medians of {rounds}:");
        a.print("ours fp32");
        if bf16 {
            a16.print("ours bf16");
        }
        for ((name, _), runs) in TORCH_MODES.iter().zip(&mut torch) {
            runs.print(name);
        }
        for (name, ours) in [("ours fp32", &a), ("ours bf16", &a16)] {
            if ours.cpu_s.is_empty() {
                continue;
            }
            let ratios: Vec<String> = TORCH_MODES
                .iter()
                .zip(&torch)
                .map(|((mode, _), t)| {
                    format!(
                        "{:.2}x {mode}",
                        median(&mut t.cpu_s.clone()) / median(&mut ours.cpu_s.clone())
                    )
                })
                .collect();
            println!("  {name} by CPU time per step: {}", ratios.join(", "));
        }
        println!(
            "  ours fp32 step at {step_gflops:.1} GFLOP per CPU second = {:.0}% of the sgemm rate at the step's shapes ({sgemm:.1})",
            100.0 * step_gflops / sgemm
        );
        if !peak.is_empty() {
            let peak = median(&mut peak);
            // A step in a fifth of PyTorch's wall time, all `count` cores
            // busy: GFLOP per CPU second.
            let five_x = median(&mut a.gflop_per_step) * 5.0 / (torch_ms / 1e3) / count as f64;
            println!(
                "  the cores' FMA peak {peak:.1} GFLOP per CPU second: the step at {:.0}% of it; 5x PyTorch would need {five_x:.1} ({:.0}%)",
                100.0 * step_gflops / peak,
                100.0 * five_x / peak
            );
        }
    }
    if gpu_present(&ours)? {
        let (mut a, mut b) = (Runs::default(), Runs::default());
        for round in 1..=5 {
            let line = output(Command::new(&ours).args(["--device", "gpu"]).args(common))?;
            a.push(&line)?;
            let torch = output(
                Command::new("python3")
                    .args(["scripts/bench_train_torch.py", "--device", "cuda"])
                    .args(common)
                    .current_dir(root()),
            )?;
            b.push(&torch)?;
            eprintln!("round {round}, gpu:\n  {}\n  {}", line.trim(), torch.trim());
        }
        println!("{data:?}, GPU / torch cuda, medians of 5:");
        a.print("ours");
        b.print("PyTorch");
        println!(
            "  ratio {:.2}x PyTorch",
            median(&mut b.step_ms.clone()) / median(&mut a.step_ms.clone())
        );
    }
    Ok(())
}

/// The seed-scale synthetic log, written once.
fn seed_scale_log() -> Result<std::path::PathBuf> {
    let file = root().join("target/bench/synth_20k_40k_2300k.csv");
    if !file.exists() {
        std::fs::create_dir_all(file.parent().expect("has a parent"))?;
        synth(&SynthArgs {
            users: 20_000,
            items: 40_000,
            rows: 2_300_000,
            seed: 0,
            out: file.clone(),
            string_ids: false,
            long_range: false,
        })?;
    }
    Ok(file)
}

/// The figures of one side's throughput runs.
#[derive(Default)]
struct Runs {
    step_ms: Vec<f64>,
    tokens_per_s: Vec<f64>,
    rss: Vec<f64>,
    /// CPU seconds per step (user + system): on a shared machine, what the
    /// step costs, whatever else the cores run.
    cpu_s: Vec<f64>,
    gflop_per_cpu_s: Vec<f64>,
    gflop_per_step: Vec<f64>,
}

impl Runs {
    fn push(&mut self, json_line: &str) -> Result<()> {
        self.step_ms.push(json_number(json_line, "step_ms")?);
        self.tokens_per_s.push(tokens_per_s(json_line)?);
        self.rss.push(json_number(json_line, "peak_rss_bytes")?);
        self.cpu_s.push(json_number(json_line, "cpu_s_per_step")?);
        if let Ok(g) = json_number(json_line, "gflop_per_step") {
            self.gflop_per_cpu_s
                .push(g / json_number(json_line, "cpu_s_per_step")?);
            self.gflop_per_step.push(g);
        }
        Ok(())
    }

    fn print(&mut self, name: &str) {
        println!(
            "  {name:<32} {:>9.1} ms/step {:>10.0} tokens/s {:>8.3} CPU s/step {:>7.0} MiB peak RSS",
            median(&mut self.step_ms),
            median(&mut self.tokens_per_s),
            median(&mut self.cpu_s),
            median(&mut self.rss) / (1 << 20) as f64
        );
    }
}

/// Whether the throughput example can open a real GPU.
fn gpu_present(ours: &Path) -> Result<bool> {
    Ok(Command::new(ours)
        .args(["--device", "gpu", "--probe"])
        .output()?
        .status
        .success())
}

fn tokens_per_s(json_line: &str) -> Result<f64> {
    json_number(json_line, "tokens_per_s")
}

/// The number under `key` in a one-line JSON object.
fn json_number(json_line: &str, key: &str) -> Result<f64> {
    let quoted = format!("\"{key}\":");
    let start = json_line
        .find(&quoted)
        .with_context(|| format!("no {key} in {json_line:?}"))?
        + quoted.len();
    let rest = json_line[start..].trim_start();
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end]
        .trim()
        .parse()
        .with_context(|| format!("bad {key} in {json_line:?}"))
}
