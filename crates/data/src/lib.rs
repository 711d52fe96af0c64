//! MovieLens data for SASRec: readers, filters, the item index, chronological
//! per-user sequences, splits, and padded batches of item indices.
//!
//! This crate knows nothing of tensors: batches are flat `Vec<u32>`s.
//!
//! ```no_run
//! use sasrec_data::*;
//! # fn main() -> Result<(), DataError> {
//! let ratings = read_ratings(&dataset_ratings_path("latest-small")?, None)?;
//! let dataset = build_dataset(&ratings, &FilterConfig::default())?;
//! let split = split(&dataset, SplitKind::LeaveOneOut);
//! for batch in batches(&split.train, 50, 128, Order::Shuffled { seed: 42, epoch: 0 }, false) {
//!     // batch.inputs and batch.targets are [batch.batch_size * 50], row-major.
//! }
//! # Ok(()) }
//! ```
//!
//! Item indices run 1..=N ([`Vocab::num_items`]); 0 is padding, in inputs and
//! in targets ("no target here").

mod batch;
mod dataset;
mod error;
mod location;
mod read;
mod split;
pub mod synthetic;
mod vocab;

pub use batch::{Batch, Batches, Order, batches, permutation, window};
pub use dataset::{
    Dataset, FilterConfig, FilterReport, Stats, UserSequence, build_dataset,
    build_dataset_with_report,
};
pub use error::DataError;
pub use location::{KnownDataset, dataset_ratings_path, datasets_dir, test_dataset};
pub use read::{Format, Ratings, parse_ratings, read_ratings, titles};
pub use split::{Split, SplitKind, split};
pub use vocab::Vocab;
