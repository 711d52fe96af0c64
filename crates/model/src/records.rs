//! The per-epoch records of a run (`metrics.jsonl`), which the trainer
//! writes and the plot reads.

use serde::{Deserialize, Serialize};

use crate::evaluate::Evaluation;

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Optimiser steps taken at the end of the epoch.
    pub step: u64,
    /// Target-weighted mean training loss of the epoch.
    pub train_loss: f64,
    /// Validation loss and ranking metrics.
    pub valid: Evaluation,
    /// Training positions (batch x max_len) per second.
    pub tokens_per_s: f64,
    /// Seconds spent training in the epoch (validation excluded).
    pub seconds: f64,
    /// Seconds spent validating after it.
    #[serde(default)]
    pub valid_seconds: f64,
    /// When the epoch (its validation included) ended, in seconds since the
    /// Unix epoch (TensorBoard's wall time).
    #[serde(default)]
    pub ended_at: f64,
    /// Whether this epoch is the best so far.
    pub best: bool,
}
