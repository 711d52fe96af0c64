//! Training a run folder from its settings: read and check the data, create
//! (or reopen) the run folder, train with early stopping, and evaluate the
//! best checkpoint on the test users. `sasrec train` and the Python
//! package's `train` and `resume` run this, so both say and write the same.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, bail};
use sasrec_data::{
    Dataset, Dedup, FilterReport, Interactions, Split, TemporalTargets, build_dataset_with_report,
    format_micros, split,
};
use sasrec_kernels::Backend;
use sasrec_model::checkpoint::FileDigest;
use sasrec_model::config::human_bytes;
use sasrec_model::{
    EpochHook, EpochRecord, Evaluation, Loss, NegativeSampler, Outcome, RankingMetrics, RunConfig,
    RunData, RunWriter, Sampler, SasRec, Selection, TrainConfig, Trainer, evaluate_with_progress,
    popularity_baseline,
};

use crate::Log;
use crate::catalog::progress_bar;
use crate::text::{event_counts, thousands, time_range};

/// What the lock of a run folder being trained names.
const COMMAND: &str = "train";

/// A training run ready to start: its settings checked, its data read,
/// filtered and split, its run folder checked (a new run: nothing is
/// written until [`TrainJob::train`]) or opened and locked (a resumed run).
pub struct TrainJob {
    config: RunConfig,
    out: PathBuf,
    split: Split,
    start: Start,
}

/// How a job starts.
enum Start {
    /// A new run folder, made from this dataset (replacing a run with `force`).
    New { dataset: Dataset, force: bool },
    /// The run folder already opened, to continue.
    Resume(RunWriter),
}

impl TrainJob {
    /// A new run of `config` into `out` (replacing a run there with
    /// `force`). The data is `interactions` when given (read in memory,
    /// e.g. from a DataFrame: `config.data.ratings` must then be
    /// [`DataSpec::IN_MEMORY`](sasrec_model::DataSpec::IN_MEMORY)), else the
    /// log `config.data.ratings`. Everything that can be checked is checked
    /// here, so that a refused run leaves nothing behind; a setting out of
    /// range is an [`InvalidSetting`](sasrec_model::InvalidSetting) error.
    /// `config.model.num_items` and `config.ratings_digest` are filled in
    /// from the data.
    pub fn new(
        mut config: RunConfig,
        out: &Path,
        force: bool,
        interactions: Option<&Interactions>,
        log: Log,
    ) -> Result<TrainJob> {
        config.validate()?;
        RunWriter::check_new(out, force)?;
        let (dataset, split, filtered) = match interactions {
            Some(interactions) => {
                if !config.data.in_memory() {
                    bail!(
                        "interactions given in memory need the data path {}",
                        sasrec_model::DataSpec::IN_MEMORY
                    );
                }
                let kind = config.data.split_kind()?;
                let (dataset, report) =
                    build_dataset_with_report(interactions, &config.data.filter)?;
                let split = split(&dataset, kind)?;
                (dataset, split, report)
            }
            None => {
                log(&format!("reading {}", config.data.ratings.display()));
                config.data.load_with_report()?
            }
        };
        if let Some(line) = filter_line(&config, &filtered) {
            log(&line);
        }
        config.model.num_items = dataset.vocab.num_items();
        config.model.validate()?;
        config.train.check_catalogue(config.model.num_items)?;
        config.ratings_digest = if config.data.in_memory() {
            // No file: the digest of the data as the run folder keeps it.
            FileDigest::of_bytes(&RunData::new(&dataset, &split).to_bytes()?)
        } else {
            FileDigest::of_file(&config.data.ratings)?
        };
        check_split(&config, &dataset, &split, log)?;
        let users = dataset.stats();
        let stats = Stats {
            users: users.users,
            items: users.items,
            interactions: users.interactions,
        };
        describe(&config, &split, &stats, log)?;
        Ok(TrainJob {
            config,
            out: out.to_path_buf(),
            split,
            start: Start::New { dataset, force },
        })
    }

    /// Continues the run in `out` from its last checkpoint with its saved
    /// settings. `budget` may change the saved training settings given the
    /// epochs done (a larger epoch budget, a new patience) and returns what
    /// it changed, for config.json and the log. The data is read again from
    /// the log named in config.json (a changed log is refused unless
    /// `allow_changed_data`); a run trained on data given in memory goes on
    /// with the data its folder keeps (data.safetensors).
    pub fn resume(
        out: &Path,
        allow_changed_data: bool,
        budget: impl FnOnce(&mut TrainConfig, usize) -> Result<Vec<String>>,
        log: Log,
    ) -> Result<TrainJob> {
        let mut run = RunWriter::open(out, COMMAND)?;
        note_previous_holder(&run, log);
        let mut config = run.dir().read_config()?;
        if !config.data.in_memory()
            && let Some(warning) = config.check_ratings(allow_changed_data)?
        {
            log(&format!("warning: {warning}"));
        }
        let recovery = run.recover()?;
        if !recovery.is_clean() {
            log(&format!("note: repaired {}: {recovery}", out.display()));
        }
        let done = run.committed().map_or(0, |c| c.progress.epoch);
        let changes = budget(&mut config.train, done)?;
        if !changes.is_empty() {
            run.write_config(&config)?;
            log(&format!("{} (recorded in config.json)", changes.join(", ")));
        }
        let vocab = run.dir().read_vocab()?;
        let (split, stats) = if config.data.in_memory() {
            let data_file = run.dir().data();
            let Some(data) = run.dir().read_data(&vocab)? else {
                bail!(
                    "{} is missing: this run was trained on data given in memory, which only that file keeps",
                    data_file.display()
                );
            };
            if let Some(change) = config
                .ratings_digest
                .change(&FileDigest::of_file(&data_file)?)
            {
                bail!(
                    "{} changed since the run was trained ({change})",
                    data_file.display()
                );
            }
            log(&format!("reading {}", data_file.display()));
            let stats = Stats {
                users: data.users.iter().filter(|u| !u.items.is_empty()).count(),
                items: vocab.num_items(),
                interactions: data.users.iter().map(|u| u.items.len()).sum(),
            };
            (data.split, stats)
        } else {
            log(&format!("reading {}", config.data.ratings.display()));
            let (dataset, split, filtered) = config.data.load_with_report()?;
            if let Some(line) = filter_line(&config, &filtered) {
                log(&line);
            }
            if !dataset.vocab.matches_saved(&vocab) {
                bail!(
                    "the items of {} no longer match the run's vocab.json; the ratings file changed since training",
                    config.data.ratings.display()
                );
            }
            check_split(&config, &dataset, &split, log)?;
            let users = dataset.stats();
            let stats = Stats {
                users: users.users,
                items: users.items,
                interactions: users.interactions,
            };
            (split, stats)
        };
        describe(&config, &split, &stats, log)?;
        Ok(TrainJob {
            config,
            out: out.to_path_buf(),
            split,
            start: Start::Resume(run),
        })
    }

    /// The run's settings.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// The run folder.
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// Creates the run folder (a new run), then trains on `backend` until
    /// the epochs run out, early stopping triggers, or `stop` is raised
    /// (the progress is then committed: the run continues with
    /// [`TrainJob::resume`]). A run that ends evaluates its best checkpoint
    /// on the test users and writes test.json. `hook` observes every step
    /// and epoch; `log` gets every line said on the way, the epochs' lines
    /// included.
    pub fn train<'a, B: Backend>(
        self,
        backend: &'a B,
        stop: &AtomicBool,
        hook: Option<Box<dyn EpochHook + 'a>>,
        log: Log<'a>,
    ) -> Result<Trained> {
        let TrainJob {
            config,
            out,
            split,
            start,
        } = self;
        let (run, resume) = match start {
            Start::Resume(run) => (run, true),
            Start::New { dataset, force } => {
                let run = RunWriter::create(&out, COMMAND, force)?;
                note_previous_holder(&run, log);
                if force {
                    log(&format!("replaced the run in {} (--force)", out.display()));
                }
                run.write_settings(&config, &dataset, &split)?;
                (run, false)
            }
        };
        let model = SasRec::new(backend, config.model.clone(), config.train.seed);
        let shown = out.display().to_string();
        let mut trainer = Trainer::new(
            backend,
            model,
            config.train.clone(),
            &split.train,
            &split.valid,
            config.data.held_out_last(),
            run,
        )?;
        trainer.hook = hook;
        trainer.log = Some(log);
        if trainer.restore()? {
            let generation = trainer.run_folder().committed().map_or(0, |c| c.generation);
            let s = &trainer.state;
            if s.finished {
                let why = if s.epoch >= config.train.epochs {
                    format!("all {} epochs are done", config.train.epochs)
                } else {
                    format!(
                        "no better {} for {} epochs",
                        config.train.selection, s.epochs_without_improvement
                    )
                };
                log(&format!(
                    "{shown} is finished ({why}); a larger --epochs or --patience continues it"
                ));
            } else {
                log(&format!(
                    "continuing at epoch {}, step {} (checkpoint generation {generation})",
                    s.epoch + 1,
                    s.step
                ));
            }
        } else if resume {
            log(&format!(
                "{shown} has no checkpoint yet: starting at step 0 with its saved settings"
            ));
        }
        let outcome = trainer.run(stop)?;
        let report = match outcome {
            Outcome::Interrupted => None,
            Outcome::EarlyStopped | Outcome::Completed => {
                if outcome == Outcome::EarlyStopped {
                    log(&format!(
                        "early stopping: no better {} for a while",
                        config.train.selection
                    ));
                }
                Some(report(backend, &config, &split, trainer)?)
            }
        };
        Ok(Trained {
            outcome,
            out,
            report,
            stopped: stop.load(Ordering::SeqCst),
        })
    }
}

/// Applies a new budget to a run that has finished `done` epochs: `epochs`
/// (at least `done`) and `patience` (`Some(None)`: no early stopping),
/// each when given; returns what changed ("epochs 10 -> 30"). A budget out
/// of range is an [`InvalidSetting`](sasrec_model::InvalidSetting) error.
pub fn new_budget(
    train: &mut TrainConfig,
    epochs: Option<usize>,
    patience: Option<Option<usize>>,
    done: usize,
) -> Result<Vec<String>> {
    let mut changes = Vec::new();
    if let Some(epochs) = epochs.filter(|&e| e != train.epochs) {
        if epochs < done.max(1) {
            bail!("--epochs {epochs} is less than the {done} epochs this run has done");
        }
        changes.push(format!("epochs {} -> {epochs}", train.epochs));
        train.epochs = epochs;
    }
    if let Some(patience) = patience.filter(|&p| p != train.patience) {
        let show = |p: Option<usize>| p.map_or("none".to_string(), |p| p.to_string());
        changes.push(format!(
            "patience {} -> {}",
            show(train.patience),
            show(patience)
        ));
        train.patience = patience;
    }
    train.validate()?;
    Ok(changes)
}

/// How a training run ended.
pub struct Trained {
    /// Completed, stopped early, or interrupted (progress committed).
    pub outcome: Outcome,
    /// The run folder.
    pub out: PathBuf,
    /// The best checkpoint's numbers (`None` when interrupted).
    pub report: Option<Report>,
    /// Whether the stop flag was raised, even while the report ran (the
    /// run is then complete, but was cut).
    pub stopped: bool,
}

/// The best checkpoint of a finished run: its epoch, its validation
/// numbers, and (with held-out targets) its test numbers beside the
/// most-popular baseline's.
pub struct Report {
    /// The run folder.
    pub run: PathBuf,
    /// The best epoch (1-based).
    pub best_epoch: usize,
    /// Epochs run.
    pub epochs: usize,
    /// What picked the best epoch.
    pub selection: Selection,
    /// The best epoch's validation numbers.
    pub valid: Evaluation,
    /// The test numbers of the best checkpoint (leave-one-out and temporal
    /// splits).
    pub test: Option<Evaluation>,
    /// The most-popular baseline on the test users.
    pub most_popular_test: Option<RankingMetrics>,
    /// The curves' file.
    pub curves: PathBuf,
}

impl Report {
    /// The report as `sasrec train` prints it.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![
            format!("run           {}", self.run.display()),
            format!(
                "best epoch    {} of {} (by valid {})",
                self.best_epoch, self.epochs, self.selection
            ),
            metrics_line("valid", &self.valid),
        ];
        if let Some(test) = &self.test {
            lines.push(metrics_line("test", test));
        }
        if let Some(popular) = &self.most_popular_test {
            lines.push(format!("test popular  {}", popular.summary()));
        }
        lines.push(format!("curves        {}", self.curves.display()));
        lines
    }
}

fn metrics_line(part: &str, evaluation: &Evaluation) -> String {
    let ranking = evaluation
        .ranking
        .as_ref()
        .map(|m| format!("  {}", m.summary()))
        .unwrap_or_default();
    format!("{part:<13} loss {:.4}{ranking}", evaluation.loss)
}

/// The best epoch, its validation numbers, and (with held-out targets) the
/// test numbers of the best checkpoint beside the most-popular baseline,
/// also written to test.json.
fn report<B: Backend>(
    backend: &B,
    config: &RunConfig,
    split: &Split,
    trainer: Trainer<'_, B>,
) -> Result<Report> {
    let records: Vec<EpochRecord> = trainer.epochs().to_vec();
    let run = trainer.into_run();
    let Some(best) = records.iter().rev().find(|r| r.best) else {
        bail!("the run has no validated epoch");
    };
    let mut report = Report {
        run: run.dir().path().to_path_buf(),
        best_epoch: best.epoch,
        epochs: records.len(),
        selection: config.train.selection,
        valid: best.valid.clone(),
        test: None,
        most_popular_test: None,
        curves: run.dir().curves(),
    };
    if config.data.held_out_last() {
        let (_, model) = run.dir().load_model(backend)?;
        let bar = progress_bar(split.test.len() as u64, "test");
        let test = evaluate_with_progress(
            backend,
            &model,
            &split.test,
            true,
            &config.train.ks,
            config.train.batch_size,
            &mut |n| bar.inc(n as u64),
        );
        bar.finish_and_clear();
        let popular = popularity_baseline(
            &split.train,
            &split.test,
            config.model.vocab(),
            &config.train.ks,
        );
        let json = serde_json::json!({
            "best_epoch": best.epoch,
            "valid": best.valid,
            "test": test,
            "most_popular_test": popular,
        });
        run.write_file("test.json", &serde_json::to_vec_pretty(&json)?)?;
        report.test = Some(test);
        report.most_popular_test = Some(popular);
    }
    Ok(report)
}

/// Users, items and interactions of the data trained on.
struct Stats {
    users: usize,
    items: usize,
    interactions: usize,
}

/// Says what the run trains on (the split's sizes, the loss), and refuses a
/// model and batch that cannot fit in the memory available.
fn describe(config: &RunConfig, split: &Split, stats: &Stats, log: Log) -> Result<()> {
    check_memory(config, split)?;
    let cuts = split.cuts.map_or(String::new(), |(valid, test)| {
        format!(
            " (valid from {}, test from {})",
            format_micros(valid),
            format_micros(test)
        )
    });
    log(&format!(
        "{} users, {} items, {} interactions; split {}{cuts}: train {}, valid {}, test {} users",
        stats.users,
        stats.items,
        stats.interactions,
        config.data.split,
        split.train.len(),
        split.valid.len(),
        split.test.len()
    ));
    if let Some(line) = loss_line(config, split) {
        log(&line);
    }
    Ok(())
}

fn note_previous_holder(run: &RunWriter, log: Log) {
    if let Some(holder) = run.previous_holder() {
        log(&format!(
            "note: {holder} stopped without releasing the run folder; taking it over"
        ));
    }
}

/// What a sampled loss trains on, e.g. "training loss gbce over 256
/// uniform negatives per step (beta 0.2698)".
fn loss_line(config: &RunConfig, split: &Split) -> Option<String> {
    let train = &config.train;
    let sampler = NegativeSampler::new(train, config.model.num_items, &split.train)?;
    let beta = match (train.loss, sampler.positive_weight()) {
        (Loss::Gbce, Some(beta)) => format!(" (t {}, beta {beta:.4})", train.gbce_t),
        _ => String::new(),
    };
    let correction = if train.loss == Loss::SampledSoftmax && train.sampler == Sampler::Popularity {
        ", log-Q corrected"
    } else {
        ""
    };
    Some(format!(
        "training loss {} over {} {} negatives per step{beta}{correction}; validation loss: full softmax",
        train.loss, train.negatives, train.sampler
    ))
}

/// What the event and duplicate filters did, for the run's log: "dedup
/// consecutive removed 57 repeated events; event types view 800, purchase
/// 90 (targets purchase: 88 of the interactions)".
fn filter_line(config: &RunConfig, report: &FilterReport) -> Option<String> {
    let filter = &config.data.filter;
    let mut parts = Vec::new();
    if filter.dedup != Dedup::None {
        parts.push(format!(
            "dedup {} removed {} repeated events",
            filter.dedup,
            thousands(report.dropped_duplicates)
        ));
    }
    if !report.events_read.is_empty() {
        let mut line = format!("event types {}", event_counts(report));
        if let Some(keep) = &filter.keep_events {
            line.push_str(&format!(
                " (kept {}: {} rows removed)",
                keep.join(","),
                thousands(report.dropped_by_event)
            ));
        }
        if let Some(targets) = &filter.target_events {
            line.push_str(&format!(
                "; targets {}: {} of the interactions",
                targets.join(","),
                thousands(report.targets)
            ));
        }
        parts.push(line);
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The fewest users a temporal window should score before its numbers mean much.
const FEW_USERS: usize = 100;

/// Refuses a split that leaves nothing to train or validate on, saying why;
/// warns when a temporal window scores fewer than [`FEW_USERS`] users.
fn check_split(config: &RunConfig, dataset: &Dataset, split: &Split, log: Log) -> Result<()> {
    let users = dataset.users.len();
    if let Some((valid_from, test_from)) = split.cuts {
        let window = format!(
            "between {} and {}",
            format_micros(valid_from),
            format_micros(test_from)
        );
        let range = dataset.time_range().map_or(String::new(), |r| {
            format!(" (the interactions run from {})", time_range(r))
        });
        if split.valid.is_empty() {
            bail!(
                "no user is left to validate on: no user with an earlier interaction has one {window}{range}"
            );
        }
        if split.test.is_empty() {
            bail!(
                "no user is left to test on: no user with an earlier interaction has one from {} on{range}",
                format_micros(test_from)
            );
        }
        let all = config.data.temporal_targets == TemporalTargets::All;
        for (part, seqs) in [("validates", &split.valid), ("tests", &split.test)] {
            let mut who: Vec<u32> = seqs.iter().map(|s| s.user).collect();
            who.sort_unstable();
            who.dedup();
            if who.len() < FEW_USERS {
                log(&format!(
                    "warning: the temporal split {part} on only {} users ({} targets){range}; {}",
                    who.len(),
                    seqs.len(),
                    if all {
                        "move the cuts to widen the windows"
                    } else {
                        "--temporal-targets all scores every interaction in the window, or move the cuts"
                    }
                ));
            }
        }
    } else if config.data.leave_one_out() {
        if split.valid.is_empty() {
            bail!(
                "no user is left to validate on: all {users} users have fewer than 3 interactions, and leave-one-out needs 3"
            );
        }
    } else if split.valid.is_empty() {
        if config.data.valid_fraction == 0.0 {
            bail!(
                "--valid-fraction 0 holds out no users, and random-users validates on held-out users"
            );
        }
        bail!(
            "no user is left to validate on: the {} held-out users all have a single interaction",
            split.too_short_for_eval
        );
    }
    if split.train.is_empty() {
        bail!(
            "no training sequences: none of the {users} users has enough interactions to train on"
        );
    }
    Ok(())
}

/// Refuses a model and batch that cannot fit in the memory available.
fn check_memory(config: &RunConfig, split: &Split) -> Result<()> {
    let longest_part = split.train.len().max(split.valid.len());
    let batch = config.train.batch_size.min(longest_part);
    let need = config.model.training_memory(batch);
    let Some(available) = available_memory() else {
        return Ok(());
    };
    if need.total() > available as f64 {
        bail!(
            "this run needs about {} of memory (weights and Adam state {}, activations of a batch of {batch} {}), more than the {} available: lower --dim, --ff-dim, --max-len, --layers or --batch-size",
            human_bytes(need.total()),
            human_bytes(need.parameters),
            human_bytes(need.activations),
            human_bytes(available as f64)
        );
    }
    Ok(())
}

/// Memory available to a new process: MemAvailable on Linux, the physical
/// memory on other Unix systems.
fn available_memory() -> Option<u64> {
    if let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") {
        let kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        if let Some(kib) = kib {
            return Some(kib * 1024);
        }
    }
    #[cfg(unix)]
    {
        // SAFETY: sysconf only reads system constants.
        let (pages, page) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if pages > 0 && page > 0 {
            return Some(pages as u64 * page as u64);
        }
    }
    None
}
