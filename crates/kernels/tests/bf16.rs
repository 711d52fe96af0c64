//! The fused cross-entropy with bf16 products (`CpuBackend::with_precision`,
//! `cpu/bf16.rs`) on every kernel this CPU runs, against the f64 reference
//! within the bound that bf16 operands allow; a kernel the CPU lacks is
//! named as skipped.
//!
//! The bound, element by element (docs/numerics.md): a logit `z = h . t`
//! from bf16 operands is off by at most `eps = (2u + u^2 + dim u32) sum_d
//! |h_d t_d|` (u = 2^-8 for bf16, u32 = 2^-24), so a row's loss by `2 eps`
//! and each probability by the factor `e^(2 eps)`; the gradient products
//! round both their operands to bf16 again and sum in f32.

mod common;

use common::{BE, dot64, rng, t, to64, uniform};
use rand::RngExt;
use sasrec_kernels::cpu::{
    Bf16Kernel, Bf16Unsupported, CpuTensor, Precision, cross_entropy_chunked_bf16,
};
use sasrec_kernels::{Backend, CpuBackend};

const U_BF16: f64 = 1.0 / 256.0;
const U_F32: f64 = f32::EPSILON as f64 / 2.0;
/// Columns per block of the bf16 products.
const BLOCK_COLS: usize = 256;

/// Each kernel this CPU runs; the others are named as skipped.
fn kernels(test: &str) -> Vec<Bf16Kernel> {
    Bf16Kernel::ALL
        .into_iter()
        .filter(|&k| {
            let ok = k.supported();
            if !ok {
                eprintln!(
                    "{test}: skipped the {k} kernel: {}",
                    Bf16Unsupported { kernel: Some(k) }
                );
            }
            ok
        })
        .collect()
}

/// The f64 loss, gradients and their bounds for bf16 products.
struct Reference {
    loss: f64,
    loss_bound: f64,
    dh: Vec<f64>,
    dh_bound: Vec<f64>,
    dtable: Vec<f64>,
    dtable_bound: Vec<f64>,
}

fn reference(h: &[f32], table: &[f32], targets: &[u32], dim: usize) -> Reference {
    let (h, table) = (to64(h), to64(table));
    let vocab = table.len() / dim;
    let count = targets.iter().filter(|&&t| t != 0).count();
    let g = 1.0 / count as f64;
    let rows = targets.len();
    let (mut loss, mut loss_bound) = (0.0, 0.0);
    let (mut dh, mut dh_bound) = (vec![0.0; rows * dim], vec![0.0; rows * dim]);
    let (mut dtable, mut dtable_bound) = (vec![0.0; vocab * dim], vec![0.0; vocab * dim]);
    // Per term of the gradient products: two bf16 roundings and f32 sums
    // (for dh, along a row in slices, each brought to one shift by a
    // factor, then over the slices; the rows, chunk by chunk, for dtable).
    let blocks = vocab.div_ceil(BLOCK_COLS);
    let product = 3.0 * U_BF16 + (vocab + 2 * blocks + 2 + rows) as f64 * U_F32;
    for (r, &target) in targets.iter().enumerate() {
        if target == 0 {
            continue;
        }
        let hr = &h[r * dim..(r + 1) * dim];
        let z: Vec<f64> = (0..vocab)
            .map(|j| dot64(hr, &table[j * dim..(j + 1) * dim]))
            .collect();
        let eps = (0..vocab)
            .map(|j| {
                let abs: f64 = (0..dim).map(|d| (hr[d] * table[j * dim + d]).abs()).sum();
                (2.0 * U_BF16 + U_BF16 * U_BF16 + 1.01 * dim as f64 * U_F32) * abs
            })
            .fold(0.0, f64::max);
        let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        loss += lse - z[target as usize];
        // f32's exp, sums and log on top: 1e-5 of the row's loss.
        loss_bound += 2.0 * eps + 1e-5 * (1.0 + (lse - z[target as usize]).abs());
        let spread = ((2.0 * eps).exp() - 1.0) * (1.0 + 3.0 * U_BF16) + product;
        for j in 0..vocab {
            let p = (z[j] - lse).exp();
            let onehot = if j == target as usize { 1.0 } else { 0.0 };
            for d in 0..dim {
                dh[r * dim + d] += g * (p - onehot) * table[j * dim + d];
                dh_bound[r * dim + d] += g * spread * p * table[j * dim + d].abs();
                dtable[j * dim + d] += g * (p - onehot) * hr[d];
                dtable_bound[j * dim + d] += g * spread * p * hr[d].abs();
            }
        }
        // The one-hot part is added in f32.
        for d in 0..dim {
            dh_bound[r * dim + d] += 2.0 * U_F32 * g * table[target as usize * dim + d].abs();
            dtable_bound[target as usize * dim + d] += 2.0 * U_F32 * g * hr[d].abs();
        }
    }
    let loss_scale = if count == 0 { 1.0 } else { g };
    Reference {
        loss: loss * loss_scale,
        loss_bound: loss_bound * loss_scale + 1e-7,
        dh,
        dh_bound: dh_bound.iter().map(|b| b + 1e-9).collect(),
        dtable,
        dtable_bound: dtable_bound.iter().map(|b| b + 1e-9).collect(),
    }
}

/// `|got - exact| <= bound` element by element, naming the first that is not.
fn within(what: &str, got: &[f32], exact: &[f64], bound: &[f64]) {
    assert_eq!(got.len(), exact.len(), "{what}: length");
    for (i, ((&g, &e), &b)) in got.iter().zip(exact).zip(bound).enumerate() {
        assert!(
            (g as f64 - e).abs() <= b,
            "{what}[{i}] = {g}, exact {e}, bound {b}"
        );
    }
}

/// Random `h` `[rows, dim]` and table `[vocab, dim]` in `[-scale, scale)`
/// and targets with about a third ignored (0).
fn case(
    rows: usize,
    dim: usize,
    vocab: usize,
    scale: f32,
    seed: u64,
) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
    let mut r = rng(seed);
    let h = uniform(&mut r, rows * dim, scale);
    let table = uniform(&mut r, vocab * dim, scale);
    let targets = (0..rows)
        .map(|_| {
            if r.random_range(0..3) == 0 {
                0
            } else {
                r.random_range(1..vocab as u32)
            }
        })
        .collect();
    (h, table, targets)
}

fn check(kernel: Bf16Kernel, rows: usize, dim: usize, vocab: usize, scale: f32, chunk_rows: usize) {
    let (h, table, tg) = case(rows, dim, vocab, scale, (rows * 31 + vocab) as u64);
    let reference = reference(&h, &table, &tg, dim);
    let (th, ttable, ids) = (t(&h, &[rows, dim]), t(&table, &[vocab, dim]), BE.ids(&tg));
    let backend = CpuBackend::with_bf16_kernel(kernel).expect("supported");
    let what = format!("{kernel} rows {rows} dim {dim} vocab {vocab} scale {scale}");
    for (how, ce) in [
        ("backend", backend.cross_entropy(&th, &ttable, &ids, true)),
        (
            "chunked",
            cross_entropy_chunked_bf16(&th, &ttable, &ids, true, chunk_rows, kernel),
        ),
    ] {
        let what = format!("{what} ({how}, chunk {chunk_rows})");
        assert_eq!(ce.count, tg.iter().filter(|&&t| t != 0).count());
        within(
            &format!("{what} loss"),
            ce.loss.data(),
            &[reference.loss],
            &[reference.loss_bound],
        );
        let (dh, dtable): (CpuTensor, CpuTensor) = (ce.dh.unwrap(), ce.dtable.unwrap());
        within(
            &format!("{what} dh"),
            dh.data(),
            &reference.dh,
            &reference.dh_bound,
        );
        within(
            &format!("{what} dtable"),
            dtable.data(),
            &reference.dtable,
            &reference.dtable_bound,
        );
    }
    // Without gradients: the same logits, so the same loss bits.
    let no_grad = cross_entropy_chunked_bf16(&th, &ttable, &ids, false, chunk_rows, kernel);
    let with_grad = cross_entropy_chunked_bf16(&th, &ttable, &ids, true, chunk_rows, kernel);
    assert!(no_grad.dh.is_none() && no_grad.dtable.is_none());
    assert_eq!(
        no_grad.loss.data(),
        with_grad.loss.data(),
        "{what}: loss without gradients"
    );
}

#[test]
fn bf16_cross_entropy_is_within_its_bound_on_every_kernel() {
    for kernel in kernels("bf16_cross_entropy_is_within_its_bound_on_every_kernel") {
        // Nine blocks of columns, the last partial; dim not a multiple of
        // 32; chunks of 64 rows (with a partial one) and the backend's own.
        // Logits this small take the exp with shift 0 (no row maximum).
        check(kernel, 150, 48, 8 * BLOCK_COLS + 44, 0.5, 64);
        // Slices of several blocks, `dh` summed over each in place: with
        // shift 0, and past |h| max |t| = 60 (logits of a few units), with
        // the shifts the blocks' maxima and floors give.
        check(kernel, 40, 48, 60 * BLOCK_COLS + 9, 0.5, 32);
        check(kernel, 40, 48, 60 * BLOCK_COLS + 9, 2.0, 32);
        // One row, a tiny table, dim 1.
        check(kernel, 1, 1, 5, 1.0, 7);
        // dim 64 (the model's), one full block, odd chunks.
        check(kernel, 70, 64, BLOCK_COLS, 0.3, 33);
    }
}

#[test]
fn bf16_cross_entropy_of_large_logits_stays_finite_and_bounded() {
    // |logits| up to ~1e3: bf16 moves them by units, which the bound
    // allows; past |h| max |t| = 60 the softmax subtracts each block's
    // maximum, or the shift of the block before it in its slice if larger
    // (no overflow; the slice's `dh` brought to each new shift).
    for kernel in kernels("bf16_cross_entropy_of_large_logits_stays_finite_and_bounded") {
        check(kernel, 40, 16, 300, 8.0, 16);
        check(kernel, 40, 16, 60 * BLOCK_COLS + 9, 8.0, 32);
    }
}

#[test]
fn bf16_cross_entropy_with_every_target_ignored_is_zero() {
    for kernel in kernels("bf16_cross_entropy_with_every_target_ignored_is_zero") {
        let (h, table) = (vec![0.5f32; 4 * 8], vec![0.25f32; 10 * 8]);
        let ce = cross_entropy_chunked_bf16(
            &t(&h, &[4, 8]),
            &t(&table, &[10, 8]),
            &BE.ids(&[0, 0, 0, 0]),
            true,
            3,
            kernel,
        );
        assert_eq!(ce.count, 0);
        assert_eq!(ce.loss.data(), [0.0]);
        assert!(ce.dh.unwrap().data().iter().all(|&v| v == 0.0));
        assert!(ce.dtable.unwrap().data().iter().all(|&v| v == 0.0));
    }
}

#[test]
fn bf16_backend_is_refused_clearly_where_the_cpu_lacks_it() {
    match (
        CpuBackend::with_precision(Precision::Bf16),
        Bf16Kernel::detect(),
    ) {
        (Ok(backend), Some(kernel)) => {
            assert_eq!(backend.bf16_kernel(), Some(kernel));
            assert_eq!(backend.precision(), Precision::Bf16);
            assert!(
                backend.name().contains(&kernel.to_string()),
                "{}",
                backend.name()
            );
        }
        (Err(err), None) => {
            assert!(err.to_string().contains("AVX512-BF16"), "{err}");
            eprintln!("this CPU has no bf16 kernel: {err}");
        }
        (backend, kernel) => panic!("{backend:?} with detected kernel {kernel:?}"),
    }
    for kernel in Bf16Kernel::ALL {
        assert_eq!(
            CpuBackend::with_bf16_kernel(kernel).is_ok(),
            kernel.supported()
        );
    }
    // The default backend is f32.
    assert_eq!(CpuBackend.precision(), Precision::Fp32);
    assert_eq!(CpuBackend::with_precision(Precision::Fp32), Ok(CpuBackend));
}
