//! `cargo xtask data synth` and `data shop`: synthetic logs written by the
//! data crate's `synth` example, which the benchmarks also generate their
//! logs with.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::util::{cargo, check};

/// `cargo xtask data synth` flags.
#[derive(clap::Args)]
pub struct SynthArgs {
    /// Users (each gets at least 2 events).
    #[arg(long)]
    pub users: usize,
    /// Items.
    #[arg(long)]
    pub items: usize,
    /// Events (rows), at least 2 x users.
    #[arg(long)]
    pub rows: usize,
    /// Seed: the same flags give the same file.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file: `*.csv` or `*.parquet`.
    #[arg(long)]
    pub out: PathBuf,
    /// String ids (`U…`, `I…`) instead of integers.
    #[arg(long)]
    pub string_ids: bool,
    /// The harder setting with longer-range structure: each user follows
    /// the successors of the item 1 to 3 steps back and draws the rest
    /// from their own taste group.
    #[arg(long)]
    pub long_range: bool,
}

/// Runs the generator from a release build (it writes millions of rows).
pub fn synth(args: &SynthArgs) -> Result<()> {
    generate(args, false)
}

/// Runs the data crate's `synth` example: `synth`'s log, or with `shop` the
/// shop event log made from it.
pub fn generate(args: &SynthArgs, shop: bool) -> Result<()> {
    let out = std::path::absolute(&args.out).context("resolving --out")?;
    let mut cmd = cargo();
    eprintln!("building the generator (release) with cargo, then running it");
    cmd.args([
        "run",
        "--release",
        "-p",
        "sasrec-data",
        "--example",
        "synth",
        "--",
    ])
    .args(["--users", &args.users.to_string()])
    .args(["--items", &args.items.to_string()])
    .args(["--rows", &args.rows.to_string()])
    .args(["--seed", &args.seed.to_string()])
    .arg("--out")
    .arg(out);
    if args.string_ids {
        cmd.arg("--string-ids");
    }
    if shop {
        cmd.arg("--shop");
    }
    if args.long_range {
        cmd.arg("--long-range");
    }
    check(&mut cmd)
}
