//! `Trainer::step` as research code uses it: a loss of one's own through
//! `step_with_loss` trains through the trainer's own step, and a run kept in
//! memory (`MemoryStore`) resumes like a run folder.

mod common;

use std::sync::atomic::AtomicBool;

use sasrec_autograd::{Tape, Var};
use sasrec_data::{Batch, Order, UserSequence, batches};
use sasrec_kernels::{Backend, CpuBackend};
use sasrec_model::{MemoryStore, Outcome, SasRec, Selection, StepInputs, TrainConfig, Trainer};

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

/// A trainer of the small model on the cyclic users, for `epochs` epochs.
fn trainer<'a>(
    b: &'a CpuBackend,
    train: &'a [UserSequence],
    valid: &'a [UserSequence],
    epochs: usize,
) -> Trainer<'a, CpuBackend> {
    let model = SasRec::new(b, common::cyclic_model(), 11);
    let mut t = Trainer::new(b, model, train_config(epochs), train, valid, true).unwrap();
    t.progress = false;
    t
}

fn first_batches(train: &[UserSequence], count: usize) -> Vec<Batch> {
    let order = Order::Shuffled { seed: 3, epoch: 0 };
    batches(train, 10, 16, order, false).take(count).collect()
}

/// The full softmax written from tape ops: logits `h W^T`, then the
/// cross-entropy over them, ignoring padding targets.
fn unfused_softmax<B: Backend>(tape: &mut Tape<'_, B>, s: &StepInputs<'_, B>) -> Var {
    let h = s.model.hidden(tape, s.vars, s.device, Some(s.dropout));
    let table = s.model.output_table_var(s.vars);
    let logits = tape.linear(h, table, None);
    tape.softmax_cross_entropy(logits, &s.device.targets, Some(0))
}

#[test]
fn the_models_own_loss_through_step_with_loss_is_step() {
    let b = CpuBackend;
    let train = common::cyclic_users(48);
    let valid = common::cyclic_valid(&train);
    let new = || trainer(&b, &train, &valid, 1);
    let (mut builtin, mut custom) = (new(), new());
    for batch in first_batches(&train, 3) {
        let a = builtin.step(&batch).unwrap();
        let c = custom
            .step_with_loss(&batch, |tape, s| {
                s.model.loss(tape, s.vars, s.device, Some(s.dropout))
            })
            .unwrap();
        assert_eq!(a.loss.to_bits(), c.loss.to_bits());
        assert_eq!(a.targets, c.targets);
    }
    assert_eq!(builtin.state.step, 3);
    assert_eq!(
        builtin.model.weights(&b),
        custom.model.weights(&b),
        "the same loss gives the same weights"
    );
}

#[test]
fn a_loss_built_from_tape_ops_trains_like_the_fused_one() {
    // The unfused softmax is the fused kernel's maths in other products:
    // the first loss agrees to float rounding (1e-5 relative), and training
    // with it lowers the loss as the fused one does.
    let b = CpuBackend;
    let train = common::cyclic_users(48);
    let valid = common::cyclic_valid(&train);
    let new = || trainer(&b, &train, &valid, 1);
    let (mut fused, mut unfused) = (new(), new());
    let batches = first_batches(&train, 3);
    let f = fused.step(&batches[0]).unwrap().loss;
    let u = unfused
        .step_with_loss(&batches[0], unfused_softmax)
        .unwrap()
        .loss;
    assert!((f - u).abs() <= 1e-5 * f.abs(), "fused {f}, unfused {u}");
    let mut last = u;
    for _ in 0..20 {
        for batch in &batches {
            last = unfused.step_with_loss(batch, unfused_softmax).unwrap().loss;
        }
    }
    assert!(last < 0.8 * u, "the loss should fall: {u} -> {last}");
}

#[test]
fn a_run_kept_in_memory_resumes_exactly() {
    let b = CpuBackend;
    let train = common::cyclic_users(48);
    let valid = common::cyclic_valid(&train);
    let new = |epochs| trainer(&b, &train, &valid, epochs);
    let mut whole_store = MemoryStore::default();
    let mut whole = new(4);
    let never = AtomicBool::new(false);
    assert_eq!(
        whole.run(&mut whole_store, &never).unwrap(),
        Outcome::Completed
    );

    // Two epochs, then a new trainer restored from the store runs the rest.
    let mut store = MemoryStore::default();
    new(2).run(&mut store, &never).unwrap();
    let mut resumed = new(4);
    assert!(resumed.restore(&store).unwrap());
    assert_eq!(resumed.state.epoch, 2);
    resumed.run(&mut store, &never).unwrap();

    assert_eq!(store.epochs().len(), 4);
    for (a, b) in whole_store.epochs().iter().zip(store.epochs()) {
        assert_eq!(a.train_loss.to_bits(), b.train_loss.to_bits());
        assert_eq!(a.valid.loss.to_bits(), b.valid.loss.to_bits());
    }
    assert_eq!(whole.model.weights(&b), resumed.model.weights(&b));
    assert_eq!(store.best, whole_store.best, "the same best weights");
}
