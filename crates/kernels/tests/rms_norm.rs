//! The rms_norm family: the CPU backend against a plain f64 RMSNorm and
//! finite differences of it, then the WGSL kernels against the CPU.

mod common;

use common::{BE, FWD, check_grad, dot64, rng, t, to64, uniform};
use proptest::prelude::*;
use sasrec_kernels::Backend;
use sasrec_kernels::testing::{BackendPair, Tol, assert_close};

// ----- CPU reference ---------------------------------------------------------

fn ref_rms_norm(x: &[f64], gamma: &[f64], d: usize, eps: f64) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for (xr, yr) in x.chunks(d).zip(y.chunks_mut(d)) {
        let ms = xr.iter().map(|v| v * v).sum::<f64>() / d as f64;
        for j in 0..d {
            yr[j] = xr[j] / (ms + eps).sqrt() * gamma[j];
        }
    }
    y
}

fn rms_norm_case(seed: u64, n: usize, d: usize) {
    let mut r = rng(seed);
    let x = uniform(&mut r, n * d, 1.0);
    let gamma: Vec<f32> = uniform(&mut r, d, 0.5).iter().map(|v| v + 1.0).collect();
    let eps = 1e-6;
    let (tx, tg) = (t(&x, &[n, d]), t(&gamma, &[d]));
    let (y, rstd) = BE.rms_norm(&tx, &tg, eps);
    assert_eq!(BE.shape(&rstd), [n]);
    let expected = ref_rms_norm(&to64(&x), &to64(&gamma), d, eps as f64);
    assert_close("rms_norm", y.data(), &expected, FWD);
    for row in 0..n {
        let xr = to64(&x[row * d..(row + 1) * d]);
        let ms = xr.iter().map(|v| v * v).sum::<f64>() / d as f64;
        let want = 1.0 / (ms + eps as f64).sqrt();
        assert_close("rms_norm rstd", &rstd.data()[row..=row], &[want], FWD);
    }

    let dy = uniform(&mut r, n * d, 1.0);
    let dy64 = to64(&dy);
    let (dx, dgamma) = BE.rms_norm_backward(&t(&dy, &[n, d]), &tx, &tg, &rstd);
    let (x64, g64) = (to64(&x), to64(&gamma));
    let eps = eps as f64;
    check_grad("rms_norm dx", &x, dx.data(), |x| {
        dot64(&dy64, &ref_rms_norm(x, &g64, d, eps))
    });
    check_grad("rms_norm dgamma", &gamma, dgamma.data(), |g| {
        dot64(&dy64, &ref_rms_norm(&x64, g, d, eps))
    });
}

#[test]
fn rms_norm_small_odd_sizes() {
    rms_norm_case(10, 5, 7);
    rms_norm_case(11, 1, 3);
    rms_norm_case(12, 1, 1);
}

#[test]
fn rms_norm_large_on_rayon_pool() {
    // > PAR_MIN_ELEMS and several reduction blocks of rows.
    rms_norm_case(13, 700, 64);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn prop_rms_norm(n in 1usize..9, d in 1usize..20, seed: u64) {
        rms_norm_case(seed, n, d);
    }
}

// ----- GPU against CPU ---------------------------------------------------------

#[test]
fn rms_norm_forward_and_backward() {
    let Some(p) = BackendPair::new() else { return };
    let (cpu, gpu) = (&p.cpu, &p.gpu);
    let mut rng = rng(8);
    // Widths below, at and above the 128-wide workgroup; 600 rows make the
    // dgamma reduction take two levels.
    for (rows, dim) in [(1, 1), (37, 50), (5, 300), (600, 64)] {
        let (cx, gx) = p.tensor(&uniform(&mut rng, rows * dim, 2.0), &[rows, dim]);
        let (cg, gg) = p.tensor(&uniform(&mut rng, dim, 1.0), &[dim]);
        let (cdy, gdy) = p.tensor(&uniform(&mut rng, rows * dim, 1.0), &[rows, dim]);
        let (cy, crstd) = cpu.rms_norm(&cx, &cg, 1e-6);
        let (gy, grstd) = gpu.rms_norm(&gx, &gg, 1e-6);
        let tol = Tol::new(1e-5, 1e-5);
        p.check("rms_norm y", &cy, &gy, tol);
        p.check("rms_norm rstd", &crstd, &grstd, tol);
        let (cdx, cdg) = cpu.rms_norm_backward(&cdy, &cx, &cg, &crstd);
        let (gdx, gdg) = gpu.rms_norm_backward(&gdy, &gx, &gg, &grstd);
        p.check("rms_norm dx", &cdx, &gdx, Tol::new(1e-4, 1e-5));
        let sum_tol = Tol::new(1e-5, 1e-5 * (rows as f64).sqrt());
        p.check("rms_norm dgamma", &cdg, &gdg, sum_tol);
    }
}

#[test]
fn nan_propagates_like_the_cpu() {
    let Some(p) = BackendPair::new() else { return };
    let (rows, dim) = (4, 6);
    let mut x = uniform(&mut rng(20), rows * dim, 1.0);
    x[dim + 2] = f32::NAN; // row 1
    let (cx, gx) = p.tensor(&x, &[rows, dim]);
    let (cg, gg) = p.tensor(&[1.0; 6], &[dim]);
    let (cy, crstd) = BE.rms_norm(&cx, &cg, 1e-6);
    let (gy, grstd) = p.gpu.rms_norm(&gx, &gg, 1e-6);
    // A NaN makes its whole row NaN; the others stay finite.
    for r in 0..rows {
        let row = &cy.data()[r * dim..(r + 1) * dim];
        assert!(
            row.iter().all(|v| v.is_nan() == (r == 1)),
            "row {r}: {row:?}"
        );
    }
    let tol = Tol::new(1e-5, 1e-5);
    p.check_with_non_finite("rms_norm y", &cy, &gy, tol);
    p.check_with_non_finite("rms_norm rstd", &crstd, &grstd, tol);
}
