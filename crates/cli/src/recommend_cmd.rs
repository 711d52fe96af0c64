//! `sasrec recommend`: the top-k next movies for a user or a list of movies.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use sasrec_kernels::Backend;
use sasrec_model::{RunDir, recommend};

use crate::device::{Device, DeviceArgs};

/// `sasrec recommend` flags.
#[derive(Args, Debug)]
#[group(id = "who", required = true, multiple = false, args = ["user", "items"])]
pub struct RecommendArgs {
    /// Run folder written by `sasrec train`.
    #[arg(long, value_name = "DIR")]
    run: PathBuf,
    /// A user id of the ratings file: recommend after their whole history.
    #[arg(long, value_name = "ID")]
    user: Option<u32>,
    /// Movie ids watched, oldest first.
    #[arg(long, value_name = "ID,ID,...", value_delimiter = ',')]
    items: Option<Vec<u32>>,
    /// How many movies.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// movies.csv for titles (default: movies.csv beside the ratings file, if present).
    #[arg(long, value_name = "PATH")]
    movies: Option<PathBuf>,
    /// Read the ratings from here instead of the path saved in config.json (for --user).
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
        Device::Gpu(b) => recommend_on(&b, &args),
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
        (Some(user), _) => {
            let (dataset, _) = config.data.load()?;
            if dataset.vocab != vocab {
                bail!(
                    "the items of {} do not match the run's vocab.json",
                    config.data.ratings.display()
                );
            }
            let seq = dataset
                .users
                .iter()
                .find(|s| s.user == *user)
                .with_context(|| {
                    format!(
                        "user {user} is not in {} (after the run's filters)",
                        config.data.ratings.display()
                    )
                })?;
            (
                seq.items.clone(),
                format!("user {user} ({} movies rated)", seq.items.len()),
            )
        }
        (None, Some(movies)) => {
            let unknown: Vec<String> = movies
                .iter()
                .filter(|m| vocab.index(**m).is_none())
                .map(|m| m.to_string())
                .collect();
            if !unknown.is_empty() {
                bail!("movie ids not known to the model: {}", unknown.join(", "));
            }
            (
                movies
                    .iter()
                    .map(|m| vocab.index(*m).expect("checked above"))
                    .collect(),
                format!("{} movies", movies.len()),
            )
        }
        (None, None) => bail!("give --user ID or --items ID,ID,..."),
    };
    if history.is_empty() {
        bail!("no history to recommend from");
    }

    let titles = load_titles(args, &config.data.ratings)?;
    let title = |movie: u32| titles.get(&movie).map(String::as_str).unwrap_or("");
    println!("after {who}; last watched:");
    for &item in history.iter().rev().take(3) {
        let movie = vocab
            .raw(item)
            .expect("history items are in the vocabulary");
        println!("      {movie:>7}  {}", title(movie));
    }
    println!("top {}:", args.k);
    println!(" rank  movieId   score  title");
    for (rank, (item, score)) in recommend(backend, &model, &history, args.k)
        .into_iter()
        .enumerate()
    {
        let movie = vocab.raw(item).expect("recommendations are real items");
        println!(
            "{:>5}  {movie:>7}  {score:>6.2}  {}",
            rank + 1,
            title(movie)
        );
    }
    Ok(())
}

/// Titles from --movies, else from movies.csv beside the ratings, else none.
fn load_titles(args: &RecommendArgs, ratings: &std::path::Path) -> Result<HashMap<u32, String>> {
    let path = match &args.movies {
        Some(p) => p.clone(),
        None => match ratings
            .parent()
            .map(|d| d.join("movies.csv"))
            .filter(|p| p.exists())
        {
            Some(p) => p,
            None => return Ok(HashMap::new()),
        },
    };
    Ok(sasrec_data::titles(&path)?)
}
