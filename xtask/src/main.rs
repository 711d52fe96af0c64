//! Project tasks, run as `cargo xtask <task>`.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Placeholder.
    Nothing,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Nothing => Ok(()),
    }
}
