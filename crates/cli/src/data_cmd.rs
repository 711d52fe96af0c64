//! `sasrec data ...`: look at interaction data before training on it.

use std::time::Instant;

use anyhow::Context;
use clap::Subcommand;
use sasrec_data::{FilterConfig, SplitKind};

use crate::args::{FilterArgs, RatingsArgs};
use crate::data_summary::{event_counts, thousands, time_range};

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
