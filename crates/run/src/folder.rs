//! A run folder: everything one training run writes, and how to read it
//! back. Writing goes through [`RunWriter`](crate::RunWriter), which holds the
//! folder's lock and commits checkpoints so that a kill at any instant leaves
//! the newest complete one resumable.
//!
//! ```text
//! runs/NAME/
//!   lock                 pid and command of the process writing the folder
//!   config.json          model, training and data settings, the ratings file's digest
//!   vocab.json           item index <-> raw item id, user index <-> raw user id
//!   data.safetensors     every user's sequence, the split, item popularity:
//!                        what inference and evaluation need without the log
//!   state.json           the commit point: generation, progress, epochs so far,
//!                        size and xxh3 of the generation's checkpoint files
//!   checkpoints/
//!     last-G.safetensors latest weights + Adam moments of generation G
//!     best-B.safetensors best weights on validation (saved in generation B <= G)
//!   model.safetensors    copy of the committed best-B (PyTorch state_dict names)
//!   metrics.jsonl        one JSON line per committed epoch
//!   curves.svg           loss and validation metrics per committed epoch
//!   events.out.tfevents.sasrec  the same scalars for TensorBoard
//!   test.json            (leave-one-out) test numbers of the best checkpoint
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sasrec_data::{DataSpec, SplitMethod, TemporalTargets, Vocab};
use sasrec_kernels::Backend;
use serde::{Deserialize, Serialize};

use sasrec_model::checkpoint::{from_safetensors, model_from_tensors};
use sasrec_model::{InvalidSetting, ModelConfig, SasRec, TrainConfig, bounded};

use crate::commit::{CheckpointFile, Commit};
use crate::digest::FileDigest;
use crate::run_data::RunData;

/// The largest config.json or state.json read (a run's are a few kB to a
/// few MB): a stray huge file is refused rather than read.
const MAX_JSON_BYTES: u64 = 64 << 20;

/// `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Model sizes.
    pub model: ModelConfig,
    /// Training settings.
    pub train: TrainConfig,
    /// Data settings.
    pub data: DataSpec,
    /// Size and hash of the ratings file the run was trained on.
    pub ratings_digest: FileDigest,
}

impl RunConfig {
    /// Checks every setting; the error names the field as in config.json.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.model.validate()?;
        self.train.validate()?;
        let data = &self.data;
        self.train.selection.check_split(data.held_out_last())?;
        let temporal_flags = [
            ("valid_time", data.valid_time.is_some()),
            ("test_time", data.test_time.is_some()),
            ("valid_time_fraction", data.valid_time_fraction.is_some()),
            ("test_time_fraction", data.test_time_fraction.is_some()),
        ];
        if data.split == SplitMethod::Temporal {
            data.split_kind()?;
        } else if data.temporal_targets != TemporalTargets::First {
            return Err(InvalidSetting::new(
                "temporal_targets",
                format!(
                    "chooses the targets of the temporal split, not of {}",
                    data.split
                ),
            ));
        } else if let Some((field, _)) = temporal_flags.iter().find(|(_, given)| *given) {
            return Err(InvalidSetting::new(
                field,
                format!(
                    "starts a window of the temporal split, not of {}",
                    data.split
                ),
            ));
        }
        if !(0.0..1.0).contains(&data.valid_fraction) {
            return Err(InvalidSetting::new(
                "valid_fraction",
                format!("must be in [0, 1), got {}", data.valid_fraction),
            ));
        }
        let user_fraction = data.filter.user_fraction;
        if !(user_fraction > 0.0 && user_fraction <= 1.0) {
            return Err(InvalidSetting::new(
                "user_fraction",
                format!("must be in (0, 1], got {user_fraction}"),
            ));
        }
        if let Some(rating) = data.filter.min_rating.filter(|r| !r.is_finite()) {
            return Err(InvalidSetting::new(
                "min_rating",
                format!("must be a finite number, got {rating}"),
            ));
        }
        Ok(())
    }

    /// Checks that the ratings file still is the one the run was trained on.
    /// A changed file is an error or, with `allow_changed`, a warning
    /// returned for the caller to show.
    pub fn check_ratings(&self, allow_changed: bool) -> Result<Option<String>> {
        let now = FileDigest::of_file(&self.data.ratings)?;
        let Some(change) = self.ratings_digest.change(&now) else {
            return Ok(None);
        };
        let what = format!(
            "{} changed since the run was trained ({change})",
            self.data.ratings.display()
        );
        if !allow_changed {
            bail!("{what}; pass --allow-changed-data to use it anyway");
        }
        Ok(Some(format!(
            "{what}; using it anyway (--allow-changed-data)"
        )))
    }
}

/// Paths inside a run folder, and reading it.
#[derive(Clone, Debug)]
pub struct RunDir {
    dir: PathBuf,
}

impl RunDir {
    /// The run folder `dir` (not created).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RunDir { dir: dir.into() }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }
    /// A file of the folder, by its path relative to the folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    /// `config.json`.
    pub fn config(&self) -> PathBuf {
        self.file("config.json")
    }
    /// `vocab.json`.
    pub fn vocab(&self) -> PathBuf {
        self.file("vocab.json")
    }
    /// `data.safetensors`: the users' sequences, the split, item popularity.
    pub fn data(&self) -> PathBuf {
        self.file(crate::run_data::DATA_FILE)
    }
    /// `state.json`, the commit point.
    pub fn state(&self) -> PathBuf {
        self.file("state.json")
    }
    /// `model.safetensors`: the best weights.
    pub fn model(&self) -> PathBuf {
        self.file("model.safetensors")
    }
    /// `metrics.jsonl`.
    pub fn metrics(&self) -> PathBuf {
        self.file("metrics.jsonl")
    }
    /// `curves.svg`.
    pub fn curves(&self) -> PathBuf {
        self.file("curves.svg")
    }
    /// TensorBoard's event file (see [`crate::tensorboard`]).
    pub fn events(&self) -> PathBuf {
        self.file(crate::tensorboard::EVENTS_FILE)
    }

    /// Whether the folder holds a run (its config.json, or a commit).
    pub fn holds_run(&self) -> bool {
        self.config().exists() || self.state().exists()
    }

    /// The error for a folder that holds no run.
    pub fn no_run(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "{} holds no run (no config.json; `sasrec train --out DIR` makes one)",
            self.dir.display()
        )
    }

    /// Reads and checks `config.json`.
    pub fn read_config(&self) -> Result<RunConfig> {
        let path = self.config();
        if !path.exists() {
            return Err(self.no_run());
        }
        let config: RunConfig = read_json(&path)?;
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(config)
    }

    /// Reads `vocab.json`.
    pub fn read_vocab(&self) -> Result<Vocab> {
        Vocab::load(&self.vocab()).with_context(|| format!("reading {}", self.vocab().display()))
    }

    /// Reads `data.safetensors`, checked against `vocab`; `None` for a run
    /// written before run folders kept their data (read its log instead).
    pub fn read_data(&self, vocab: &Vocab) -> Result<Option<RunData>> {
        let path = self.data();
        if !path.exists() {
            return Ok(None);
        }
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        RunData::from_bytes(&bytes, &path, vocab).map(Some)
    }

    /// Reads and checks `state.json`; `None` when the run has committed no
    /// checkpoint yet.
    pub fn read_commit(&self) -> Result<Option<Commit>> {
        let path = self.state();
        if !path.exists() {
            return Ok(None);
        }
        let commit: Commit = read_json(&path)?;
        commit
            .validate()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Some(commit))
    }

    /// Reads a checkpoint file named by the commit, refusing it unless its
    /// size and hash are the ones recorded.
    pub fn read_checkpoint(&self, file: &CheckpointFile) -> Result<Vec<u8>> {
        read_verified(
            &self.file(&file.file),
            &file.digest,
            "its checksum in state.json",
        )
    }

    /// Loads the best model of this run onto `backend`: `model.safetensors`,
    /// checked against the best checkpoint's checksum in state.json.
    pub fn load_model<B: Backend>(&self, backend: &B) -> Result<(RunConfig, SasRec<B>)> {
        let config = self.read_config()?;
        let bytes = self.read_published_best()?;
        let (tensors, _) = from_safetensors(&bytes, &self.model())?;
        let model = model_from_tensors(backend, tensors, config.model.clone(), &self.model())?;
        Ok((config, model))
    }

    /// The bytes of `model.safetensors`, verified. A trainer publishes it
    /// right after committing state.json, so a reader that catches the two
    /// in between sees a mismatch: it looks again before giving up.
    fn read_published_best(&self) -> Result<Vec<u8>> {
        const TRIES: usize = 3;
        let path = self.model();
        for attempt in 1.. {
            let best = self.read_commit()?.and_then(|c| c.best).with_context(|| {
                format!(
                    "{} has no trained model yet (no epoch has finished)",
                    self.dir.display()
                )
            })?;
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let Some(change) = best.digest.change(&FileDigest::of_bytes(&bytes)) else {
                return Ok(bytes);
            };
            if attempt < TRIES {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            // Say what is wrong inside the file when that can be said.
            from_safetensors(&bytes, &path)?;
            bail!(
                "{} does not match {} ({change}): it changed after it was saved; \
                 `sasrec train --resume --out {}` rewrites it from the checkpoint",
                path.display(),
                best.file,
                self.dir.display()
            );
        }
        unreachable!("the last try returns")
    }
}

/// Reads `path`, refusing it unless its size and hash are `expected`
/// (`recorded` says where `expected` comes from).
pub(crate) fn read_verified(path: &Path, expected: &FileDigest, recorded: &str) -> Result<Vec<u8>> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let bytes = if size == expected.bytes {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
    } else {
        Vec::new()
    };
    let now = FileDigest {
        bytes: size,
        ..FileDigest::of_bytes(&bytes)
    };
    if let Some(change) = expected.change(&now) {
        bail!(
            "{} does not match {recorded} ({change}): it changed after it was saved",
            path.display()
        );
    }
    Ok(bytes)
}

/// Reads JSON, naming the file, its line and column in a one-line error.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size > MAX_JSON_BYTES {
        bail!(
            "{} is {size} bytes: too large for a run folder's JSON file",
            path.display()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|err| {
        // serde_json ends its message with the position; say it first and
        // cut the rest, which may quote a value of any length.
        let position = format!(" at line {} column {}", err.line(), err.column());
        let message = err.to_string();
        let message = message.strip_suffix(&position).unwrap_or(&message);
        anyhow::anyhow!(
            "{}: line {}, column {}: {}",
            path.display(),
            err.line(),
            err.column(),
            bounded(message, 100)
        )
    })
}

/// Pretty JSON with a final newline.
pub(crate) fn json_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(text.into_bytes())
}
