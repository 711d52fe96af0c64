//! `sasrec plot`: redraw a run's curves (loss and validation metrics per epoch).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use sasrec_model::RunDir;
use sasrec_model::plot::write_curves;
use sasrec_model::records::read_records;

/// `sasrec plot` flags.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Run folder written by `sasrec train`.
    #[arg(long, value_name = "DIR")]
    run: PathBuf,
}

/// Runs `sasrec plot`.
pub fn run(args: PlotArgs) -> Result<()> {
    let run = RunDir::new(&args.run);
    let records = read_records(&run.metrics())?;
    if records.is_empty() {
        bail!("{} has no epochs yet", run.metrics().display());
    }
    write_curves(&run.curves(), &records)?;
    println!("{} ({} epochs)", run.curves().display(), records.len());
    Ok(())
}
