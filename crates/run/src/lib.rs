//! A SASRec training run on disk: the run folder (see [`folder`] for its
//! layout), written by [`RunWriter`] so that a kill at any instant leaves it
//! resumable, and read back by [`RunDir`].
//!
//! The trainer (`sasrec-model`'s `Trainer`) knows nothing of files: it
//! commits through the `RunStore` trait, which [`RunWriter`] implements.
//! Besides the checkpoints, each commit publishes the best model
//! (`model.safetensors`), `metrics.jsonl`, the curves ([`plot`]) and
//! TensorBoard's event file ([`tensorboard`]).

pub mod commit;
pub mod digest;
pub mod durable;
pub mod folder;
pub mod lock;
pub mod plot;
pub mod run_data;
pub mod tensorboard;
pub mod writer;

pub use commit::{CheckpointFile, Commit};
pub use digest::FileDigest;
pub use folder::{RunConfig, RunDir, read_json};
pub use run_data::RunData;
pub use writer::{Recovery, RunWriter};
