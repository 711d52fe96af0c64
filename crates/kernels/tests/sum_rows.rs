//! The sum_rows family (column sums, the sum of all elements): the CPU
//! backend against f64 sums, then the WGSL kernel against the CPU.

mod common;

use common::{BE, rng, t, uniform};
use sasrec_kernels::Backend;
use sasrec_kernels::testing::{BackendPair, Tol, assert_close};

// ----- CPU reference ---------------------------------------------------------

#[test]
fn sum_rows_matches_reference() {
    let mut r = rng(61);
    // One block, several blocks with a ragged last one, a single row.
    for (n, d) in [(3, 5), (1000, 37), (1, 4)] {
        let x = uniform(&mut r, n * d, 1.0);
        let mut expected = vec![0.0f64; d];
        for row in x.chunks(d) {
            for (e, &v) in expected.iter_mut().zip(row) {
                *e += v as f64;
            }
        }
        let s = BE.sum_rows(&t(&x, &[n, d]));
        assert_eq!(BE.shape(&s), [d]);
        assert_close("sum_rows", s.data(), &expected, Tol::new(1e-5, 1e-5));
    }
}

#[test]
fn sum_of_all_elements_matches_reference() {
    let mut r = rng(62);
    // Any shape; more elements than one block of rows; nothing at all.
    for shape in [vec![7], vec![3, 5], vec![2, 300, 3], vec![0, 4]] {
        let n: usize = shape.iter().product();
        let x = uniform(&mut r, n, 1.0);
        let expected: f64 = x.iter().map(|&v| v as f64).sum();
        let s = BE.sum(&t(&x, &shape));
        assert_eq!(BE.shape(&s), [1]);
        // n terms of size <= 1 in f32: an error of ~u sqrt(n).
        assert_close(
            "sum",
            s.data(),
            &[expected],
            Tol::new(1e-5, 1e-6 * (n as f64).sqrt()),
        );
    }
}

// ----- GPU against CPU ---------------------------------------------------------

#[test]
fn sum_rows_multi_level_reduction() {
    let Some(p) = BackendPair::new() else { return };
    let (cpu, gpu) = (&p.cpu, &p.gpu);
    let mut rng = rng(7);
    // 70_000 rows: 274 partial rows, then 2, then 1.
    for (rows, cols) in [(1, 5), (300, 65), (70_000, 3)] {
        let (cx, gx) = p.tensor(&uniform(&mut rng, rows * cols, 1.0), &[rows, cols]);
        let tol = Tol::new(1e-5, 1e-6 * (rows as f64).sqrt());
        p.check("sum_rows", &cpu.sum_rows(&cx), &gpu.sum_rows(&gx), tol);
        p.check("sum", &cpu.sum(&cx), &gpu.sum(&gx), tol);
    }
}

#[test]
fn sum_rows_chunked_across_small_bindings() {
    // 4 KiB bindings: 1000 x 3 is summed 256 rows (one block) per dispatch.
    let Some(p) = BackendPair::narrow(4096) else {
        return;
    };
    let mut rng = rng(8);
    let (rows, cols) = (1000, 3);
    let (cx, gx) = p.tensor(&uniform(&mut rng, rows * cols, 1.0), &[rows, cols]);
    let tol = Tol::new(1e-5, 1e-6 * (rows as f64).sqrt());
    p.check("sum_rows", &p.cpu.sum_rows(&cx), &p.gpu.sum_rows(&gx), tol);
    p.check("sum", &p.cpu.sum(&cx), &p.gpu.sum(&gx), tol);
}

// ----- NaN and infinities -------------------------------------------------------

#[test]
fn nan_and_infinities_propagate_like_the_cpu() {
    let Some(p) = BackendPair::new() else { return };
    let (rows, cols) = (600, 5);
    let mut x = uniform(&mut rng(23), rows * cols, 1.0);
    x[300 * cols + 1] = f32::NAN;
    x[599 * cols + 3] = f32::INFINITY;
    x[2 * cols + 3] = f32::NEG_INFINITY; // column 3: inf - inf = NaN
    x[7 * cols + 4] = f32::NEG_INFINITY;
    let (cx, gx) = p.tensor(&x, &[rows, cols]);
    let sums = BE.sum_rows(&cx);
    assert!(sums.data()[0].is_finite() && sums.data()[2].is_finite());
    assert!(sums.data()[1].is_nan() && sums.data()[3].is_nan());
    assert_eq!(sums.data()[4], f32::NEG_INFINITY);
    let tol = Tol::new(1e-5, 1e-6 * (rows as f64).sqrt());
    p.check_with_non_finite("sum_rows", &sums, &p.gpu.sum_rows(&gx), tol);
    p.check_with_non_finite("sum", &BE.sum(&cx), &p.gpu.sum(&gx), tol);
}
