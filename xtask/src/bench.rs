//! `cargo xtask bench`: every benchmark the docs report, run the same way
//! each time. Timings are medians of several runs; comparisons with other
//! tools (pandas, PyTorch) run side by side in one invocation.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

use crate::{cargo, root};

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
    /// p50/p99 latency and the batch sizes formed.
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

/// Runs the chosen benchmarks.
pub fn run(which: Which) -> Result<()> {
    if matches!(which, Which::Data | Which::All) {
        data()?;
    }
    if matches!(which, Which::Kernels | Which::All) {
        check(cargo().args(["bench", "-p", "sasrec-kernels", "--bench", "cross_entropy"]))?;
    }
    if matches!(which, Which::Train | Which::All) {
        train()?;
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

/// Where generated benchmark data and runs go: `$SASREC_BENCH_DIR`, else
/// `target/bench`.
pub(crate) fn bench_dir() -> PathBuf {
    std::env::var_os("SASREC_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/bench"))
}

/// The number in environment variable `name`, `default` when it is unset;
/// anything but a whole number is an error naming the variable.
pub(crate) fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(value) => value
            .trim()
            .parse()
            .with_context(|| format!("{name}={value:?} is not a whole number")),
    }
}

pub(crate) fn check(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
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
            crate::synth(&crate::SynthArgs {
                users: 200_000,
                items: 87_000,
                rows,
                seed: 0,
                out: file.clone(),
                string_ids: true,
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
    let ours = root().join("target/release/examples/read_log");
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

/// Tokens/s of ours and of PyTorch, alternating, 5 rounds each; medians and ratio.
fn train() -> Result<()> {
    check(cargo().args([
        "build",
        "--release",
        "-p",
        "sasrec-model",
        "--example",
        "train_throughput",
    ]))?;
    let ours = root().join("target/release/examples/train_throughput");
    let devices: &[(&str, &str)] = if gpu_present(&ours)? {
        &[("cpu", "cpu"), ("gpu", "cuda")]
    } else {
        &[("cpu", "cpu")]
    };
    for &(our_device, torch_device) in devices {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for round in 0..5 {
            a.push(tokens_per_s(&output(
                Command::new(&ours).args(["--device", our_device]),
            )?)?);
            let torch = output(
                Command::new("python3")
                    .args(["scripts/bench_train_torch.py", "--device", torch_device])
                    .current_dir(root()),
            )?;
            b.push(tokens_per_s(&torch)?);
            eprintln!(
                "round {}: ours {:.0} tok/s, pytorch {:.0} tok/s",
                round + 1,
                a[round],
                b[round]
            );
        }
        let (ma, mb) = (median(&mut a), median(&mut b));
        println!(
            "training throughput ({our_device} / torch {torch_device}): ours {ma:.0} tok/s, PyTorch {mb:.0} tok/s, ratio {:.2} (medians of 5)",
            ma / mb
        );
    }
    Ok(())
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

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
