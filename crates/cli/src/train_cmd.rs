//! `sasrec train`: train SASRec into a run folder, then report validation and
//! test metrics of the best checkpoint.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, ValueEnum};
use sasrec_api::{Device, TrainJob};
use sasrec_data::TemporalTargets;
use sasrec_kernels::CpuBackend;
use sasrec_kernels::gpu::WgpuBackend;
use sasrec_model::checkpoint::FileDigest;
use sasrec_model::{
    DataSpec, EpochHook, InvalidSetting, Loss, ModelConfig, RunConfig, Sampler, Selection,
    SplitMethod, TrainConfig,
};

use crate::data_cmd::{FilterArgs, RatingsArgs};
use crate::device::{DeviceArgs, print_kernel_times, print_op_times};

/// Which split to train and validate on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    /// Per user: train on all but the last two items, validate on the
    /// second-to-last, test on the last (the field's standard).
    LeaveOneOut,
    /// Hold out a fraction of users for validation loss (the notebook's).
    RandomUsers,
    /// A global timeline: train on what happened before --valid-time,
    /// validate on each user's first interaction between --valid-time and
    /// --test-time, test on their first after --test-time.
    Temporal,
}

/// `--temporal-targets`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TemporalTargetsArg {
    /// Each user's first interaction in the window.
    First,
    /// Every interaction in the window.
    All,
}

/// The training loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LossArg {
    /// Softmax cross-entropy over every item.
    Full,
    /// Softmax over the target and the sampled negatives (log-Q corrected
    /// with --sampler popularity).
    SampledSoftmax,
    /// Binary cross-entropy against each negative (SASRec's paper).
    Bce,
    /// gSASRec's gBCE: BCE with a calibrated positive term (--gbce-t).
    Gbce,
}

/// How negatives are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SamplerArg {
    /// Every item alike.
    Uniform,
    /// In proportion to the item's count in the training split.
    Popularity,
}

/// `sasrec train` flags.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Settings from a TOML file (keys are the flags in snake_case) or from
    /// a run's config.json; flags given here override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
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
    /// --split temporal: start of the validation window, an ISO 8601
    /// date-time (2018-01-01, 2018-01-01T12:00:00Z) or a number in
    /// --time-unit (Unix seconds by default).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    valid_time: Option<String>,
    /// --split temporal: start of the test window (after --valid-time).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    test_time: Option<String>,
    /// --split temporal: start of the validation window as a fraction of
    /// the data's time range (0.8: after 80% of it), instead of --valid-time.
    #[arg(long, value_name = "F")]
    valid_time_fraction: Option<f64>,
    /// --split temporal: start of the test window as a fraction of the
    /// data's time range, instead of --test-time.
    #[arg(long, value_name = "F")]
    test_time_fraction: Option<f64>,
    /// --split temporal: which interactions of a window are scored: each
    /// user's first (target) interaction in it, or all of them, each after
    /// everything before it.
    #[arg(long, value_enum, default_value = "first")]
    temporal_targets: TemporalTargetsArg,

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
    /// Adam's beta1 (decay of the mean of the gradients).
    #[arg(long, default_value_t = 0.9)]
    beta1: f64,
    /// Adam's beta2 (decay of the mean of their squares).
    #[arg(long, default_value_t = 0.999)]
    beta2: f64,
    /// Adam's epsilon.
    #[arg(long, default_value_t = 1e-8)]
    eps: f64,
    /// Maximum epochs (with --resume: a new budget, to extend a run).
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Stop after this many epochs without a better validation number
    /// (with --resume: a new patience).
    #[arg(long, value_name = "EPOCHS")]
    patience: Option<usize>,
    /// Validation number that picks the best checkpoint: loss, ndcg@K, hr@K or
    /// mrr (default: ndcg@10 for leave-one-out, loss for random-users).
    #[arg(long, value_name = "METRIC")]
    select: Option<String>,
    /// Cut-offs K for HR@K and NDCG@K.
    #[arg(long, value_delimiter = ',', default_value = "10,20")]
    k: Vec<usize>,
    /// Seed of initialisation, shuffling, dropout and negatives.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Training loss (validation always reports the full softmax loss).
    #[arg(long, value_enum, default_value = "full")]
    loss: LossArg,
    /// Negatives per optimiser step, shared by the batch (sampled losses;
    /// default 256).
    #[arg(long, value_name = "N")]
    negatives: Option<usize>,
    /// How negatives are drawn (sampled losses; default uniform).
    #[arg(long, value_enum)]
    sampler: Option<SamplerArg>,
    /// gBCE's calibration t in [0, 1]: 0 is BCE (--loss gbce; default 0.75).
    #[arg(long, value_name = "T")]
    gbce_t: Option<f64>,

    #[command(flatten)]
    device: DeviceArgs,
    /// Run folder to create (or to continue with --resume).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint with its saved
    /// settings (data included: no --ratings); only --epochs, --patience and
    /// the device flags may be given with it (a larger --epochs extends a
    /// finished run).
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
        let selection = match &self.select {
            Some(s) => Selection::parse(s).map_err(|e| anyhow::anyhow!("--select: {e}"))?,
            None if self.split == SplitArg::RandomUsers => Selection::Loss,
            None => Selection::Ndcg(10),
        };
        let loss = match self.loss {
            LossArg::Full => Loss::Full,
            LossArg::SampledSoftmax => Loss::SampledSoftmax,
            LossArg::Bce => Loss::Bce,
            LossArg::Gbce => Loss::Gbce,
        };
        if !loss.is_sampled() {
            for (flag, given) in [
                ("--negatives", self.negatives.is_some()),
                ("--sampler", self.sampler.is_some()),
            ] {
                if given {
                    bail!(
                        "{flag} is for the sampled losses (--loss sampled-softmax, bce or gbce); --loss full uses every item"
                    );
                }
            }
        }
        if self.gbce_t.is_some() && loss != Loss::Gbce {
            bail!("--gbce-t is gBCE's calibration; it needs --loss gbce (got --loss {loss})");
        }
        let defaults = TrainConfig::default();
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
                beta1: self.beta1,
                beta2: self.beta2,
                eps: self.eps,
                epochs: self.epochs,
                patience: self.patience,
                selection,
                seed: self.seed,
                ks: self.k.clone(),
                loss,
                negatives: self.negatives.unwrap_or(defaults.negatives),
                sampler: match self.sampler {
                    None | Some(SamplerArg::Uniform) => Sampler::Uniform,
                    Some(SamplerArg::Popularity) => Sampler::Popularity,
                },
                gbce_t: self.gbce_t.unwrap_or(defaults.gbce_t),
            },
            data: DataSpec {
                // Absolute: the run folder is read from anywhere.
                ratings: std::path::absolute(self.ratings.path()?)?,
                input: self.ratings.spec(),
                filter: self.filter.to_config(),
                split: match self.split {
                    SplitArg::LeaveOneOut => SplitMethod::LeaveOneOut,
                    SplitArg::RandomUsers => SplitMethod::RandomUsers,
                    SplitArg::Temporal => SplitMethod::Temporal,
                },
                valid_fraction: self.valid_fraction,
                split_seed: self.split_seed,
                valid_time: self.valid_time.clone(),
                test_time: self.test_time.clone(),
                valid_time_fraction: self.valid_time_fraction,
                test_time_fraction: self.test_time_fraction,
                temporal_targets: match self.temporal_targets {
                    TemporalTargetsArg::First => TemporalTargets::First,
                    TemporalTargetsArg::All => TemporalTargets::All,
                },
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

/// Flags that may come with `--resume` besides the device flags: what
/// changes neither the model nor the data.
const RESUME_FLAGS: [&str; 5] = ["out", "resume", "allow_changed_data", "epochs", "patience"];

/// Runs `sasrec train`: 0 when the run is done, 130 when it was stopped
/// (Ctrl-C, SIGTERM) and its progress saved. `matches` tells which flags
/// the command line gave.
pub fn run(args: TrainArgs, matches: &ArgMatches) -> Result<ExitCode> {
    args.device.set_threads()?;
    let log = |line: &str| eprintln!("{line}");
    // Everything that can be checked is checked before the run folder is
    // touched: a refused run leaves nothing behind.
    let job = if args.resume {
        check_resume_flags(matches)?;
        TrainJob::resume(
            &args.out,
            args.allow_changed_data,
            |train, done| new_budget(train, &args, matches, done),
            &log,
        )?
    } else {
        let config = args.run_config()?;
        TrainJob::new(config, &args.out, args.force, None, &log).map_err(setting_to_flag)?
    };

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

    let trained = match device {
        Device::Cpu(b) => {
            let hook = args.device.profile_ops.then(|| {
                b.enable_profiling();
                Box::new(OpProfile(b)) as Box<dyn EpochHook>
            });
            job.train(&b, &stop, hook, &log)?
        }
        Device::Gpu(b) => {
            let hook = args
                .device
                .profile_kernels
                .then(|| Box::new(KernelProfile(b.clone())) as Box<dyn EpochHook>);
            job.train(&b, &stop, hook, &log)?
        }
    };
    let Some(report) = &trained.report else {
        eprintln!(
            "saved; continue with: sasrec train --resume --out {}",
            trained.out.display()
        );
        return Ok(ExitCode::from(130));
    };
    for line in report.lines() {
        println!("{line}");
    }
    // Stopped while the report ran: the run is complete, but say it was cut.
    Ok(if trained.stopped {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// A setting out of range found by the library, in terms of its flag.
fn setting_to_flag(err: anyhow::Error) -> anyhow::Error {
    match err.downcast::<InvalidSetting>() {
        Ok(setting) => flag_error(setting),
        Err(err) => err,
    }
}

/// Refuses flags that would change a run's model, data or training with
/// `--resume`, naming them.
fn check_resume_flags(matches: &ArgMatches) -> Result<()> {
    let device = DeviceArgs::augment_args(clap::Command::new("device"));
    let allowed =
        |id: &str| RESUME_FLAGS.contains(&id) || device.get_arguments().any(|a| a.get_id() == id);
    let train = crate::train_command();
    let given: Vec<String> = train
        .get_arguments()
        .map(|a| a.get_id().as_str())
        .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine) && !allowed(id))
        .map(|id| format!("--{}", id.replace('_', "-")))
        .collect();
    if !given.is_empty() {
        bail!(
            "{} cannot be given with --resume: a run keeps its model, data and training settings \
             (--epochs, --patience and the device flags may change); \
             start a new run from its settings with --config RUN/config.json",
            given.join(", ")
        );
    }
    Ok(())
}

/// Applies `--epochs` and `--patience` given with `--resume` to a run that
/// has finished `done` epochs; returns what changed ("epochs 10 -> 30").
fn new_budget(
    train: &mut TrainConfig,
    args: &TrainArgs,
    matches: &ArgMatches,
    done: usize,
) -> Result<Vec<String>> {
    let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let epochs = given("epochs").then_some(args.epochs);
    let patience = given("patience").then_some(args.patience);
    sasrec_api::train::new_budget(train, epochs, patience, done).map_err(setting_to_flag)
}

/// Prints GPU time per kernel per step after every epoch's training.
struct KernelProfile(WgpuBackend);

impl EpochHook for KernelProfile {
    fn training_started(&mut self) {
        self.0.reset_profile();
    }

    fn training_finished(&mut self, steps: usize) {
        print_kernel_times(&self.0, steps, "per step");
    }
}

/// `--profile-ops`: the CPU backend's time per op per step, each epoch.
struct OpProfile(CpuBackend);

impl EpochHook for OpProfile {
    fn training_started(&mut self) {
        self.0.reset_profile();
    }

    fn training_finished(&mut self, steps: usize) {
        print_op_times(&self.0, steps);
    }
}
