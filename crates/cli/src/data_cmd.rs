//! `sasrec data ...`: look at interaction data before training on it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use sasrec_data::{
    Dedup, FilterConfig, FilterReport, Format, InputSpec, Interactions, SplitKind, TimeUnit,
};

/// Data subcommands.
#[derive(Subcommand)]
pub enum DataCommand {
    /// Print what a log holds: format and columns detected, users, items,
    /// interactions and history lengths after filtering, and the
    /// leave-one-out split sizes.
    Stats {
        #[command(flatten)]
        ratings: RatingsArgs,
        #[command(flatten)]
        filter: FilterArgs,
    },
}

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

/// Runs a data subcommand.
pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Stats { ratings, filter } => stats(&ratings, &filter),
    }
}

fn stats(ratings_args: &RatingsArgs, filter: &FilterArgs) -> anyhow::Result<()> {
    let path = ratings_args.path()?;
    let start = Instant::now();
    let ratings = ratings_args.read()?;
    let read_secs = start.elapsed().as_secs_f64();
    let config = filter.to_config();
    let (dataset, report) = sasrec_data::build_dataset_with_report(&ratings, &config)
        .with_context(|| format!("building sequences from {}", path.display()))?;
    let s = dataset.stats();
    let loo = sasrec_data::split(&dataset, SplitKind::LeaveOneOut)?;

    let source = &ratings.source;
    println!(
        "ratings       {} ({} rows{}, read in {read_secs:.2} s)",
        path.display(),
        thousands(ratings.len()),
        if source.files > 1 {
            format!(" in {} files", source.files)
        } else {
            String::new()
        }
    );
    let c = &source.columns;
    println!(
        "format        {}; columns user `{}`, item `{}`, time `{}`, {}, {}",
        source.format.map_or("?".to_string(), |f| f.to_string()),
        c.user,
        c.item,
        c.time,
        c.rating
            .as_ref()
            .map_or("no rating".to_string(), |r| format!("rating `{r}`")),
        c.event
            .as_ref()
            .map_or("no event type".to_string(), |e| format!("event type `{e}`"))
    );
    println!(
        "ids           users {} ({}), items {} ({})",
        ratings.users.kind(),
        thousands(ratings.users.len()),
        ratings.items.kind(),
        thousands(ratings.items.len())
    );
    if let (Some(format), Some(range)) = (&source.time_format, ratings.time_range()) {
        println!("time          {format}; {}", time_range(range));
    }
    if !report.events_read.is_empty() {
        println!("events        {}", event_counts(&report));
    }
    println!("filters       {}", describe(&config));
    println!(
        "removed       {} rows: {} by user sampling, {} by event type, {} by minimum rating, {} duplicates ({}), {} by minimum interactions",
        thousands(ratings.len() - s.interactions),
        thousands(report.dropped_by_sampling),
        thousands(report.dropped_by_event),
        thousands(report.dropped_by_min_rating),
        thousands(report.dropped_duplicates),
        config.dedup,
        thousands(report.dropped_by_k_core)
    );
    println!("users         {}", thousands(s.users));
    println!("items         {}", thousands(s.items));
    println!("interactions  {}", thousands(s.interactions));
    if let Some(targets) = &config.target_events {
        println!(
            "targets       {} of the interactions ({})",
            thousands(report.targets),
            targets.join(", ")
        );
    }
    println!(
        "history       min {}, median {}, p90 {}, max {}",
        thousands(s.min_len),
        thousands(s.median_len),
        thousands(s.p90_len),
        thousands(s.max_len)
    );
    let short = if config.target_events.is_some() {
        "fewer than 2 targets after a first event"
    } else {
        "< 3 items"
    };
    println!(
        "leave-one-out train {} users, valid {}, test {}; left out: {} too short to train, {} too short to evaluate ({short})",
        thousands(loo.train.len()),
        thousands(loo.valid.len()),
        thousands(loo.test.len()),
        thousands(loo.too_short_for_train),
        thousands(loo.too_short_for_eval)
    );
    Ok(())
}

/// The rows of each event type read: "view 12,601, cart 2,962, purchase 1,806".
pub fn event_counts(report: &FilterReport) -> String {
    let counts: Vec<String> = report
        .events_read
        .iter()
        .map(|(name, rows)| format!("{name} {}", thousands(*rows)))
        .collect();
    counts.join(", ")
}

/// A time range in words: "2023-01-01 00:00:00 UTC to 2023-03-01 ... (59 days)".
pub fn time_range((first, last): (i64, i64)) -> String {
    const DAY: f64 = 86_400e6;
    let days = (last - first) as f64 / DAY;
    let span = if days >= 2.0 {
        format!("{} days", thousands(days.round() as usize))
    } else {
        format!("{:.1} hours", days * 24.0)
    };
    format!(
        "{} to {} ({span})",
        sasrec_data::format_micros(first),
        sasrec_data::format_micros(last)
    )
}

/// The filter settings in words.
fn describe(c: &FilterConfig) -> String {
    let users = if c.user_fraction < 1.0 {
        format!("{} of users (seed {})", c.user_fraction, c.sample_seed)
    } else {
        "all users".to_string()
    };
    let rating = match c.min_rating {
        Some(r) => format!("rating >= {r}"),
        None => "any rating".to_string(),
    };
    let events = match (&c.keep_events, &c.target_events) {
        (None, None) => String::new(),
        (keep, target) => format!(
            "; event types {}, targets {}",
            keep.as_ref().map_or("all".to_string(), |k| k.join(",")),
            target.as_ref().map_or("all".to_string(), |t| t.join(","))
        ),
    };
    format!(
        "{users}; {rating}{events}; dedup {}; users with >= {} and items with >= {} interactions",
        c.dedup, c.min_user_interactions, c.min_item_interactions
    )
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
