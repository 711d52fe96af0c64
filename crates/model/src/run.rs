//! A run folder: everything one training run writes, and how to load it back.
//!
//! ```text
//! runs/NAME/
//!   config.json          model, training and data settings
//!   vocab.json           item index <-> raw item id, user index <-> raw user id
//!   model.safetensors    best weights on validation (PyTorch state_dict names)
//!   last.safetensors     latest weights + Adam moments, for --resume
//!   state.json           where training stands, for --resume
//!   metrics.jsonl        one JSON line per epoch
//!   curves.svg           loss and validation metrics per epoch
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sasrec_data::{
    Dataset, FilterConfig, InputSpec, Split, SplitKind, Vocab, build_dataset, read_interactions,
    split,
};
use sasrec_kernels::Backend;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{load_safetensors, write_atomic};
use crate::config::{ModelConfig, TrainConfig};
use crate::sasrec::SasRec;

/// How a run splits its users; written as `leave-one-out` / `random-users`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SplitMethod {
    /// Per user: train on all but the last two items, validate on the
    /// second-to-last, test on the last.
    LeaveOneOut,
    /// Hold out a fraction of the users whole for validation (the notebook's).
    RandomUsers,
}

impl std::fmt::Display for SplitMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SplitMethod::LeaveOneOut => "leave-one-out",
            SplitMethod::RandomUsers => "random-users",
        })
    }
}

/// Which data a run was trained on, enough to rebuild its splits.
///
/// config.json keeps the input description and the filter at this level
/// (`"format"`, `"user_col"`, ..., `"min_rating"`, ...); fields added since
/// a config.json was written take their defaults when it is read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataSpec {
    /// The interaction log: a file, or a folder of Parquet parts.
    pub ratings: PathBuf,
    /// How to read it: format, delimiter, columns, time unit.
    #[serde(flatten)]
    pub input: InputSpec,
    /// Which interactions are kept.
    #[serde(flatten)]
    pub filter: FilterConfig,
    /// How users are split.
    pub split: SplitMethod,
    /// Share of users held out by `random-users`.
    pub valid_fraction: f64,
    /// Seed of the `random-users` split.
    pub split_seed: u64,
}

impl DataSpec {
    /// The data crate's split.
    pub fn split_kind(&self) -> SplitKind {
        match self.split {
            SplitMethod::LeaveOneOut => SplitKind::LeaveOneOut,
            SplitMethod::RandomUsers => SplitKind::RandomUsers {
                valid_fraction: self.valid_fraction,
                seed: self.split_seed,
            },
        }
    }

    /// Whether the split is leave-one-out (it then has test users).
    pub fn leave_one_out(&self) -> bool {
        self.split == SplitMethod::LeaveOneOut
    }

    /// Reads the interactions, filters them and splits them, as at training time.
    pub fn load(&self) -> Result<(Dataset, Split)> {
        let interactions = read_interactions(&self.ratings, &self.input)?;
        let dataset = build_dataset(&interactions, &self.filter)
            .with_context(|| format!("building sequences from {}", self.ratings.display()))?;
        let split = split(&dataset, self.split_kind())?;
        Ok((dataset, split))
    }
}

/// `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Model sizes.
    pub model: ModelConfig,
    /// Training settings.
    pub train: TrainConfig,
    /// Data settings.
    pub data: DataSpec,
}

/// Paths inside a run folder.
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
    /// `config.json`.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    /// `vocab.json`.
    pub fn vocab(&self) -> PathBuf {
        self.dir.join("vocab.json")
    }
    /// `model.safetensors`: the best weights.
    pub fn model(&self) -> PathBuf {
        self.dir.join("model.safetensors")
    }
    /// `last.safetensors`: the latest weights and optimiser state.
    pub fn last(&self) -> PathBuf {
        self.dir.join("last.safetensors")
    }
    /// `state.json`.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// `metrics.jsonl`.
    pub fn metrics(&self) -> PathBuf {
        self.dir.join("metrics.jsonl")
    }
    /// `curves.svg`.
    pub fn curves(&self) -> PathBuf {
        self.dir.join("curves.svg")
    }

    /// Writes `config.json` and `vocab.json` into a new run folder.
    pub fn create(&self, config: &RunConfig, vocab: &Vocab) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        write_json(&self.config(), config)?;
        vocab
            .save(&self.vocab())
            .with_context(|| format!("writing {}", self.vocab().display()))?;
        Ok(())
    }

    /// Reads `config.json`.
    pub fn read_config(&self) -> Result<RunConfig> {
        read_json(&self.config())
    }

    /// Reads `vocab.json`.
    pub fn read_vocab(&self) -> Result<Vocab> {
        Vocab::load(&self.vocab()).with_context(|| format!("reading {}", self.vocab().display()))
    }

    /// Loads the best model of this run onto `backend`.
    pub fn load_model<B: Backend>(&self, backend: &B) -> Result<(RunConfig, SasRec<B>)> {
        let config = self.read_config()?;
        let model = load_model(backend, &self.model(), config.model.clone())?;
        Ok((config, model))
    }
}

/// Loads SASRec weights from a safetensors file written by us or by
/// `safetensors.torch.save_file(model.state_dict(), path)`.
pub fn load_model<B: Backend>(backend: &B, path: &Path, config: ModelConfig) -> Result<SasRec<B>> {
    if !path.exists() {
        bail!(
            "{} does not exist (has the run saved a checkpoint yet?)",
            path.display()
        );
    }
    let (tensors, _) = load_safetensors(path)?;
    // Optimiser state lives in the same file for `last.safetensors`.
    let weights = tensors
        .into_iter()
        .filter(|(name, _, _)| !name.starts_with("optimizer."));
    SasRec::from_weights(backend, config, weights)
        .map_err(|e| anyhow::anyhow!("{} does not fit the run's config.json: {e}", path.display()))
}

/// Writes pretty JSON atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Reads JSON, naming the file in errors.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
