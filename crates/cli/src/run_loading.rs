//! Loading a trained run to recommend from (`recommend`, `serve`,
//! `export` and the Python package): its best model, its config and its
//! ids as a [`Catalog`]. Named for what it does, so that a new command that
//! reads a run finds it.

use std::path::Path;

use anyhow::{Result, bail};
use sasrec_data::popularity;
use sasrec_kernels::Backend;
use sasrec_model::SasRec;
use sasrec_run::{RunConfig, RunDir};

use crate::catalog::Catalog;

/// A run loaded to recommend from.
pub struct LoadedRun<B: Backend> {
    /// config.json.
    pub config: RunConfig,
    /// The best model.
    pub model: SasRec<B>,
    /// Its ids, and the users' histories when asked for.
    pub catalog: Catalog,
}

/// Loads the best model of `run` and its ids; with `histories`, also the
/// users' histories: from the run folder's data.safetensors, or read from
/// `ratings` (or, for a run without that file, the log named in
/// config.json), which must hold the items of the run's vocab.json.
pub fn load_run<B: Backend>(
    backend: &B,
    run: &Path,
    ratings: Option<&Path>,
    histories: bool,
) -> Result<LoadedRun<B>> {
    let run = RunDir::new(run);
    let (mut config, model) = run.load_model(backend)?;
    let saved = run.read_vocab()?;
    let stored = match ratings {
        Some(_) if histories => None,
        _ => run.read_data(&saved)?,
    };
    if let Some(ratings) = ratings {
        config.data.ratings = ratings.to_path_buf();
    }
    let (users, popularity, source) = match stored {
        Some(data) => (data.users, data.popularity, run.data()),
        None if histories => {
            let (dataset, _) = config.data.load()?;
            if !dataset.vocab.matches_saved(&saved) {
                bail!(
                    "the items of {} do not match the run's vocab.json: not the data this run was trained on",
                    config.data.ratings.display()
                );
            }
            let popularity = popularity(&dataset.users, saved.num_items());
            (dataset.users, popularity, config.data.ratings.clone())
        }
        None => (Vec::new(), Vec::new(), config.data.ratings.clone()),
    };
    let users = if histories { users } else { Vec::new() };
    let catalog = Catalog::new(saved, users, &popularity, source);
    Ok(LoadedRun {
        config,
        model,
        catalog,
    })
}
