//! `sasrec eval`: evaluate a run's best checkpoint on its validation or test users.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use sasrec_api::{Part, evaluate_run};
use sasrec_kernels::Backend;
use sasrec_model::RunDir;

use crate::device::{Device, DeviceArgs, print_kernel_times};

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
    match args.device.open()? {
        Device::Cpu(b) => eval_on(&b, &args),
        Device::Gpu(b) => {
            eval_on(&b, &args)?;
            if args.device.profile_kernels {
                print_kernel_times(&b, 1, "in all");
            }
            Ok(())
        }
    }
}

fn eval_on<B: Backend>(backend: &B, args: &EvalArgs) -> Result<()> {
    let run = RunDir::new(&args.run);
    let part = match args.split_part {
        SplitPart::Valid => Part::Valid,
        SplitPart::Test => Part::Test,
    };
    let result = evaluate_run(
        backend,
        &run,
        part,
        &args.k,
        args.ratings.as_deref(),
        args.allow_changed_data,
        &|line| eprintln!("{line}"),
    )?;
    let part = part.name();
    if args.json {
        let out = serde_json::json!({
            "run": run.path(),
            "part": part,
            "model": result.model,
            "most_popular": result.most_popular,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("run           {}", run.path().display());
    println!(
        "{part} users   {}  ({} targets)",
        result.users, result.model.targets
    );
    println!("loss          {:.4}", result.model.loss);
    if let Some(m) = &result.model.ranking {
        println!("model         {}", m.summary());
    }
    if let Some(p) = &result.most_popular {
        println!("most popular  {}", p.summary());
    }
    Ok(())
}
