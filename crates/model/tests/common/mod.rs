//! What the training tests share: the users they train on, the small
//! model, and [`Trainer::step`], the one training step of the library.

// Each test file uses some of these.
#![allow(dead_code)]

use sasrec_data::{Order, UserSequence, batches};
use sasrec_kernels::Backend;
use sasrec_model::{ModelConfig, SasRec, TrainConfig, Trainer};

/// 96 users of 3 to 42 items drawn from `items` items.
pub fn users(items: u32) -> Vec<UserSequence> {
    (0..96u32)
        .map(|u| {
            let len = 3 + (u as usize * 5) % 40;
            let items = (0..len as u32)
                .map(|i| (u * 31 + i * i * 7) % items + 1)
                .collect();
            UserSequence::new(u, items)
        })
        .collect()
}

/// The losses of 20 [`Trainer::step`]s (4 epochs of 5 batches of 20
/// sequences, shuffled with seed 5, which also seeds dropout and
/// negatives) of a model of `model` sizes initialised with seed 9, trained
/// with `train`'s loss and optimiser settings.
pub fn step_losses<B: Backend>(
    backend: &B,
    model: ModelConfig,
    train: &TrainConfig,
    users: &[UserSequence],
) -> Vec<f32> {
    let config = TrainConfig {
        batch_size: 20,
        seed: 5,
        ..train.clone()
    };
    let max_len = model.max_len;
    let model = SasRec::new(backend, model, 9);
    let mut trainer = Trainer::new(backend, model, config, users, users, false).unwrap();
    let mut out = Vec::new();
    for epoch in 0..4 {
        let order = Order::Shuffled { seed: 5, epoch };
        for batch in batches(users, max_len, 20, order, false) {
            out.push(trainer.step(&batch).unwrap().loss);
        }
    }
    assert_eq!(out.len(), 20);
    out
}

/// Users walking 30 items in a cycle from different starting points (6 to
/// 14 items each): the next item is predictable, so a working trainer
/// learns it quickly.
pub fn cyclic_users(users: usize) -> Vec<UserSequence> {
    (0..users)
        .map(|u| {
            let len = 6 + u % 9;
            let items = (0..len).map(|i| ((u * 7 + i) % 30) as u32 + 1).collect();
            UserSequence::new(u as u32 + 1, items)
        })
        .collect()
}

/// Leave-one-out validation sequences of [`cyclic_users`]: each one's
/// training sequence and the next item of its cycle.
pub fn cyclic_valid(train: &[UserSequence]) -> Vec<UserSequence> {
    train
        .iter()
        .map(|s| {
            let mut items = s.items.clone();
            items.push((*items.last().unwrap() % 30) + 1);
            UserSequence::new(s.user, items)
        })
        .collect()
}

/// The small model the cyclic users train: 30 items, max_len 10, dim 16,
/// 2 heads, 2 layers, dropout 0.1.
pub fn cyclic_model() -> ModelConfig {
    ModelConfig {
        num_items: 30,
        max_len: 10,
        dim: 16,
        heads: 2,
        layers: 2,
        ff_dim: 32,
        dropout: 0.1,
        options: Default::default(),
    }
}
