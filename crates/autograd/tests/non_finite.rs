//! Naming the tensor where a step first went non-finite: the first
//! parameter whose gradient, or whose value, holds NaN or infinity, on both
//! backends.

use sasrec_autograd::{NonFinite, ParamStore, Tape};
use sasrec_kernels::{Backend, CpuBackend};

/// Parameters a, b, c and a loss sum(a * x) + sum(b * y) + sum(c * z) whose
/// gradients are x, y and z; y holds a NaN and z an infinity.
fn check<B: Backend>(backend: &B) {
    let mut params = ParamStore::new();
    for name in ["a", "b", "c"] {
        params.add(name, backend.tensor(&[0.5; 4], &[4]));
    }
    let inputs = [
        [1.0, 2.0, 3.0, 4.0],
        [1.0, f32::NAN, 3.0, 4.0],
        [f32::INFINITY, 2.0, 3.0, f32::NEG_INFINITY],
    ];
    let mut tape = Tape::new(backend, true);
    let vars = tape.params(&params);
    let terms: Vec<_> = vars
        .iter()
        .zip(&inputs)
        .map(|(&p, x)| {
            let x = tape.leaf(backend.tensor(x, &[4]), false);
            let px = tape.mul(p, x);
            tape.sum(px)
        })
        .collect();
    let ab = tape.add(terms[0], terms[1]);
    let loss = tape.add(ab, terms[2]);
    assert!(!backend.to_vec(tape.value(loss))[0].is_finite());
    let grads = tape.backward(loss);

    let first = params.first_non_finite_grad(backend, &grads, &vars);
    let expected = NonFinite {
        name: "b".into(),
        count: 1,
        len: 4,
    };
    assert_eq!(first, Some(expected.clone()), "{}", backend.name());
    assert_eq!(expected.to_string(), "b has 1 NaN or infinite values of 4");

    assert_eq!(params.first_non_finite(backend), None);
    let c = params.find("c").unwrap();
    params.set(c, backend.tensor(&inputs[2], &[4]));
    let first = params.first_non_finite(backend).map(|n| (n.name, n.count));
    assert_eq!(first, Some(("c".to_string(), 2)));
}

#[test]
fn names_the_first_non_finite_gradient_and_value_on_the_cpu() {
    check(&CpuBackend);
}

#[test]
fn names_the_first_non_finite_gradient_and_value_on_the_gpu() {
    if let Some(gpu) = sasrec_kernels::gpu::test_backend() {
        check(&gpu);
    }
}
