//! Matrix factorisation trained with the tape: ratings made from hidden
//! rank-4 user and item factors plus noise, recovered from a third of the
//! (user, item) pairs by fitting `rating ~ <user factors, item factors>`
//! with a mean squared error.
//!
//! ```text
//! cargo run --release -p sasrec-autograd --example matrix_factorization
//! ```
//!
//! `tests/examples.rs` runs `train` and checks the errors it reaches.

use rand::RngExt;
use sasrec_autograd::init::{Init, SeededRng, seeded};
use sasrec_autograd::{Adam, ParamStore, Tape};
use sasrec_kernels::{Backend, CpuBackend};

const USERS: usize = 60;
const ITEMS: usize = 80;
/// Rank of the hidden factors, and of the model.
const RANK: usize = 4;
/// Standard deviation of the noise added to every rating.
pub const NOISE: f32 = 0.1;

/// Observed ratings: `(user, item, rating)` columns.
pub struct Ratings {
    pub users: Vec<u32>,
    pub items: Vec<u32>,
    pub values: Vec<f32>,
}

/// Every (user, item) pair's rating, split into a training third and a
/// held-out rest.
pub fn ratings(rng: &mut SeededRng) -> (Ratings, Ratings) {
    let normal = Init::Normal {
        mean: 0.0,
        std: 0.7,
    };
    let user_factors = normal.values(&[USERS, RANK], rng);
    let item_factors = normal.values(&[ITEMS, RANK], rng);
    let noise = Init::Normal {
        mean: 0.0,
        std: NOISE,
    }
    .values(&[USERS * ITEMS], rng);
    let empty = || Ratings {
        users: Vec::new(),
        items: Vec::new(),
        values: Vec::new(),
    };
    let (mut train, mut held_out) = (empty(), empty());
    for u in 0..USERS {
        for i in 0..ITEMS {
            let dot: f32 = (0..RANK)
                .map(|k| user_factors[u * RANK + k] * item_factors[i * RANK + k])
                .sum();
            let part = if rng.random_range(0..3) == 0 {
                &mut train
            } else {
                &mut held_out
            };
            part.users.push(u as u32);
            part.items.push(i as u32);
            part.values.push(dot + noise[u * ITEMS + i]);
        }
    }
    (train, held_out)
}

/// Fits the factors with `steps` full-batch Adam steps on the training
/// ratings; returns the mean squared error on the training and on the
/// held-out ratings.
pub fn train<B: Backend>(backend: &B, steps: usize, seed: u64) -> (f32, f32) {
    let mut rng = seeded(seed);
    let (train, held_out) = ratings(&mut rng);
    let mut params = ParamStore::new();
    let small = Init::Normal {
        mean: 0.0,
        std: 0.1,
    };
    params.add("users", small.tensor(backend, &[USERS, RANK], &mut rng));
    params.add("items", small.tensor(backend, &[ITEMS, RANK], &mut rng));
    let mut adam = Adam::new(backend, &params, 0.05, 0.9, 0.999, 1e-8);
    // Sums each row of the [n, RANK] products: a matmul by a column of ones.
    let ones = backend.tensor(&[1.0; RANK], &[RANK, 1]);

    let mse = |tape: &mut Tape<'_, B>, params: &ParamStore<B>, r: &Ratings| {
        let p = tape.params(params);
        let n = r.values.len();
        let u = tape.embedding(p[0], &backend.ids(&r.users), None);
        let i = tape.embedding(p[1], &backend.ids(&r.items), None);
        let products = tape.mul(u, i);
        let ones = tape.leaf(ones.clone(), false);
        let predicted = tape.matmul(products, ones);
        let target = tape.leaf(backend.tensor(&r.values, &[n, 1]), false);
        (tape.mse_loss(predicted, target), p)
    };
    for _ in 0..steps {
        let mut tape = Tape::new(backend, true);
        let (loss, vars) = mse(&mut tape, &params, &train);
        let grads = tape.backward(loss);
        drop(tape);
        adam.step(backend, &mut params, &grads, &vars);
    }
    let evaluate = |r: &Ratings| {
        let mut tape = Tape::new(backend, false);
        let (loss, _) = mse(&mut tape, &params, r);
        backend.to_vec(tape.value(loss))[0]
    };
    (evaluate(&train), evaluate(&held_out))
}

#[allow(dead_code)] // the tests include this file for `train` only
fn main() {
    println!(
        "noise variance (the best possible error): {:.4}",
        NOISE * NOISE
    );
    for steps in [0, 100, 300, 1000] {
        let (train_mse, held_out_mse) = train(&CpuBackend, steps, 1);
        println!(
            "after {steps:>4} steps: train MSE {train_mse:.4}, held-out MSE {held_out_mse:.4}"
        );
    }
}
