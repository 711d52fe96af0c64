//! `cargo xtask bench`: every benchmark the docs report, run the same way
//! each time. Timings are medians of several runs; comparisons with other
//! tools (pandas, PyTorch) run side by side in one invocation.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

use crate::{cargo, root};

/// Which benchmarks to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// Reading a 10M-row ratings file: ours vs pandas.
    Data,
    /// The fused cross-entropy (time and peak memory), criterion.
    Kernels,
    /// Training throughput (tokens/s) at the notebook's sizes: ours vs PyTorch.
    Train,
    /// All of the above.
    All,
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
    Ok(())
}

fn check(cmd: &mut Command) -> Result<()> {
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
    let file = root().join("target/bench/ratings_10m.csv");
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
    ])
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
    let key = "\"tokens_per_s\":";
    let start = json_line
        .find(key)
        .with_context(|| format!("no tokens_per_s in {json_line:?}"))?
        + key.len();
    let rest = json_line[start..].trim_start();
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end]
        .trim()
        .parse()
        .with_context(|| format!("bad tokens_per_s in {json_line:?}"))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
