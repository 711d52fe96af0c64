//! The same graph of every generic op (and a custom op) on the CPU and the
//! GPU backend: the loss and every gradient agree.
//!
//! Tolerance `rel 1e-4, abs 1e-6`: each op differs by a few ulps between
//! the backends (summation orders, WGSL's exp), and a dozen ops compound it
//! to ~1e-6 relative; a wrong kernel or backward is off by far more.

use sasrec_autograd::{CustomOp, Tape, Var};
use sasrec_kernels::testing::{BackendPair, Tol, assert_close};
use sasrec_kernels::{Backend, CpuBackend};

/// `x * x * x`, with its backward `3 x^2 dy`, for any backend.
struct Cube;

impl<B: Backend> CustomOp<B> for Cube {
    fn name(&self) -> &str {
        "cube"
    }

    fn forward(&mut self, b: &B, inputs: &[&B::Tensor]) -> B::Tensor {
        b.mul(&b.mul(inputs[0], inputs[0]), inputs[0])
    }

    fn backward(
        &self,
        b: &B,
        inputs: &[&B::Tensor],
        _output: &B::Tensor,
        dy: &B::Tensor,
    ) -> Vec<Option<B::Tensor>> {
        let x2 = b.mul(inputs[0], inputs[0]);
        let three = b.tensor(&[3.0], &[1]);
        vec![Some(b.scale(&b.mul(&x2, dy), &three))]
    }
}

fn values(n: usize, seed: f32) -> Vec<f32> {
    (0..n).map(|i| ((i as f32 + seed) * 0.618).sin()).collect()
}

/// Runs the graph; returns the loss and the gradients of the three inputs.
fn run<B: Backend>(b: &B) -> Vec<Vec<f32>> {
    let mut tape = Tape::new(b, true);
    let x = tape.leaf(b.tensor(&values(6 * 4, 1.0), &[6, 4]), true);
    let w = tape.leaf(b.tensor(&values(4 * 5, 2.0), &[4, 5]), true);
    let t = tape.leaf(b.tensor(&values(6 * 5, 3.0), &[6, 5]), true);
    let labels = b.ids(&[0, 4, 2, 2, 1, 3]);

    let h = tape.matmul(x, w);
    let s = tape.sigmoid(h);
    let d = tape.sub(s, t);
    let c = tape.custom(&[d], Cube);
    let m = tape.mul(c, h);
    let r = tape.relu(m);
    let mse = tape.mse_loss(r, t);
    let ce = tape.softmax_cross_entropy(h, &labels, Some(2));
    let total = tape.sum(h);
    let mean = tape.mean(total);
    let parts: Vec<Var> = vec![mse, ce, mean];
    let loss = parts[1..].iter().fold(parts[0], |acc, &p| tape.add(acc, p));
    let grads = tape.backward(loss);
    let mut out = vec![b.to_vec(tape.value(loss))];
    out.extend([x, w, t].map(|v| b.to_vec(grads.get(v).expect("every input has a gradient"))));
    out
}

#[test]
fn every_generic_op_agrees_across_backends() {
    let Some(p) = BackendPair::new() else { return };
    let cpu = run(&CpuBackend);
    let gpu = run(&p.gpu);
    for (i, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
        let what = ["loss", "dx", "dw", "dt"][i];
        assert_close(what, g, c, Tol::new(1e-4, 1e-6));
    }
}
