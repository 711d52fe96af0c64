//! `sasrec eval`: evaluate a run's best checkpoint on its validation or test users.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use sasrec_kernels::Backend;
use sasrec_model::{SasRec, evaluate_with_progress, popularity_baseline};
use sasrec_run::{RunConfig, RunDir};

use crate::args::DeviceArgs;
use crate::device::{Device, print_kernel_times};
use crate::progress::progress_bar;

/// Which held-out users to evaluate on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SplitPart {
    /// The validation users (the ones that selected the checkpoint).
    Valid,
    /// The test users (leave-one-out only).
    Test,
}

/// `sasrec eval` flags.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run folder written by `sasrec train`.
    #[arg(long, value_name = "DIR")]
    run: PathBuf,
    /// Which part of the split.
    #[arg(long, value_enum, default_value = "test")]
    split_part: SplitPart,
    /// Cut-offs K for HR@K and NDCG@K.
    #[arg(long, value_delimiter = ',', default_value = "10,20")]
    k: Vec<usize>,
    /// Read the log from here and split it again, instead of the split the
    /// run folder keeps (data.safetensors).
    #[arg(long, value_name = "PATH")]
    ratings: Option<PathBuf>,
    /// Evaluate even though the log changed since training (when it is read).
    #[arg(long)]
    allow_changed_data: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Runs `sasrec eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    args.device.set_threads()?;
    if args.k.contains(&0) {
        bail!("--k values must be at least 1");
    }
    let run = RunDir::new(&args.run);
    let mut config = run.read_config()?;
    if let Some(ratings) = &args.ratings {
        config.data.ratings = ratings.clone();
    }
    let held_out_last = config.data.held_out_last();
    if args.split_part == SplitPart::Test && !held_out_last {
        bail!("the run used --split random-users, which has no test users; use --split-part valid");
    }
    match args.device.open()? {
        Device::Cpu(b) => eval_on(&b, &run, &config, &args),
        Device::Gpu(b) => {
            eval_on(&b, &run, &config, &args)?;
            if args.device.profile_kernels {
                print_kernel_times(&b, 1, "in all");
            }
            Ok(())
        }
    }
}

fn eval_on<B: Backend>(
    backend: &B,
    run: &RunDir,
    config: &RunConfig,
    args: &EvalArgs,
) -> Result<()> {
    let vocab = run.read_vocab()?;
    let stored = match args.ratings {
        Some(_) => None,
        None => run.read_data(&vocab)?,
    };
    // The split the run keeps; the log only for --ratings and older runs.
    let (split, users) = match stored {
        Some(data) => (data.split, data.users.len()),
        None => {
            if let Some(warning) = config.check_ratings(args.allow_changed_data)? {
                eprintln!("warning: {warning}");
            }
            let (dataset, split) = config.data.load()?;
            if !dataset.vocab.matches_saved(&vocab) {
                bail!(
                    "the items of {} do not match the run's vocab.json: not the data this run was trained on",
                    config.data.ratings.display()
                );
            }
            (split, dataset.users.len())
        }
    };
    let (_, model): (_, SasRec<B>) = run.load_model(backend)?;
    let held_out_last = config.data.held_out_last();
    let all_users = users;
    let users = match args.split_part {
        SplitPart::Valid => &split.valid,
        SplitPart::Test => &split.test,
    };
    if users.is_empty() {
        bail!(
            "the split has no {} users: all {all_users} users are too short to evaluate",
            part_name(args.split_part),
        );
    }
    let part = part_name(args.split_part);
    let bar = progress_bar(users.len() as u64, part);
    let result = evaluate_with_progress(
        backend,
        &model,
        users,
        held_out_last,
        &args.k,
        config.train.batch_size,
        &mut |n| bar.inc(n as u64),
    );
    bar.finish_and_clear();
    let popular = held_out_last
        .then(|| popularity_baseline(&split.train, users, config.model.vocab(), &args.k));
    if args.json {
        let out = serde_json::json!({ "run": run.path(), "part": part, "model": result, "most_popular": popular });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("run           {}", run.path().display());
    println!(
        "{part} users   {}  ({} targets)",
        users.len(),
        result.targets
    );
    println!("loss          {:.4}", result.loss);
    if let Some(m) = &result.ranking {
        println!("model         {}", m.summary());
    }
    if let Some(p) = &popular {
        println!("most popular  {}", p.summary());
    }
    Ok(())
}

fn part_name(part: SplitPart) -> &'static str {
    match part {
        SplitPart::Valid => "valid",
        SplitPart::Test => "test",
    }
}
