//! The `sasrec` command's subcommands as a library: the binary
//! (`src/main.rs`) parses the command line and runs one; the Python package
//! (`python/`) runs `train` from keyword arguments and loads runs with
//! [`catalog`], so that both give the same runs, numbers and messages.

pub mod catalog;
pub mod config_file;
pub mod data_cmd;
pub mod device;
pub mod devices_cmd;
pub mod eval_cmd;
pub mod export_cmd;
pub mod http_server;
pub mod output;
pub mod plot_cmd;
pub mod recommend_cmd;
pub mod recs_file;
pub mod runs_cmd;
pub mod serve_cmd;
pub mod sweep_cmd;
pub mod table;
pub mod train_cmd;

use clap::Args;

/// The `sasrec train` command, its flags as clap knows them (the settings
/// a config file or the Python package may give).
pub fn train_command() -> clap::Command {
    train_cmd::TrainArgs::augment_args(clap::Command::new("train"))
        .args_override_self(true)
        .allow_negative_numbers(true)
}
