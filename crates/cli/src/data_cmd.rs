//! `sasrec data ...` (being written).
use clap::Subcommand;

/// Data subcommands.
#[derive(Subcommand)]
pub enum DataCommand {
    /// Print dataset statistics.
    Stats,
}

pub fn run(_cmd: DataCommand) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}
