//! The elementwise family (add, sub, mul, add_assign, scale, broadcast,
//! ReLU, sigmoid, dropout): the CPU backend against plain f64 references
//! and finite differences, then every WGSL kernel against the CPU.

mod common;

use common::{BE, FWD, check_grad, dot64, rng, t, to64, uniform};
use sasrec_kernels::testing::{BackendPair, Tol, assert_close};
use sasrec_kernels::{Backend, Dropout};

/// `1 / (1 + e^-x)` in f64.
fn sigmoid64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

// ----- CPU reference ---------------------------------------------------------

#[test]
fn elementwise_forward_matches_reference() {
    let mut r = rng(1);
    // 37x53 runs on one thread, 300x129 on rayon's pool.
    for shape in [[37usize, 53], [300, 129], [1, 1]] {
        let n = shape[0] * shape[1];
        let (a, b) = (uniform(&mut r, n, 2.0), uniform(&mut r, n, 2.0));
        let (ta, tb) = (t(&a, &shape), t(&b, &shape));
        let zip = |f: fn(f64, f64) -> f64| -> Vec<f64> {
            a.iter()
                .zip(&b)
                .map(|(&x, &y)| f(x as f64, y as f64))
                .collect()
        };

        let sum = zip(|x, y| x + y);
        assert_close("add", BE.add(&ta, &tb).data(), &sum, FWD);
        assert_close("sub", BE.sub(&ta, &tb).data(), &zip(|x, y| x - y), FWD);
        assert_close("mul", BE.mul(&ta, &tb).data(), &zip(|x, y| x * y), FWD);

        let mut acc = ta.clone();
        BE.add_assign(&mut acc, &tb);
        assert_close("add_assign", acc.data(), &sum, FWD);
        assert_eq!(ta.data(), &a[..], "add_assign changed a shared buffer");

        let scaled: Vec<f64> = a.iter().map(|&x| x as f64 * -0.75).collect();
        let s = t(&[-0.75], &[1]);
        assert_close("scale", BE.scale(&ta, &s).data(), &scaled, FWD);
        let filled = BE.broadcast(&s, &shape);
        assert_eq!(BE.shape(&filled), shape);
        assert!(filled.data().iter().all(|&v| v == -0.75));

        let y = BE.relu(&ta);
        let relu: Vec<f64> = a.iter().map(|&x| (x as f64).max(0.0)).collect();
        assert_close("relu", y.data(), &relu, FWD);

        let sig: Vec<f64> = a.iter().map(|&x| sigmoid64(x as f64)).collect();
        assert_close("sigmoid", BE.sigmoid(&ta).data(), &sig, FWD);

        let mask = Dropout::new(0.3, 5, 2, 1);
        let drop: Vec<f64> = a
            .iter()
            .enumerate()
            .map(|(i, &x)| x as f64 * mask.factor(i as u32) as f64)
            .collect();
        assert_close("dropout", BE.dropout(&ta, &mask).data(), &drop, FWD);
        assert_eq!(BE.shape(&BE.dropout(&ta, &mask)), shape);
    }
}

#[test]
fn elementwise_backward_matches_finite_differences() {
    let mut r = rng(2);
    let shape = [7, 9];
    let n = 63;
    // Keep ReLU inputs away from the kink so differences do not straddle it.
    let x: Vec<f32> = uniform(&mut r, n, 1.0)
        .into_iter()
        .map(|v| if v.abs() < 1e-2 { v + 0.05 } else { v })
        .collect();
    let dy = uniform(&mut r, n, 1.0);
    let (tx, tdy) = (t(&x, &shape), t(&dy, &shape));
    let dy64 = to64(&dy);

    let y = BE.relu(&tx);
    let dx = BE.relu_backward(&y, &tdy);
    check_grad("relu dx", &x, dx.data(), |x| {
        dot64(&dy64, &x.iter().map(|v| v.max(0.0)).collect::<Vec<_>>())
    });

    let y = BE.sigmoid(&tx);
    let dx = BE.sigmoid_backward(&y, &tdy);
    check_grad("sigmoid dx", &x, dx.data(), |x| {
        dot64(&dy64, &x.iter().map(|&v| sigmoid64(v)).collect::<Vec<_>>())
    });

    let s = t(&[1.7], &[1]);
    let dx = BE.scale(&tdy, &s);
    check_grad("scale dx", &x, dx.data(), |x| {
        dot64(
            &dy64,
            &x.iter().map(|v| v * 1.7f32 as f64).collect::<Vec<_>>(),
        )
    });

    let mask = Dropout::new(0.4, 11, 3, 7);
    let dx = BE.dropout(&tdy, &mask);
    check_grad("dropout dx", &x, dx.data(), |x| {
        let y: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v * mask.factor(i as u32) as f64)
            .collect();
        dot64(&dy64, &y)
    });
}

// ----- GPU against CPU ---------------------------------------------------------

#[test]
fn elementwise_ops_match_cpu_exactly() {
    let Some(p) = BackendPair::new() else { return };
    let (cpu, gpu) = (&p.cpu, &p.gpu);
    let mut rng = rng(1);
    // Sizes around the 256-wide workgroup, and an odd 2-D one.
    for shape in [vec![1], vec![255], vec![257], vec![37, 113]] {
        let n: usize = shape.iter().product();
        let (ca, ga) = p.tensor(&uniform(&mut rng, n, 2.0), &shape);
        let (cb, gb) = p.tensor(&uniform(&mut rng, n, 2.0), &shape);
        let (cs, gs) = p.tensor(&[-1.75], &[1]);
        // One IEEE operation per element: the results must be identical.
        p.check("add", &cpu.add(&ca, &cb), &gpu.add(&ga, &gb), Tol::EXACT);
        p.check("sub", &cpu.sub(&ca, &cb), &gpu.sub(&ga, &gb), Tol::EXACT);
        p.check("mul", &cpu.mul(&ca, &cb), &gpu.mul(&ga, &gb), Tol::EXACT);
        p.check(
            "scale",
            &cpu.scale(&ca, &cs),
            &gpu.scale(&ga, &gs),
            Tol::EXACT,
        );
        p.check(
            "broadcast",
            &cpu.broadcast(&cs, &shape),
            &gpu.broadcast(&gs, &shape),
            Tol::EXACT,
        );
        let (cy, gy) = (cpu.relu(&ca), gpu.relu(&ga));
        p.check("relu", &cy, &gy, Tol::EXACT);
        p.check(
            "relu_backward",
            &cpu.relu_backward(&cy, &cb),
            &gpu.relu_backward(&gy, &gb),
            Tol::EXACT,
        );
        let (mut cacc, mut gacc) = (ca.clone(), ga.clone());
        cpu.add_assign(&mut cacc, &cb);
        gpu.add_assign(&mut gacc, &gb);
        p.check("add_assign", &cacc, &gacc, Tol::EXACT);
        // The in-place op must not change the other handle of the buffer.
        p.check("add_assign left its clone alone", &ca, &ga, Tol::EXACT);
    }
}

#[test]
fn sigmoid_matches_cpu() {
    let Some(p) = BackendPair::new() else { return };
    let mut rng = rng(3);
    let n = 1001;
    let (cx, gx) = p.tensor(&uniform(&mut rng, n, 8.0), &[n]);
    // WGSL's exp is within a few ulps, not correctly rounded: 1 / (1 + e)
    // keeps that relative error (~4 u).
    let (cy, gy) = (p.cpu.sigmoid(&cx), p.gpu.sigmoid(&gx));
    p.check("sigmoid", &cy, &gy, Tol::new(1e-6, 1e-7));
    // The backward from the same y is two multiplications: exact.
    let (cdy, gdy) = p.tensor(&uniform(&mut rng, n, 1.0), &[n]);
    let gy_cpu = p.gpu.tensor(cy.data(), &[n]);
    p.check(
        "sigmoid_backward",
        &p.cpu.sigmoid_backward(&cy, &cdy),
        &p.gpu.sigmoid_backward(&gy_cpu, &gdy),
        Tol::EXACT,
    );
}

#[test]
fn dropout_masks_are_bit_identical_to_cpu() {
    let Some(p) = BackendPair::new() else { return };
    let mut rng = rng(2);
    let n = 10_007;
    let x = uniform(&mut rng, n, 1.0);
    let (cx, gx) = p.tensor(&x, &[n]);
    for (p_drop, site) in [(0.0, 0), (0.1, 3), (0.5, 7), (0.9, 11)] {
        let mask = Dropout::new(p_drop, 1234, 56, site);
        let out = p.gpu.to_vec(&p.gpu.dropout(&gx, &mask));
        p.check(
            "dropout",
            &p.cpu.dropout(&cx, &mask),
            &p.gpu.dropout(&gx, &mask),
            Tol::EXACT,
        );
        for (i, (&o, &xi)) in out.iter().zip(&x).enumerate() {
            assert_eq!(
                o,
                xi * mask.factor(i as u32),
                "dropout element {i}, p {p_drop}"
            );
        }
    }
}

#[test]
fn elementwise_chunked_across_small_bindings() {
    // 1 KiB bindings hold 256 floats: 1000 elements go in 4 chunks, and
    // dropout's mask must not depend on the chunking.
    let Some(p) = BackendPair::narrow(1024) else {
        return;
    };
    let mut rng = rng(4);
    let n = 1000;
    let (ca, ga) = p.tensor(&uniform(&mut rng, n, 1.0), &[n]);
    let (cb, gb) = p.tensor(&uniform(&mut rng, n, 1.0), &[n]);
    p.check(
        "add",
        &p.cpu.add(&ca, &cb),
        &p.gpu.add(&ga, &gb),
        Tol::EXACT,
    );
    let mask = Dropout::new(0.5, 3, 4, 5);
    p.check(
        "dropout",
        &p.cpu.dropout(&ca, &mask),
        &p.gpu.dropout(&ga, &mask),
        Tol::EXACT,
    );
}

// ----- NaN and infinities -------------------------------------------------------

/// NaN and both infinities among ordinary values.
const SPECIAL: [f32; 8] = [
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    1.5,
    -0.5,
    0.0,
    3.0,
    -2.0,
];

#[test]
fn nan_and_infinities_propagate() {
    let x = t(&SPECIAL, &[8]);
    let relu = BE.relu(&x);
    assert!(
        relu.data()[0].is_nan(),
        "relu dropped a NaN: {:?}",
        relu.data()
    );
    assert_eq!(relu.data()[1..3], [f32::INFINITY, 0.0]);
    // PyTorch's threshold_backward: the gradient passes where y is not <= 0.
    let back = BE.relu_backward(&relu, &t(&[1.0; 8], &[8]));
    assert_eq!(back.data()[..6], [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
    let sig = BE.sigmoid(&x);
    assert!(sig.data()[0].is_nan());
    assert_eq!(sig.data()[1..3], [1.0, 0.0]);
    // A dropped NaN is still NaN (NaN * 0), as in PyTorch.
    let dropped = BE.dropout(&x, &Dropout::new(0.999, 1, 1, 1));
    assert!(dropped.data()[0].is_nan() && dropped.data()[1].is_nan());
}

#[test]
fn nan_and_infinities_propagate_like_the_cpu() {
    let Some(p) = BackendPair::new() else { return };
    let (cpu, gpu) = (&p.cpu, &p.gpu);
    let other = [
        2.0,
        f32::NAN,
        1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.5,
        -1.0,
        0.0,
    ];
    let (cx, gx) = p.tensor(&SPECIAL, &[8]);
    let (co, go) = p.tensor(&other, &[8]);
    let (cs, gs) = p.tensor(&[f32::NAN], &[1]);
    let exact = Tol::EXACT;
    p.check_with_non_finite("add", &cpu.add(&cx, &co), &gpu.add(&gx, &go), exact);
    p.check_with_non_finite("sub", &cpu.sub(&cx, &co), &gpu.sub(&gx, &go), exact);
    p.check_with_non_finite("mul", &cpu.mul(&cx, &co), &gpu.mul(&gx, &go), exact);
    p.check_with_non_finite(
        "scale by NaN",
        &cpu.scale(&cx, &cs),
        &gpu.scale(&gx, &gs),
        exact,
    );
    let (cy, gy) = (cpu.relu(&cx), gpu.relu(&gx));
    p.check_with_non_finite("relu", &cy, &gy, exact);
    p.check_with_non_finite(
        "relu_backward",
        &cpu.relu_backward(&cy, &co),
        &gpu.relu_backward(&gy, &go),
        exact,
    );
    p.check_with_non_finite(
        "sigmoid",
        &cpu.sigmoid(&cx),
        &gpu.sigmoid(&gx),
        Tol::new(1e-6, 1e-7),
    );
    p.check_with_non_finite(
        "sigmoid_backward",
        &cpu.sigmoid_backward(&co, &cx),
        &gpu.sigmoid_backward(&go, &gx),
        exact,
    );
    let mask = Dropout::new(0.5, 3, 1, 4);
    p.check_with_non_finite(
        "dropout",
        &cpu.dropout(&cx, &mask),
        &gpu.dropout(&gx, &mask),
        exact,
    );
    let (mut cacc, mut gacc) = (co.clone(), go.clone());
    cpu.add_assign(&mut cacc, &cx);
    gpu.add_assign(&mut gacc, &gx);
    p.check_with_non_finite("add_assign", &cacc, &gacc, exact);
}
