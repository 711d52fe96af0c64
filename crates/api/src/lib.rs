//! What the `sasrec` command-line tool and the Python package share: the
//! run-level operations over the library crates, each in one place.
//!
//! - [`TrainJob`]: train a run folder from a [`RunConfig`](sasrec_model::RunConfig)
//!   (a log on disk, or interactions already in memory), resume it, and
//!   evaluate its best checkpoint on the test users.
//! - [`settings`]: `sasrec train`'s settings by their TOML keys (`max_len`,
//!   `lr`, `split`, ...) into a `RunConfig`.
//! - [`catalog`]: a trained run loaded to recommend from (raw ids <->
//!   indices, users' histories, item popularity).
//! - [`evaluate_run`]: a run's best checkpoint on its validation or test users.
//! - [`Device`]: the CPU or a GPU, opened as asked.
//!
//! Everything a step says goes through a [`Log`] (stderr in the CLI,
//! `sys.stderr` in Python); errors are `anyhow` errors whose messages name
//! the setting, file or id at fault.

pub mod catalog;
pub mod device;
pub mod evaluate;
pub mod settings;
pub mod text;
pub mod train;

pub use device::{Device, DeviceChoice, DeviceKind, set_threads};
pub use evaluate::{Part, RunEvaluation, evaluate_run};
pub use sasrec_model::Log;
pub use train::{Report, TrainJob, Trained};
