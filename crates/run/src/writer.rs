//! Writing a run folder: one writer at a time, one commit point per
//! checkpoint generation, so that a kill at any instant leaves the newest
//! complete generation resumable.
//!
//! The writer holds the folder's lock ([`RunLock`]) for its life. A
//! generation G is saved in this order:
//!
//! 1. `checkpoints/last-G.safetensors` (and `best-G.safetensors` when
//!    validation improved), each written to a temporary file, flushed and
//!    renamed into place;
//! 2. `state.json`, naming generation G, its progress and epochs, and the
//!    size and xxh3 of its checkpoint files: its rename is the commit point;
//! 3. the published files, rewritten from the commit: `model.safetensors`
//!    (a copy of the best checkpoint), `metrics.jsonl`, `curves.svg` and
//!    TensorBoard's event file (appended to: it only grows);
//! 4. the files of older generations are removed.
//!
//! A kill before step 2 leaves generation G-1 committed, its files intact;
//! a kill after it leaves G committed. [`RunWriter::recover`] then removes
//! temporary files and checkpoints no commit names, and rewrites published
//! files that do not match the commit. A folder with config.json and no
//! state.json is a run that committed nothing yet: it resumes from step 0.
//! One that also holds what only a commit leaves (published files, or
//! checkpoints after generation 1) lost its state.json some other way: it
//! is refused, and nothing in it removed, since the checksums that would
//! tell which checkpoints are whole went with state.json.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sasrec_data::{Dataset, Split};

use crate::commit::{CHECKPOINTS, CheckpointFile, Commit, STATE_FORMAT, checkpoint_name};
use crate::digest::FileDigest;
use crate::durable::{is_tmp, remove_file, write_atomic, write_growing};
use crate::folder::{RunConfig, RunDir, json_bytes};
use crate::lock::{LOCK_FILE, RunLock};
use crate::plot::render;
use crate::run_data::{DATA_FILE, RunData};
use crate::tensorboard::{EVENTS_FILE, events};
use sasrec_model::RankingMetrics;
use sasrec_model::bounded;
use sasrec_model::{Committed, Generation, RunStore};

/// Files a run folder may hold besides temporary files: a folder holding
/// anything else is not one, and is never cleared.
const RUN_FILES: [&str; 12] = [
    LOCK_FILE,
    INPUT_FILE,
    "config.json",
    "vocab.json",
    DATA_FILE,
    "state.json",
    CHECKPOINTS,
    "model.safetensors",
    "metrics.jsonl",
    "curves.svg",
    EVENTS_FILE,
    "test.json",
];
/// The log of a run trained on interactions given in memory (the Python
/// package writes a DataFrame here before training, and the run's
/// `ratings` names it): a run folder may hold it, and replacing the run
/// keeps it, since it is the new run's data.
pub const INPUT_FILE: &str = "interactions.parquet";
/// Files published from the commit (removed when nothing is committed).
const PUBLISHED: [&str; 5] = [
    "model.safetensors",
    "metrics.jsonl",
    "curves.svg",
    EVENTS_FILE,
    "test.json",
];

/// What [`RunWriter::recover`] cleaned up.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recovery {
    /// Files of an interrupted save that were removed (relative paths).
    pub removed: Vec<String>,
    /// Published files rewritten from the commit.
    pub rewritten: Vec<String>,
}

impl Recovery {
    /// Whether there was nothing to do.
    pub fn is_clean(&self) -> bool {
        self.removed.is_empty() && self.rewritten.is_empty()
    }
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |names: &[String]| {
            let mut shown: Vec<String> = names.iter().take(4).map(|n| bounded(n, 60)).collect();
            if names.len() > 4 {
                shown.push(format!("and {} more", names.len() - 4));
            }
            shown.join(", ")
        };
        let mut parts = Vec::new();
        if !self.removed.is_empty() {
            parts.push(format!("removed {}", list(&self.removed)));
        }
        if !self.rewritten.is_empty() {
            parts.push(format!("rewrote {}", list(&self.rewritten)));
        }
        write!(f, "{}", parts.join("; "))
    }
}

/// A run folder opened for writing: locked for the writer's life.
#[derive(Debug)]
pub struct RunWriter {
    dir: RunDir,
    lock: RunLock,
    committed: Option<Commit>,
    /// Written into every commit from now on.
    baseline: Option<RankingMetrics>,
}

impl RunWriter {
    /// Prepares `dir` for a new run: creates it, locks it, and refuses it if
    /// it already holds a run, unless `replace`, which clears it. A folder
    /// holding files a run folder does not hold is always refused: nothing
    /// but our own files is ever removed. `command` (e.g. `train`) is shown
    /// to a writer refused meanwhile.
    pub fn create(dir: impl Into<PathBuf>, command: &str, replace: bool) -> Result<RunWriter> {
        let dir = RunDir::new(dir);
        let path = dir.path();
        // Checked before the lock file is made (a folder of other files gets
        // none), and again under the lock.
        Self::check_new(path, replace)?;
        fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        let lock = RunLock::acquire(path, command)?;
        let mut ours = Self::check_new(path, replace)?;
        // config.json first: a clear cut short leaves no run behind.
        ours.sort_by_key(|n| n != "config.json");
        let kept = [LOCK_FILE, CHECKPOINTS, INPUT_FILE];
        for name in ours.iter().filter(|n| !kept.contains(&n.as_str())) {
            remove_file(&dir.file(name))?;
        }
        let checkpoints = dir.file(CHECKPOINTS);
        if checkpoints.exists() {
            for name in file_names(&checkpoints)? {
                remove_file(&checkpoints.join(name))?;
            }
        }
        Ok(RunWriter {
            dir,
            lock,
            committed: None,
            baseline: None,
        })
    }

    /// What [`RunWriter::create`] checks, without taking the lock (so that a
    /// caller can refuse early): `dir` is missing, or holds only a run
    /// folder's files and no run unless `replace`. Returns those files' names.
    pub fn check_new(dir: &Path, replace: bool) -> Result<Vec<String>> {
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let names = file_names(dir)?;
        if let Some(name) = names
            .iter()
            .find(|n| !RUN_FILES.contains(&n.as_str()) && !is_tmp(n))
        {
            bail!(
                "{} is not empty and holds files a run folder does not ({}); choose another --out",
                dir.display(),
                bounded(name, 60)
            );
        }
        if RunDir::new(dir).holds_run() && !replace {
            bail!(
                "{} already holds a run; continue it with --resume, or replace it with --force",
                dir.display()
            );
        }
        Ok(names)
    }

    /// Opens the existing run folder `dir` to continue or redraw it: locks
    /// it and reads its commit. Call [`RunWriter::recover`] next.
    pub fn open(dir: impl Into<PathBuf>, command: &str) -> Result<RunWriter> {
        let dir = RunDir::new(dir);
        if !dir.path().is_dir() {
            bail!("{} does not exist", dir.path().display());
        }
        if !dir.holds_run() {
            return Err(dir.no_run());
        }
        let lock = RunLock::acquire(dir.path(), command)?;
        let committed = dir.read_commit()?;
        let baseline = committed.as_ref().and_then(|c| c.baseline.clone());
        Ok(RunWriter {
            dir,
            lock,
            committed,
            baseline,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &RunDir {
        &self.dir
    }

    /// The process that held the folder before and died holding it.
    pub fn previous_holder(&self) -> Option<&str> {
        self.lock.previous_holder()
    }

    /// The committed generation, if any.
    pub fn committed(&self) -> Option<&Commit> {
        self.committed.as_ref()
    }

    /// Writes the run's settings and data: vocab.json, data.safetensors
    /// (the sequences and the split, so that the folder serves and
    /// evaluates without the log), then config.json (the folder holds a run
    /// from then on).
    pub fn write_settings(
        &self,
        config: &RunConfig,
        dataset: &Dataset,
        split: &Split,
    ) -> Result<()> {
        let json = dataset
            .vocab
            .to_json()
            .with_context(|| format!("writing {}", self.dir.vocab().display()))?;
        write_atomic(&self.dir.vocab(), &json)?;
        write_atomic(&self.dir.data(), &RunData::new(dataset, split).to_bytes()?)?;
        self.write_config(config)
    }

    /// Rewrites config.json (e.g. with the larger epoch budget of a resumed run).
    pub fn write_config(&self, config: &RunConfig) -> Result<()> {
        write_atomic(&self.dir.config(), &json_bytes(config)?)
    }

    /// Writes a file of the folder (e.g. `test.json`) atomically.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        write_atomic(&self.dir.file(name), bytes)
    }

    /// Cleans up after a save that was cut short: removes temporary files and
    /// checkpoint files the commit does not name, checks the best checkpoint
    /// and rewrites the published files that do not match the commit.
    pub fn recover(&mut self) -> Result<Recovery> {
        if self.committed.is_none() {
            self.check_nothing_committed()?;
        }
        let mut recovery = Recovery::default();
        for name in file_names(self.dir.path())? {
            let stray =
                is_tmp(&name) || (self.committed.is_none() && PUBLISHED.contains(&name.as_str()));
            if stray {
                remove_file(&self.dir.file(&name))?;
                recovery.removed.push(name);
            }
        }
        recovery.removed.extend(self.remove_unreferenced()?);
        if let Some(commit) = &self.committed {
            if let Some(best) = &commit.best {
                // Checked like the last checkpoint: a corrupt best-B is
                // refused now, not when it is next needed.
                let bytes = self.dir.read_checkpoint(best)?;
                let published = FileDigest::of_file(&self.dir.model()).ok();
                if published.as_ref() != Some(&best.digest) {
                    write_atomic(&self.dir.model(), &bytes)?;
                    recovery.rewritten.push("model.safetensors".into());
                }
            }
            for (path, bytes) in self.epoch_files(commit)? {
                if fs::read(&path).ok().as_ref() != Some(&bytes) {
                    write_atomic(&path, &bytes)?;
                    recovery.rewritten.push(file_name(&path));
                }
            }
        }
        Ok(recovery)
    }

    /// Refuses a folder without state.json that holds what only a commit
    /// leaves behind: published files, or checkpoints of a generation after
    /// the first (whose files an interrupted first commit may leave).
    fn check_nothing_committed(&self) -> Result<()> {
        // The checkpoints first: they are what a resume would need.
        let mut found = Vec::new();
        let checkpoints = self.dir.file(CHECKPOINTS);
        if checkpoints.is_dir() {
            found.extend(
                file_names(&checkpoints)?
                    .into_iter()
                    .filter(|n| !is_tmp(n))
                    .map(|n| format!("{CHECKPOINTS}/{n}")),
            );
        }
        found.extend(
            file_names(self.dir.path())?
                .into_iter()
                .filter(|n| PUBLISHED.contains(&n.as_str())),
        );
        let first = [checkpoint_name("last", 1), checkpoint_name("best", 1)];
        if found.iter().all(|n| first.contains(n)) {
            return Ok(());
        }
        let mut shown: Vec<String> = found.iter().take(8).map(|n| bounded(n, 60)).collect();
        if found.len() > 8 {
            shown.push(format!("and {} more", found.len() - 8));
        }
        bail!(
            "{} has no state.json, but holds what a saved checkpoint leaves ({}): state.json was \
             removed or lost, and with it the checksums that tell which checkpoints are whole; \
             nothing was changed. Put state.json back to continue, or start again with \
             `sasrec train --force` (which deletes the run)",
            self.dir.path().display(),
            shown.join(", ")
        )
    }

    fn write_checkpoint(
        &self,
        kind: &str,
        generation: u64,
        bytes: &[u8],
    ) -> Result<CheckpointFile> {
        let file = checkpoint_name(kind, generation);
        write_atomic(&self.dir.file(&file), bytes)?;
        Ok(CheckpointFile {
            file,
            digest: FileDigest::of_bytes(bytes),
        })
    }

    /// `metrics.jsonl`, `curves.svg` and the TensorBoard event file of a commit.
    fn epoch_files(&self, commit: &Commit) -> Result<[(PathBuf, Vec<u8>); 3]> {
        let epochs = &commit.epochs;
        let mut metrics = String::new();
        for record in epochs {
            metrics.push_str(&serde_json::to_string(record)?);
            metrics.push('\n');
        }
        let curves = render(epochs, commit.baseline.as_ref())?;
        Ok([
            (self.dir.metrics(), metrics.into_bytes()),
            (self.dir.curves(), curves.into_bytes()),
            (self.dir.events(), events(epochs)),
        ])
    }

    /// Removes every file in `checkpoints/` the commit does not name; returns
    /// their relative paths.
    fn remove_unreferenced(&self) -> Result<Vec<String>> {
        let checkpoints = self.dir.file(CHECKPOINTS);
        if !checkpoints.exists() {
            return Ok(Vec::new());
        }
        let named: Vec<&str> = self
            .committed
            .iter()
            .flat_map(|c| {
                std::iter::once(c.last.file.as_str())
                    .chain(c.best.as_ref().map(|b| b.file.as_str()))
            })
            .collect();
        let mut removed = Vec::new();
        for name in file_names(&checkpoints)? {
            let relative = format!("{CHECKPOINTS}/{name}");
            if !named.contains(&relative.as_str()) {
                remove_file(&checkpoints.join(&name))?;
                removed.push(relative);
            }
        }
        Ok(removed)
    }
}

/// The names in a folder, sorted (not-UTF-8 names lossily).
fn file_names(dir: &Path) -> Result<Vec<String>> {
    let read = || -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    };
    read().with_context(|| format!("listing {}", dir.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The trainer commits through this: the run folder is its store.
impl RunStore for RunWriter {
    /// The committed generation's progress, epochs and `last` checkpoint
    /// (checksum verified).
    fn last_commit(&self) -> Result<Option<Committed>> {
        let Some(commit) = &self.committed else {
            return Ok(None);
        };
        Ok(Some(Committed {
            progress: commit.progress.clone(),
            epochs: commit.epochs.clone(),
            checkpoint: self.dir.read_checkpoint(&commit.last)?,
            source: self.dir.file(&commit.last.file).display().to_string(),
        }))
    }

    /// Commits a new generation: `last` (weights and Adam moments), `best`
    /// when validation improved, where training stands and the epochs so
    /// far. See the module documentation for the order of the writes.
    fn commit(&mut self, generation: Generation<'_>) -> Result<()> {
        let Generation {
            progress,
            last,
            best,
            epochs,
        } = generation;
        let generation = self.committed.as_ref().map_or(0, |c| c.generation) + 1;
        let checkpoints = self.dir.file(CHECKPOINTS);
        fs::create_dir_all(&checkpoints)
            .with_context(|| format!("creating {}", checkpoints.display()))?;
        let last = self.write_checkpoint("last", generation, last)?;
        let best_file = match best {
            Some(bytes) => Some(self.write_checkpoint("best", generation, bytes)?),
            None => self.committed.as_ref().and_then(|c| c.best.clone()),
        };
        let commit = Commit {
            format: STATE_FORMAT,
            generation,
            progress: progress.clone(),
            last,
            best: best_file,
            epochs: epochs.to_vec(),
            baseline: self.baseline.clone(),
        };
        write_atomic(&self.dir.state(), &json_bytes(&commit)?)?;
        let files = self.epoch_files(&commit)?;
        let previous = self.committed.replace(commit);

        if let Some(bytes) = best {
            write_atomic(&self.dir.model(), bytes)?;
        }
        if previous.is_none_or(|p| p.epochs != epochs) {
            for (path, bytes) in files {
                if path == self.dir.events() {
                    write_growing(&path, &bytes)?;
                } else {
                    write_atomic(&path, &bytes)?;
                }
            }
        }
        self.remove_unreferenced()?;
        Ok(())
    }

    /// Sets the most-popular baseline on the validation users that the
    /// next commits record (and their curves show).
    fn set_baseline(&mut self, baseline: Option<RankingMetrics>) {
        self.baseline = baseline;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sasrec_model::{EpochRecord, TrainState};

    fn progress(epoch: usize) -> TrainState {
        TrainState {
            epoch,
            step: 5 * epoch as u64,
            best: (epoch > 0).then_some((0.5, epoch)),
            ..TrainState::default()
        }
    }

    fn record(epoch: usize) -> EpochRecord {
        EpochRecord {
            epoch,
            step: 5 * epoch as u64,
            train_loss: 1.0 / epoch as f64,
            valid: sasrec_model::Evaluation {
                loss: 2.0,
                targets: 3,
                ranking: None,
            },
            tokens_per_s: 100.0,
            seconds: 1.0,
            valid_seconds: 0.5,
            ended_at: 1.7e9 + epoch as f64,
            best: true,
        }
    }

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut all = file_names(dir).unwrap();
        if dir.join(CHECKPOINTS).exists() {
            all.extend(
                file_names(&dir.join(CHECKPOINTS))
                    .unwrap()
                    .into_iter()
                    .map(|n| format!("{CHECKPOINTS}/{n}")),
            );
        }
        all
    }

    /// A run folder with generation 1 committed, its writer gone.
    fn one_generation() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut run = RunWriter::create(dir.path(), "test", false).unwrap();
        run.commit(Generation {
            progress: &progress(1),
            last: b"last 1",
            best: Some(b"best 1"),
            epochs: &[record(1)],
        })
        .unwrap();
        dir
    }

    #[test]
    fn commits_keep_one_generation_and_publish_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = RunWriter::create(dir.path(), "test", false).unwrap();
        run.commit(Generation {
            progress: &progress(1),
            last: b"last 1",
            best: Some(b"best 1"),
            epochs: &[record(1)],
        })
        .unwrap();
        run.commit(Generation {
            progress: &progress(2),
            last: b"last 2",
            best: None,
            epochs: &[record(1), record(2)],
        })
        .unwrap();
        assert_eq!(
            names(dir.path()),
            [
                "checkpoints",
                "curves.svg",
                "events.out.tfevents.sasrec",
                "lock",
                "metrics.jsonl",
                "model.safetensors",
                "state.json",
                "checkpoints/best-1.safetensors",
                "checkpoints/last-2.safetensors",
            ]
        );
        assert_eq!(
            fs::read(dir.path().join("model.safetensors")).unwrap(),
            b"best 1"
        );
        let metrics = fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        assert_eq!(metrics.lines().count(), 2);
        let commit = RunDir::new(dir.path()).read_commit().unwrap().unwrap();
        assert_eq!(commit.generation, 2);
        assert_eq!(commit.progress, progress(2));
        assert_eq!(commit.last.digest, FileDigest::of_bytes(b"last 2"));
    }

    #[test]
    fn recovery_removes_leftovers_and_republishes() {
        let dir = one_generation();
        // What a kill in the middle of generation 2 leaves: its checkpoint,
        // a temporary state.json, and a model.safetensors from the future.
        fs::write(dir.path().join("checkpoints/last-2.safetensors"), b"last 2").unwrap();
        fs::write(dir.path().join(".state.json.tmp"), b"{").unwrap();
        fs::write(dir.path().join("model.safetensors"), b"best 2").unwrap();
        fs::remove_file(dir.path().join("metrics.jsonl")).unwrap();

        let mut run = RunWriter::open(dir.path(), "test").unwrap();
        let recovery = run.recover().unwrap();
        assert_eq!(
            recovery.to_string(),
            "removed .state.json.tmp, checkpoints/last-2.safetensors; rewrote model.safetensors, metrics.jsonl"
        );
        assert_eq!(
            fs::read(dir.path().join("model.safetensors")).unwrap(),
            b"best 1"
        );
        assert!(run.recover().unwrap().is_clean());
        assert_eq!(run.committed().unwrap().generation, 1);
    }

    /// The error of recovering the run folder `dir`.
    fn recovery_error(dir: &std::path::Path) -> String {
        RunWriter::open(dir, "test")
            .unwrap()
            .recover()
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_corrupt_checkpoint_is_refused_naming_it() {
        let dir = one_generation();
        fs::write(dir.path().join("checkpoints/best-1.safetensors"), b"best X").unwrap();
        fs::write(dir.path().join("model.safetensors"), b"edited").unwrap();
        let err = recovery_error(dir.path());
        assert!(
            err.contains("best-1.safetensors does not match its checksum in state.json"),
            "{err}"
        );
    }

    #[test]
    fn a_lost_state_json_is_refused_and_nothing_removed() {
        let dir = one_generation();
        let mut run = RunWriter::open(dir.path(), "test").unwrap();
        run.commit(Generation {
            progress: &progress(2),
            last: b"last 2",
            best: None,
            epochs: &[record(1), record(2)],
        })
        .unwrap();
        drop(run);
        fs::remove_file(dir.path().join("state.json")).unwrap();
        // A config.json makes it a run folder.
        fs::write(dir.path().join("config.json"), b"{}").unwrap();
        let before = names(dir.path());
        let err = recovery_error(dir.path());
        assert!(
            err.contains("has no state.json, but holds what a saved checkpoint leaves (checkpoints/best-1.safetensors, checkpoints/last-2.safetensors, curves.svg")
                && err.contains("nothing was changed"),
            "{err}"
        );
        assert_eq!(names(dir.path()), before);

        // What a kill inside the first commit leaves is cleared as before.
        let dir = tempfile::tempdir().unwrap();
        let run = RunWriter::create(dir.path(), "test", false).unwrap();
        drop(run);
        fs::create_dir(dir.path().join(CHECKPOINTS)).unwrap();
        fs::write(dir.path().join("checkpoints/last-1.safetensors"), b"x").unwrap();
        fs::write(dir.path().join("config.json"), b"{}").unwrap();
        let recovery = RunWriter::open(dir.path(), "test")
            .unwrap()
            .recover()
            .unwrap();
        assert_eq!(recovery.removed, ["checkpoints/last-1.safetensors"]);
    }

    #[test]
    fn create_refuses_runs_and_foreign_folders_and_replaces_only_runs() {
        let dir = one_generation();
        let err = RunWriter::create(dir.path(), "test", false).unwrap_err();
        assert!(err.to_string().contains("already holds a run"), "{err}");
        RunWriter::create(dir.path(), "test", true).unwrap();
        assert_eq!(names(dir.path()), ["checkpoints", "lock"]);

        fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        let err = RunWriter::create(dir.path(), "test", true).unwrap_err();
        assert!(err.to_string().contains("(notes.txt)"), "{err}");
        assert!(dir.path().join("notes.txt").exists());
    }

    #[test]
    fn replacing_a_run_keeps_the_interactions_given_for_the_new_one() {
        let dir = one_generation();
        fs::write(dir.path().join(INPUT_FILE), b"new data").unwrap();
        RunWriter::create(dir.path(), "test", true).unwrap();
        assert_eq!(
            names(dir.path()),
            ["checkpoints", "interactions.parquet", "lock"]
        );
    }
}
