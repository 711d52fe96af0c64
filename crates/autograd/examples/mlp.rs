//! A 2-layer MLP classifier trained with the tape: three interleaved
//! spirals of 2-D points, which no linear model separates.
//!
//! ```text
//! cargo run --release -p sasrec-autograd --example mlp
//! ```
//!
//! `tests/examples.rs` runs `train` and checks the loss it reaches.

use rand::RngExt;
use sasrec_autograd::init::{Init, SeededRng, seeded};
use sasrec_autograd::{AdamW, ParamStore, Tape};
use sasrec_kernels::{Backend, CpuBackend};

/// Points per class.
const PER_CLASS: usize = 100;
const CLASSES: usize = 3;
const HIDDEN: usize = 64;

/// `CLASSES` spirals of `PER_CLASS` noisy points: features `[n, 2]` and a
/// class `0..CLASSES` per point.
pub fn spirals(rng: &mut SeededRng) -> (Vec<f32>, Vec<u32>) {
    let mut x = Vec::new();
    let mut labels = Vec::new();
    for class in 0..CLASSES {
        for i in 0..PER_CLASS {
            let r = i as f32 / PER_CLASS as f32;
            let angle = class as f32 * 2.0 * std::f32::consts::PI / CLASSES as f32
                + 7.0 * r
                + rng.random_range(-0.2..0.2);
            x.extend([r * angle.cos(), r * angle.sin()]);
            labels.push(class as u32);
        }
    }
    (x, labels)
}

/// Trains the MLP for `steps` full-batch AdamW steps; returns the mean
/// cross-entropy after them.
pub fn train<B: Backend>(backend: &B, steps: usize, seed: u64) -> f32 {
    let mut rng = seeded(seed);
    let (x, labels) = spirals(&mut rng);
    let n = labels.len();
    let x = backend.tensor(&x, &[n, 2]);
    let labels = backend.ids(&labels);

    // nn.Linear(2, HIDDEN), nn.Linear(HIDDEN, HIDDEN), nn.Linear(HIDDEN, CLASSES).
    let mut params = ParamStore::new();
    for (name, fan_in, fan_out) in [
        ("fc1", 2, HIDDEN),
        ("fc2", HIDDEN, HIDDEN),
        ("out", HIDDEN, CLASSES),
    ] {
        let weight = Init::LINEAR_WEIGHT.tensor(backend, &[fan_out, fan_in], &mut rng);
        let bias = Init::linear_bias(fan_in).tensor(backend, &[fan_out], &mut rng);
        params.add(format!("{name}.weight"), weight);
        params.add(format!("{name}.bias"), bias);
    }
    let mut opt = AdamW::new(backend, &params, 0.01, 0.9, 0.999, 1e-8, 1e-4);

    // The mean cross-entropy of the MLP on the points; every class counts,
    // class 0 included (no ignore index).
    let loss = |tape: &mut Tape<'_, B>, params: &ParamStore<B>| {
        let p = tape.params(params);
        let input = tape.leaf(x.clone(), false);
        let h = tape.linear(input, p[0], Some(p[1]));
        let h = tape.relu(h);
        let h = tape.linear(h, p[2], Some(p[3]));
        let h = tape.relu(h);
        let logits = tape.linear(h, p[4], Some(p[5]));
        (tape.softmax_cross_entropy(logits, &labels, None), p)
    };
    for _ in 0..steps {
        let mut tape = Tape::new(backend, true);
        let (loss, vars) = loss(&mut tape, &params);
        let grads = tape.backward(loss);
        drop(tape);
        opt.step(backend, &mut params, &grads, &vars);
    }
    let mut tape = Tape::new(backend, false);
    let (final_loss, _) = loss(&mut tape, &params);
    backend.to_vec(tape.value(final_loss))[0]
}

#[allow(dead_code)] // the tests include this file for `train` only
fn main() {
    for steps in [0, 100, 300, 1000] {
        println!(
            "after {steps:>4} steps: loss {:.4}",
            train(&CpuBackend, steps, 1)
        );
    }
}
