//! `state.json`, the commit point of a run folder: which checkpoint
//! generation is committed, its files with their sizes and hashes, the
//! progress and the validated epochs.

use anyhow::{Result, bail};
use sasrec_model::{EpochRecord, RankingMetrics, TrainState, bounded};
use serde::{Deserialize, Serialize};

use crate::digest::FileDigest;

/// The folder of checkpoint files inside a run folder.
pub const CHECKPOINTS: &str = "checkpoints";
/// The version of the state.json layout.
pub(crate) const STATE_FORMAT: u32 = 1;

/// `state.json`: the commit point of a run folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    /// Layout version.
    pub format: u32,
    /// Checkpoint generation, counting commits from 1.
    pub generation: u64,
    /// Where training stands.
    pub progress: TrainState,
    /// The latest weights and Adam moments: `checkpoints/last-G.safetensors`.
    pub last: CheckpointFile,
    /// The best weights so far, `checkpoints/best-B.safetensors` with
    /// B <= G (none before the first epoch ends).
    pub best: Option<CheckpointFile>,
    /// The finished epochs, in order.
    pub epochs: Vec<EpochRecord>,
    /// The most-popular baseline on the validation users (splits that rank),
    /// drawn beside the curves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<RankingMetrics>,
}

/// A checkpoint file of a generation, with its size and hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointFile {
    /// Path relative to the run folder.
    pub file: String,
    /// Size and hash.
    #[serde(flatten)]
    pub digest: FileDigest,
}

impl Commit {
    /// Checks that the commit is one a run folder can hold: known layout,
    /// checkpoint names that match their generations, epochs in order.
    pub fn validate(&self) -> Result<()> {
        if self.format != STATE_FORMAT {
            bail!(
                "layout version {} is not {STATE_FORMAT}; written by another version of sasrec",
                self.format
            );
        }
        let g = self.generation;
        if g == 0 || self.last.file != checkpoint_name("last", g) {
            bail!(
                "generation {g} names {:?} as its last checkpoint, expected {:?}",
                bounded(&self.last.file, 60),
                checkpoint_name("last", g)
            );
        }
        if let Some(best) = &self.best {
            let b = best
                .file
                .strip_prefix("checkpoints/best-")
                .and_then(|rest| rest.strip_suffix(".safetensors"))
                .and_then(|n| n.parse::<u64>().ok());
            if !b.is_some_and(|b| b >= 1 && b <= g && best.file == checkpoint_name("best", b)) {
                bail!(
                    "generation {g} names {:?} as its best checkpoint, not checkpoints/best-B.safetensors with B <= {g}",
                    bounded(&best.file, 60)
                );
            }
        }
        // One record per validation, in order: after every epoch, or every
        // few, never after the progress.
        let p = &self.progress;
        let mut previous = 0;
        for r in &self.epochs {
            if r.epoch > p.epoch {
                bail!(
                    "progress is at epoch {} but a validation after epoch {} is recorded",
                    p.epoch + 1,
                    r.epoch
                );
            }
            if r.epoch <= previous {
                bail!(
                    "the validation after epoch {} is recorded after the one after epoch {previous}",
                    r.epoch
                );
            }
            previous = r.epoch;
        }
        if self.best.is_none() != p.best.is_none() {
            bail!("a best epoch and a best checkpoint go together");
        }
        Ok(())
    }
}

/// `checkpoints/KIND-G.safetensors`.
pub(crate) fn checkpoint_name(kind: &str, generation: u64) -> String {
    format!("{CHECKPOINTS}/{kind}-{generation}.safetensors")
}
