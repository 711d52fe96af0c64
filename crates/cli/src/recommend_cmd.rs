//! `sasrec recommend`: the top-k next items for a user or a list of items.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use sasrec_data::{RawId, Vocab};
use sasrec_kernels::Backend;
use sasrec_model::{RunConfig, RunDir, recommend};

use crate::device::{Device, DeviceArgs, print_kernel_times};

/// `sasrec recommend` flags.
#[derive(Args, Debug)]
#[group(id = "who", required = true, multiple = false, args = ["user", "items"])]
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
    /// How many items.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// A table of item names: CSV/TSV with a header, or Parquet (default:
    /// movies.csv beside the log, if there is one).
    #[arg(long, value_name = "PATH", alias = "movies")]
    item_names: Option<PathBuf>,
    /// Its column of names (default: title, else name).
    #[arg(long, value_name = "NAME")]
    item_name_col: Option<String>,
    /// Its column of item ids (default: the run's --item-col, else the
    /// usual names movieId, itemId, item_id, ...).
    #[arg(long, value_name = "NAME")]
    item_names_id_col: Option<String>,
    /// Read the log from here instead of the path saved in config.json (for --user).
    #[arg(long, value_name = "PATH")]
    ratings: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Runs `sasrec recommend`.
pub fn run(args: RecommendArgs) -> Result<()> {
    if args.k == 0 {
        bail!("--k must be at least 1");
    }
    match args.device.open()? {
        Device::Cpu(b) => recommend_on(&b, &args),
        Device::Gpu(b) => {
            recommend_on(&b, &args)?;
            if args.device.profile_kernels {
                print_kernel_times(&b, 1, "in all");
            }
            Ok(())
        }
    }
}

fn recommend_on<B: Backend>(backend: &B, args: &RecommendArgs) -> Result<()> {
    let run = RunDir::new(&args.run);
    let (mut config, model) = run.load_model(backend)?;
    let vocab = run.read_vocab()?;
    if let Some(ratings) = &args.ratings {
        config.data.ratings = ratings.clone();
    }

    let (history, who) = match (&args.user, &args.items) {
        (Some(user), _) => user_history(&config, &vocab, user)?,
        (None, Some(items)) => {
            let mut history = Vec::new();
            let mut unknown = Vec::new();
            for text in items {
                let index = RawId::parse(text, vocab.item_kind())
                    .ok()
                    .and_then(|raw| vocab.index(&raw));
                match index {
                    Some(i) => history.push(i),
                    None => unknown.push(cut(text, 40)),
                }
            }
            if !unknown.is_empty() {
                let shown = unknown.iter().take(10).cloned().collect::<Vec<_>>();
                bail!(
                    "item ids not known to the model: {}{}",
                    shown.join(", "),
                    if unknown.len() > 10 { ", ..." } else { "" }
                );
            }
            (history, format!("{} items", items.len()))
        }
        (None, None) => bail!("give --user ID or --items ID,ID,..."),
    };
    if history.is_empty() {
        bail!("no history to recommend from");
    }

    let names = load_names(args, &config, &vocab)?;
    let raw = |item: u32| {
        vocab
            .raw(item)
            .context("an item index outside the vocabulary")
    };
    let name = |id: &RawId| names.get(id).map(String::as_str).unwrap_or("");
    let top = recommend(backend, &model, &history, args.k)?;
    let mut shown: Vec<RawId> = history
        .iter()
        .rev()
        .take(3)
        .map(|&i| raw(i))
        .collect::<Result<_>>()?;
    let recommended: Vec<(RawId, f32)> = top
        .iter()
        .map(|&(i, score)| Ok((raw(i)?, score)))
        .collect::<Result<_>>()?;
    // Ids right-aligned in a column as wide as the widest shown.
    let width = shown
        .iter()
        .chain(recommended.iter().map(|(id, _)| id))
        .map(|id| id.to_string().chars().count())
        .max()
        .unwrap_or(0)
        .max(7);

    let mut out = String::new();
    writeln!(out, "after {who}; last:")?;
    for id in shown.drain(..) {
        writeln!(out, "      {:>width$}  {}", id.to_string(), name(&id))?;
    }
    writeln!(out, "top {}:", args.k)?;
    writeln!(out, " rank  {:>width$}   score  name", "item")?;
    for (rank, (id, score)) in recommended.iter().enumerate() {
        writeln!(
            out,
            "{:>5}  {:>width$}  {score:>6.2}  {}",
            rank + 1,
            id.to_string(),
            name(id)
        )?;
    }
    // A closed pipe (`sasrec recommend ... | head`) ends the output quietly.
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The history of the user whose raw id is `user`, from the run's log read
/// and filtered as at training time.
fn user_history(config: &RunConfig, vocab: &Vocab, user: &str) -> Result<(Vec<u32>, String)> {
    let (dataset, _) = config.data.load()?;
    if !dataset.vocab.matches_saved(vocab) {
        bail!(
            "the items of {} do not match the run's vocab.json",
            config.data.ratings.display()
        );
    }
    let not_found = || {
        format!(
            "user {} is not in {} (after the run's filters)",
            cut(user, 80),
            config.data.ratings.display()
        )
    };
    let raw = RawId::parse(user, dataset.vocab.user_kind()).map_err(|_| {
        anyhow::anyhow!(
            "{}; the log's user ids are {}",
            not_found(),
            dataset.vocab.user_kind()
        )
    })?;
    let index = dataset.vocab.user_index(&raw).with_context(not_found)?;
    let seq = dataset
        .users
        .iter()
        .find(|s| s.user == index)
        .with_context(not_found)?;
    let who = format!("user {} ({} interactions)", cut(user, 80), seq.items.len());
    Ok((seq.items.clone(), who))
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

/// `s` cut to `max` characters for a message.
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_string(),
    }
}
