//! The `sasrec` command's subcommands as a library: the binary
//! (`src/main.rs`) parses the command line and runs one; the Python package
//! (`python/`) runs `train` from keyword arguments and loads runs with
//! [`run_loading`], so that both give the same runs, numbers and messages.
//!
//! Each `*_cmd.rs` is one subcommand; the flag groups several of them
//! share are in [`args`].

pub mod args;
pub mod catalog;
pub mod config_file;
pub mod data_cmd;
pub mod data_summary;
pub mod device;
pub mod devices_cmd;
pub mod eval_cmd;
pub mod export_cmd;
pub mod http_server;
pub mod output;
pub mod plot_cmd;
pub mod progress;
pub mod recommend_cmd;
pub mod recs_file;
pub mod run_loading;
pub mod runs_cmd;
pub mod serve_cmd;
pub mod sweep_cmd;
pub mod table;
pub mod train_cmd;
