//! A run's best checkpoint evaluated on its validation or test users: loss,
//! and with held-out targets HR@K, NDCG@K and MRR over all items beside the
//! most-popular baseline.

use std::path::Path;
use std::str::FromStr;

use anyhow::{Result, bail};
use sasrec_kernels::Backend;
use sasrec_model::{
    Evaluation, RankingMetrics, RunDir, SasRec, evaluate_with_progress, popularity_baseline,
};

use crate::Log;
use crate::catalog::progress_bar;

/// Which held-out users to evaluate on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The validation users (the ones that selected the checkpoint).
    Valid,
    /// The test users (leave-one-out and temporal splits).
    Test,
}

impl Part {
    /// `valid` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Part::Valid => "valid",
            Part::Test => "test",
        }
    }
}

impl FromStr for Part {
    type Err = String;

    fn from_str(s: &str) -> Result<Part, String> {
        match s {
            "valid" => Ok(Part::Valid),
            "test" => Ok(Part::Test),
            _ => Err(format!(
                "unknown split part {:?} (use valid or test)",
                sasrec_model::bounded(s, 20)
            )),
        }
    }
}

/// The numbers of one part of a run's split.
pub struct RunEvaluation {
    /// Which part.
    pub part: Part,
    /// Its sequences (users; with `--temporal-targets all`, targets).
    pub users: usize,
    /// The model's loss and ranking metrics.
    pub model: Evaluation,
    /// The most-popular baseline on the same users (held-out targets only).
    pub most_popular: Option<RankingMetrics>,
}

/// Evaluates the best checkpoint of `run` on `part` of its split with
/// cut-offs `ks`: the split the run folder keeps (data.safetensors), or,
/// with `ratings` (and for runs without that file), the log read and split
/// again, refused when it changed since training unless
/// `allow_changed_data`.
pub fn evaluate_run<B: Backend>(
    backend: &B,
    run: &RunDir,
    part: Part,
    ks: &[usize],
    ratings: Option<&Path>,
    allow_changed_data: bool,
    log: Log,
) -> Result<RunEvaluation> {
    if ks.is_empty() || ks.contains(&0) {
        bail!("--k values must be at least 1");
    }
    let mut config = run.read_config()?;
    if let Some(ratings) = ratings {
        config.data.ratings = ratings.to_path_buf();
    }
    let held_out_last = config.data.held_out_last();
    if part == Part::Test && !held_out_last {
        bail!("the run used --split random-users, which has no test users; use --split-part valid");
    }
    let vocab = run.read_vocab()?;
    let stored = match ratings {
        Some(_) => None,
        None => run.read_data(&vocab)?,
    };
    // The split the run keeps; the log only for --ratings and older runs.
    let (split, all_users) = match stored {
        Some(data) => (data.split, data.users.len()),
        None => {
            if let Some(warning) = config.check_ratings(allow_changed_data)? {
                log(&format!("warning: {warning}"));
            }
            let (dataset, split) = config.data.load()?;
            if !dataset.vocab.matches_saved(&vocab) {
                bail!(
                    "the items of {} do not match the run's vocab.json: not the data this run was trained on",
                    config.data.ratings.display()
                );
            }
            (split, dataset.users.len())
        }
    };
    let (_, model): (_, SasRec<B>) = run.load_model(backend)?;
    let users = match part {
        Part::Valid => &split.valid,
        Part::Test => &split.test,
    };
    if users.is_empty() {
        bail!(
            "the split has no {} users: all {all_users} users are too short to evaluate",
            part.name(),
        );
    }
    let bar = progress_bar(users.len() as u64, part.name());
    let result = evaluate_with_progress(
        backend,
        &model,
        users,
        held_out_last,
        ks,
        config.train.batch_size,
        &mut |n| bar.inc(n as u64),
    );
    bar.finish_and_clear();
    let most_popular =
        held_out_last.then(|| popularity_baseline(&split.train, users, config.model.vocab(), ks));
    Ok(RunEvaluation {
        part,
        users: users.len(),
        model: result,
        most_popular,
    })
}
