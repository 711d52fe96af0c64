//! Training as a user relies on it: the loss falls, an interrupted run resumes
//! exactly, checkpoints round-trip, NaN stops the run, recommendations never
//! repeat the history.

use std::sync::atomic::AtomicBool;

use sasrec_data::UserSequence;
use sasrec_kernels::CpuBackend;
use sasrec_model::records::read_records;
use sasrec_model::{
    DeviceBatch, ModelConfig, Outcome, RunDir, SasRec, Selection, TrainConfig, Trainer, load_model,
    recommend,
};

const ITEMS: usize = 30;

/// Users walking the items in a cycle from different starting points: the
/// next item is predictable, so a working trainer learns it quickly.
fn cyclic_users(users: usize) -> Vec<UserSequence> {
    (0..users)
        .map(|u| {
            let len = 6 + u % 9;
            let items = (0..len).map(|i| ((u * 7 + i) % ITEMS) as u32 + 1).collect();
            UserSequence {
                user: u as u32 + 1,
                items,
            }
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
            UserSequence {
                user: s.user,
                items,
            }
        })
        .collect()
}

fn trainer<'a>(
    b: &'a CpuBackend,
    train: &'a [UserSequence],
    valid: &'a [UserSequence],
    dir: &std::path::Path,
    dropout: f32,
    epochs: usize,
) -> Trainer<'a, CpuBackend> {
    let model = SasRec::new(b, small_model(dropout), 11);
    let mut t = Trainer::new(
        b,
        model,
        train_config(epochs),
        train,
        valid,
        true,
        RunDir::new(dir),
    )
    .unwrap();
    t.progress = false;
    t
}

#[test]
fn loss_falls_and_ranking_improves() {
    let b = CpuBackend;
    let train = cyclic_users(48);
    let valid = valid_of(&train);
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(&b, &train, &valid, dir.path(), 0.1, 15);
    assert_eq!(t.run(&AtomicBool::new(false)).unwrap(), Outcome::Completed);
    let records = read_records(&RunDir::new(dir.path()).metrics()).unwrap();
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
        "last.safetensors",
        "state.json",
        "metrics.jsonl",
        "curves.svg",
    ] {
        assert!(dir.path().join(file).exists(), "{file} missing");
    }
}

#[test]
fn interrupted_run_resumes_exactly() {
    let b = CpuBackend;
    let train = cyclic_users(40); // 3 batches of 16 per epoch
    let valid = valid_of(&train);

    let straight = tempfile::tempdir().unwrap();
    let mut t = trainer(&b, &train, &valid, straight.path(), 0.1, 3);
    t.run(&AtomicBool::new(false)).unwrap();
    let expected = t.model.weights(&b);
    drop(t);

    // Interrupt after every single step (mid-epoch and at an epoch's last
    // batch), each time restoring into a fresh trainer from the files alone.
    let interrupted = tempfile::tempdir().unwrap();
    let stop = AtomicBool::new(true);
    let mut steps = 0;
    loop {
        let mut t = trainer(&b, &train, &valid, interrupted.path(), 0.1, 3);
        if steps > 0 {
            t.restore().unwrap();
        }
        match t.run(&stop).unwrap() {
            Outcome::Interrupted => steps += 1,
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
        assert!(steps <= 9, "more steps than 3 epochs x 3 batches");
    }
    assert_eq!(steps, 9);
    let strip = |dir: &std::path::Path| {
        read_records(&RunDir::new(dir).metrics())
            .unwrap()
            .into_iter()
            .map(|r| (r.epoch, r.step, r.train_loss, r.valid, r.best))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(interrupted.path()), strip(straight.path()));
}

#[test]
fn checkpoint_round_trips_to_identical_outputs() {
    let b = CpuBackend;
    let train = cyclic_users(20);
    let valid = valid_of(&train);
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(&b, &train, &valid, dir.path(), 0.1, 2);
    t.run(&AtomicBool::new(false)).unwrap();
    let run = RunDir::new(dir.path());
    // last.safetensors holds the final weights (plus optimiser state).
    let loaded = load_model(&b, &run.last(), small_model(0.1)).unwrap();
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
    let err = load_model(&b, &run.last(), wrong)
        .err()
        .expect("mismatched config must fail")
        .to_string();
    assert!(
        err.contains("item_embedding.weight") && err.contains("shape"),
        "{err}"
    );
}

#[test]
fn nan_weights_stop_training_with_the_step() {
    let b = CpuBackend;
    let train = cyclic_users(20);
    let valid = valid_of(&train);
    let dir = tempfile::tempdir().unwrap();
    let config = small_model(0.0);
    let mut weights = SasRec::new(&b, config.clone(), 1).weights(&b);
    weights[1].2[0] = f32::NAN; // position embedding
    let model = SasRec::from_weights(&b, config, weights).unwrap();
    let mut t = Trainer::new(
        &b,
        model,
        train_config(2),
        &train,
        &valid,
        true,
        RunDir::new(dir.path()),
    )
    .unwrap();
    t.progress = false;
    let err = t.run(&AtomicBool::new(false)).unwrap_err().to_string();
    assert!(err.contains("NaN") && err.contains("step 1"), "{err}");
}

#[test]
fn recommendations_skip_history_and_padding() {
    let b = CpuBackend;
    let model = SasRec::new(&b, small_model(0.0), 5);
    let history: Vec<u32> = vec![4, 9, 4, 17, 30, 1];
    let all = recommend(&b, &model, &history, 1000);
    assert_eq!(all.len(), ITEMS - 5, "every unseen item once");
    for (item, _) in &all {
        assert!(*item != 0 && !history.contains(item), "recommended {item}");
    }
    assert!(
        all.windows(2).all(|w| w[0].1 >= w[1].1),
        "not sorted by score"
    );
    let top = recommend(&b, &model, &history, 5);
    assert_eq!(top, all[..5].to_vec());
}
