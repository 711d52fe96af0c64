//! `sasrec`: train, evaluate and recommend with SASRec.

mod data_cmd;
mod device;
mod devices_cmd;
mod eval_cmd;
mod plot_cmd;
mod recommend_cmd;
mod train_cmd;

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
    #[command(args_override_self = true)]
    Train(Box<train_cmd::TrainArgs>),
    /// Evaluate a run's best checkpoint: HR@K, NDCG@K, MRR over all items.
    Eval(eval_cmd::EvalArgs),
    /// Recommend the next movies for a user or a list of movies.
    Recommend(recommend_cmd::RecommendArgs),
    /// Redraw a run's training curves (curves.svg).
    Plot(plot_cmd::PlotArgs),
    /// Inspect interaction data.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// List the GPU adapters wgpu finds, with backend, type, driver and limits.
    Devices,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train_cmd::run(*args),
        Command::Eval(args) => eval_cmd::run(args),
        Command::Recommend(args) => recommend_cmd::run(args),
        Command::Plot(args) => plot_cmd::run(args),
        Command::Data(cmd) => data_cmd::run(cmd),
        Command::Devices => devices_cmd::run(),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
