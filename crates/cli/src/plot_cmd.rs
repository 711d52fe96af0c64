//! `sasrec plot`: redraw a run's curves (loss and validation metrics per epoch).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use sasrec_model::RunWriter;

/// `sasrec plot` flags.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Run folder written by `sasrec train`.
    #[arg(long, value_name = "DIR")]
    run: PathBuf,
}

/// Runs `sasrec plot`: rewrites the run's published files (curves.svg,
/// metrics.jsonl, model.safetensors) from its committed state where they
/// differ, under the run folder's lock.
pub fn run(args: PlotArgs) -> Result<()> {
    let mut run = RunWriter::open(&args.run, "plot")?;
    let recovery = run.recover()?;
    if !recovery.is_clean() {
        eprintln!("note: repaired {}: {recovery}", args.run.display());
    }
    let Some(commit) = run.committed().filter(|c| !c.epochs.is_empty()) else {
        bail!("{} has no finished epoch yet", args.run.display());
    };
    println!(
        "{} ({} epochs)",
        run.dir().curves().display(),
        commit.epochs.len()
    );
    Ok(())
}
