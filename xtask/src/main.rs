//! Project tasks, run as `cargo xtask <task>`.
//!
//! - `train`: train the default model on MovieLens latest-small (fetching it
//!   when absent), report validation and test metrics, show a recommendation;
//! - `eval`: evaluate the newest run;
//! - `bench`: the benchmarks (data reading, kernels, training throughput
//!   side by side with PyTorch; `scale`: a MovieLens-32M-shaped run;
//!   `quality`: the training losses compared);
//! - `data fetch NAME`: download a MovieLens release;
//! - `data synth`: write a synthetic log with a planted sequential signal.

mod bench;
mod fetch;
mod quality;
mod scale;
mod serve_bench;
mod synth;
mod util;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::synth::{SynthArgs, generate, synth};
use crate::util::{cargo, root};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Train the default SASRec on MovieLens latest-small (leave-one-out,
    /// early stopping on validation NDCG@10), then print validation and test
    /// metrics and an example recommendation.
    Train {
        /// cpu, gpu or auto.
        #[arg(long, default_value = "auto")]
        device: String,
        /// Run folder (default: runs/latest-small, -2, -3, ... whichever is free).
        #[arg(long)]
        out: Option<PathBuf>,
        /// More `sasrec train` flags, after `--` (e.g. -- --adapter llvmpipe --epochs 5).
        #[arg(last = true)]
        extra: Vec<String>,
    },
    /// Evaluate the newest run under runs/ on its test users.
    Eval {
        /// More `sasrec eval` flags, after `--`.
        #[arg(last = true)]
        extra: Vec<String>,
    },
    /// Run benchmarks and print the figures docs/benchmarks.md reports.
    Bench {
        /// data, kernels, train, all, serve, scale or quality.
        #[arg(default_value = "all")]
        what: bench::Which,
        /// The training data of `bench train`: MovieLens latest-small, or
        /// the seed-scale synthetic log (20k users, 40k items, 2.3M events).
        #[arg(long, value_enum, default_value = "latest-small")]
        data: bench::TrainData,
    },
    /// Datasets.
    #[command(subcommand)]
    Data(DataTask),
}

#[derive(Subcommand)]
enum DataTask {
    /// Download, verify and unpack a MovieLens dataset into $SASREC_DATASETS
    /// (else ./datasets), unless it is already there; prints its ratings file.
    /// $SASREC_DATA_MIRROR replaces the GroupLens URL base.
    Fetch {
        /// latest-small, 100k, 1m, 10m, 20m, 25m or 32m.
        name: String,
    },
    /// Write a synthetic log with a planted sequential signal (item-to-item
    /// transitions, popularity skew): CSV, or Parquet for `*.parquet`.
    Synth(SynthArgs),
    /// Write a synthetic shop event log (CSV: customer_id, sku, event_type,
    /// event_time): each event of `synth`'s log is a view, some followed by
    /// a cart and a purchase, some logged twice.
    Shop(SynthArgs),
}

fn main() {
    let result = match Cli::parse().task {
        Task::Train { device, out, extra } => train(&device, out, &extra),
        Task::Eval { extra } => eval(&extra),
        Task::Bench { what, data } => bench::run(what, data),
        Task::Data(DataTask::Fetch { name }) => {
            fetch::ensure_dataset(&name).map(|ratings| println!("{}", ratings.display()))
        }
        Task::Data(DataTask::Synth(args)) => synth(&args),
        Task::Data(DataTask::Shop(args)) => generate(&args, true),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

/// Runs `sasrec ARGS` from a release build; cargo shows its progress while
/// it builds (minutes, the first time).
fn sasrec(args: &[String]) -> Result<()> {
    eprintln!("building sasrec (release) with cargo, then running it");
    let status = cargo()
        .args([
            "run",
            "--release",
            "--package",
            "sasrec-cli",
            "--bin",
            "sasrec",
            "--",
        ])
        .args(args)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!(
            "sasrec {} failed ({status})",
            args.first().map(String::as_str).unwrap_or("")
        );
    }
    Ok(())
}

fn train(device: &str, out: Option<PathBuf>, extra: &[String]) -> Result<()> {
    // The run folder is this command's own flag: the recommendation after
    // training reads it.
    if extra
        .iter()
        .any(|a| a == "--out" || a.starts_with("--out="))
    {
        bail!("give the run folder as `cargo xtask train --out DIR`, before `--`");
    }
    let ratings = fetch::ensure_dataset("latest-small")?;
    let out = out.unwrap_or_else(|| {
        let runs = root().join("runs");
        (1..)
            .map(|i| {
                runs.join(if i == 1 {
                    "latest-small".to_string()
                } else {
                    format!("latest-small-{i}")
                })
            })
            .find(|p| !p.exists())
            .expect("some name is free")
    });
    let mut args: Vec<String> = [
        "train",
        "--ratings",
        &ratings.display().to_string(),
        "--split",
        "leave-one-out",
        "--epochs",
        "300",
        "--patience",
        "20",
        "--select",
        "ndcg@10",
        "--device",
        device,
        "--out",
        &out.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().cloned());
    sasrec(&args)?;

    println!();
    // One forward pass: the CPU is always quick enough.
    let recommend = [
        "recommend",
        "--run",
        &out.display().to_string(),
        "--user",
        "1",
        "--k",
        "10",
        "--device",
        "cpu",
    ];
    sasrec(&recommend.map(String::from))
}

fn eval(extra: &[String]) -> Result<()> {
    let runs = root().join("runs");
    let newest = std::fs::read_dir(&runs)
        .with_context(|| {
            format!(
                "no runs in {} yet: train one with `cargo xtask train`",
                runs.display()
            )
        })?
        .flatten()
        .filter_map(|e| {
            let modified = e
                .path()
                .join("model.safetensors")
                .metadata()
                .and_then(|m| m.modified())
                .ok()?;
            Some((modified, e.path()))
        })
        .max()
        .map(|(_, path)| path)
        .with_context(|| {
            format!(
                "no trained run in {}: train one with `cargo xtask train`",
                runs.display()
            )
        })?;
    let mut args = vec![
        "eval".to_string(),
        "--run".to_string(),
        newest.display().to_string(),
    ];
    args.extend(extra.iter().cloned());
    sasrec(&args)
}
