//! `cargo xtask bench scale`: a MovieLens-32M-shaped log (200k users, 87k
//! items, 32M interactions, string ids, from `data synth`) loaded, trained
//! one epoch with the sampled softmax and evaluated, in one `sasrec train`
//! measured by `/usr/bin/time -v` (wall clock, peak RSS); beside it the full
//! softmax on the same data, stopped with SIGTERM after a few minutes, for
//! its time per step and projected epoch.
//!
//! The log goes to `$SASREC_BENCH_DIR` (default `target/bench`), shared with
//! `bench data`, and is reused when present.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::synth::{SynthArgs, synth};
use crate::util::{bench_dir, cargo, check, env_number, release_dir};

/// Rows of the MovieLens-32M-shaped log.
const ROWS: usize = 32_000_000;

pub fn run() -> Result<()> {
    let dir = bench_dir();
    std::fs::create_dir_all(&dir)?;
    let data = dir.join(format!("events_{ROWS}.parquet"));
    if !data.exists() {
        synth(&SynthArgs {
            users: 200_000,
            items: 87_000,
            rows: ROWS,
            seed: 0,
            out: data.clone(),
            string_ids: true,
            long_range: false,
        })?;
    }
    check(cargo().args(["build", "--release", "-p", "sasrec-cli"]))?;
    let sasrec = release_dir().join("sasrec");
    let negatives = env_number("SASREC_BENCH_NEGATIVES", 1024)?;
    let full_seconds = env_number("SASREC_BENCH_FULL_SECONDS", 600)?;

    // The whole run: read, train one epoch, validate, test, baseline.
    let run = dir.join("scale-sampled");
    let time_log = dir.join("scale-sampled.time");
    eprintln!("sampled softmax, {negatives} negatives: {}", run.display());
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-v").arg("-o").arg(&time_log).arg(&sasrec);
    cmd.args(train_args(&data, &run));
    cmd.args([
        "--loss",
        "sampled-softmax",
        "--negatives",
        &negatives.to_string(),
    ]);
    check(&mut cmd)?;
    let time = std::fs::read_to_string(&time_log)?;
    let wall = time_field(&time, "Elapsed (wall clock) time (h:mm:ss or m:ss)")?;
    let rss_kib: f64 = time_field(&time, "Maximum resident set size (kbytes)")?.parse()?;
    let epoch = first_epoch(&run)?;
    let steps = epoch["step"].as_f64().context("step")?;
    let train_seconds = epoch["seconds"].as_f64().context("seconds")?;
    let test: Value = serde_json::from_slice(&std::fs::read(run.join("test.json"))?)?;

    // The full softmax: the same command, stopped after `full_seconds`.
    let full = dir.join("scale-full");
    eprintln!("full softmax for {full_seconds} s: {}", full.display());
    let (full_steps, full_train_seconds) = stopped_run(&sasrec, &data, &full, full_seconds)?;
    let full_step = full_train_seconds / full_steps;

    let at10 = |part: &str, what: &str| -> Result<f64> {
        // The model's evaluation has its metrics under "ranking", the
        // baseline's are the metrics themselves.
        let metrics = &test[part];
        metrics.get("ranking").unwrap_or(metrics)["at"]
            .as_array()
            .and_then(|at| at.iter().find(|m| m["k"] == 10))
            .and_then(|m| m[what].as_f64())
            .with_context(|| format!("{part} {what}@10 in test.json"))
    };
    println!("MovieLens-32M-shaped synthetic log: {}", data.display());
    println!(
        "sampled softmax ({negatives} negatives), load + 1 epoch + validation + test: wall {wall}, peak RSS {:.2} GiB",
        rss_kib / (1 << 20) as f64
    );
    println!(
        "  training: {steps:.0} steps in {train_seconds:.0} s ({:.3} s/step, {:.0} tokens/s)",
        train_seconds / steps,
        epoch["tokens_per_s"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "  test NDCG@10 {:.4}, HR@10 {:.4} (most popular: {:.4}, {:.4})",
        at10("test", "ndcg")?,
        at10("test", "hr")?,
        at10("most_popular_test", "ndcg")?,
        at10("most_popular_test", "hr")?
    );
    println!(
        "full softmax: {full_steps:.0} steps in {full_train_seconds:.0} s: {full_step:.2} s/step, projected epoch {:.1} h ({:.1}x the sampled step)",
        full_step * steps / 3600.0,
        full_step / (train_seconds / steps)
    );
    Ok(())
}

/// `sasrec train` on `data` into `out` (replaced), one epoch, at the
/// notebook's sizes.
fn train_args(data: &Path, out: &Path) -> Vec<String> {
    [
        "train",
        "--ratings",
        &data.display().to_string(),
        "--dim",
        "64",
        "--max-len",
        "50",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        &out.display().to_string(),
        "--force",
    ]
    .map(String::from)
    .to_vec()
}

/// A field of `/usr/bin/time -v`'s report.
fn time_field(report: &str, name: &str) -> Result<String> {
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("no {name:?} in /usr/bin/time's report"))
}

/// The first line of a run's metrics.jsonl.
fn first_epoch(run: &Path) -> Result<Value> {
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl"))?;
    let line = metrics.lines().next().context("metrics.jsonl is empty")?;
    Ok(serde_json::from_str(line)?)
}

/// Runs a full-softmax epoch for `seconds`, then stops it with SIGTERM (it
/// commits its progress); returns the steps taken and their training time
/// from its state.json.
fn stopped_run(sasrec: &Path, data: &Path, out: &Path, seconds: u64) -> Result<(f64, f64)> {
    let mut child = Command::new(sasrec)
        .args(train_args(data, out))
        .args(["--loss", "full"])
        .stderr(Stdio::null())
        .spawn()
        .context("starting sasrec train")?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        if child.try_wait()?.is_some() {
            bail!("sasrec train --loss full ended before it was stopped");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    check(Command::new("kill").args(["-TERM", &child.id().to_string()]))?;
    child.wait()?;
    let state: Value = serde_json::from_slice(&std::fs::read(out.join("state.json"))?)?;
    let progress = &state["progress"];
    let steps = progress["batch"].as_f64().context("progress.batch")?;
    let seconds = progress["epoch_seconds"]
        .as_f64()
        .context("progress.epoch_seconds")?;
    if steps == 0.0 {
        bail!("the full softmax took no step in {seconds} s");
    }
    Ok((steps, seconds))
}
