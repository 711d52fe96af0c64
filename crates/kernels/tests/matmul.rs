//! The matmul family (matmul in every transposition, nn.Linear): the CPU
//! backend against a plain f64 product and finite differences, then the
//! WGSL kernels against the CPU, whole, split-K and in blocks.

mod common;

use common::{BE, FWD, check_grad, dot64, ref_matmul, rng, t, to64, uniform};
use proptest::prelude::*;
use rand_chacha::ChaCha8Rng;
use sasrec_kernels::Backend;
use sasrec_kernels::testing::{BackendPair, Tol, assert_close};

// ----- CPU reference ---------------------------------------------------------

/// Checks `op(a) @ op(b)` against the reference, then the backward that the
/// autograd builds from `matmul` itself (`dA`, `dB` for each transpose case).
fn matmul_case(seed: u64, m: usize, k: usize, n: usize, trans_a: bool, trans_b: bool) {
    let mut r = rng(seed);
    let a = uniform(&mut r, m * k, 1.0);
    let b = uniform(&mut r, k * n, 1.0);
    let a_shape = if trans_a { [k, m] } else { [m, k] };
    let b_shape = if trans_b { [n, k] } else { [k, n] };
    let (ta, tb) = (t(&a, &a_shape), t(&b, &b_shape));
    let c = BE.matmul(&ta, &tb, trans_a, trans_b);
    assert_eq!(BE.shape(&c), [m, n]);
    let (a64, b64) = (to64(&a), to64(&b));
    let expected = ref_matmul(&a64, &b64, m, k, n, trans_a, trans_b);
    let what = format!("matmul {m}x{k}x{n} ta={trans_a} tb={trans_b}");
    assert_close(&what, c.data(), &expected, FWD);

    let dc = uniform(&mut r, m * n, 1.0);
    let tdc = t(&dc, &[m, n]);
    let dc64 = to64(&dc);
    // C = op(A) op(B): d op(A) = dC op(B)^T, d op(B) = op(A)^T dC.
    let da = if trans_a {
        BE.matmul(&tb, &tdc, trans_b, true)
    } else {
        BE.matmul(&tdc, &tb, false, !trans_b)
    };
    let db = if trans_b {
        BE.matmul(&tdc, &ta, true, trans_a)
    } else {
        BE.matmul(&ta, &tdc, !trans_a, false)
    };
    assert_eq!(BE.shape(&da), a_shape);
    assert_eq!(BE.shape(&db), b_shape);
    check_grad(&format!("{what} dA"), &a, da.data(), |a| {
        dot64(&dc64, &ref_matmul(a, &b64, m, k, n, trans_a, trans_b))
    });
    check_grad(&format!("{what} dB"), &b, db.data(), |b| {
        dot64(&dc64, &ref_matmul(&a64, b, m, k, n, trans_a, trans_b))
    });
}

#[test]
fn matmul_all_transposes_odd_sizes() {
    for (i, &(ta, tb)) in [(false, false), (true, false), (false, true), (true, true)]
        .iter()
        .enumerate()
    {
        matmul_case(20 + i as u64, 5, 7, 3, ta, tb);
        matmul_case(30 + i as u64, 1, 1, 1, ta, tb);
        matmul_case(40 + i as u64, 1, 9, 4, ta, tb);
    }
}

#[test]
fn matmul_large_multithreaded() {
    // Big enough for matrixmultiply to use its thread pool.
    let (m, k, n) = (131, 67, 193);
    let mut r = rng(50);
    let (a, b) = (uniform(&mut r, m * k, 1.0), uniform(&mut r, k * n, 1.0));
    let c = BE.matmul(&t(&a, &[m, k]), &t(&b, &[n, k]), false, true);
    let expected = ref_matmul(&to64(&a), &to64(&b), m, k, n, false, true);
    assert_close("matmul large", c.data(), &expected, Tol::new(FWD.rel, 1e-5));
}

#[test]
fn linear_and_sum_rows() {
    let mut r = rng(60);
    let (n, fan_in, out) = (6, 5, 4);
    let x = uniform(&mut r, n * fan_in, 1.0);
    let w = uniform(&mut r, out * fan_in, 1.0);
    let bias = uniform(&mut r, out, 1.0);
    let (tx, tw, tbias) = (t(&x, &[n, fan_in]), t(&w, &[out, fan_in]), t(&bias, &[out]));
    let (x64, w64, bias64) = (to64(&x), to64(&w), to64(&bias));
    let reference = |x: &[f64], w: &[f64], b: &[f64]| -> Vec<f64> {
        let mut y = ref_matmul(x, w, n, fan_in, out, false, true);
        for (i, v) in y.iter_mut().enumerate() {
            *v += b[i % out];
        }
        y
    };
    let y = BE.linear(&tx, &tw, Some(&tbias));
    assert_close("linear", y.data(), &reference(&x64, &w64, &bias64), FWD);
    let y0 = BE.linear(&tx, &tw, None);
    let zero = vec![0.0; out];
    assert_close(
        "linear no bias",
        y0.data(),
        &reference(&x64, &w64, &zero),
        FWD,
    );

    // Backward as the autograd composes it.
    let dy = uniform(&mut r, n * out, 1.0);
    let (tdy, dy64) = (t(&dy, &[n, out]), to64(&dy));
    let dx = BE.matmul(&tdy, &tw, false, false);
    let dw = BE.matmul(&tdy, &tx, true, false);
    let dbias = BE.sum_rows(&tdy);
    check_grad("linear dx", &x, dx.data(), |x| {
        dot64(&dy64, &reference(x, &w64, &bias64))
    });
    check_grad("linear dw", &w, dw.data(), |w| {
        dot64(&dy64, &reference(&x64, w, &bias64))
    });
    check_grad("linear dbias", &bias, dbias.data(), |b| {
        dot64(&dy64, &reference(&x64, &w64, b))
    });
}

#[test]
#[should_panic(expected = "matmul: inner sizes differ")]
fn matmul_rejects_mismatched_shapes() {
    BE.matmul(&BE.zeros(&[2, 3]), &BE.zeros(&[4, 2]), false, false);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn prop_matmul(m in 1usize..12, k in 1usize..12, n in 1usize..12,
                   ta: bool, tb: bool, seed: u64) {
        matmul_case(seed, m, k, n, ta, tb);
    }
}

// ----- GPU against CPU ---------------------------------------------------------

/// Products of k terms of size <= 1 summed in a different order than the
/// CPU's sgemm: absolute error grows with k (see docs/kernels.md).
fn matmul_tol(k: usize) -> Tol {
    Tol::new(1e-5, 2e-6 * (k as f64).sqrt().max(1.0))
}

fn check_matmuls(p: &BackendPair, rng: &mut ChaCha8Rng, sizes: &[(usize, usize, usize)]) {
    for &(m, k, n) in sizes {
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                let a_shape = if trans_a { [k, m] } else { [m, k] };
                let b_shape = if trans_b { [n, k] } else { [k, n] };
                let (ca, ga) = p.tensor(&uniform(rng, m * k, 1.0), &a_shape);
                let (cb, gb) = p.tensor(&uniform(rng, k * n, 1.0), &b_shape);
                p.check(
                    &format!("matmul {m}x{k}x{n} ta={trans_a} tb={trans_b}"),
                    &p.cpu.matmul(&ca, &cb, trans_a, trans_b),
                    &p.gpu.matmul(&ga, &gb, trans_a, trans_b),
                    matmul_tol(k),
                );
            }
        }
    }
}

#[test]
fn gpu_matmul_all_transposes_odd_sizes() {
    let Some(p) = BackendPair::new() else { return };
    let mut rng = rng(3);
    // Tile 64 x 64 x 16: sizes below, at and across tile edges.
    check_matmuls(
        &p,
        &mut rng,
        &[
            (1, 1, 1),
            (7, 13, 5),
            (64, 16, 64),
            (65, 17, 130),
            (3, 300, 2),
            (200, 64, 192),
            // Few output tiles, long k: split-K in 5 slices.
            (33, 1300, 70),
        ],
    );
}

#[test]
fn matmul_chunked_across_small_bindings() {
    // 1 KiB bindings hold 256 floats: every operand below is split along
    // m, n or k (k splits accumulate partial products).
    let Some(p) = BackendPair::narrow(1024) else {
        return;
    };
    let mut rng = rng(4);
    check_matmuls(&p, &mut rng, &[(50, 40, 70), (9, 300, 3), (130, 5, 90)]);
}

#[test]
fn linear_with_and_without_bias() {
    let Some(p) = BackendPair::new() else { return };
    let (cpu, gpu) = (&p.cpu, &p.gpu);
    let mut rng = rng(6);
    let (rows, inp, out) = (77, 48, 67);
    let (cx, gx) = p.tensor(&uniform(&mut rng, rows * inp, 1.0), &[rows, inp]);
    let (cw, gw) = p.tensor(&uniform(&mut rng, out * inp, 1.0), &[out, inp]);
    let (cb, gb) = p.tensor(&uniform(&mut rng, out, 1.0), &[out]);
    p.check(
        "linear+bias",
        &cpu.linear(&cx, &cw, Some(&cb)),
        &gpu.linear(&gx, &gw, Some(&gb)),
        matmul_tol(inp),
    );
    p.check(
        "linear",
        &cpu.linear(&cx, &cw, None),
        &gpu.linear(&gx, &gw, None),
        matmul_tol(inp),
    );
}

// ----- NaN and infinities -------------------------------------------------------

#[test]
fn nan_and_infinities_propagate_like_the_cpu() {
    let Some(p) = BackendPair::new() else { return };
    let mut r = rng(22);
    let (m, k, n) = (70, 40, 66);
    let mut a = uniform(&mut r, m * k, 1.0);
    a[5 * k + 7] = f32::NAN; // row 5 of the product
    a[9 * k] = f32::INFINITY; // row 9: +-inf, or NaN where inf * 0 meets it
    let (ca, ga) = p.tensor(&a, &[m, k]);
    let (cb, gb) = p.tensor(&uniform(&mut r, k * n, 1.0), &[k, n]);
    let c = BE.matmul(&ca, &cb, false, false);
    assert!(c.data()[5 * n..6 * n].iter().all(|v| v.is_nan()));
    assert!(c.data()[9 * n..10 * n].iter().all(|v| !v.is_finite()));
    for trans_b in [false, true] {
        let (cb, gb) = if trans_b {
            p.tensor(&uniform(&mut r, k * n, 1.0), &[n, k])
        } else {
            (cb.clone(), gb.clone())
        };
        p.check_with_non_finite(
            &format!("matmul trans_b={trans_b}"),
            &BE.matmul(&ca, &cb, false, trans_b),
            &p.gpu.matmul(&ga, &gb, false, trans_b),
            matmul_tol(k),
        );
    }
    // A long k takes the split-K path, whose partial sums must keep a NaN.
    let (m, k, n) = (3, 1300, 5);
    let mut a = uniform(&mut r, m * k, 1.0);
    a[k + 1000] = f32::NAN;
    let (ca, ga) = p.tensor(&a, &[m, k]);
    let (cb, gb) = p.tensor(&uniform(&mut r, k * n, 1.0), &[k, n]);
    p.check_with_non_finite(
        "split-K matmul",
        &BE.matmul(&ca, &cb, false, false),
        &p.gpu.matmul(&ga, &gb, false, false),
        matmul_tol(k),
    );
}
