//! `sasrec`: train, evaluate and recommend with SASRec.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use sasrec_cli::{
    config_file, data_cmd, devices_cmd, eval_cmd, export_cmd, plot_cmd, recommend_cmd, runs_cmd,
    serve_cmd, sweep_cmd, train_cmd,
};

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
    /// Settings come from flags, from a TOML file (--config run.toml, keys
    /// named as the flags in snake_case) or from a run's config.json; a flag
    /// given twice, or given besides the file, takes its last value.
    /// Exit status: 0 when the run is done, 130 when Ctrl-C or SIGTERM
    /// stopped it (its progress saved), 1 on any error.
    #[command(args_override_self = true, allow_negative_numbers = true)]
    Train(Box<train_cmd::TrainArgs>),
    /// Train a grid of settings over several seeds from a TOML file, one run
    /// after another, then tabulate mean and spread per setting.
    ///
    /// Resumable: finished runs are skipped, an interrupted one continues.
    Sweep(sweep_cmd::SweepArgs),
    /// Compare runs: the settings that differ, best epoch, validation and
    /// test metrics, time.
    Runs(runs_cmd::RunsArgs),
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
    /// Redraw a run's training curves (curves.svg), or overlay several runs.
    Plot(plot_cmd::PlotArgs),
    /// Inspect interaction data.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// List the GPU adapters the wgpu backend can use, with backend, type,
    /// driver and limits, and which one --device gpu opens.
    Devices,
}

/// The longest error message printed; messages quote values cut short
/// already, this bounds whatever slips through.
const MAX_ERROR_CHARS: usize = 1000;

fn main() -> ExitCode {
    restore_sigpipe();
    sasrec_kernels::cpu::retain_freed_memory();
    quiet_vulkan_layer();
    let result = parse().and_then(|(cli, matches)| {
        let done = |result: anyhow::Result<()>| result.map(|()| ExitCode::SUCCESS);
        match cli.command {
            Command::Train(args) => {
                let train = matches
                    .subcommand_matches("train")
                    .expect("parsed as train");
                train_cmd::run(*args, train)
            }
            Command::Sweep(args) => sweep_cmd::run(args),
            Command::Runs(args) => done(runs_cmd::run(args)),
            Command::Eval(args) => done(eval_cmd::run(args)),
            Command::Recommend(args) => done(recommend_cmd::run(args)),
            Command::Serve(args) => done(serve_cmd::run(args)),
            Command::Export(args) => done(export_cmd::run(args)),
            Command::Plot(args) => done(plot_cmd::run(args)),
            Command::Data(cmd) => done(data_cmd::run(cmd)),
            Command::Devices => done(devices_cmd::run()),
        }
    });
    result.unwrap_or_else(|err| {
        let message = sasrec_model::bounded(&format!("{err:#}"), MAX_ERROR_CHARS);
        eprintln!("error: {message}");
        ExitCode::FAILURE
    })
}

/// Parses the command line; `train --config FILE` reads the file's settings
/// and parses again with them placed before the command line's flags, so
/// that those override the file. Clap's own errors exit here (status 2).
fn parse() -> anyhow::Result<(Cli, ArgMatches)> {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    // First without requiring --out, which the file may hold.
    let lenient =
        Cli::command().mut_subcommand("train", |c| c.mut_arg("out", |a| a.required(false)));
    let matches = lenient.get_matches_from(&argv);
    if let Some(("train", train)) = matches.subcommand()
        && let Some(path) = train.get_one::<PathBuf>("config")
    {
        let settings = config_file::read(path)?;
        let command = train_cmd::train_command();
        let file_args = config_file::to_args(&settings, &command, &path.display().to_string())?;
        // argv is `sasrec train ...`: the subcommand has no options before it.
        argv.splice(2..2, file_args);
    }
    let matches = Cli::command().get_matches_from(&argv);
    require_log(&matches);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    Ok((cli, matches))
}

/// `train` (but for `--resume`, which reads the run's) and `data stats`
/// need `--ratings` or `--dataset`: without either, a usage error like
/// clap's own for a missing flag (status 2). Clap cannot require them
/// itself: a settings file gives them as arguments checked one at a time.
fn require_log(matches: &ArgMatches) {
    let (path, args) = match matches.subcommand() {
        Some(("train", args)) if !args.get_flag("resume") => (&["train"][..], args),
        Some(("data", data)) => match data.subcommand() {
            Some(("stats", args)) => (&["data", "stats"][..], args),
            _ => return,
        },
        _ => return,
    };
    if args.contains_id("ratings") || args.contains_id("dataset") {
        return;
    }
    // Built, so that the usage line names `sasrec train`.
    let mut command = Cli::command();
    command.build();
    let mut command = path
        .iter()
        .try_fold(&command, |c, name| c.find_subcommand(name))
        .cloned()
        .expect("a subcommand of sasrec");
    command
        .error(
            clap::error::ErrorKind::MissingRequiredArgument,
            "the following required arguments were not provided:\n  --ratings <PATH> (or --dataset <NAME>)",
        )
        .exit()
}

/// Mesa's Vulkan device-select layer, an implicit layer loaded into every
/// Vulkan program, looks for a Wayland display and prints "XDG_RUNTIME_DIR
/// is invalid or not set" where there is none (headless machines, CI). We
/// choose adapters ourselves, so on such machines the layer is switched
/// off, as its manifest allows (`NODEVICE_SELECT`).
fn quiet_vulkan_layer() {
    let unset = |name| std::env::var_os(name).is_none();
    if unset("XDG_RUNTIME_DIR") && unset("NODEVICE_SELECT") {
        // SAFETY: called first thing in main, before any other thread exists.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
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
