//! Interaction logs for SASRec: readers (CSV/TSV with any columns, MovieLens
//! `.dat`, RecBole `.inter`, Parquet), filters, the item and user index,
//! chronological per-user sequences, splits, and padded batches of item
//! indices.
//!
//! This crate knows nothing of tensors: batches are flat `Vec<u32>`s.
//!
//! ```no_run
//! use sasrec_data::*;
//! # fn main() -> Result<(), DataError> {
//! // MovieLens: no options needed. Any other log: name its columns.
//! let spec = InputSpec {
//!     user_col: Some("visitor".into()),
//!     item_col: Some("product".into()),
//!     time_col: Some("ts".into()),
//!     ..InputSpec::default()
//! };
//! let interactions = read_interactions("events.parquet".as_ref(), &spec)?;
//! let dataset = build_dataset(&interactions, &FilterConfig::default())?;
//! let split = split(&dataset, SplitKind::LeaveOneOut)?;
//! for batch in batches(&split.train, 50, 128, Order::Shuffled { seed: 42, epoch: 0 }, false) {
//!     // batch.inputs and batch.targets are [batch.batch_size * 50], row-major.
//! }
//! # Ok(()) }
//! ```
//!
//! Item indices run 1..=N ([`Vocab::num_items`]); 0 is padding, in inputs and
//! in targets ("no target here"). Raw ids (integers or strings) stay as the
//! input had them, in the [`Vocab`].

mod batch;
mod dataset;
mod error;
mod id_list;
mod ids;
mod input;
mod interactions;
mod location;
mod names;
mod read;
mod spec;
mod split;
pub mod synthetic;
mod time;
mod vocab;

pub use batch::{Batch, Batches, Order, batches, permutation, window};
pub use dataset::{
    Dataset, Dedup, FilterConfig, FilterReport, Stats, UserSequence, build_dataset,
    build_dataset_with_report, popularity,
};
pub use error::{DataError, InvalidSetting, Place};
pub use id_list::read_id_list;
pub use ids::{IdKind, IdTable, MAX_ID_BYTES, RawId};
pub use input::{Columns, Format, InputSpec};
pub use interactions::{Interactions, Source, check_time_unit};
pub use location::{KnownDataset, dataset_ratings_path, datasets_dir, test_dataset};
pub use names::read_item_names;
pub use read::{input_files, parse_interactions, read_interactions};
pub use spec::{DataSpec, SplitMethod};
pub use split::{Split, SplitKind, TemporalTargets, TimeCut, split};
pub use time::{TimeFormat, TimeUnit, format_micros, parse_time};
pub use vocab::Vocab;
