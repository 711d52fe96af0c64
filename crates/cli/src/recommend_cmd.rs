//! `sasrec recommend`: the top-k next items for a user or a list of items
//! (a table, or JSON with `--json`), or for every user (or those listed in
//! a file) into a Parquet, CSV or JSON Lines file.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use sasrec_data::{RawId, Vocab};
use sasrec_kernels::Backend;
use sasrec_model::{Query, RunConfig, recommend_many, users_per_pass};

use crate::catalog::{Catalog, LoadedRun, load_run, progress_bar};
use crate::device::{Device, DeviceArgs, print_kernel_times};
use crate::recs_file::{RecsFormat, RecsWriter};

/// `sasrec recommend` flags.
#[derive(Args, Debug)]
#[group(id = "who", required = true, multiple = false, args = ["user", "items", "all_users", "users_file"])]
pub struct RecommendArgs {
    /// Run folder written by `sasrec train`.
    #[arg(long, value_name = "DIR")]
    run: PathBuf,
    /// A user id of the log, as written there (an integer or a string):
    /// recommend after their whole history.
    #[arg(long, value_name = "ID")]
    user: Option<String>,
    /// Item ids of the log, oldest first.
    #[arg(long, value_name = "ID,ID,...", value_delimiter = ',')]
    items: Option<Vec<String>>,
    /// Every user of the log, into --out.
    #[arg(long, requires = "out")]
    all_users: bool,
    /// The users listed in this file (one raw user id a line; blank lines
    /// are ignored), into --out.
    #[arg(long, value_name = "PATH", requires = "out")]
    users_file: Option<PathBuf>,
    /// How many items.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Also recommend items already in the history (left out by default).
    #[arg(long)]
    keep_seen: bool,
    /// With --all-users or --users-file: the file to write, Parquet, CSV or
    /// JSON Lines by its extension (.parquet, .csv, .jsonl); columns user,
    /// item, rank, logit. Written whole or not at all.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// Print the recommendations as JSON.
    #[arg(long, conflicts_with = "out")]
    json: bool,
    /// A table of item names: CSV/TSV with a header, or Parquet (default:
    /// movies.csv beside the log, if there is one).
    #[arg(long, value_name = "PATH", alias = "movies", conflicts_with = "out")]
    item_names: Option<PathBuf>,
    /// Its column of names (default: title, else name).
    #[arg(long, value_name = "NAME")]
    item_name_col: Option<String>,
    /// Its column of item ids (default: the run's --item-col, else the
    /// usual names movieId, itemId, item_id, ...).
    #[arg(long, value_name = "NAME")]
    item_names_id_col: Option<String>,
    /// Read the log from here instead of the path saved in config.json (for
    /// users' histories).
    #[arg(long, value_name = "PATH")]
    ratings: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Runs `sasrec recommend`.
pub fn run(args: RecommendArgs) -> Result<()> {
    args.device.set_threads()?;
    if args.k == 0 {
        bail!("--k must be at least 1");
    }
    if args.user.as_deref().is_some_and(|u| u.trim().is_empty()) {
        bail!("--user is empty: give a user id of the log");
    }
    if let Some(at) = args
        .items
        .as_ref()
        .and_then(|items| items.iter().position(|i| i.trim().is_empty()))
    {
        bail!(
            "--items: id {} of the list is empty; give item ids separated by commas, e.g. --items 101,102",
            at + 1
        );
    }
    if args.out.is_some() && !(args.all_users || args.users_file.is_some()) {
        bail!("--out writes the recommendations of --all-users or --users-file");
    }
    // Refuse an unknown extension before anything is loaded.
    let format = args.out.as_deref().map(RecsFormat::from_path).transpose()?;
    match args.device.open()? {
        Device::Cpu(b) => recommend_on(&b, &args, format),
        Device::Gpu(b) => {
            recommend_on(&b, &args, format)?;
            if args.device.profile_kernels {
                print_kernel_times(&b, 1, "in all");
            }
            Ok(())
        }
    }
}

fn recommend_on<B: Backend>(
    backend: &B,
    args: &RecommendArgs,
    format: Option<RecsFormat>,
) -> Result<()> {
    let histories = args.items.is_none();
    let loaded = load_run(backend, &args.run, args.ratings.as_deref(), histories)?;
    match (format, &args.out) {
        (Some(format), Some(out)) => to_file(backend, args, &loaded, format, out),
        _ => one_list(backend, args, &loaded),
    }
}

/// The recommendations of many users into `out`, in passes of
/// `users_per_pass` users.
fn to_file<B: Backend>(
    backend: &B,
    args: &RecommendArgs,
    loaded: &LoadedRun<B>,
    format: RecsFormat,
    out: &Path,
) -> Result<()> {
    let catalog = &loaded.catalog;
    let users: Vec<u32> = match &args.users_file {
        Some(path) => read_users(path, catalog)?,
        None => catalog.user_indices().collect(),
    };
    let mut writer = RecsWriter::create(out, format, catalog.user_kind(), catalog.item_kind())?;
    let started = Instant::now();
    let bar = progress_bar(users.len() as u64, "recommend");
    let mut rows = 0;
    for pass in users.chunks(users_per_pass(&loaded.model)) {
        let queries: Vec<Query> = pass
            .iter()
            .map(|&u| Query {
                history: catalog.history(u),
                k: args.k,
                exclude_seen: !args.keep_seen,
            })
            .collect();
        let tops = recommend_many(backend, &loaded.model, &queries)?;
        for (&user, top) in pass.iter().zip(&tops) {
            let user = catalog.raw_user(user);
            for (rank, &(item, logit)) in top.iter().enumerate() {
                writer.push(&user, &catalog.raw_item(item), rank as u32 + 1, logit)?;
            }
            rows += top.len();
        }
        writer.end_block()?;
        bar.inc(pass.len() as u64);
    }
    bar.finish_and_clear();
    writer.finish()?;
    eprintln!(
        "wrote {rows} recommendations for {} users to {} in {:.1} s",
        users.len(),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The user indices listed in `path`, one raw id a line.
fn read_users(path: &Path, catalog: &Catalog) -> Result<Vec<u32>> {
    let mut users = Vec::new();
    for (n, id) in sasrec_data::read_id_list(path)? {
        users.push(
            catalog
                .user(&id)
                .map_err(|e| anyhow::anyhow!("{}: line {n}: {e}", path.display()))?,
        );
    }
    if users.is_empty() {
        bail!("{} lists no users", path.display());
    }
    Ok(users)
}

/// The recommendations after one user's history or a list of items, as a
/// table or as JSON.
fn one_list<B: Backend>(backend: &B, args: &RecommendArgs, loaded: &LoadedRun<B>) -> Result<()> {
    let catalog = &loaded.catalog;
    let (history, user, who) = match (&args.user, &args.items) {
        (Some(user), _) => {
            let index = catalog.user(user).map_err(anyhow::Error::msg)?;
            let history = catalog.history(index).to_vec();
            let who = format!(
                "user {} ({} interactions)",
                sasrec_model::bounded(user, 80),
                history.len()
            );
            (history, Some(catalog.raw_user(index)), who)
        }
        (None, Some(items)) => {
            let history = catalog.items(items).map_err(anyhow::Error::msg)?;
            (history, None, format!("{} items", items.len()))
        }
        (None, None) => bail!("give --user ID or --items ID,ID,..."),
    };
    if history.is_empty() {
        bail!("no history to recommend from");
    }
    let query = Query {
        history: &history,
        k: args.k,
        exclude_seen: !args.keep_seen,
    };
    let top = recommend_many(backend, &loaded.model, &[query])?.remove(0);
    let names = load_names(args, &loaded.config, &catalog.vocab)?;
    let name = |id: &RawId| names.get(id).cloned();
    let list = catalog.response(user, history.len(), query.exclude_seen, &top, name);

    let mut out = String::new();
    if args.json {
        out = serde_json::to_string_pretty(&list)?;
        out.push('\n');
    } else {
        let shown: Vec<RawId> = history
            .iter()
            .rev()
            .take(3)
            .map(|&i| catalog.raw_item(i))
            .collect();
        // Ids right-aligned in a column as wide as the widest shown.
        let width = shown
            .iter()
            .chain(list.recommendations.iter().map(|r| &r.item))
            .map(|id| id.to_string().chars().count())
            .max()
            .unwrap_or(0)
            .max(7);
        let name = |id: &RawId| names.get(id).map(String::as_str).unwrap_or("");
        writeln!(out, "after {who}; last:")?;
        for id in &shown {
            writeln!(out, "      {:>width$}  {}", id.to_string(), name(id))?;
        }
        writeln!(out, "top {}:", args.k)?;
        writeln!(out, " rank  {:>width$}   logit  name", "item")?;
        for r in &list.recommendations {
            writeln!(
                out,
                "{:>5}  {:>width$}  {:>6.2}  {}",
                r.rank,
                r.item.to_string(),
                r.logit,
                name(&r.item)
            )?;
        }
    }
    // A closed pipe (`sasrec recommend ... | head`) ends the output quietly.
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Names from --item-names, else from movies.csv beside the log, else none.
fn load_names(
    args: &RecommendArgs,
    config: &RunConfig,
    vocab: &Vocab,
) -> Result<HashMap<RawId, String>> {
    let (path, id_col, name_col) = match &args.item_names {
        Some(path) => (
            path.clone(),
            args.item_names_id_col
                .clone()
                .or_else(|| config.data.input.item_col.clone()),
            args.item_name_col.clone(),
        ),
        None => match movies_csv_beside(&config.data.ratings) {
            Some(path) => (path, Some("movieId".into()), Some("title".into())),
            None => return Ok(HashMap::new()),
        },
    };
    Ok(sasrec_data::read_item_names(
        &path,
        id_col.as_deref(),
        name_col.as_deref(),
        vocab.item_kind(),
    )?)
}

fn movies_csv_beside(ratings: &Path) -> Option<PathBuf> {
    if ratings.is_dir() {
        return None;
    }
    Some(ratings.parent()?.join("movies.csv")).filter(|p| p.exists())
}
