//! The flag groups (clap `Args`) that more than one subcommand flattens
//! into its own, with what turns them into the library's values: the log to
//! read (`RatingsArgs`, `train` and `data stats`), which of it to keep
//! (`FilterArgs`, the same two) and the backend to run on (`DeviceArgs`,
//! every command that runs the model). A flag group of one subcommand
//! stays in its `*_cmd.rs`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use sasrec_data::{Dedup, FilterConfig, Format, InputSpec, Interactions, TimeUnit};
use sasrec_kernels::CpuBackend;
use sasrec_kernels::gpu::{AdapterChoice, GpuError, GpuOptions, WgpuBackend};

use crate::device::Device;

/// Which interaction log to read and how (shared by the commands that read one).
#[derive(Args, Clone, Debug)]
pub struct RatingsArgs {
    /// Interaction log: CSV/TSV with a header, MovieLens ratings.csv /
    /// ratings.dat / u.data, a RecBole .inter file, a Parquet file or a
    /// folder of Parquet parts (or --dataset).
    #[arg(long, value_name = "PATH", conflicts_with = "dataset")]
    pub ratings: Option<PathBuf>,
    /// A named MovieLens dataset under $SASREC_DATASETS (else ./datasets):
    /// latest-small, 100k, 1m, 10m, 20m, 25m or 32m.
    #[arg(long, value_name = "NAME")]
    pub dataset: Option<String>,
    /// File format when the name does not tell: csv, tsv, dat, inter or parquet.
    #[arg(long)]
    pub format: Option<Format>,
    /// Field separator of a text log: one character (`tab` for a tab).
    #[arg(long, value_name = "CHAR")]
    pub delimiter: Option<String>,
    /// Column of user ids (default: userId, user_id, user, uid, customer_id,
    /// visitor_id or session_id, whichever the file has).
    #[arg(long, value_name = "NAME")]
    pub user_col: Option<String>,
    /// Column of item ids (default: movieId, itemId, item_id, item, iid,
    /// product_id, productId or asin).
    #[arg(long, value_name = "NAME")]
    pub item_col: Option<String>,
    /// Column of times (default: timestamp, time, ts, datetime, event_time or
    /// date). Numbers, or ISO 8601 date-times with or without zone.
    #[arg(long, value_name = "NAME")]
    pub time_col: Option<String>,
    /// Column of ratings (default: rating, if present; logs without one are
    /// implicit feedback).
    #[arg(long, value_name = "NAME")]
    pub rating_col: Option<String>,
    /// Unit of numeric times: s, ms, us or ns (default s; times whose size
    /// says another unit are refused, naming it).
    #[arg(long, value_name = "UNIT")]
    pub time_unit: Option<TimeUnit>,
    /// Column of event types (view, cart, purchase, ...; default:
    /// event_type, event, action_type, behavior_type or interaction_type,
    /// if present). See --keep-events and --target-events.
    #[arg(long, value_name = "NAME")]
    pub event_col: Option<String>,
}

impl RatingsArgs {
    /// The log these arguments name.
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        match (&self.ratings, &self.dataset) {
            (Some(path), _) => Ok(path.clone()),
            (None, Some(name)) => Ok(sasrec_data::dataset_ratings_path(name)?),
            (None, None) => anyhow::bail!("give --ratings PATH or --dataset NAME"),
        }
    }

    /// How to read it.
    pub fn spec(&self) -> InputSpec {
        InputSpec {
            format: self.format,
            delimiter: self.delimiter.clone(),
            user_col: self.user_col.clone(),
            item_col: self.item_col.clone(),
            time_col: self.time_col.clone(),
            rating_col: self.rating_col.clone(),
            time_unit: self.time_unit,
            event_col: self.event_col.clone(),
        }
    }

    /// Reads the log.
    pub fn read(&self) -> anyhow::Result<Interactions> {
        Ok(sasrec_data::read_interactions(&self.path()?, &self.spec())?)
    }
}

/// Which interactions to keep; the defaults keep everything.
#[derive(Args, Clone, Debug)]
pub struct FilterArgs {
    /// Keep this fraction of the users, drawn at random (the notebook uses 0.1).
    #[arg(long, default_value_t = 1.0, value_name = "F")]
    pub user_fraction: f64,
    /// Seed of the user sample.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub sample_seed: u64,
    /// Drop ratings below this.
    #[arg(long, value_name = "R")]
    pub min_rating: Option<f32>,
    /// Keep only users with at least K interactions (k-core, with the item minimum).
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub min_user_interactions: usize,
    /// Keep only items with at least K interactions (k-core, with the user minimum).
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub min_item_interactions: usize,
    /// Keep only these event types (of --event-col), e.g. view,cart,purchase.
    #[arg(long, value_name = "TYPE,...", value_delimiter = ',')]
    pub keep_events: Option<Vec<String>>,
    /// The event types to predict, e.g. purchase: every kept event is model
    /// input, but only positions whose next event is of these types are
    /// trained and evaluated (held-out items are of these types).
    #[arg(long, value_name = "TYPE,...", value_delimiter = ',')]
    pub target_events: Option<Vec<String>>,
    /// Repeated events to drop: none; consecutive (an event that repeats the
    /// user's previous one: same item and event type), the default; or all
    /// (keep each user's first of each item and event type).
    #[arg(long, value_enum, default_value = "consecutive")]
    pub dedup: DedupArg,
}

/// `--dedup`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DedupArg {
    /// Keep every row.
    None,
    /// Drop an event that repeats the user's previous event.
    Consecutive,
    /// Keep each user's first event of each item and event type.
    All,
}

impl FilterArgs {
    /// The filter these flags describe.
    pub fn to_config(&self) -> FilterConfig {
        FilterConfig {
            user_fraction: self.user_fraction,
            sample_seed: self.sample_seed,
            min_rating: self.min_rating,
            min_user_interactions: self.min_user_interactions,
            min_item_interactions: self.min_item_interactions,
            keep_events: self.keep_events.clone(),
            target_events: self.target_events.clone(),
            dedup: match self.dedup {
                DedupArg::None => Dedup::None,
                DedupArg::Consecutive => Dedup::Consecutive,
                DedupArg::All => Dedup::All,
            },
        }
    }
}

/// The most CPU threads `--threads` accepts.
const MAX_THREADS: usize = 1024;

/// Where to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceKind {
    /// The CPU backend (ndarray + rayon).
    Cpu,
    /// The wgpu backend on a GPU (a CPU adapter such as llvmpipe only with --adapter).
    Gpu,
    /// A GPU when one is found, else the CPU (quietly, unless --adapter
    /// names one).
    Auto,
}

/// Device flags shared by the commands that run the model.
#[derive(Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Backend to run on.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceKind,
    /// With --device gpu: the adapter to open, by index or part of its name as
    /// `sasrec devices` lists them (e.g. `llvmpipe` for Mesa's CPU driver).
    #[arg(long, value_name = "INDEX|NAME")]
    pub adapter: Option<String>,
    /// CPU threads, for the row-parallel ops and the matrix products
    /// (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Time every GPU kernel with timestamp queries and print the time spent
    /// in each (train: per step, after every epoch).
    #[arg(long)]
    pub profile_kernels: bool,
    /// Time every CPU op and print the time per op per step at the end of
    /// each epoch (the CPU backend's counterpart of --profile-kernels).
    #[arg(long)]
    pub profile_ops: bool,
}

impl DeviceArgs {
    /// Sizes the CPU thread pools to `--threads` (all cores without it).
    /// Every command calls it first: rayon's pool can be sized only before
    /// its first use, and reading a log already uses it.
    pub fn set_threads(&self) -> Result<()> {
        let Some(threads) = self.threads else {
            return Ok(());
        };
        if !(1..=MAX_THREADS).contains(&threads) {
            anyhow::bail!("--threads must be between 1 and {MAX_THREADS}, got {threads}");
        }
        // SAFETY: called first by the commands, before any other thread of
        // this process exists; matrixmultiply reads the variable when its
        // first product runs.
        unsafe { std::env::set_var("MATMUL_NUM_THREADS", threads.to_string()) };
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .context("setting the CPU thread count")
    }

    /// Opens the backend these flags ask for and says which one on stderr
    /// (after [`DeviceArgs::set_threads`]).
    pub fn open(&self) -> Result<Device> {
        let options = GpuOptions {
            adapter: match &self.adapter {
                None => AdapterChoice::Best,
                Some(a) => match a.parse::<usize>() {
                    Ok(i) => AdapterChoice::Index(i),
                    Err(_) => AdapterChoice::NameContains(a.clone()),
                },
            },
            profiling: self.profile_kernels,
            ..GpuOptions::default()
        };
        let device = match self.device {
            DeviceKind::Cpu => Device::Cpu(CpuBackend),
            DeviceKind::Gpu => Device::Gpu(WgpuBackend::new(&options).context(
                "opening the GPU (see `sasrec devices`; --adapter llvmpipe uses Mesa's CPU driver)",
            )?),
            DeviceKind::Auto => match WgpuBackend::new(&options) {
                Ok(gpu) => Device::Gpu(gpu),
                Err(GpuError::NoAdapter(why)) => {
                    // Said only where a GPU was asked for (an adapter named);
                    // the device line below says what runs.
                    if self.adapter.is_some() {
                        eprintln!("no GPU found ({why}); using the CPU");
                    }
                    Device::Cpu(CpuBackend)
                }
                Err(err) => {
                    return Err(err).context("opening the GPU (use --device cpu to skip it)");
                }
            },
        };
        eprintln!("device: {}", device.name());
        Ok(device)
    }
}
