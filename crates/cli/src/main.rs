//! `sasrec`: train, evaluate and recommend with SASRec.

mod data_cmd;
mod devices_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sasrec",
    version,
    about = "Self-attentive sequential recommendation (SASRec)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect interaction data.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// List the GPU adapters wgpu finds, with backend, type, driver and limits.
    Devices,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Data(cmd) => data_cmd::run(cmd),
        Command::Devices => devices_cmd::run(),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
