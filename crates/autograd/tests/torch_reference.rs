//! The generic losses and the optimisers against PyTorch, on the CPU and the
//! GPU backend: `F.cross_entropy` (with and without `ignore_index`),
//! `F.mse_loss`, and six steps of `torch.optim.Adam` and `torch.optim.AdamW`.
//! The fixture is written by `scripts/torch_autograd_reference.py`.
//!
//! Tolerances: the losses and gradients are a few f32 operations per value
//! on both sides, in different orders (and our exp is not libm's): within
//! `rel 1e-5, abs 1e-7`. The optimisers follow PyTorch's order of operations
//! with the same f32 constants; six steps stay within `rel 1e-6, abs 1e-7`
//! of PyTorch (an ulp or two per step), where a wrong formula (coupled
//! weight decay, a missing bias correction) is off by 1e-3 or more.

use safetensors::SafeTensors;
use safetensors::tensor::Dtype;
use sasrec_autograd::{Adam, AdamW, ParamStore, Tape};
use sasrec_kernels::testing::{Tol, assert_close};
use sasrec_kernels::{Backend, CpuBackend};

const LOSS_TOL: Tol = Tol::new(1e-5, 1e-7);
const OPTIM_TOL: Tol = Tol::new(1e-6, 1e-7);

struct Fixture {
    bytes: Vec<u8>,
}

impl Fixture {
    fn load() -> Self {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/torch_reference.safetensors"
        );
        Fixture {
            bytes: std::fs::read(path).expect("the fixture is committed"),
        }
    }

    /// An f32 tensor's values and shape.
    fn f32(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let st = SafeTensors::deserialize(&self.bytes).expect("a safetensors file");
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        let values = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        (values, t.shape().to_vec())
    }

    /// An i32 tensor as u32 ids.
    fn ids(&self, name: &str) -> Vec<u32> {
        let st = SafeTensors::deserialize(&self.bytes).expect("a safetensors file");
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.dtype(), Dtype::I32, "{name}");
        t.data()
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as u32)
            .collect()
    }
}

fn losses_match<B: Backend>(b: &B, f: &Fixture) {
    let (logits, shape) = f.f32("ce.logits");
    let targets = b.ids(&f.ids("ce.targets"));
    for (name, ignore) in [("all", None), ("ignore2", Some(2))] {
        let mut tape = Tape::new(b, true);
        let z = tape.leaf(b.tensor(&logits, &shape), true);
        let loss = tape.softmax_cross_entropy(z, &targets, ignore);
        let grads = tape.backward(loss);
        let what = format!("{}: cross_entropy {name}", b.name());
        assert_close(
            &format!("{what} loss"),
            &b.to_vec(tape.value(loss)),
            &f.f32(&format!("ce.{name}.loss")).0,
            LOSS_TOL,
        );
        assert_close(
            &format!("{what} grad"),
            &b.to_vec(grads.get(z).unwrap()),
            &f.f32(&format!("ce.{name}.grad")).0,
            LOSS_TOL,
        );
    }

    let (prediction, shape) = f.f32("mse.prediction");
    let (target, _) = f.f32("mse.target");
    let mut tape = Tape::new(b, true);
    let p = tape.leaf(b.tensor(&prediction, &shape), true);
    let t = tape.leaf(b.tensor(&target, &shape), false);
    let loss = tape.mse_loss(p, t);
    let grads = tape.backward(loss);
    let what = format!("{}: mse", b.name());
    assert_close(
        &format!("{what} loss"),
        &b.to_vec(tape.value(loss)),
        &f.f32("mse.loss").0,
        LOSS_TOL,
    );
    assert_close(
        &format!("{what} grad"),
        &b.to_vec(grads.get(p).unwrap()),
        &f.f32("mse.grad").0,
        LOSS_TOL,
    );
}

/// The optimisers the fixture holds, built with PyTorch's arguments.
enum Optimiser<B: Backend> {
    Adam(Adam<B>),
    AdamW(AdamW<B>),
}

fn optimisers_match<B: Backend>(b: &B, f: &Fixture) {
    let (start, _) = f.f32("optim.start");
    let (grads, grads_shape) = f.f32("optim.grads");
    let (steps, n) = (grads_shape[0], grads_shape[1]);
    type Make<B> = fn(&B, &ParamStore<B>) -> Optimiser<B>;
    let cases: [(&str, Make<B>); 4] = [
        ("adam", |b, p| {
            Optimiser::Adam(Adam::new(b, p, 0.01, 0.9, 0.999, 1e-8))
        }),
        ("adam_low_beta1", |b, p| {
            Optimiser::Adam(Adam::new(b, p, 0.05, 0.3, 0.99, 1e-6))
        }),
        ("adamw", |b, p| {
            Optimiser::AdamW(AdamW::new(b, p, 0.01, 0.9, 0.999, 1e-8, 0.01))
        }),
        ("adamw_strong_decay", |b, p| {
            Optimiser::AdamW(AdamW::new(b, p, 0.1, 0.8, 0.95, 1e-8, 0.5))
        }),
    ];
    for (name, make) in cases {
        let (expected, _) = f.f32(&format!("optim.{name}"));
        let mut params = ParamStore::new();
        params.add("p", b.tensor(&start, &[n]));
        let mut opt = make(b, &params);
        for step in 0..steps {
            // The loss sum(g * p) has gradient g with respect to p.
            let mut tape = Tape::new(b, true);
            let vars = tape.params(&params);
            let g = tape.leaf(b.tensor(&grads[step * n..(step + 1) * n], &[n]), false);
            let gp = tape.mul(g, vars[0]);
            let loss = tape.sum(gp);
            let gradients = tape.backward(loss);
            drop(tape);
            match &mut opt {
                Optimiser::Adam(o) => o.step(b, &mut params, &gradients, &vars),
                Optimiser::AdamW(o) => o.step(b, &mut params, &gradients, &vars),
            }
            let id = params.find("p").unwrap();
            assert_close(
                &format!("{}: {name} after step {}", b.name(), step + 1),
                &b.to_vec(params.get(id)),
                &expected[step * n..(step + 1) * n],
                OPTIM_TOL,
            );
        }
    }
}

#[test]
fn cpu_matches_pytorch() {
    let f = Fixture::load();
    losses_match(&CpuBackend, &f);
    optimisers_match(&CpuBackend, &f);
}

#[test]
fn gpu_matches_pytorch() {
    let Some(gpu) = sasrec_kernels::gpu::test_backend() else {
        return;
    };
    let f = Fixture::load();
    losses_match(&gpu, &f);
    optimisers_match(&gpu, &f);
}
