//! `sasrec train`: train SASRec into a run folder, then report validation and
//! test metrics of the best checkpoint.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use sasrec_data::Split;
use sasrec_kernels::Backend;
use sasrec_kernels::gpu::WgpuBackend;
use sasrec_model::records::read_records;
use sasrec_model::{
    DataSpec, EpochHook, ModelConfig, Outcome, RunConfig, RunDir, SasRec, Selection, TrainConfig,
    Trainer, evaluate, load_model, popularity_baseline,
};

use crate::data_cmd::{FilterArgs, RatingsArgs};
use crate::device::{Device, DeviceArgs};

/// Which split to train and validate on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    /// Per user: train on all but the last two items, validate on the
    /// second-to-last, test on the last (the field's standard).
    LeaveOneOut,
    /// Hold out a fraction of users for validation loss (the notebook's).
    RandomUsers,
}

/// `sasrec train` flags.
#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    ratings: RatingsArgs,
    #[command(flatten)]
    filter: FilterArgs,
    /// Train/validation/test split.
    #[arg(long, value_enum, default_value = "leave-one-out")]
    split: SplitArg,
    /// Share of users held out by --split random-users.
    #[arg(long, default_value_t = 0.1, value_name = "F")]
    valid_fraction: f64,
    /// Seed of the --split random-users draw.
    #[arg(long, default_value_t = 42, value_name = "S")]
    split_seed: u64,

    /// Positions per sequence (the most recent items are kept).
    #[arg(long, default_value_t = 50)]
    max_len: usize,
    /// Embedding width.
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 2)]
    heads: usize,
    /// Transformer layers.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Feed-forward width (default 4 x dim).
    #[arg(long)]
    ff_dim: Option<usize>,
    /// Dropout probability.
    #[arg(long, default_value_t = 0.1)]
    dropout: f32,

    /// Sequences per batch.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Maximum epochs.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Stop after this many epochs without a better validation number.
    #[arg(long, value_name = "EPOCHS")]
    patience: Option<usize>,
    /// Validation number that picks the best checkpoint: loss, ndcg@K, hr@K or
    /// mrr (default: ndcg@10 for leave-one-out, loss for random-users).
    #[arg(long, value_name = "METRIC")]
    select: Option<String>,
    /// Cut-offs K for HR@K and NDCG@K.
    #[arg(long, value_delimiter = ',', default_value = "10,20")]
    k: Vec<usize>,
    /// Seed of initialisation, shuffling and dropout.
    #[arg(long, default_value_t = 42)]
    seed: u64,

    #[command(flatten)]
    device: DeviceArgs,
    /// Run folder to create (or to continue with --resume).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint, with its saved
    /// settings (model, data and training flags are then ignored).
    #[arg(long)]
    resume: bool,
}

impl TrainArgs {
    /// The run configuration these flags describe (before the vocabulary is known).
    fn run_config(&self) -> Result<RunConfig> {
        let leave_one_out = self.split == SplitArg::LeaveOneOut;
        let selection = match &self.select {
            Some(s) => Selection::parse(s).map_err(anyhow::Error::msg)?,
            None if leave_one_out => Selection::Ndcg(10),
            None => Selection::Loss,
        };
        if self.k.contains(&0) {
            bail!("--k values must be at least 1");
        }
        let data = DataSpec {
            ratings: self.ratings.path()?,
            format: self.ratings.format.map(|f| f.to_string()),
            filter: self.filter.to_config(),
            split: if leave_one_out {
                "leave-one-out"
            } else {
                "random-users"
            }
            .to_string(),
            valid_fraction: self.valid_fraction,
            split_seed: self.split_seed,
        };
        let model = ModelConfig {
            num_items: 0,
            max_len: self.max_len,
            dim: self.dim,
            heads: self.heads,
            layers: self.layers,
            ff_dim: self.ff_dim.unwrap_or(4 * self.dim),
            dropout: self.dropout,
        };
        let train = TrainConfig {
            batch_size: self.batch_size,
            lr: self.lr,
            epochs: self.epochs,
            patience: self.patience,
            selection,
            seed: self.seed,
            ks: self.k.clone(),
            ..TrainConfig::default()
        };
        if train.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        Ok(RunConfig { model, train, data })
    }
}

/// Runs `sasrec train`.
pub fn run(args: TrainArgs) -> Result<()> {
    let run = RunDir::new(&args.out);
    let config = if args.resume {
        if !run.state().exists() {
            bail!(
                "{} holds no run to resume (no state.json)",
                run.path().display()
            );
        }
        eprintln!("resuming {} with its saved settings", run.path().display());
        run.read_config()?
    } else {
        if run.config().exists() {
            bail!(
                "{} already holds a run; continue it with --resume or choose another --out",
                run.path().display()
            );
        }
        args.run_config()?
    };

    eprintln!("reading {}", config.data.ratings.display());
    let (dataset, split) = config.data.load()?;
    let mut config = config;
    if args.resume {
        let saved = run.read_vocab()?;
        if saved != dataset.vocab {
            bail!(
                "the items of {} no longer match the run's vocab.json; the ratings file changed since training",
                config.data.ratings.display()
            );
        }
    } else {
        config.model.num_items = dataset.vocab.num_items();
        config.model.validate().map_err(anyhow::Error::msg)?;
        run.create(&config, &dataset.vocab)?;
    }
    let stats = dataset.stats();
    eprintln!(
        "{} users, {} items, {} interactions; split {}: train {}, valid {}, test {} users",
        stats.users,
        stats.items,
        stats.interactions,
        config.data.split,
        split.train.len(),
        split.valid.len(),
        split.test.len()
    );

    let device = args.device.open()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupted: saving the progress after this step (press Ctrl-C again to quit now)"
        );
    })
    .context("installing the Ctrl-C handler")?;

    match device {
        Device::Cpu(b) => train_on(&b, &config, &split, &run, args.resume, &stop, None),
        Device::Gpu(b) => {
            let hook = args
                .device
                .profile_kernels
                .then(|| Box::new(KernelProfile(b.clone())) as Box<dyn EpochHook>);
            train_on(&b, &config, &split, &run, args.resume, &stop, hook)
        }
    }
}

fn train_on<B: Backend>(
    backend: &B,
    config: &RunConfig,
    split: &Split,
    run: &RunDir,
    resume: bool,
    stop: &AtomicBool,
    hook: Option<Box<dyn EpochHook>>,
) -> Result<()> {
    let leave_one_out = config.data.split == "leave-one-out";
    let model = SasRec::new(backend, config.model.clone(), config.train.seed);
    let mut trainer = Trainer::new(
        backend,
        model,
        config.train.clone(),
        &split.train,
        &split.valid,
        leave_one_out,
        run.clone(),
    )?;
    trainer.hook = hook;
    if resume {
        trainer.restore()?;
        eprintln!(
            "continuing at epoch {}, step {}",
            trainer.state.epoch + 1,
            trainer.state.step
        );
    }
    let outcome = trainer.run(stop)?;
    drop(trainer);
    match outcome {
        Outcome::Interrupted => {
            eprintln!(
                "saved; continue with: sasrec train --resume --out {}",
                run.path().display()
            );
            return Ok(());
        }
        Outcome::EarlyStopped => eprintln!(
            "early stopping: no better {} for a while",
            config.train.selection
        ),
        Outcome::Completed => {}
    }
    report(backend, config, split, run)
}

/// Prints the best epoch, its validation numbers, and (leave-one-out) the
/// test numbers of the best checkpoint beside the most-popular baseline.
fn report<B: Backend>(backend: &B, config: &RunConfig, split: &Split, run: &RunDir) -> Result<()> {
    let records = read_records(&run.metrics())?;
    let Some(best) = records.iter().rev().find(|r| r.best) else {
        bail!("the run has no validated epoch");
    };
    println!("run           {}", run.path().display());
    println!(
        "best epoch    {} of {} (by valid {})",
        best.epoch,
        records.len(),
        config.train.selection
    );
    print_line("valid", best.valid.loss, best.valid.ranking.as_ref());
    if config.data.split == "leave-one-out" {
        let model = load_model(backend, &run.model(), config.model.clone())?;
        let test = evaluate(
            backend,
            &model,
            &split.test,
            true,
            &config.train.ks,
            config.train.batch_size,
        );
        print_line("test", test.loss, test.ranking.as_ref());
        let popular = popularity_baseline(
            &split.train,
            &split.test,
            config.model.vocab(),
            &config.train.ks,
        );
        println!("test popular  {}", popular.summary());
        sasrec_model::run::write_json(
            &run.path().join("test.json"),
            &serde_json::json!({
                "best_epoch": best.epoch,
                "valid": best.valid,
                "test": test,
                "most_popular_test": popular,
            }),
        )?;
    }
    println!("curves        {}", run.curves().display());
    Ok(())
}

fn print_line(part: &str, loss: f64, ranking: Option<&sasrec_model::RankingMetrics>) {
    let ranking = ranking
        .map(|m| format!("  {}", m.summary()))
        .unwrap_or_default();
    println!("{part:<13} loss {loss:.4}{ranking}");
}

/// Prints GPU time per kernel per step after every epoch's training.
struct KernelProfile(WgpuBackend);

impl EpochHook for KernelProfile {
    fn training_started(&mut self) {
        self.0.reset_profile();
    }

    fn training_finished(&mut self, steps: usize) {
        let mut times = self.0.profile_report();
        times.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        let total: f64 = times.iter().map(|t| t.total_ms).sum();
        let steps = steps.max(1) as f64;
        eprintln!("GPU time per step: {:.3} ms", total / steps);
        for t in times {
            eprintln!(
                "  {:>8.3} ms  {:>5.1}%  {:>6.1} calls  {}",
                t.total_ms / steps,
                100.0 * t.total_ms / total.max(1e-12),
                t.calls as f64 / steps,
                t.kernel
            );
        }
    }
}
