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
use sasrec_model::{Query, recommend_many, users_per_pass};
use sasrec_run::RunConfig;
use sasrec_run::durable::write_atomic;

use crate::args::DeviceArgs;
use crate::catalog::{Catalog, Ranked};
use crate::device::{Device, print_kernel_times};
use crate::progress::progress_bar;
use crate::recs_file::{RecsFormat, RecsWriter};
use crate::run_loading::{LoadedRun, load_run};

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
    /// movies.csv beside the log, if there is one). With --out, the file
    /// gets a `name` column.
    #[arg(long, value_name = "PATH", alias = "movies")]
    item_names: Option<PathBuf>,
    /// Its column of names (default: title, else name).
    #[arg(long, value_name = "NAME")]
    item_name_col: Option<String>,
    /// Its column of item ids (default: the run's --item-col, else the
    /// usual names movieId, itemId, item_id, ...).
    #[arg(long, value_name = "NAME")]
    item_names_id_col: Option<String>,
    /// Read the users' histories from this log instead of the run folder's
    /// data.safetensors.
    #[arg(long, value_name = "PATH")]
    ratings: Option<PathBuf>,
    /// Fail on an unknown user (--users-file) or item (--items) instead of
    /// leaving it out: by default unknown users are skipped and listed in
    /// OUT.unknown-users.txt, and unknown items are left out of the history.
    #[arg(long)]
    strict: bool,
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
    let (users, unknown) = match &args.users_file {
        Some(path) => read_users(path, catalog, args.strict)?,
        None => (catalog.user_indices().collect(), Vec::new()),
    };
    let names = match &args.item_names {
        Some(_) => Some(load_names(args, &loaded.config, &catalog.vocab)?),
        None => None,
    };
    let mut writer = RecsWriter::create(
        out,
        format,
        catalog.user_kind(),
        catalog.item_kind(),
        names.is_some(),
    )?;
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
                let item = catalog.raw_item(item);
                let name = names
                    .as_ref()
                    .map(|n| n.get(&item).map_or("", String::as_str));
                writer.push(&user, &item, rank as u32 + 1, logit, name)?;
            }
            rows += top.len();
        }
        writer.end_block()?;
        bar.inc(pass.len() as u64);
    }
    bar.finish_and_clear();
    // Held while the list of unknown users is written beside the file.
    let _output = writer.finish()?;
    eprintln!(
        "wrote {rows} recommendations for {} users to {} in {:.1} s",
        users.len(),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    if !unknown.is_empty() {
        // Beside the output, whole or not at all, like it.
        let mut sidecar = out.as_os_str().to_owned();
        sidecar.push(".unknown-users.txt");
        let sidecar = PathBuf::from(sidecar);
        write_atomic(&sidecar, format!("{}\n", unknown.join("\n")).as_bytes())?;
        eprintln!(
            "skipped {} user{} the run does not know (listed in {}; --strict makes them an error)",
            unknown.len(),
            if unknown.len() == 1 { "" } else { "s" },
            sidecar.display()
        );
    }
    Ok(())
}

/// The user indices listed in `path`, one raw id a line, and the ids the
/// run does not know (skipped; with `strict`, the first is an error).
fn read_users(path: &Path, catalog: &Catalog, strict: bool) -> Result<(Vec<u32>, Vec<String>)> {
    let mut users = Vec::new();
    let mut unknown = Vec::new();
    for (n, id) in sasrec_data::read_id_list(path)? {
        match catalog.user(&id) {
            Ok(user) => users.push(user),
            Err(e) if strict => bail!("{}: line {n}: {e} (--strict)", path.display()),
            Err(_) => unknown.push(id),
        }
    }
    if users.is_empty() && unknown.is_empty() {
        bail!("{} lists no users", path.display());
    }
    if users.is_empty() {
        bail!(
            "{}: none of its {} users is known to the run (e.g. {})",
            path.display(),
            unknown.len(),
            sasrec_model::bounded(&unknown[0], 80)
        );
    }
    Ok((users, unknown))
}

/// The recommendations after one user's history or a list of items, as a
/// table or as JSON.
fn one_list<B: Backend>(backend: &B, args: &RecommendArgs, loaded: &LoadedRun<B>) -> Result<()> {
    let catalog = &loaded.catalog;
    let mut unknown = Vec::new();
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
            let (history, not_known) = catalog.items(items);
            if args.strict && !not_known.is_empty() {
                bail!(
                    "item ids not known to the model: {} (--strict)",
                    not_known.join(", ")
                );
            }
            unknown = not_known;
            let who = format!("{} items", history.len());
            (history, None, who)
        }
        (None, None) => bail!("give --user ID or --items ID,ID,..."),
    };
    let exclude_seen = !args.keep_seen;
    let names = load_names(args, &loaded.config, &catalog.vocab)?;
    let name = |id: &RawId| names.get(id).cloned();
    let mut list = if history.is_empty() {
        let popular = catalog.most_popular(args.k).map_err(anyhow::Error::msg)?;
        catalog.response(user, 0, exclude_seen, Ranked::Popular(popular), name)
    } else {
        let query = Query {
            history: &history,
            k: args.k,
            exclude_seen,
        };
        let top = recommend_many(backend, &loaded.model, &[query])?.remove(0);
        catalog.response(user, history.len(), exclude_seen, Ranked::Model(&top), name)
    };
    list.unknown_items = unknown;

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
        if !list.unknown_items.is_empty() {
            writeln!(
                out,
                "unknown items (left out of the history): {}",
                list.unknown_items.join(", ")
            )?;
        }
        if list.fallback.is_some() {
            writeln!(
                out,
                "no item of the history is known to the model: the most popular items"
            )?;
        } else {
            writeln!(out, "after {who}; last:")?;
            for id in &shown {
                writeln!(out, "      {:>width$}  {}", id.to_string(), name(id))?;
            }
        }
        writeln!(out, "top {}:", args.k)?;
        let score = if list.fallback.is_some() {
            " popular"
        } else {
            "   logit"
        };
        writeln!(out, " rank  {:>width$}{score}  name", "item")?;
        for r in &list.recommendations {
            let value = match (r.logit, r.popularity) {
                (Some(logit), _) => format!("{logit:>8.2}"),
                (None, Some(count)) => format!("{count:>8}"),
                (None, None) => format!("{:>8}", ""),
            };
            writeln!(
                out,
                "{:>5}  {:>width$}{value}  {}",
                r.rank,
                r.item.to_string(),
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
