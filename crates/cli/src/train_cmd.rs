//! `sasrec train`: train SASRec into a run folder, then report validation and
//! test metrics of the best checkpoint.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use sasrec_data::{Dataset, Split};
use sasrec_kernels::gpu::WgpuBackend;
use sasrec_kernels::{Backend, CpuBackend};
use sasrec_model::checkpoint::FileDigest;
use sasrec_model::config::human_bytes;
use sasrec_model::{
    DataSpec, EpochHook, InvalidSetting, ModelConfig, Outcome, RunConfig, RunWriter, SasRec,
    Selection, SplitMethod, TrainConfig, Trainer, evaluate, popularity_baseline,
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
    #[arg(long, conflicts_with = "force")]
    resume: bool,
    /// Replace the run already in --out (only ever a run folder is cleared).
    #[arg(long)]
    force: bool,
    /// With --resume: continue even though the ratings file changed since
    /// the run started.
    #[arg(long, requires = "resume")]
    allow_changed_data: bool,
}

impl TrainArgs {
    /// The run configuration these flags describe, checked. The number of
    /// items and the ratings file's digest are filled in once the data is read.
    fn run_config(&self) -> Result<RunConfig> {
        let leave_one_out = self.split == SplitArg::LeaveOneOut;
        let selection = match &self.select {
            Some(s) => Selection::parse(s).map_err(|e| anyhow::anyhow!("--select: {e}"))?,
            None if leave_one_out => Selection::Ndcg(10),
            None => Selection::Loss,
        };
        let config = RunConfig {
            model: ModelConfig {
                num_items: 1,
                max_len: self.max_len,
                dim: self.dim,
                heads: self.heads,
                layers: self.layers,
                ff_dim: self.ff_dim.unwrap_or(self.dim.saturating_mul(4)),
                dropout: self.dropout,
            },
            train: TrainConfig {
                batch_size: self.batch_size,
                lr: self.lr,
                epochs: self.epochs,
                patience: self.patience,
                selection,
                seed: self.seed,
                ks: self.k.clone(),
                ..TrainConfig::default()
            },
            data: DataSpec {
                ratings: self.ratings.path()?,
                input: self.ratings.spec(),
                filter: self.filter.to_config(),
                split: if leave_one_out {
                    SplitMethod::LeaveOneOut
                } else {
                    SplitMethod::RandomUsers
                },
                valid_fraction: self.valid_fraction,
                split_seed: self.split_seed,
            },
            ratings_digest: FileDigest::of_bytes(&[]),
        };
        config.validate().map_err(flag_error)?;
        Ok(config)
    }
}

/// A setting's error in terms of the flag that sets it.
fn flag_error(err: InvalidSetting) -> anyhow::Error {
    let flag = match err.field {
        "ks" => "--k".to_string(),
        "selection" => "--select".to_string(),
        field => format!("--{}", field.replace('_', "-")),
    };
    anyhow::anyhow!("{flag} {}", err.problem)
}

/// Runs `sasrec train`: 0 when the run is done, 130 when it was stopped
/// (Ctrl-C, SIGTERM) and its progress saved.
pub fn run(args: TrainArgs) -> Result<ExitCode> {
    // Everything that can be checked is checked before the run folder is
    // touched: a refused run leaves nothing behind.
    let (run, config) = if args.resume {
        let mut run = RunWriter::open(&args.out, "train")?;
        note_previous_holder(&run);
        let config = run.dir().read_config()?;
        if let Some(warning) = config.check_ratings(args.allow_changed_data)? {
            eprintln!("warning: {warning}");
        }
        let recovery = run.recover()?;
        if !recovery.is_clean() {
            eprintln!("note: repaired {}: {recovery}", args.out.display());
        }
        (Some(run), config)
    } else {
        let config = args.run_config()?;
        RunWriter::check_new(&args.out, args.force)?;
        (None, config)
    };

    eprintln!("reading {}", config.data.ratings.display());
    let (dataset, split) = config.data.load()?;
    let mut config = config;
    match &run {
        Some(run) => {
            if !dataset.vocab.matches_saved(&run.dir().read_vocab()?) {
                bail!(
                    "the items of {} no longer match the run's vocab.json; the ratings file changed since training",
                    config.data.ratings.display()
                );
            }
        }
        None => {
            config.model.num_items = dataset.vocab.num_items();
            config.model.validate().map_err(flag_error)?;
            config.ratings_digest = FileDigest::of_file(&config.data.ratings)?;
        }
    }
    check_split(&config, &dataset, &split)?;
    check_memory(&config, &split)?;
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
    let run = match run {
        Some(run) => run,
        None => {
            let run = RunWriter::create(&args.out, "train", args.force)?;
            note_previous_holder(&run);
            if args.force {
                eprintln!("replaced the run in {} (--force)", args.out.display());
            }
            run.write_settings(&config, &dataset.vocab)?;
            run
        }
    };
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
        Device::Cpu(b) => {
            let hook = args.device.profile_ops.then(|| {
                b.enable_profiling();
                Box::new(OpProfile(b)) as Box<dyn EpochHook>
            });
            train_on(&b, &config, &split, run, args.resume, &stop, hook)
        }
        Device::Gpu(b) => {
            let hook = args
                .device
                .profile_kernels
                .then(|| Box::new(KernelProfile(b.clone())) as Box<dyn EpochHook>);
            train_on(&b, &config, &split, run, args.resume, &stop, hook)
        }
    }
}

fn note_previous_holder(run: &RunWriter) {
    if let Some(holder) = run.previous_holder() {
        eprintln!("note: {holder} stopped without releasing the run folder; taking it over");
    }
}

/// Refuses a split that leaves nothing to train or validate on, saying why.
fn check_split(config: &RunConfig, dataset: &Dataset, split: &Split) -> Result<()> {
    let users = dataset.users.len();
    if config.data.leave_one_out() {
        if split.valid.is_empty() {
            bail!(
                "no user is left to validate on: all {users} users have fewer than 3 interactions, and leave-one-out needs 3"
            );
        }
    } else if split.valid.is_empty() {
        if config.data.valid_fraction == 0.0 {
            bail!(
                "--valid-fraction 0 holds out no users, and random-users validates on held-out users"
            );
        }
        bail!(
            "no user is left to validate on: the {} held-out users all have a single interaction",
            split.too_short_for_eval
        );
    }
    if split.train.is_empty() {
        bail!(
            "no training sequences: none of the {users} users has enough interactions to train on"
        );
    }
    Ok(())
}

/// Refuses a model and batch that cannot fit in the memory available.
fn check_memory(config: &RunConfig, split: &Split) -> Result<()> {
    let longest_part = split.train.len().max(split.valid.len());
    let batch = config.train.batch_size.min(longest_part);
    let need = config.model.training_memory(batch);
    let Some(available) = available_memory() else {
        return Ok(());
    };
    if need.total() > available as f64 {
        bail!(
            "this run needs about {} of memory (weights and Adam state {}, activations of a batch of {batch} {}), more than the {} available: lower --dim, --ff-dim, --max-len, --layers or --batch-size",
            human_bytes(need.total()),
            human_bytes(need.parameters),
            human_bytes(need.activations),
            human_bytes(available as f64)
        );
    }
    Ok(())
}

/// Memory available to a new process: MemAvailable on Linux, the physical
/// memory on other Unix systems.
fn available_memory() -> Option<u64> {
    if let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") {
        let kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        if let Some(kib) = kib {
            return Some(kib * 1024);
        }
    }
    #[cfg(unix)]
    {
        // SAFETY: sysconf only reads system constants.
        let (pages, page) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if pages > 0 && page > 0 {
            return Some(pages as u64 * page as u64);
        }
    }
    None
}

fn train_on<B: Backend>(
    backend: &B,
    config: &RunConfig,
    split: &Split,
    run: RunWriter,
    resume: bool,
    stop: &AtomicBool,
    hook: Option<Box<dyn EpochHook>>,
) -> Result<ExitCode> {
    let model = SasRec::new(backend, config.model.clone(), config.train.seed);
    let out = run.dir().path().display().to_string();
    let mut trainer = Trainer::new(
        backend,
        model,
        config.train.clone(),
        &split.train,
        &split.valid,
        config.data.leave_one_out(),
        run,
    )?;
    trainer.hook = hook;
    if trainer.restore()? {
        let generation = trainer.run_folder().committed().map_or(0, |c| c.generation);
        eprintln!(
            "continuing at epoch {}, step {} (checkpoint generation {generation})",
            trainer.state.epoch + 1,
            trainer.state.step
        );
    } else if resume {
        eprintln!("{out} has no checkpoint yet: starting at step 0 with its saved settings");
    }
    let outcome = trainer.run(stop)?;
    match outcome {
        Outcome::Interrupted => {
            eprintln!("saved; continue with: sasrec train --resume --out {out}");
            return Ok(ExitCode::from(130));
        }
        Outcome::EarlyStopped => eprintln!(
            "early stopping: no better {} for a while",
            config.train.selection
        ),
        Outcome::Completed => {}
    }
    report(backend, config, split, trainer)?;
    // Stopped while the report ran: the run is complete, but say it was cut.
    Ok(if stop.load(Ordering::SeqCst) {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints the best epoch, its validation numbers, and (leave-one-out) the
/// test numbers of the best checkpoint beside the most-popular baseline.
fn report<B: Backend>(
    backend: &B,
    config: &RunConfig,
    split: &Split,
    trainer: Trainer<'_, B>,
) -> Result<()> {
    let records = trainer.epochs().to_vec();
    let run = trainer.into_run();
    let Some(best) = records.iter().rev().find(|r| r.best) else {
        bail!("the run has no validated epoch");
    };
    println!("run           {}", run.dir().path().display());
    println!(
        "best epoch    {} of {} (by valid {})",
        best.epoch,
        records.len(),
        config.train.selection
    );
    print_line("valid", best.valid.loss, best.valid.ranking.as_ref());
    if config.data.leave_one_out() {
        let (_, model) = run.dir().load_model(backend)?;
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
        let json = serde_json::json!({
            "best_epoch": best.epoch,
            "valid": best.valid,
            "test": test,
            "most_popular_test": popular,
        });
        run.write_file("test.json", &serde_json::to_vec_pretty(&json)?)?;
    }
    println!("curves        {}", run.dir().curves().display());
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
        let times = self.0.profile_report();
        let rows = times
            .iter()
            .map(|t| (t.total_ms, t.calls, t.kernel.as_str()));
        print_profile("GPU time per step", steps, rows.collect());
    }
}

/// `--profile-ops`: the CPU backend's time per op per step, each epoch.
struct OpProfile(CpuBackend);

impl EpochHook for OpProfile {
    fn training_started(&mut self) {
        self.0.reset_profile();
    }

    fn training_finished(&mut self, steps: usize) {
        let times = self.0.profile_report();
        let rows = times.iter().map(|t| (t.total_ms, t.calls, t.op));
        print_profile("CPU op time per step", steps, rows.collect());
    }
}

/// Prints `(total ms, calls, name)` per step, slowest first, on stderr.
fn print_profile(title: &str, steps: usize, mut rows: Vec<(f64, u64, &str)>) {
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let total: f64 = rows.iter().map(|r| r.0).sum();
    let steps = steps.max(1) as f64;
    eprintln!("{title}: {:.3} ms", total / steps);
    for (ms, calls, name) in rows {
        eprintln!(
            "  {:>8.3} ms  {:>5.1}%  {:>6.1} calls  {name}",
            ms / steps,
            100.0 * ms / total.max(1e-12),
            calls as f64 / steps,
        );
    }
}
