//! `sasrec train`: train SASRec into a run folder, then report validation and
//! test metrics of the best checkpoint.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, ValueEnum};
use sasrec_data::{DataSpec, SplitMethod};
use sasrec_data::{
    Dataset, Dedup, FilterReport, Split, TemporalTargets, UserSequence, format_micros,
};
use sasrec_kernels::cpu::Precision;
use sasrec_kernels::gpu::WgpuBackend;
use sasrec_kernels::{Backend, CpuBackend};
use sasrec_model::config::{human_bytes, recommended_max_len};
use sasrec_model::{
    EpochHook, EpochRecord, FeedForward, InvalidSetting, Loss, LrSchedule, ModelConfig,
    ModelOptions, NegativeSampler, NegativesScope, Norm, Outcome, OutputLayer, Preset, Sampler,
    SasRec, Selection, TrainConfig, Trainer, evaluate_with_progress, popularity_baseline,
};
use sasrec_run::{FileDigest, RunConfig, RunWriter};

use crate::args::{DeviceArgs, FilterArgs, RatingsArgs};
use crate::data_summary::{event_counts, thousands, time_range};
use crate::device::{Device, print_kernel_times, print_op_times};
use crate::progress::progress_bar;

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

/// Which rows share a set of negatives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    /// One set for the whole batch.
    Batch,
    /// One set per sequence, shared by its positions.
    Sequence,
    /// One set per position.
    Position,
}

/// `--valid-fraction` when none is given (random-users).
pub const DEFAULT_VALID_FRACTION: f64 = 0.1;
/// `--split-seed` when none is given (random-users).
pub const DEFAULT_SPLIT_SEED: u64 = 42;
/// The `--preset` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    /// The notebook's model and Adam.
    Notebook,
    /// What the sweeps support.
    Recommended,
}

/// The `--norm` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NormArg {
    /// LayerNorm.
    Layer,
    /// RMSNorm.
    Rms,
}

/// The `--feed-forward` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FeedForwardArg {
    /// Linear, ReLU, linear, with biases.
    Relu,
    /// SwiGLU without biases.
    Swiglu,
}

/// The `--output-layer` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputLayerArg {
    /// The item table.
    Tied,
    /// A table of its own.
    Untied,
}

/// The `--lr-schedule` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LrScheduleArg {
    /// The learning rate throughout.
    Constant,
    /// Cosine decay to 0 at the end of the epoch budget.
    Cosine,
}

/// Operand precision of the full softmax's products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// f32 everywhere.
    Fp32,
    /// bf16 operands, f32 sums (CPUs with AMX or AVX512-BF16).
    Bf16,
}

/// A flag's help with the library's default for it: the help and the
/// behaviour read one value.
fn with_default(help: &str, default: impl std::fmt::Display) -> String {
    format!("{help} (default {default})")
}

/// `10,20`: cut-offs as --k takes them.
fn ks_text(ks: &[usize]) -> String {
    ks.iter()
        .map(|k| k.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The notebook's model sizes, both presets'.
fn notebook() -> ModelConfig {
    Preset::Notebook.model(1)
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
    #[arg(long, value_name = "F", help = with_default("Share of users held out by --split random-users", DEFAULT_VALID_FRACTION))]
    valid_fraction: Option<f64>,
    #[arg(long, value_name = "S", help = with_default("Seed of the --split random-users draw", DEFAULT_SPLIT_SEED))]
    split_seed: Option<u64>,
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

    /// The defaults of the model and training settings below: `recommended`
    /// (what the sweeps in docs/benchmarks.md support: the notebook's blocks
    /// at width 128, sequences fitted to the histories' length, a sampled
    /// softmax over 3000 unseen negatives per sequence) or `notebook` (the
    /// notebook's model, full softmax and Adam, exactly); flags given
    /// override it.
    #[arg(long, value_enum, default_value = "recommended")]
    preset: PresetArg,
    #[arg(long, help = format!("Positions per sequence, the most recent items kept (recommended preset: the training histories' mean length rounded up to a multiple of 50, from 50 to 200; notebook: {})", notebook().max_len))]
    max_len: Option<usize>,
    #[arg(long, help = format!("Embedding width (recommended preset: {}, notebook: {})", Preset::Recommended.model(1).dim, notebook().dim))]
    dim: Option<usize>,
    #[arg(long, help = with_default("Attention heads", notebook().heads))]
    heads: Option<usize>,
    #[arg(long, help = with_default("Transformer layers", notebook().layers))]
    layers: Option<usize>,
    #[arg(long, help = with_default("Feed-forward width", format!("{} x dim", notebook().ff_dim / notebook().dim)))]
    ff_dim: Option<usize>,
    #[arg(long, help = with_default("Dropout probability", notebook().dropout))]
    dropout: Option<f32>,
    /// Normalisation of the blocks and the final one (notebook: layer).
    #[arg(long, value_enum)]
    norm: Option<NormArg>,
    /// Feed-forward block (notebook: relu).
    #[arg(long, value_enum)]
    feed_forward: Option<FeedForwardArg>,
    /// Gate each residual branch by sigmoid(Linear(x)), as eSASRec's LiGR
    /// layers (notebook: false).
    #[arg(long, value_name = "BOOL")]
    gated_residual: Option<bool>,
    /// Output layer: the item table (tied) or a table of its own (notebook:
    /// tied).
    #[arg(long, value_enum)]
    output_layer: Option<OutputLayerArg>,
    /// Rotary position embedding of the queries and keys, beside the
    /// learned position table: attention sees how many steps apart two
    /// events are (notebook: false).
    #[arg(long, value_name = "BOOL")]
    rotary: Option<bool>,

    #[arg(long, help = with_default("Sequences per batch", TrainConfig::default().batch_size))]
    batch_size: Option<usize>,
    #[arg(long, help = with_default("Adam learning rate", TrainConfig::default().lr))]
    lr: Option<f64>,
    /// AdamW's decoupled weight decay (notebook: 0, Adam).
    #[arg(long, value_name = "WD")]
    weight_decay: Option<f64>,
    /// Optimiser steps of linear learning-rate warm-up (notebook: 0).
    #[arg(long, value_name = "STEPS")]
    warmup_steps: Option<u64>,
    /// Learning rate after the warm-up: constant, or cosine decay to 0 at
    /// the end of the epoch budget (notebook: constant).
    #[arg(long, value_enum)]
    lr_schedule: Option<LrScheduleArg>,
    /// Label smoothing of the full softmax (notebook: 0).
    #[arg(long, value_name = "E")]
    label_smoothing: Option<f32>,
    /// Clip the gradients' global L2 norm to this (0: off; notebook: 0).
    #[arg(long, value_name = "NORM")]
    grad_clip: Option<f64>,
    /// Adam's beta1 (decay of the mean of the gradients).
    #[arg(long, default_value_t = TrainConfig::default().beta1)]
    beta1: f64,
    /// Adam's beta2 (decay of the mean of their squares).
    #[arg(long, default_value_t = TrainConfig::default().beta2)]
    beta2: f64,
    /// Adam's epsilon.
    #[arg(long, default_value_t = TrainConfig::default().eps)]
    eps: f64,
    /// Maximum epochs (with --resume: a new budget, to extend a run).
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    epochs: usize,
    /// Stop after this many validations without a better validation number
    /// (with --resume: a new patience).
    #[arg(long, value_name = "N")]
    patience: Option<usize>,
    /// Validate after every N epochs (and after the last); patience counts
    /// validations.
    #[arg(long, value_name = "N", default_value_t = TrainConfig::default().eval_every)]
    eval_every: usize,
    /// Validation number that picks the best checkpoint: loss, ndcg@K, hr@K or
    /// mrr (default: ndcg@10 for leave-one-out, loss for random-users).
    #[arg(long, value_name = "METRIC")]
    select: Option<String>,
    #[arg(
        long,
        value_delimiter = ',',
        default_values_t = TrainConfig::default().ks,
        hide_default_value = true,
        help = with_default("Cut-offs K for HR@K and NDCG@K, comma-separated", ks_text(&TrainConfig::default().ks))
    )]
    k: Vec<usize>,
    /// Seed of initialisation, shuffling, dropout and negatives.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    seed: u64,
    /// Training loss (validation always reports the full softmax loss;
    /// recommended preset: sampled-softmax, notebook: full).
    #[arg(long, value_enum)]
    loss: Option<LossArg>,
    #[arg(long, value_name = "N", help = format!("Negatives drawn for each set of rows that shares them, for the sampled losses (recommended preset: {}, or the fewest items a user left unseen if fewer; notebook: {})", Preset::Recommended.train().negatives, Preset::Notebook.train().negatives))]
    negatives: Option<usize>,
    #[arg(long, value_enum, help = format!("Which rows share a set of negatives, for the sampled losses (recommended preset: {}, notebook: {})", Preset::Recommended.train().negatives_scope, Preset::Notebook.train().negatives_scope))]
    negatives_scope: Option<ScopeArg>,
    /// Draw each sequence's or position's negatives among the items its user
    /// never interacted with in training, without repeats (sampled losses;
    /// default true with the uniform sampler per sequence or position).
    #[arg(long, value_name = "BOOL")]
    exclude_seen: Option<bool>,
    #[arg(long, value_enum, help = with_default("How negatives are drawn, for the sampled losses", TrainConfig::default().sampler))]
    sampler: Option<SamplerArg>,
    #[arg(long, value_name = "T", help = with_default("gBCE's calibration t in [0, 1], 0 being BCE, for --loss gbce", TrainConfig::default().gbce_t))]
    gbce_t: Option<f64>,
    /// Operand precision of the full softmax's products on the CPU: bf16
    /// rounds them to bf16 and sums in f32 (AMX or AVX512-BF16; weights,
    /// Adam and the softmax stay f32). Refused on other CPUs and on the GPU.
    #[arg(long, value_enum, default_value = "fp32")]
    precision: PrecisionArg,

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

/// The `sasrec train` command, its flags as clap knows them (the settings
/// a config file or the Python package may give).
pub fn train_command() -> clap::Command {
    TrainArgs::augment_args(clap::Command::new("train"))
        .args_override_self(true)
        .allow_negative_numbers(true)
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
        // The preset's values, unless a flag gives one.
        let preset = match self.preset {
            PresetArg::Notebook => Preset::Notebook,
            PresetArg::Recommended => Preset::Recommended,
        };
        let (model, defaults) = (preset.model(1), preset.train());
        let loss = self.loss.map_or(defaults.loss, |l| match l {
            LossArg::Full => Loss::Full,
            LossArg::SampledSoftmax => Loss::SampledSoftmax,
            LossArg::Bce => Loss::Bce,
            LossArg::Gbce => Loss::Gbce,
        });
        if !loss.is_sampled() {
            for (flag, given) in [
                ("--negatives", self.negatives.is_some()),
                ("--negatives-scope", self.negatives_scope.is_some()),
                ("--exclude-seen", self.exclude_seen.is_some()),
                ("--sampler", self.sampler.is_some()),
            ] {
                if given {
                    bail!(
                        "{flag} is for the sampled losses (--loss sampled-softmax, bce or gbce); the full softmax (--loss full, the notebook preset's) uses every item"
                    );
                }
            }
        }
        if self.gbce_t.is_some() && loss != Loss::Gbce {
            bail!("--gbce-t is gBCE's calibration; it needs --loss gbce (got --loss {loss})");
        }
        if self.split != SplitArg::RandomUsers {
            for (flag, given) in [
                ("--valid-fraction", self.valid_fraction.is_some()),
                ("--split-seed", self.split_seed.is_some()),
            ] {
                if given {
                    bail!(
                        "{flag} is for --split random-users, which holds out whole users; --split {} does not use it",
                        self.split
                            .to_possible_value()
                            .expect("no skipped values")
                            .get_name()
                    );
                }
            }
        }
        let dim = self.dim.unwrap_or(model.dim);
        let ff_dim = match (self.ff_dim, self.dim) {
            (Some(f), _) => f,
            (None, Some(d)) => d.saturating_mul(4),
            (None, None) => model.ff_dim,
        };
        let o = model.options;
        let options = ModelOptions {
            norm: self.norm.map_or(o.norm, |n| match n {
                NormArg::Layer => Norm::Layer,
                NormArg::Rms => Norm::Rms,
            }),
            feed_forward: self.feed_forward.map_or(o.feed_forward, |f| match f {
                FeedForwardArg::Relu => FeedForward::Relu,
                FeedForwardArg::Swiglu => FeedForward::Swiglu,
            }),
            gated_residual: self.gated_residual.unwrap_or(o.gated_residual),
            output_layer: self.output_layer.map_or(o.output_layer, |l| match l {
                OutputLayerArg::Tied => OutputLayer::Tied,
                OutputLayerArg::Untied => OutputLayer::Untied,
            }),
            rotary: self.rotary.unwrap_or(o.rotary),
        };
        let negatives_scope = match self.negatives_scope {
            None => defaults.negatives_scope,
            Some(ScopeArg::Batch) => NegativesScope::Batch,
            Some(ScopeArg::Sequence) => NegativesScope::Sequence,
            Some(ScopeArg::Position) => NegativesScope::Position,
        };
        let sampler = match self.sampler {
            None | Some(SamplerArg::Uniform) => Sampler::Uniform,
            Some(SamplerArg::Popularity) => Sampler::Popularity,
        };
        let config =
            RunConfig {
                model: ModelConfig {
                    num_items: 1,
                    max_len: self.max_len.unwrap_or(model.max_len),
                    dim,
                    heads: self.heads.unwrap_or(model.heads),
                    layers: self.layers.unwrap_or(model.layers),
                    ff_dim,
                    dropout: self.dropout.unwrap_or(model.dropout),
                    options,
                },
                train: TrainConfig {
                    batch_size: self.batch_size.unwrap_or(defaults.batch_size),
                    lr: self.lr.unwrap_or(defaults.lr),
                    beta1: self.beta1,
                    beta2: self.beta2,
                    eps: self.eps,
                    epochs: self.epochs,
                    patience: self.patience,
                    eval_every: self.eval_every,
                    selection,
                    seed: self.seed,
                    ks: self.k.clone(),
                    loss,
                    negatives: self.negatives.unwrap_or(defaults.negatives),
                    negatives_scope,
                    exclude_seen: self.exclude_seen.unwrap_or(
                        TrainConfig::exclude_seen_by_default(loss, sampler, negatives_scope),
                    ),
                    sampler,
                    gbce_t: self.gbce_t.unwrap_or(defaults.gbce_t),
                    weight_decay: self.weight_decay.unwrap_or(defaults.weight_decay),
                    warmup_steps: self.warmup_steps.unwrap_or(defaults.warmup_steps),
                    lr_schedule: self.lr_schedule.map_or(defaults.lr_schedule, |l| match l {
                        LrScheduleArg::Constant => LrSchedule::Constant,
                        LrScheduleArg::Cosine => LrSchedule::Cosine,
                    }),
                    label_smoothing: self.label_smoothing.unwrap_or(defaults.label_smoothing),
                    grad_clip: self.grad_clip.unwrap_or(defaults.grad_clip),
                    precision: match self.precision {
                        PrecisionArg::Fp32 => Precision::Fp32,
                        PrecisionArg::Bf16 => Precision::Bf16,
                    },
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
                    valid_fraction: self.valid_fraction.unwrap_or(DEFAULT_VALID_FRACTION),
                    split_seed: self.split_seed.unwrap_or(DEFAULT_SPLIT_SEED),
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
    run_until(args, matches, ctrl_c_flag)
}

/// [`run`], stopped by the flag `stop_flag` gives once the run folder is
/// ready to train (the CLI's is raised by Ctrl-C, the Python package's by
/// KeyboardInterrupt).
pub fn run_until(
    args: TrainArgs,
    matches: &ArgMatches,
    stop_flag: impl FnOnce() -> Result<Arc<AtomicBool>>,
) -> Result<ExitCode> {
    args.device.set_threads()?;
    // Everything that can be checked is checked before the run folder is
    // touched: a refused run leaves nothing behind.
    let (run, config) = if args.resume {
        check_resume_flags(matches)?;
        let mut run = RunWriter::open(&args.out, "train")?;
        note_previous_holder(&run);
        let mut config = run.dir().read_config()?;
        if let Some(warning) = config.check_ratings(args.allow_changed_data)? {
            eprintln!("warning: {warning}");
        }
        let recovery = run.recover()?;
        if !recovery.is_clean() {
            eprintln!("note: repaired {}: {recovery}", args.out.display());
        }
        let done = run.committed().map_or(0, |c| c.progress.epoch);
        let changes = new_budget(&mut config.train, &args, matches, done)?;
        if !changes.is_empty() {
            run.write_config(&config)?;
            eprintln!("{} (recorded in config.json)", changes.join(", "));
        }
        (Some(run), config)
    } else {
        let config = args.run_config()?;
        RunWriter::check_new(&args.out, args.force)?;
        (None, config)
    };
    eprintln!("reading {}", config.data.ratings.display());
    let (dataset, split, filtered) = config.data.load_with_report()?;
    if let Some(line) = filter_line(&config, &filtered) {
        eprintln!("{line}");
    }
    check_split(&config, &dataset, &split)?;
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
            if args.preset == PresetArg::Recommended && args.max_len.is_none() {
                fit_max_len(&mut config, &split.train);
            }
            if args.negatives.is_none() {
                cap_negatives(&mut config, &split.train)?;
            }
            config.model.validate().map_err(flag_error)?;
            config
                .train
                .check_catalogue(config.model.num_items)
                .map_err(flag_error)?;
            NegativeSampler::check_unseen(&config.train, config.model.num_items, &split.train)
                .map_err(flag_error)?;
            config.ratings_digest = FileDigest::of_file(&config.data.ratings)?;
        }
    }
    check_memory(&config, &split)?;
    let stats = dataset.stats();
    let cuts = split.cuts.map_or(String::new(), |(valid, test)| {
        format!(
            " (valid from {}, test from {})",
            format_micros(valid),
            format_micros(test)
        )
    });
    eprintln!(
        "{} users, {} items, {} interactions; split {}{cuts}: train {}, valid {}, test {} users",
        stats.users,
        stats.items,
        stats.interactions,
        config.data.split,
        split.train.len(),
        split.valid.len(),
        split.test.len()
    );
    if let Some(line) = loss_line(&config, &split) {
        eprintln!("{line}");
    }

    let device = with_precision(args.device.open()?, config.train.precision)?;
    let run = match run {
        Some(run) => run,
        None => {
            let run = RunWriter::create(&args.out, "train", args.force)?;
            note_previous_holder(&run);
            if args.force {
                eprintln!("replaced the run in {} (--force)", args.out.display());
            }
            run.write_settings(&config, &dataset, &split)?;
            run
        }
    };
    let stop = stop_flag()?;

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

/// A flag raised by Ctrl-C (or SIGTERM); a second one quits at once.
fn ctrl_c_flag() -> Result<Arc<AtomicBool>> {
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
    Ok(stop)
}

/// Sets the recommended preset's `max_len`, which no flag gave, from the
/// training histories' mean length ([`recommended_max_len`]).
fn fit_max_len(config: &mut RunConfig, train: &[UserSequence]) {
    if train.is_empty() {
        return;
    }
    let events: usize = train.iter().map(|u| u.items.len()).sum();
    let mean = events as f64 / train.len() as f64;
    config.model.max_len = recommended_max_len(mean);
    eprintln!(
        "max_len: {} (the recommended preset's, for training histories of {mean:.0} events on average)",
        config.model.max_len
    );
}

/// Lowers negatives that no flag gave (the preset's) to what every user
/// leaves unseen, when negatives exclude the seen items: a small catalogue
/// then trains on all of them instead of being refused.
fn cap_negatives(config: &mut RunConfig, train: &[UserSequence]) -> Result<()> {
    let t = &mut config.train;
    if !(t.loss.is_sampled() && t.exclude_seen) {
        return Ok(());
    }
    let Some(fewest) = NegativeSampler::fewest_unseen(config.model.num_items, train) else {
        return Ok(());
    };
    if fewest.left >= t.negatives {
        return Ok(());
    }
    if fewest.left == 0 {
        bail!(
            "the {} loss draws negatives among the items a user has not seen, and user index {} has seen all {} items: train with --loss full (or --exclude-seen false)",
            t.loss,
            fewest.user,
            config.model.num_items
        );
    }
    eprintln!(
        "negatives: {} instead of {} (user index {} has seen {} of the {} items)",
        fewest.left, t.negatives, fewest.user, fewest.seen, config.model.num_items
    );
    t.negatives = fewest.left;
    Ok(())
}

/// The backend for the run's precision: bf16 products need a CPU that has
/// them; the GPU backend computes in f32.
fn with_precision(device: Device, precision: Precision) -> Result<Device> {
    match (device, precision) {
        (device, Precision::Fp32) => Ok(device),
        (Device::Cpu(_), Precision::Bf16) => {
            let cpu = CpuBackend::with_precision(precision).context("--precision bf16")?;
            eprintln!("precision: {}", cpu.name());
            Ok(Device::Cpu(cpu))
        }
        (Device::Gpu(_), Precision::Bf16) => bail!(
            "--precision bf16 is for the CPU backend (the GPU backend computes in f32): add --device cpu"
        ),
    }
}

/// Refuses flags that would change a run's model, data or training with
/// `--resume`, naming them.
fn check_resume_flags(matches: &ArgMatches) -> Result<()> {
    let device = DeviceArgs::augment_args(clap::Command::new("device"));
    let allowed =
        |id: &str| RESUME_FLAGS.contains(&id) || device.get_arguments().any(|a| a.get_id() == id);
    let train = train_command();
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
    let mut changes = Vec::new();
    if given("epochs") && args.epochs != train.epochs {
        if args.epochs < done.max(1) {
            bail!(
                "--epochs {} is less than the {done} epochs this run has done",
                args.epochs
            );
        }
        changes.push(format!("epochs {} -> {}", train.epochs, args.epochs));
        train.epochs = args.epochs;
    }
    if given("patience") && args.patience != train.patience {
        let show = |p: Option<usize>| p.map_or("none".to_string(), |p| p.to_string());
        changes.push(format!(
            "patience {} -> {}",
            show(train.patience),
            show(args.patience)
        ));
        train.patience = args.patience;
    }
    train.validate().map_err(flag_error)?;
    Ok(changes)
}

fn note_previous_holder(run: &RunWriter) {
    if let Some(holder) = run.previous_holder() {
        eprintln!("note: {holder} stopped without releasing the run folder; taking it over");
    }
}

/// What a sampled loss trains on, e.g. "training loss gbce over 256
/// uniform negatives per sequence (beta 0.2698)".
fn loss_line(config: &RunConfig, split: &Split) -> Option<String> {
    let train = &config.train;
    let sampler = NegativeSampler::new(train, config.model.num_items, &split.train)?;
    let beta = match (train.loss, sampler.positive_weight()) {
        (Loss::Gbce, Some(beta)) => format!(" (t {}, beta {beta:.4})", train.gbce_t),
        _ => String::new(),
    };
    let correction = if train.loss == Loss::SampledSoftmax && train.sampler == Sampler::Popularity {
        ", log-Q corrected"
    } else {
        ""
    };
    let unseen = if train.exclude_seen { " unseen" } else { "" };
    Some(format!(
        "training loss {} over {} {}{unseen} negatives per {}{beta}{correction}; validation loss: full softmax",
        train.loss, train.negatives, train.sampler, train.negatives_scope
    ))
}

/// What the event and duplicate filters did, for the run's log: "dedup
/// consecutive removed 57 repeated events; event types view 800, purchase
/// 90 (targets purchase: 88 of the interactions)".
fn filter_line(config: &RunConfig, report: &FilterReport) -> Option<String> {
    let filter = &config.data.filter;
    let mut parts = Vec::new();
    if filter.dedup != Dedup::None {
        parts.push(format!(
            "dedup {} removed {} repeated events",
            filter.dedup,
            thousands(report.dropped_duplicates)
        ));
    }
    if !report.events_read.is_empty() {
        let mut line = format!("event types {}", event_counts(report));
        if let Some(keep) = &filter.keep_events {
            line.push_str(&format!(
                " (kept {}: {} rows removed)",
                keep.join(","),
                thousands(report.dropped_by_event)
            ));
        }
        if let Some(targets) = &filter.target_events {
            line.push_str(&format!(
                "; targets {}: {} of the interactions",
                targets.join(","),
                thousands(report.targets)
            ));
        }
        parts.push(line);
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The fewest users a temporal window should score before its numbers mean much.
const FEW_USERS: usize = 100;

/// Refuses a split that leaves nothing to train or validate on, saying why;
/// warns when a temporal window scores fewer than [`FEW_USERS`] users.
fn check_split(config: &RunConfig, dataset: &Dataset, split: &Split) -> Result<()> {
    let users = dataset.users.len();
    if let Some((valid_from, test_from)) = split.cuts {
        let window = format!(
            "between {} and {}",
            format_micros(valid_from),
            format_micros(test_from)
        );
        let range = dataset.time_range().map_or(String::new(), |r| {
            format!(" (the interactions run from {})", time_range(r))
        });
        if split.valid.is_empty() {
            bail!(
                "no user is left to validate on: no user with an earlier interaction has one {window}{range}"
            );
        }
        if split.test.is_empty() {
            bail!(
                "no user is left to test on: no user with an earlier interaction has one from {} on{range}",
                format_micros(test_from)
            );
        }
        let all = config.data.temporal_targets == TemporalTargets::All;
        for (part, seqs) in [("validates", &split.valid), ("tests", &split.test)] {
            let mut who: Vec<u32> = seqs.iter().map(|s| s.user).collect();
            who.sort_unstable();
            who.dedup();
            if who.len() < FEW_USERS {
                eprintln!(
                    "warning: the temporal split {part} on only {} users ({} targets){range}; {}",
                    who.len(),
                    seqs.len(),
                    if all {
                        "move the cuts to widen the windows"
                    } else {
                        "--temporal-targets all scores every interaction in the window, or move the cuts"
                    }
                );
            }
        }
    } else if config.data.leave_one_out() {
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
    mut run: RunWriter,
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
        config.data.held_out_last(),
    )?;
    trainer.hook = hook;
    if trainer.restore(&run)? {
        let generation = run.committed().map_or(0, |c| c.generation);
        let s = &trainer.state;
        if s.finished {
            let why = if s.epoch >= config.train.epochs {
                format!("all {} epochs are done", config.train.epochs)
            } else {
                format!(
                    "no better {} for {} epochs",
                    config.train.selection, s.epochs_without_improvement
                )
            };
            eprintln!("{out} is finished ({why}); a larger --epochs or --patience continues it");
        } else {
            eprintln!(
                "continuing at epoch {}, step {} (checkpoint generation {generation})",
                s.epoch + 1,
                s.step
            );
        }
    } else if resume {
        eprintln!("{out} has no checkpoint yet: starting at step 0 with its saved settings");
    }
    let outcome = trainer.run(&mut run, stop)?;
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
    report(backend, config, split, trainer.epochs(), &run)?;
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
    records: &[EpochRecord],
    run: &RunWriter,
) -> Result<()> {
    let Some(best) = records.iter().rev().find(|r| r.best) else {
        bail!("the run has no validated epoch");
    };
    println!("run           {}", run.dir().path().display());
    // The last record is the last epoch trained (with --eval-every N the
    // records are every Nth epoch, and the last epoch is always validated).
    let trained = records.last().map_or(best.epoch, |r| r.epoch);
    println!(
        "best epoch    {} of {} (by valid {})",
        best.epoch, trained, config.train.selection
    );
    print_line("valid", best.valid.loss, best.valid.ranking.as_ref());
    if config.data.held_out_last() {
        let (_, model) = run.dir().load_model(backend)?;
        let bar = progress_bar(split.test.len() as u64, "test");
        let test = evaluate_with_progress(
            backend,
            &model,
            &split.test,
            true,
            &config.train.ks,
            config.train.batch_size,
            &mut |n| bar.inc(n as u64),
        );
        bar.finish_and_clear();
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
