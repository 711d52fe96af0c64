//! The layer_norm family: the CPU backend against a plain f64 LayerNorm and
//! finite differences of it, then the WGSL kernels against the CPU.

mod common;

use common::{BE, FWD, check_grad, dot64, rng, t, to64, uniform};
use proptest::prelude::*;
use sasrec_kernels::Backend;
use sasrec_kernels::testing::{BackendPair, Tol, assert_close};

// ----- CPU reference ---------------------------------------------------------

fn ref_layer_norm(x: &[f64], gamma: &[f64], beta: &[f64], d: usize, eps: f64) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for (xr, yr) in x.chunks(d).zip(y.chunks_mut(d)) {
        let mean = xr.iter().sum::<f64>() / d as f64;
        let var = xr.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
        for j in 0..d {
            yr[j] = (xr[j] - mean) / (var + eps).sqrt() * gamma[j] + beta[j];
        }
    }
    y
}

fn layer_norm_case(seed: u64, n: usize, d: usize, offset: f32) {
    let mut r = rng(seed);
    let x: Vec<f32> = uniform(&mut r, n * d, 1.0)
        .iter()
        .map(|v| v + offset)
        .collect();
    let gamma: Vec<f32> = uniform(&mut r, d, 0.5).iter().map(|v| v + 1.0).collect();
    let beta = uniform(&mut r, d, 0.5);
    let eps = 1e-5;
    let (tx, tg, tb) = (t(&x, &[n, d]), t(&gamma, &[d]), t(&beta, &[d]));
    let (y, stats) = BE.layer_norm(&tx, &tg, &tb, eps);
    assert_eq!(BE.shape(&stats), [n, 2]);
    let expected = ref_layer_norm(&to64(&x), &to64(&gamma), &to64(&beta), d, eps as f64);
    // Rows shifted by `offset` lose log2(offset) bits of x itself in f32.
    let rel = FWD.rel * (1.0 + offset as f64);
    assert_close(
        "layer_norm",
        y.data(),
        &expected,
        Tol::new(rel, 1e-5 * (1.0 + offset as f64)),
    );
    for row in 0..n {
        let xr = to64(&x[row * d..(row + 1) * d]);
        let mean = xr.iter().sum::<f64>() / d as f64;
        let var = xr.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
        let st = &stats.data()[2 * row..2 * row + 2];
        assert_close("layer_norm mean", &st[..1], &[mean], Tol::new(rel, 1e-6));
        assert_close(
            "layer_norm rstd",
            &st[1..],
            &[1.0 / (var + eps as f64).sqrt()],
            Tol::new(rel, 0.0),
        );
    }
    if offset != 0.0 {
        return;
    }

    let dy = uniform(&mut r, n * d, 1.0);
    let dy64 = to64(&dy);
    let (dx, dgamma, dbeta) = BE.layer_norm_backward(&t(&dy, &[n, d]), &tx, &tg, &stats);
    let (x64, g64, b64) = (to64(&x), to64(&gamma), to64(&beta));
    let eps = eps as f64;
    check_grad("layer_norm dx", &x, dx.data(), |x| {
        dot64(&dy64, &ref_layer_norm(x, &g64, &b64, d, eps))
    });
    check_grad("layer_norm dgamma", &gamma, dgamma.data(), |g| {
        dot64(&dy64, &ref_layer_norm(&x64, g, &b64, d, eps))
    });
    check_grad("layer_norm dbeta", &beta, dbeta.data(), |b| {
        dot64(&dy64, &ref_layer_norm(&x64, &g64, b, d, eps))
    });
}

#[test]
fn layer_norm_small_odd_sizes() {
    layer_norm_case(10, 5, 7, 0.0);
    layer_norm_case(11, 1, 3, 0.0);
    layer_norm_case(12, 1, 1, 0.0);
}

#[test]
fn layer_norm_large_on_rayon_pool() {
    // > PAR_MIN_ELEMS and several reduction blocks of rows.
    layer_norm_case(13, 700, 64, 0.0);
}

#[test]
fn layer_norm_rows_with_large_mean() {
    // A two-pass variance does not cancel catastrophically.
    layer_norm_case(14, 9, 33, 1000.0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn prop_layer_norm(n in 1usize..9, d in 1usize..20, seed: u64) {
        layer_norm_case(seed, n, d, 0.0);
    }
}

// ----- GPU against CPU ---------------------------------------------------------

#[test]
fn layer_norm_forward_and_backward() {
    let Some(p) = BackendPair::new() else { return };
    let (cpu, gpu) = (&p.cpu, &p.gpu);
    let mut rng = rng(8);
    // Widths below, at and above the 128-wide workgroup; 600 rows make the
    // dgamma/dbeta reduction take two levels.
    for (rows, dim) in [(1, 1), (37, 50), (5, 300), (600, 64)] {
        let mut x = uniform(&mut rng, rows * dim, 2.0);
        // An offset mean exercises the two-pass variance.
        x.iter_mut().for_each(|v| *v += 3.0);
        let (cx, gx) = p.tensor(&x, &[rows, dim]);
        let (cg, gg) = p.tensor(&uniform(&mut rng, dim, 1.0), &[dim]);
        let (cb, gb) = p.tensor(&uniform(&mut rng, dim, 1.0), &[dim]);
        let (cdy, gdy) = p.tensor(&uniform(&mut rng, rows * dim, 1.0), &[rows, dim]);
        let (cy, cstats) = cpu.layer_norm(&cx, &cg, &cb, 1e-5);
        let (gy, gstats) = gpu.layer_norm(&gx, &gg, &gb, 1e-5);
        let tol = Tol::new(1e-5, 1e-5);
        p.check("layer_norm y", &cy, &gy, tol);
        p.check("layer_norm stats", &cstats, &gstats, tol);
        let (cdx, cdg, cdb) = cpu.layer_norm_backward(&cdy, &cx, &cg, &cstats);
        let (gdx, gdg, gdb) = gpu.layer_norm_backward(&gdy, &gx, &gg, &gstats);
        p.check("layer_norm dx", &cdx, &gdx, Tol::new(1e-4, 1e-5));
        let sum_tol = Tol::new(1e-5, 1e-5 * (rows as f64).sqrt());
        p.check("layer_norm dgamma", &cdg, &gdg, sum_tol);
        p.check("layer_norm dbeta", &cdb, &gdb, sum_tol);
    }
}

// ----- NaN and infinities -------------------------------------------------------

#[test]
fn nan_and_infinities_propagate_like_the_cpu() {
    let Some(p) = BackendPair::new() else { return };
    let (rows, dim) = (4, 6);
    let mut x = uniform(&mut rng(20), rows * dim, 1.0);
    x[dim + 2] = f32::NAN; // row 1
    x[2 * dim + 5] = f32::INFINITY; // row 2
    let (cx, gx) = p.tensor(&x, &[rows, dim]);
    let (cg, gg) = p.tensor(&[1.0; 6], &[dim]);
    let (cb, gb) = p.tensor(&[0.0; 6], &[dim]);
    let (cy, cstats) = BE.layer_norm(&cx, &cg, &cb, 1e-5);
    let (gy, gstats) = p.gpu.layer_norm(&gx, &gg, &gb, 1e-5);
    // A NaN or infinite value makes its whole row NaN; the others stay finite.
    for r in 0..rows {
        let row = &cy.data()[r * dim..(r + 1) * dim];
        let expect_nan = r == 1 || r == 2;
        assert!(
            row.iter().all(|v| v.is_nan() == expect_nan),
            "row {r}: {row:?}"
        );
    }
    let tol = Tol::new(1e-5, 1e-5);
    p.check_with_non_finite("layer_norm y", &cy, &gy, tol);
    p.check_with_non_finite("layer_norm stats", &cstats, &gstats, tol);

    // A NaN in dy reaches its row of dx and every column of dgamma and dbeta
    // it is summed into.
    let (cx, gx) = p.tensor(&uniform(&mut rng(21), rows * dim, 1.0), &[rows, dim]);
    let (_, cstats) = BE.layer_norm(&cx, &cg, &cb, 1e-5);
    let (_, gstats) = p.gpu.layer_norm(&gx, &gg, &gb, 1e-5);
    let mut dy = vec![0.3f32; rows * dim];
    dy[3 * dim + 4] = f32::NAN;
    let (cdy, gdy) = p.tensor(&dy, &[rows, dim]);
    let (cdx, cdg, cdb) = BE.layer_norm_backward(&cdy, &cx, &cg, &cstats);
    let (gdx, gdg, gdb) = p.gpu.layer_norm_backward(&gdy, &gx, &gg, &gstats);
    assert!(cdx.data()[3 * dim..].iter().all(|v| v.is_nan()));
    assert!(cdg.data()[4].is_nan() && cdb.data()[4].is_nan());
    p.check_with_non_finite("layer_norm dx", &cdx, &gdx, Tol::new(1e-4, 1e-5));
    p.check_with_non_finite("layer_norm dgamma", &cdg, &gdg, tol);
    p.check_with_non_finite("layer_norm dbeta", &cdb, &gdb, tol);
}
