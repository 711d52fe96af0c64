//! Training as a user relies on it: the loss falls, an interrupted run resumes
//! exactly, checkpoints round-trip, NaN stops the run, recommendations never
//! repeat the history.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::AtomicBool;

use sasrec_data::UserSequence;
use sasrec_kernels::CpuBackend;
use sasrec_model::{
    DeviceBatch, EpochRecord, Loss, LrSchedule, ModelConfig, NegativesScope, Outcome, Sampler,
    SasRec, Selection, TrainConfig, Trainer, load_model, recommend,
};
use sasrec_run::{RunDir, RunWriter};

const ITEMS: usize = 30;

/// Users walking the items in a cycle from different starting points: the
/// next item is predictable, so a working trainer learns it quickly.
fn cyclic_users(users: usize) -> Vec<UserSequence> {
    (0..users)
        .map(|u| {
            let len = 6 + u % 9;
            let items = (0..len).map(|i| ((u * 7 + i) % ITEMS) as u32 + 1).collect();
            UserSequence::new(u as u32 + 1, items)
        })
        .collect()
}

fn small_model(dropout: f32) -> ModelConfig {
    ModelConfig {
        num_items: ITEMS,
        max_len: 10,
        dim: 16,
        heads: 2,
        layers: 2,
        ff_dim: 32,
        dropout,
        options: Default::default(),
    }
}

fn train_config(epochs: usize) -> TrainConfig {
    TrainConfig {
        batch_size: 16,
        lr: 5e-3,
        epochs,
        selection: Selection::Ndcg(10),
        seed: 3,
        ..TrainConfig::default()
    }
}

/// Leave-one-out style validation sequences: the training sequence plus one more item.
fn valid_of(train: &[UserSequence]) -> Vec<UserSequence> {
    train
        .iter()
        .map(|s| {
            let mut items = s.items.clone();
            items.push((*items.last().unwrap() % ITEMS as u32) + 1);
            UserSequence::new(s.user, items)
        })
        .collect()
}

/// A trainer and the run folder it commits to.
struct Run<'a> {
    trainer: Trainer<'a, CpuBackend>,
    folder: RunWriter,
}

impl Run<'_> {
    /// [`Trainer::run`] into the folder.
    fn run(&mut self, stop: &AtomicBool) -> anyhow::Result<Outcome> {
        self.trainer.run(&mut self.folder, stop)
    }
}

impl<'a> Deref for Run<'a> {
    type Target = Trainer<'a, CpuBackend>;
    fn deref(&self) -> &Self::Target {
        &self.trainer
    }
}

impl DerefMut for Run<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.trainer
    }
}

/// A trainer for a new run in `dir`, or (`resume`) for the run there,
/// restored from its committed generation.
fn trainer<'a>(
    b: &'a CpuBackend,
    train: &'a [UserSequence],
    valid: &'a [UserSequence],
    dir: &std::path::Path,
    dropout: f32,
    epochs: usize,
    resume: bool,
) -> Run<'a> {
    trainer_with(b, train, valid, dir, dropout, train_config(epochs), resume)
}

/// [`trainer`] with the training settings `config`.
fn trainer_with<'a>(
    b: &'a CpuBackend,
    train: &'a [UserSequence],
    valid: &'a [UserSequence],
    dir: &std::path::Path,
    dropout: f32,
    config: TrainConfig,
    resume: bool,
) -> Run<'a> {
    let model = SasRec::new(b, small_model(dropout), 11);
    let folder = if resume {
        RunWriter::open(dir, "test").unwrap()
    } else {
        RunWriter::create(dir, "test", false).unwrap()
    };
    let mut trainer = Trainer::new(b, model, config, train, valid, true).unwrap();
    trainer.progress = false;
    if resume {
        trainer.restore(&folder).unwrap();
    }
    Run { trainer, folder }
}

/// The committed epochs of the run in `dir`.
fn epochs(dir: &std::path::Path) -> Vec<EpochRecord> {
    RunDir::new(dir).read_commit().unwrap().unwrap().epochs
}

#[test]
fn loss_falls_and_ranking_improves() {
    let b = CpuBackend;
    let train = cyclic_users(48);
    let valid = valid_of(&train);
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(&b, &train, &valid, dir.path(), 0.1, 15, false);
    assert_eq!(t.run(&AtomicBool::new(false)).unwrap(), Outcome::Completed);
    let records = epochs(dir.path());
    assert_eq!(records.len(), 15);
    let (first, last) = (&records[0], &records[14]);
    assert!(
        last.train_loss < 0.7 * first.train_loss,
        "train loss {} -> {}",
        first.train_loss,
        last.train_loss
    );
    assert!(
        last.valid.loss < first.valid.loss,
        "valid loss {} -> {}",
        first.valid.loss,
        last.valid.loss
    );
    let ndcg = |r: &sasrec_model::EpochRecord| r.valid.ranking.as_ref().unwrap().ndcg(10).unwrap();
    assert!(
        ndcg(last) > ndcg(first) + 0.1,
        "NDCG@10 {} -> {}",
        ndcg(first),
        ndcg(last)
    );
    // The run folder holds what a user looks for.
    for file in [
        "model.safetensors",
        "state.json",
        "metrics.jsonl",
        "curves.svg",
    ] {
        assert!(dir.path().join(file).exists(), "{file} missing");
    }
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 15);
}

/// Where a 3-epoch run of 3 steps per epoch, validated after every epoch,
/// stops when interrupted after every step: after each step, and once more
/// after validating each of the first two epochs.
fn stops_validating_every_epoch() -> Vec<(usize, u64)> {
    let mut stops: Vec<(usize, u64)> = (1..=9u64)
        .map(|step| ((step as usize - 1) / 3, step))
        .collect();
    stops.insert(3, (1, 3));
    stops.insert(7, (2, 6));
    stops
}

#[test]
fn interrupted_run_resumes_exactly() {
    let stops = resumes_exactly(train_config(3));
    assert_eq!(stops, stops_validating_every_epoch());
}

#[test]
fn interrupted_run_with_a_sampled_loss_resumes_exactly() {
    // Popularity negatives with the log-Q correction shared by the batch,
    // and the users' unseen items per position: every step draws from the
    // seed, the step and the batch alone.
    for config in [
        TrainConfig {
            loss: Loss::SampledSoftmax,
            negatives: 12,
            sampler: Sampler::Popularity,
            negatives_scope: NegativesScope::Batch,
            ..train_config(3)
        },
        TrainConfig {
            loss: Loss::Gbce,
            negatives: 5,
            negatives_scope: NegativesScope::Position,
            exclude_seen: true,
            ..train_config(3)
        },
    ] {
        let stops = resumes_exactly(config);
        assert_eq!(stops, stops_validating_every_epoch());
    }
}

#[test]
fn validating_every_two_epochs_resumes_exactly() {
    // Validation after epochs 2 and 3 (the last) only; an interruption at
    // the end of epoch 1 commits it without validating.
    let config = TrainConfig {
        eval_every: 2,
        loss: Loss::SampledSoftmax,
        negatives: 6,
        ..train_config(3)
    };
    let stops = resumes_exactly(config);
    let mut expected: Vec<(usize, u64)> = (1..=9u64)
        .map(|step| ((step as usize - 1) / 3, step))
        .collect();
    expected.insert(3, (1, 3));
    expected.insert(7, (2, 6));
    assert_eq!(stops, expected);
}

#[test]
fn validation_every_few_epochs_and_patience_in_validations() {
    let b = CpuBackend;
    let train = cyclic_users(40);
    let valid = valid_of(&train);
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        eval_every: 3,
        ..train_config(7)
    };
    let mut t = trainer_with(&b, &train, &valid, dir.path(), 0.1, config, false);
    assert_eq!(t.run(&AtomicBool::new(false)).unwrap(), Outcome::Completed);
    let records = epochs(dir.path());
    let at: Vec<(usize, u64)> = records.iter().map(|r| (r.epoch, r.step)).collect();
    // 3 steps per epoch; validations after epochs 3, 6 and 7 (the last).
    assert_eq!(at, [(3, 9), (6, 18), (7, 21)]);
    // A lr of 0 never improves after the first validation: patience 2 stops
    // after the third (epoch 9 of at most 30), not after epoch 3.
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        eval_every: 3,
        patience: Some(2),
        lr: 1e-30,
        ..train_config(30)
    };
    let mut t = trainer_with(&b, &train, &valid, dir.path(), 0.1, config, false);
    assert_eq!(
        t.run(&AtomicBool::new(false)).unwrap(),
        Outcome::EarlyStopped
    );
    let records = epochs(dir.path());
    assert_eq!(
        records.iter().map(|r| r.epoch).collect::<Vec<_>>(),
        [3, 6, 9]
    );
}

#[test]
fn interrupted_run_with_the_training_options_resumes_exactly() {
    // The learning rate is a function of the step (warm-up, then cosine
    // decay), as are AdamW's decay and the clipping.
    resumes_exactly(TrainConfig {
        weight_decay: 0.05,
        warmup_steps: 4,
        lr_schedule: LrSchedule::Cosine,
        label_smoothing: 0.1,
        grad_clip: 0.5,
        ..train_config(3)
    });
}

/// Interrupts a 3-epoch run after every step and checks that it ends where
/// an uninterrupted run does; returns where it stopped (epoch, step).
fn resumes_exactly(config: TrainConfig) -> Vec<(usize, u64)> {
    assert_eq!(config.epochs, 3);
    let b = CpuBackend;
    let train = cyclic_users(40); // 3 batches of 16 per epoch
    let valid = valid_of(&train);

    let straight = tempfile::tempdir().unwrap();
    let mut t = trainer_with(
        &b,
        &train,
        &valid,
        straight.path(),
        0.1,
        config.clone(),
        false,
    );
    t.run(&AtomicBool::new(false)).unwrap();
    let expected = t.model.weights(&b);
    drop(t);

    // Interrupt after every single step (mid-epoch and at an epoch's last
    // batch), each time restoring into a fresh trainer from the files alone.
    // A run resumed after an epoch's last step validates that epoch, commits
    // it and stops there.
    let interrupted = tempfile::tempdir().unwrap();
    let stop = AtomicBool::new(true);
    let mut stops = Vec::new();
    loop {
        let resume = !stops.is_empty();
        let mut t = trainer_with(
            &b,
            &train,
            &valid,
            interrupted.path(),
            0.1,
            config.clone(),
            resume,
        );
        match t.run(&stop).unwrap() {
            Outcome::Interrupted => stops.push((t.state.epoch, t.state.step)),
            Outcome::Completed => {
                assert_eq!(
                    t.model.weights(&b),
                    expected,
                    "resumed weights differ from an uninterrupted run"
                );
                break;
            }
            Outcome::EarlyStopped => unreachable!("no patience set"),
        }
        assert!(
            stops.len() <= 11,
            "more stops than 9 steps and 2 epoch ends"
        );
    }
    let strip = |dir: &std::path::Path| {
        epochs(dir)
            .into_iter()
            .map(|r| (r.epoch, r.step, r.train_loss, r.valid, r.best))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(interrupted.path()), strip(straight.path()));
    stops
}

#[test]
fn checkpoint_round_trips_to_identical_outputs() {
    let b = CpuBackend;
    let train = cyclic_users(20);
    let valid = valid_of(&train);
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(&b, &train, &valid, dir.path(), 0.1, 2, false);
    t.run(&AtomicBool::new(false)).unwrap();
    let run = RunDir::new(dir.path());
    // The last checkpoint holds the final weights (plus optimiser state).
    let last = run.file(&run.read_commit().unwrap().unwrap().last.file);
    let loaded = load_model(&b, &last, small_model(0.1)).unwrap();
    assert_eq!(loaded.weights(&b), t.model.weights(&b));

    let inputs: Vec<u32> = [
        [0, 0, 0, 0, 0, 0, 3, 4, 5, 6],
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    ]
    .concat();
    let batch = DeviceBatch::upload(&b, &inputs, &[0; 20], 2, 10);
    let ours = t.model.infer(&b, &batch, true).scores.unwrap();
    let theirs = loaded.infer(&b, &batch, true).scores.unwrap();
    assert_eq!(ours, theirs);

    // A config that does not match the file is refused with the reason.
    let mut wrong = small_model(0.1);
    wrong.dim = 8;
    wrong.heads = 1;
    let err = load_model(&b, &last, wrong)
        .err()
        .expect("mismatched config must fail")
        .to_string();
    assert!(
        err.contains("item_embedding.weight") && err.contains("shape"),
        "{err}"
    );
}

/// Trains from initial weights changed by `edit` into `dir`; the error.
fn train_from_broken_weights(
    dir: &std::path::Path,
    edit: impl FnOnce(&mut [(String, Vec<usize>, Vec<f32>)]),
) -> String {
    let b = CpuBackend;
    let train = cyclic_users(20);
    let valid = valid_of(&train);
    let config = small_model(0.0);
    let mut weights = SasRec::new(&b, config.clone(), 1).weights(&b);
    edit(&mut weights);
    let model = SasRec::from_weights(&b, config, weights).unwrap();
    let mut run = RunWriter::create(dir, "test", false).unwrap();
    let mut t = Trainer::new(&b, model, train_config(2), &train, &valid, true).unwrap();
    t.progress = false;
    t.run(&mut run, &AtomicBool::new(false))
        .unwrap_err()
        .to_string()
}

#[test]
fn nan_weights_stop_training_with_the_step() {
    let dir = tempfile::tempdir().unwrap();
    // The position embedding.
    let err = train_from_broken_weights(dir.path(), |w| w[1].2[0] = f32::NAN);
    assert!(
        err.contains("the training loss became NaN at step 1 (epoch 1, batch 1)")
            && err.contains("the run folder has no checkpoint yet"),
        "{err}"
    );
}

#[test]
fn recommendations_skip_history_and_padding() {
    let b = CpuBackend;
    let model = SasRec::new(&b, small_model(0.0), 5);
    let history: Vec<u32> = vec![4, 9, 4, 17, 30, 1];
    let all = recommend(&b, &model, &history, 1000).unwrap();
    assert_eq!(all.len(), ITEMS - 5, "every unseen item once");
    for (item, _) in &all {
        assert!(*item != 0 && !history.contains(item), "recommended {item}");
    }
    assert!(
        all.windows(2).all(|w| w[0].1 >= w[1].1),
        "not sorted by score"
    );
    let top = recommend(&b, &model, &history, 5).unwrap();
    assert_eq!(top, all[..5].to_vec());
    // Indices outside 1..=N are an error, not an out-of-range panic.
    for bad in [0, ITEMS as u32 + 1, u32::MAX] {
        let err = recommend(&b, &model, &[3, bad], 5).unwrap_err().to_string();
        assert!(err.contains(&format!("item index {bad}")), "{err}");
    }
}

#[test]
fn nan_that_the_loss_hides_is_caught_in_the_gradients() {
    let dir = tempfile::tempdir().unwrap();
    // One row of the item table: only the softmax over all items sees it.
    let dim = small_model(0.0).dim;
    let err = train_from_broken_weights(dir.path(), |w| w[0].2[7 * dim..8 * dim].fill(f32::NAN));
    assert!(
        (err.contains("the training loss became NaN")
            || err.contains("the gradient of item_embedding.weight became NaN"))
            && err.contains("at step 1 (epoch 1, batch 1)"),
        "{err}"
    );
    assert!(RunDir::new(dir.path()).read_commit().unwrap().is_none());
}
