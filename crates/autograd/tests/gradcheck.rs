//! Finite-difference gradient checks of every tape op, run mid-graph: the op
//! under test is always followed by another op (usually the fused
//! cross-entropy, which itself is followed by a scale), so a backward that
//! drops or mishandles its incoming gradient fails.
//!
//! Method ([`check_gradient`]): for each input x and a few random directions
//! u, compare the directional derivative from the tape, <grad, u>, with the
//! central difference (L(x + eps u) - L(x - eps u)) / (2 eps) of the f32
//! loss. With eps = 1e-2 and losses of order 1, the truncation error is
//! O(eps^2) ~ 1e-4 and the rounding error ~ 1e-7 / eps ~ 1e-5, so a relative
//! tolerance of 1e-2 (plus 1e-3 absolute) is comfortably loose for correct
//! gradients and far too tight for wrong ones, which are off by O(1).

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sasrec_autograd::{CustomOp, Tape, Var};
use sasrec_kernels::testing::{Along, Tol, check_gradient};
use sasrec_kernels::{AttentionShape, Backend, CpuBackend, Dropout, Negatives, SampledLoss};

const EPS: f64 = 1e-2;
/// `|tape - differences| <= 1e-3 + 1e-2 max(|tape|, |differences|)`.
const TOL: Tol = Tol::abs_plus_rel(1e-2, 1e-3);

/// A tensor input of the graph under test.
struct Input {
    data: Vec<f32>,
    shape: Vec<usize>,
}

fn random(rng: &mut ChaCha8Rng, shape: &[usize], scale: f32) -> Input {
    let n = shape.iter().product();
    Input {
        data: (0..n).map(|_| rng.random_range(-scale..scale)).collect(),
        shape: shape.to_vec(),
    }
}

/// Values at least 0.1 away from 0, so that a step of EPS never crosses the
/// ReLU kink.
fn away_from_zero(rng: &mut ChaCha8Rng, shape: &[usize]) -> Input {
    let mut x = random(rng, shape, 1.0);
    for v in &mut x.data {
        *v = v.signum() * (v.abs() + 0.1);
    }
    x
}

/// Checks d loss / d input for every input of `graph` by central differences.
fn gradcheck(
    name: &str,
    inputs: &[Input],
    graph: impl Fn(&mut Tape<'_, CpuBackend>, &[Var]) -> Var,
) {
    let b = CpuBackend;
    let loss_at = |values: &[Vec<f32>]| -> f32 {
        let mut tape = Tape::new(&b, false);
        let vars: Vec<Var> = values
            .iter()
            .zip(inputs)
            .map(|(v, i)| tape.leaf(b.tensor(v, &i.shape), false))
            .collect();
        let loss = graph(&mut tape, &vars);
        b.to_vec(tape.value(loss))[0]
    };

    let mut tape = Tape::new(&b, true);
    let vars: Vec<Var> = inputs
        .iter()
        .map(|i| tape.leaf(b.tensor(&i.data, &i.shape), true))
        .collect();
    let loss = graph(&mut tape, &vars);
    let grads = tape.backward(loss);

    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (k, input) in inputs.iter().enumerate() {
        let grad = b.to_vec(
            grads
                .get(vars[k])
                .unwrap_or_else(|| panic!("{name}: no gradient for input {k}")),
        );
        let directions: Vec<Vec<f32>> = (0..3)
            .map(|_| {
                (0..input.data.len())
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect()
            })
            .collect();
        let loss_along = |x: &[f64]| {
            let mut values: Vec<Vec<f32>> = inputs.iter().map(|i| i.data.clone()).collect();
            values[k] = x.iter().map(|&v| v as f32).collect();
            f64::from(loss_at(&values))
        };
        let along = Along::Directions(&directions);
        let what = format!("{name}: input {k}");
        check_gradient(&what, &input.data, &grad, along, EPS, TOL, loss_along);
    }
}

/// Random targets in 0..vocab with some zeros (ignored).
fn targets(rng: &mut ChaCha8Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|i| {
            if i % 4 == 3 {
                0
            } else {
                rng.random_range(1..vocab as u32)
            }
        })
        .collect()
}

/// The tail every check ends with: cross-entropy of `h` against a fixed
/// random table, then a scale.
struct Tail {
    table: Vec<f32>,
    targets: Vec<u32>,
    vocab: usize,
    dim: usize,
}

impl Tail {
    fn new(rng: &mut ChaCha8Rng, rows: usize, dim: usize) -> Self {
        let vocab = 11;
        Tail {
            table: random(rng, &[vocab, dim], 1.0).data,
            targets: targets(rng, rows, vocab),
            vocab,
            dim,
        }
    }

    fn apply(&self, tape: &mut Tape<'_, CpuBackend>, h: Var) -> Var {
        let b = tape.backend();
        let table = tape.leaf(b.tensor(&self.table, &[self.vocab, self.dim]), false);
        let ids = b.ids(&self.targets);
        let loss = tape.cross_entropy(h, table, &ids);
        tape.scale(loss, b.tensor(&[1.7], &[1]))
    }
}

#[test]
fn add() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let tail = Tail::new(&mut rng, 5, 3);
    let inputs = [
        random(&mut rng, &[5, 3], 1.0),
        random(&mut rng, &[5, 3], 1.0),
    ];
    gradcheck("add", &inputs, |t, v| {
        let y = t.add(v[0], v[1]);
        tail.apply(t, y)
    });
}

#[test]
fn sub() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let tail = Tail::new(&mut rng, 5, 3);
    let inputs = [
        random(&mut rng, &[5, 3], 1.0),
        random(&mut rng, &[5, 3], 1.0),
    ];
    gradcheck("sub", &inputs, |t, v| {
        let y = t.sub(v[0], v[1]);
        tail.apply(t, y)
    });
}

#[test]
fn mul() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let tail = Tail::new(&mut rng, 4, 6);
    let inputs = [
        random(&mut rng, &[4, 6], 1.0),
        random(&mut rng, &[4, 6], 1.0),
    ];
    gradcheck("mul", &inputs, |t, v| {
        let y = t.mul(v[0], v[1]);
        tail.apply(t, y)
    });
    // x * x: both factors are the same Var.
    gradcheck("mul of a Var by itself", &inputs[..1], |t, v| {
        let y = t.mul(v[0], v[0]);
        tail.apply(t, y)
    });
}

#[test]
fn sigmoid() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let tail = Tail::new(&mut rng, 6, 4);
    let inputs = [random(&mut rng, &[6, 4], 3.0)];
    gradcheck("sigmoid", &inputs, |t, v| {
        let y = t.sigmoid(v[0]);
        tail.apply(t, y)
    });
}

#[test]
fn sum_and_mean() {
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let inputs = [random(&mut rng, &[5, 7], 1.0)];
    // Each reduction is followed by a scale, then a mul by another function
    // of x, so a backward that ignores its incoming gradient fails.
    for reduce in ["sum", "mean"] {
        gradcheck(reduce, &inputs, |t, v| {
            let s = if reduce == "sum" {
                t.sum(v[0])
            } else {
                t.mean(v[0])
            };
            let s = t.scale(s, t.backend().tensor(&[0.7], &[1]));
            let x2 = t.mul(v[0], v[0]);
            let m = t.mean(x2);
            t.mul(s, m)
        });
    }
}

#[test]
fn matmul() {
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    let tail = Tail::new(&mut rng, 5, 3);
    let inputs = [
        random(&mut rng, &[5, 4], 1.0),
        random(&mut rng, &[4, 3], 1.0),
    ];
    gradcheck("matmul", &inputs, |t, v| {
        let y = t.matmul(v[0], v[1]);
        tail.apply(t, y)
    });
}

#[test]
fn softmax_cross_entropy_with_and_without_ignore_index() {
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    let (rows, classes) = (7, 5);
    // Class 0 is a real class; row 3's target is the ignored one.
    let labels: Vec<u32> = (0..rows).map(|r| (r * 2 % classes) as u32).collect();
    let inputs = [
        random(&mut rng, &[rows, 4], 1.0),
        random(&mut rng, &[4, classes], 1.0),
    ];
    for ignore in [None, Some(labels[3])] {
        gradcheck("softmax_cross_entropy", &inputs, |t, v| {
            let logits = t.matmul(v[0], v[1]);
            let ids = t.backend().ids(&labels);
            let loss = t.softmax_cross_entropy(logits, &ids, ignore);
            t.scale(loss, t.backend().tensor(&[-0.8], &[1]))
        });
    }
}

#[test]
fn sampled_loss_after_a_lookup_then_scale() {
    let mut rng = ChaCha8Rng::seed_from_u64(18);
    let (rows, dim, vocab) = (8, 4, 12);
    // Row 1 is ignored; in the shared set, negative 2 is row 0's target and
    // negative 4 repeats negative 0.
    let targets = [3u32, 0, 5, 9, 3, 11, 1, 6];
    let shared = [6u32, 2, 3, 8, 6];
    let log_q: Vec<f32> = (0..vocab).map(|i| -2.0 - 0.3 * i as f32).collect();
    let inputs = [
        random(&mut rng, &[rows, dim], 1.0),
        random(&mut rng, &[vocab, dim], 1.0),
    ];
    // The batch's negatives, two sequences' own, and each row's own.
    let per_sequence: Vec<u32> = (0..2 * 5).map(|i| 1 + (i * 7 % 11) as u32).collect();
    let per_row: Vec<u32> = (0..rows * 3).map(|i| 1 + (i * 5 % 11) as u32).collect();
    for (scope, ids, per_group) in [
        ("batch", &shared[..], 5),
        ("sequence", &per_sequence[..], 5),
        ("position", &per_row[..], 3),
    ] {
        for name in [
            "sampled softmax",
            "sampled softmax with log Q",
            "bce",
            "gbce",
        ] {
            gradcheck(&format!("{name} per {scope}"), &inputs, |t, v| {
                let b = t.backend();
                let (target_ids, negative_ids) = (b.ids(&targets), b.ids(ids));
                let lq = b.tensor(&log_q, &[vocab]);
                let loss = match name {
                    "bce" => SampledLoss::Binary {
                        positive_weight: 1.0,
                    },
                    "gbce" => SampledLoss::Binary {
                        positive_weight: 0.4,
                    },
                    "sampled softmax" => SampledLoss::Softmax { log_q: None },
                    _ => SampledLoss::Softmax { log_q: Some(&lq) },
                };
                // h depends on the table too (h = x + table rows), like
                // SASRec's tied table: every path into the table is checked.
                let looked_up = t.embedding(v[1], &target_ids, None);
                let h = t.add(v[0], looked_up);
                let negatives = Negatives {
                    ids: &negative_ids,
                    per_group,
                };
                let l = t.sampled_loss(h, v[1], &target_ids, negatives, loss);
                t.scale(l, b.tensor(&[-0.7], &[1]))
            });
        }
    }
}

#[test]
fn mse_loss() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let inputs = [
        random(&mut rng, &[6, 3], 1.0),
        random(&mut rng, &[3, 2], 1.0),
        random(&mut rng, &[6, 2], 1.0),
    ];
    gradcheck("mse_loss", &inputs, |t, v| {
        let prediction = t.matmul(v[0], v[1]);
        let loss = t.mse_loss(prediction, v[2]);
        t.scale(loss, t.backend().tensor(&[1.3], &[1]))
    });
}

/// SiLU, `x * sigmoid(x)`, as a custom op that keeps sigmoid(x) from its
/// forward for its backward.
#[derive(Default)]
struct Silu {
    sigmoid: Option<<CpuBackend as Backend>::Tensor>,
}

impl CustomOp<CpuBackend> for Silu {
    fn name(&self) -> &str {
        "silu"
    }

    fn forward(
        &mut self,
        b: &CpuBackend,
        inputs: &[&<CpuBackend as Backend>::Tensor],
    ) -> <CpuBackend as Backend>::Tensor {
        let s = b.sigmoid(inputs[0]);
        let y = b.mul(inputs[0], &s);
        self.sigmoid = Some(s);
        y
    }

    fn backward(
        &self,
        b: &CpuBackend,
        inputs: &[&<CpuBackend as Backend>::Tensor],
        _output: &<CpuBackend as Backend>::Tensor,
        dy: &<CpuBackend as Backend>::Tensor,
    ) -> Vec<Option<<CpuBackend as Backend>::Tensor>> {
        // d/dx x s(x) = s + x s (1 - s)
        let s = self.sigmoid.as_ref().expect("forward ran");
        let through_s = b.sigmoid_backward(s, &b.mul(dy, inputs[0]));
        vec![Some(b.add(&b.mul(dy, s), &through_s))]
    }
}

#[test]
fn custom_op() {
    let mut rng = ChaCha8Rng::seed_from_u64(18);
    let tail = Tail::new(&mut rng, 5, 4);
    let inputs = [random(&mut rng, &[5, 4], 2.0)];
    gradcheck("custom silu", &inputs, |t, v| {
        let y = t.custom(&[v[0]], Silu::default());
        tail.apply(t, y)
    });
}

/// A custom op whose backward forgets an input.
struct Forgetful;

impl CustomOp<CpuBackend> for Forgetful {
    fn name(&self) -> &str {
        "forgetful"
    }

    fn forward(
        &mut self,
        b: &CpuBackend,
        inputs: &[&<CpuBackend as Backend>::Tensor],
    ) -> <CpuBackend as Backend>::Tensor {
        b.add(inputs[0], inputs[1])
    }

    fn backward(
        &self,
        _b: &CpuBackend,
        _inputs: &[&<CpuBackend as Backend>::Tensor],
        _output: &<CpuBackend as Backend>::Tensor,
        dy: &<CpuBackend as Backend>::Tensor,
    ) -> Vec<Option<<CpuBackend as Backend>::Tensor>> {
        vec![Some(dy.clone())]
    }
}

#[test]
#[should_panic(expected = "custom op forgetful: backward returned 1 gradients for 2 inputs")]
fn custom_op_with_a_missing_gradient_is_a_clear_error() {
    let b = CpuBackend;
    let mut tape = Tape::new(&b, true);
    let x = tape.leaf(b.tensor(&[1.0], &[1]), true);
    let y = tape.leaf(b.tensor(&[2.0], &[1]), true);
    let z = tape.custom(&[x, y], Forgetful);
    tape.backward(z);
}

#[test]
fn same_input_used_twice_accumulates() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let tail = Tail::new(&mut rng, 4, 3);
    let inputs = [random(&mut rng, &[4, 3], 1.0)];
    gradcheck("x + relu(x)", &inputs, |t, v| {
        let r = t.relu(v[0]);
        let y = t.add(v[0], r);
        tail.apply(t, y)
    });
}

#[test]
fn relu() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let tail = Tail::new(&mut rng, 6, 4);
    let inputs = [away_from_zero(&mut rng, &[6, 4])];
    gradcheck("relu", &inputs, |t, v| {
        let y = t.relu(v[0]);
        tail.apply(t, y)
    });
}

#[test]
fn dropout() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let tail = Tail::new(&mut rng, 6, 5);
    let inputs = [random(&mut rng, &[6, 5], 1.0)];
    gradcheck("dropout", &inputs, |t, v| {
        let y = t.dropout(v[0], Some(Dropout::new(0.3, 11, 5, 2)));
        tail.apply(t, y)
    });
}

#[test]
fn embedding_with_padding() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let tail = Tail::new(&mut rng, 7, 4);
    let inputs = [random(&mut rng, &[6, 4], 1.0)];
    // Finite differences see every lookup, but padding lookups get no gradient
    // by design (checked below), so the numeric check uses real ids only.
    let real_ids = [3u32, 4, 5, 3, 1, 1, 2];
    gradcheck("embedding", &inputs, |t, v| {
        let ids = t.backend().ids(&real_ids);
        let y = t.embedding(v[0], &ids, Some(0));
        tail.apply(t, y)
    });

    // Row 0 is looked up twice but, as the padding row, gets no gradient.
    let ids = [3u32, 0, 5, 3, 1, 0, 2];
    let b = CpuBackend;
    let mut tape = Tape::new(&b, true);
    let table = tape.leaf(b.tensor(&inputs[0].data, &[6, 4]), true);
    let y = tape.embedding(table, &b.ids(&ids), Some(0));
    let loss = tail.apply(&mut tape, y);
    let grads = tape.backward(loss);
    let g = b.to_vec(grads.get(table).unwrap());
    assert!(
        g[..4].iter().all(|&v| v == 0.0),
        "padding row got gradient {:?}",
        &g[..4]
    );
    assert!(g[12..16].iter().any(|&v| v != 0.0), "row 3 got no gradient");
}

#[test]
fn layer_norm() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let tail = Tail::new(&mut rng, 5, 7);
    let inputs = [
        random(&mut rng, &[5, 7], 2.0),
        random(&mut rng, &[7], 1.0),
        random(&mut rng, &[7], 1.0),
    ];
    gradcheck("layer_norm", &inputs, |t, v| {
        let y = t.layer_norm(v[0], v[1], v[2], 1e-5);
        tail.apply(t, y)
    });
}

#[test]
fn linear() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let tail = Tail::new(&mut rng, 5, 3);
    let inputs = [
        random(&mut rng, &[5, 4], 1.0),
        random(&mut rng, &[3, 4], 1.0),
        random(&mut rng, &[3], 1.0),
    ];
    gradcheck("linear", &inputs, |t, v| {
        let y = t.linear(v[0], v[1], Some(v[2]));
        tail.apply(t, y)
    });
}

fn attention_case(dropout: Option<Dropout>) {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let shape = AttentionShape {
        batch: 3,
        len: 5,
        heads: 2,
        head_dim: 3,
    };
    let rows = shape.batch * shape.len;
    let tail = Tail::new(&mut rng, rows, shape.dim());
    // Sequence 0 left-padded, 1 full, 2 all padding (every query fully masked).
    let key_ids: Vec<u32> = [[0, 0, 4, 2, 9], [1, 2, 3, 4, 5], [0, 0, 0, 0, 0]].concat();
    let inputs = [random(&mut rng, &[rows, 3 * shape.dim()], 1.5)];
    gradcheck("attention", &inputs, |t, v| {
        let ids = t.backend().ids(&key_ids);
        let y = t.attention(v[0], &ids, shape, dropout);
        tail.apply(t, y)
    });
}

#[test]
fn attention() {
    attention_case(None);
}

#[test]
fn attention_with_dropout() {
    attention_case(Some(Dropout::new(0.2, 3, 1, 1)));
}

#[test]
fn cross_entropy_both_inputs_then_scale() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let ids = targets(&mut rng, 9, 13);
    let inputs = [
        random(&mut rng, &[9, 6], 1.0),
        random(&mut rng, &[13, 6], 1.0),
    ];
    gradcheck("cross_entropy", &inputs, |t, v| {
        let ids = t.backend().ids(&ids);
        let loss = t.cross_entropy(v[0], v[1], &ids);
        t.scale(loss, t.backend().tensor(&[-0.6], &[1]))
    });
}

#[test]
fn tied_table_gets_gradient_from_lookup_and_output() {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    // No padding lookups: their (intentionally absent) gradient would differ
    // from finite differences; the output layer still scores column 0.
    let ids = [2u32, 5, 7, 7, 1, 3];
    let targets = targets(&mut rng, 6, 8);
    let inputs = [
        random(&mut rng, &[8, 4], 1.0),
        random(&mut rng, &[4, 4], 1.0),
    ];
    gradcheck("tied embedding", &inputs, |t, v| {
        let b = t.backend();
        let (ids, targets) = (b.ids(&ids), b.ids(&targets));
        let x = t.embedding(v[0], &ids, Some(0));
        let h = t.linear(x, v[1], None);
        t.cross_entropy(h, v[0], &targets)
    });
}

#[test]
fn inference_mode_records_nothing() {
    let b = CpuBackend;
    let mut tape = Tape::new(&b, false);
    let x = tape.leaf(b.tensor(&[1.0, 2.0], &[1, 2]), true);
    let table = tape.leaf(b.tensor(&[0.5, -0.5, 1.0, 1.0], &[2, 2]), true);
    let loss = tape.cross_entropy(x, table, &b.ids(&[1]));
    assert!(b.to_vec(tape.value(loss))[0].is_finite());
    let grads = tape.backward(loss);
    assert!(grads.get(x).is_none() && grads.get(table).is_none());
}

#[test]
fn rms_norm() {
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let tail = Tail::new(&mut rng, 5, 7);
    let inputs = [random(&mut rng, &[5, 7], 2.0), random(&mut rng, &[7], 1.0)];
    gradcheck("rms_norm", &inputs, |t, v| {
        let y = t.rms_norm(v[0], v[1], 1e-6);
        tail.apply(t, y)
    });
}

#[test]
fn swiglu() {
    let mut rng = ChaCha8Rng::seed_from_u64(32);
    let tail = Tail::new(&mut rng, 6, 4);
    let inputs = [
        random(&mut rng, &[6, 4], 3.0),
        random(&mut rng, &[6, 4], 1.0),
    ];
    gradcheck("swiglu", &inputs, |t, v| {
        let y = t.swiglu(v[0], v[1]);
        tail.apply(t, y)
    });
}

#[test]
fn gated_residual_composition() {
    // x + sigmoid(W x + b) * branch, as the model writes it.
    let mut rng = ChaCha8Rng::seed_from_u64(33);
    let tail = Tail::new(&mut rng, 5, 4);
    let inputs = [
        random(&mut rng, &[5, 4], 1.0),
        random(&mut rng, &[5, 4], 1.0),
        random(&mut rng, &[4, 4], 1.0),
        random(&mut rng, &[4], 1.0),
    ];
    gradcheck("gated residual", &inputs, |t, v| {
        let g = t.linear(v[0], v[2], Some(v[3]));
        let g = t.sigmoid(g);
        let gated = t.mul(g, v[1]);
        let y = t.add(v[0], gated);
        tail.apply(t, y)
    });
}

#[test]
fn cross_entropy_with_label_smoothing_then_scale() {
    let mut rng = ChaCha8Rng::seed_from_u64(34);
    let (rows, dim, vocab) = (7, 3, 9);
    let inputs = [
        random(&mut rng, &[rows, dim], 1.0),
        random(&mut rng, &[vocab, dim], 1.0),
    ];
    let ids = targets(&mut rng, rows, vocab);
    for smoothing in [0.1, 0.5] {
        gradcheck("cross_entropy_smoothed", &inputs, |t, v| {
            let b = t.backend();
            let loss = t.cross_entropy_smoothed(v[0], v[1], &b.ids(&ids), smoothing);
            t.scale(loss, b.tensor(&[1.3], &[1]))
        });
    }
}

#[test]
fn rotary_between_linear_and_attention() {
    // qkv = x W + b, turned, then attention: as the model writes it.
    let mut rng = ChaCha8Rng::seed_from_u64(35);
    let shape = AttentionShape {
        batch: 2,
        len: 5,
        heads: 2,
        head_dim: 4,
    };
    let (rows, dim) = (shape.batch * shape.len, shape.dim());
    let tail = Tail::new(&mut rng, rows, dim);
    let key_ids: Vec<u32> = [[0, 0, 4, 2, 9], [1, 2, 3, 4, 5]].concat();
    let table = sasrec_kernels::rotary::rotary_table(shape.len, shape.head_dim);
    let inputs = [
        random(&mut rng, &[rows, dim], 1.0),
        random(&mut rng, &[3 * dim, dim], 0.6),
        random(&mut rng, &[3 * dim], 0.5),
    ];
    gradcheck("rotary", &inputs, |t, v| {
        let b = t.backend();
        let (ids, table) = (
            b.ids(&key_ids),
            b.tensor(&table, &[shape.len, shape.head_dim]),
        );
        let qkv = t.linear(v[0], v[1], Some(v[2]));
        let qkv = t.rotary(qkv, &table, shape);
        let y = t.attention(qkv, &ids, shape, None);
        tail.apply(t, y)
    });
}
