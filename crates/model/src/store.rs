//! Where a [`Trainer`](crate::Trainer) commits its progress: the trait it
//! reports through, and [`MemoryStore`], which keeps the last commit in
//! memory. The run folder on disk (`sasrec-run`'s `RunWriter`) is the other
//! implementation; the trainer knows nothing of files.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::metrics::RankingMetrics;
use crate::records::EpochRecord;

/// Where training stands; saved with each commit (a run
/// folder's `state.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The epoch in progress (0-based).
    pub epoch: usize,
    /// Batches of `epoch` already trained on.
    pub batch: usize,
    /// Optimiser steps taken.
    pub step: u64,
    /// Sum of `loss * targets` over the batches trained on since the last
    /// validation (the epoch's, unless validation runs every few epochs).
    pub epoch_loss_sum: f64,
    /// Targets in those batches.
    pub epoch_targets: u64,
    /// Seconds spent on those batches.
    pub epoch_seconds: f64,
    /// Positions (sequences x max_len) in those batches.
    pub epoch_tokens: u64,
    /// Best validation number so far and its epoch (1-based).
    pub best: Option<(f64, usize)>,
    /// Validations since the best one (epochs, when every epoch validates).
    pub epochs_without_improvement: usize,
    /// Whether the run is over (epochs done or early stopping).
    pub finished: bool,
}

/// One generation of a run, as the trainer commits it after a validation
/// (or an epoch without one, or an interruption).
#[derive(Clone, Copy, Debug)]
pub struct Generation<'a> {
    /// Where training stands.
    pub progress: &'a TrainState,
    /// The weights and Adam moments (safetensors bytes), to resume from.
    pub last: &'a [u8],
    /// The weights, when validation improved (safetensors bytes, with the
    /// epoch in their metadata).
    pub best: Option<&'a [u8]>,
    /// Every validated epoch so far.
    pub epochs: &'a [EpochRecord],
}

/// What a store gives back to resume from: its last commit.
#[derive(Clone, Debug)]
pub struct Committed {
    /// Where training stood.
    pub progress: TrainState,
    /// Every validated epoch up to then.
    pub epochs: Vec<EpochRecord>,
    /// The `last` checkpoint's bytes (weights and Adam moments).
    pub checkpoint: Vec<u8>,
    /// Where the checkpoint came from, for error messages (a file name).
    pub source: String,
}

/// Where a trainer keeps its progress. A commit either happens whole or not
/// at all: a resumed trainer starts from the last one.
pub trait RunStore {
    /// The last commit, `None` when nothing is committed yet.
    fn last_commit(&self) -> Result<Option<Committed>>;
    /// Commits one generation.
    fn commit(&mut self, generation: Generation<'_>) -> Result<()>;
    /// The most-popular baseline on the validation users (for curves beside
    /// the model's), given before the first commit of a run.
    fn set_baseline(&mut self, baseline: Option<RankingMetrics>);
}

/// A [`RunStore`] in memory: the last commit and the best weights, for
/// research code and tests that train without a run folder.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    last: Option<Committed>,
    /// The best weights so far (safetensors bytes).
    pub best: Option<Vec<u8>>,
    /// The baseline the trainer gave.
    pub baseline: Option<RankingMetrics>,
    /// Commits so far.
    pub commits: u64,
}

impl MemoryStore {
    /// The validated epochs of the last commit.
    pub fn epochs(&self) -> &[EpochRecord] {
        self.last.as_ref().map_or(&[], |c| &c.epochs)
    }
}

impl RunStore for MemoryStore {
    fn last_commit(&self) -> Result<Option<Committed>> {
        Ok(self.last.clone())
    }

    fn commit(&mut self, generation: Generation<'_>) -> Result<()> {
        self.commits += 1;
        self.last = Some(Committed {
            progress: generation.progress.clone(),
            epochs: generation.epochs.to_vec(),
            checkpoint: generation.last.to_vec(),
            source: format!("commit {} in memory", self.commits),
        });
        if let Some(best) = generation.best {
            self.best = Some(best.to_vec());
        }
        Ok(())
    }

    fn set_baseline(&mut self, baseline: Option<RankingMetrics>) {
        self.baseline = baseline;
    }
}
