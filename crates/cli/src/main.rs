//! `sasrec`: train, evaluate and recommend with SASRec.

mod catalog;
mod data_cmd;
mod device;
mod devices_cmd;
mod eval_cmd;
mod export_cmd;
mod plot_cmd;
mod recommend_cmd;
mod recs_file;
mod serve_cmd;
mod train_cmd;

use std::process::ExitCode;

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
    /// Train a model into a run folder (or continue one with --resume).
    ///
    /// A flag given twice takes its last value (so wrappers can add defaults).
    /// Exit status: 0 when the run is done, 130 when Ctrl-C or SIGTERM
    /// stopped it (its progress saved), 1 on any error.
    #[command(args_override_self = true, allow_negative_numbers = true)]
    Train(Box<train_cmd::TrainArgs>),
    /// Evaluate a run's best checkpoint: HR@K, NDCG@K, MRR over all items.
    #[command(allow_negative_numbers = true)]
    Eval(eval_cmd::EvalArgs),
    /// Recommend the next items for a user, a list of items, or every user
    /// (into a Parquet, CSV or JSON Lines file).
    #[command(allow_negative_numbers = true)]
    Recommend(recommend_cmd::RecommendArgs),
    /// Serve recommendations over HTTP: POST /recommend, GET /healthz, /model, /stats.
    ///
    /// Prints the address it listens on to stdout; SIGTERM or Ctrl-C finish
    /// the requests in flight, then exit 0.
    Serve(serve_cmd::ServeArgs),
    /// Export the item embeddings and every user's vector (Parquet and .npy)
    /// for approximate-nearest-neighbour engines.
    Export(export_cmd::ExportArgs),
    /// Redraw a run's training curves (curves.svg).
    Plot(plot_cmd::PlotArgs),
    /// Inspect interaction data.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// List the GPU adapters wgpu finds, with backend, type, driver and limits.
    Devices,
}

/// The longest error message printed; messages quote values cut short
/// already, this bounds whatever slips through.
const MAX_ERROR_CHARS: usize = 1000;

fn main() -> ExitCode {
    restore_sigpipe();
    let cli = Cli::parse();
    let done = |result: anyhow::Result<()>| result.map(|()| ExitCode::SUCCESS);
    let result = match cli.command {
        Command::Train(args) => train_cmd::run(*args),
        Command::Eval(args) => done(eval_cmd::run(args)),
        Command::Recommend(args) => done(recommend_cmd::run(args)),
        Command::Serve(args) => done(serve_cmd::run(args)),
        Command::Export(args) => done(export_cmd::run(args)),
        Command::Plot(args) => done(plot_cmd::run(args)),
        Command::Data(cmd) => done(data_cmd::run(cmd)),
        Command::Devices => done(devices_cmd::run()),
    };
    result.unwrap_or_else(|err| {
        let message = sasrec_model::bounded(&format!("{err:#}"), MAX_ERROR_CHARS);
        eprintln!("error: {message}");
        ExitCode::FAILURE
    })
}

/// Rust ignores SIGPIPE, so printing into a closed pipe (`sasrec ... | head`)
/// would panic; with the default action the process ends quietly, as any
/// Unix tool does.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
