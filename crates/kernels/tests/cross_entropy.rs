//! The cross_entropy family: the fused softmax cross-entropy over a tied
//! table (chunked over rows) and the softmax cross-entropy over a logits
//! matrix. The CPU backend against plain f64 references and finite
//! differences, then the WGSL kernels against the CPU.

mod common;

use common::{BE, FWD, check_grad, dot64, ref_matmul, rng, t, targets, to64, uniform};
use proptest::prelude::*;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use sasrec_kernels::Backend;
use sasrec_kernels::cpu::{CE_BUFFER_BYTES, CE_CHUNK_ROWS, ce_chunk_rows, cross_entropy_chunked};
use sasrec_kernels::gpu::GpuOptions;
use sasrec_kernels::testing::{BackendPair, Tol, assert_close};

// ----- CPU reference ---------------------------------------------------------

/// Mean cross-entropy over non-zero targets and its analytic gradients
/// `(loss, dh, dtable)`.
fn ref_cross_entropy(
    h: &[f64],
    table: &[f64],
    targets: &[u32],
    dim: usize,
) -> (f64, Vec<f64>, Vec<f64>) {
    let vocab = table.len() / dim;
    let count = targets.iter().filter(|&&t| t != 0).count();
    let mut loss = 0.0;
    let mut dh = vec![0.0; h.len()];
    let mut dtable = vec![0.0; table.len()];
    for (r, &t) in targets.iter().enumerate() {
        if t == 0 {
            continue;
        }
        let hr = &h[r * dim..(r + 1) * dim];
        let z: Vec<f64> = (0..vocab)
            .map(|j| dot64(hr, &table[j * dim..(j + 1) * dim]))
            .collect();
        let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        loss += lse - z[t as usize];
        for j in 0..vocab {
            let g = ((z[j] - lse).exp() - if j == t as usize { 1.0 } else { 0.0 }) / count as f64;
            for c in 0..dim {
                dh[r * dim + c] += g * table[j * dim + c];
                dtable[j * dim + c] += g * hr[c];
            }
        }
    }
    let loss = if count == 0 { 0.0 } else { loss / count as f64 };
    (loss, dh, dtable)
}

/// Checks loss and both gradients against the analytic f64 reference, for
/// the backend's chunking and for `chunk_rows`.
#[allow(clippy::too_many_arguments)]
fn cross_entropy_case(
    h: &[f32],
    table: &[f32],
    tg: &[u32],
    dim: usize,
    chunk_rows: usize,
    loss_rel: f64,
    grad_abs: f64,
) {
    let (rows, vocab) = (tg.len(), table.len() / dim);
    let (th, ttable, tids) = (t(h, &[rows, dim]), t(table, &[vocab, dim]), BE.ids(tg));
    let (loss, dh, dtable) = ref_cross_entropy(&to64(h), &to64(table), tg, dim);
    let what = format!("cross_entropy rows {rows} vocab {vocab} dim {dim} chunk {chunk_rows}");
    for ce in [
        BE.cross_entropy(&th, &ttable, &tids, true),
        cross_entropy_chunked(&th, &ttable, &tids, true, chunk_rows),
    ] {
        assert_eq!(ce.count, tg.iter().filter(|&&t| t != 0).count());
        assert_eq!(BE.shape(&ce.loss), [1]);
        assert_close(
            &format!("{what} loss"),
            ce.loss.data(),
            &[loss],
            Tol::new(loss_rel, 1e-6),
        );
        let (ce_dh, ce_dtable) = (ce.dh.unwrap(), ce.dtable.unwrap());
        assert_eq!(BE.shape(&ce_dh), [rows, dim]);
        assert_eq!(BE.shape(&ce_dtable), [vocab, dim]);
        assert_close(
            &format!("{what} dh"),
            ce_dh.data(),
            &dh,
            Tol::new(1e-4, grad_abs),
        );
        assert_close(
            &format!("{what} dtable"),
            ce_dtable.data(),
            &dtable,
            Tol::new(1e-4, grad_abs),
        );
    }
    let no_grad = cross_entropy_chunked(&th, &ttable, &tids, false, chunk_rows);
    assert!(no_grad.dh.is_none() && no_grad.dtable.is_none());
    assert_close(
        &format!("{what} loss (no grad)"),
        no_grad.loss.data(),
        &[loss],
        Tol::new(loss_rel, 1e-6),
    );
}

#[test]
fn cross_entropy_matches_reference_across_chunkings() {
    let mut r = rng(90);
    // rows x vocab never a multiple of the chunk; chunk 1 and chunk > rows too.
    for (rows, vocab, dim, chunk) in [(13, 17, 5, 3), (29, 31, 7, 4), (8, 5, 3, 1), (6, 9, 4, 100)]
    {
        let h = uniform(&mut r, rows * dim, 1.0);
        let table = uniform(&mut r, vocab * dim, 1.0);
        let tg = targets(&mut r, rows, vocab, 0.3);
        cross_entropy_case(&h, &table, &tg, dim, chunk, FWD.rel, 1e-6);
    }
}

#[test]
fn cross_entropy_one_real_target() {
    let mut r = rng(91);
    let (rows, vocab, dim) = (5, 7, 3);
    let h = uniform(&mut r, rows * dim, 1.0);
    let table = uniform(&mut r, vocab * dim, 1.0);
    cross_entropy_case(&h, &table, &[0, 0, 0, 6, 0], dim, 2, FWD.rel, 1e-6);
}

#[test]
fn cross_entropy_large_logits_stay_finite() {
    let mut r = rng(92);
    let (rows, vocab, dim) = (11, 23, 12);
    let h = uniform(&mut r, rows * dim, 60.0);
    let table = uniform(&mut r, vocab * dim, 60.0);
    let logits = ref_matmul(&to64(&h), &to64(&table), rows, dim, vocab, false, true);
    let largest = logits.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    assert!(largest > 1e4, "test logits reach only {largest}");
    let tg = targets(&mut r, rows, vocab, 0.2);
    // f32 logits of size 1e4 carry absolute errors ~1e-3, so the loss (also
    // ~1e3..1e4) is compared at rel 1e-5; softmax is then almost one-hot.
    cross_entropy_case(&h, &table, &tg, dim, 4, 1e-5, 1e-4);
}

#[test]
fn cross_entropy_all_targets_ignored() {
    let (rows, vocab, dim) = (4, 6, 3);
    let h = vec![1.0; rows * dim];
    let table = vec![0.5; vocab * dim];
    let ce = BE.cross_entropy(
        &t(&h, &[rows, dim]),
        &t(&table, &[vocab, dim]),
        &BE.ids(&[0; 4]),
        true,
    );
    assert_eq!(ce.count, 0);
    assert_eq!(ce.loss.data(), [0.0]);
    assert!(ce.dh.unwrap().data().iter().all(|&g| g == 0.0));
    assert!(ce.dtable.unwrap().data().iter().all(|&g| g == 0.0));
}

#[test]
fn cross_entropy_backward_matches_finite_differences() {
    let mut r = rng(93);
    let (rows, vocab, dim) = (6, 9, 4);
    let h = uniform(&mut r, rows * dim, 1.0);
    let table = uniform(&mut r, vocab * dim, 1.0);
    let tg = [3, 0, 8, 1, 0, 5];
    let ce = cross_entropy_chunked(
        &t(&h, &[rows, dim]),
        &t(&table, &[vocab, dim]),
        &BE.ids(&tg),
        true,
        2,
    );
    let (h64, table64) = (to64(&h), to64(&table));
    check_grad("cross_entropy dh", &h, ce.dh.unwrap().data(), |h| {
        ref_cross_entropy(h, &table64, &tg, dim).0
    });
    check_grad(
        "cross_entropy dtable",
        &table,
        ce.dtable.unwrap().data(),
        |tb| ref_cross_entropy(&h64, tb, &tg, dim).0,
    );
}

#[test]
fn cross_entropy_chunk_rows_bounded_by_buffer() {
    for vocab in [1, 2, 17, 9725, 40_295, 1 << 20, 1 << 30] {
        let rows = ce_chunk_rows(vocab);
        assert!(rows >= 1);
        assert!(
            rows == 1 || rows * vocab * 4 <= CE_BUFFER_BYTES,
            "vocab {vocab}: {rows} rows"
        );
        assert!(rows <= CE_CHUNK_ROWS, "vocab {vocab}: {rows} rows");
    }
    // MovieLens latest-small, the seed scale and ml-32m's 87k items.
    assert_eq!(ce_chunk_rows(9725), 512);
    assert_eq!(ce_chunk_rows(39_903), 420);
    assert_eq!(ce_chunk_rows(87_586), 191);
}

/// Mean softmax cross-entropy of `logits` `[rows, classes]` over the rows
/// whose target is not `ignore`, and its gradient.
fn ref_softmax_cross_entropy(
    logits: &[f64],
    targets: &[u32],
    ignore: Option<u32>,
) -> (f64, Vec<f64>) {
    let classes = logits.len() / targets.len();
    let count = targets.iter().filter(|&&t| Some(t) != ignore).count();
    let mut loss = 0.0;
    let mut dlogits = vec![0.0; logits.len()];
    for (r, &t) in targets.iter().enumerate() {
        if Some(t) == ignore {
            continue;
        }
        let z = &logits[r * classes..(r + 1) * classes];
        let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        loss += lse - z[t as usize];
        for j in 0..classes {
            let onehot = if j == t as usize { 1.0 } else { 0.0 };
            dlogits[r * classes + j] = ((z[j] - lse).exp() - onehot) / count as f64;
        }
    }
    let loss = if count == 0 { 0.0 } else { loss / count as f64 };
    (loss, dlogits)
}

#[test]
fn softmax_cross_entropy_matches_reference() {
    let mut r = rng(94);
    let (rows, classes) = (13, 7);
    let logits = uniform(&mut r, rows * classes, 3.0);
    // Class 0 is a class like any other unless it is the ignored one.
    let tg: Vec<u32> = (0..rows).map(|i| (i * 3 % classes) as u32).collect();
    for ignore in [None, Some(0), Some(3)] {
        let out =
            BE.softmax_cross_entropy(&t(&logits, &[rows, classes]), &BE.ids(&tg), ignore, true);
        let (loss, dlogits) = ref_softmax_cross_entropy(&to64(&logits), &tg, ignore);
        assert_eq!(out.count, tg.iter().filter(|&&t| Some(t) != ignore).count());
        assert_close(
            &format!("loss, ignore {ignore:?}"),
            out.loss.data(),
            &[loss],
            FWD,
        );
        let dl = out.dlogits.unwrap();
        assert_eq!(BE.shape(&dl), [rows, classes]);
        assert_close(
            &format!("dlogits, ignore {ignore:?}"),
            dl.data(),
            &dlogits,
            Tol::new(1e-5, 1e-7),
        );
        check_grad(
            &format!("dlogits by differences, ignore {ignore:?}"),
            &logits,
            dl.data(),
            |z| ref_softmax_cross_entropy(z, &tg, ignore).0,
        );
        let no_grad =
            BE.softmax_cross_entropy(&t(&logits, &[rows, classes]), &BE.ids(&tg), ignore, false);
        assert!(no_grad.dlogits.is_none());
        assert_eq!(no_grad.loss.data(), out.loss.data());
    }
}

#[test]
fn softmax_cross_entropy_all_ignored() {
    let logits = t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let out = BE.softmax_cross_entropy(&logits, &BE.ids(&[1, 1]), Some(1), true);
    assert_eq!(out.count, 0);
    assert_eq!(out.loss.data(), [0.0]);
    assert_eq!(out.dlogits.unwrap().data(), [0.0; 4]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn prop_cross_entropy(rows in 1usize..20, vocab in 2usize..30, dim in 1usize..9,
                          chunk in 1usize..8, ignored in 0.0f64..1.0, seed: u64) {
        let mut r = rng(seed);
        let h = uniform(&mut r, rows * dim, 2.0);
        let table = uniform(&mut r, vocab * dim, 2.0);
        let tg = targets(&mut r, rows, vocab, ignored);
        cross_entropy_case(&h, &table, &tg, dim, chunk, FWD.rel, 1e-6);
    }
}

// ----- GPU against CPU ---------------------------------------------------------

fn check_cross_entropy(
    p: &BackendPair,
    rng: &mut ChaCha8Rng,
    rows: usize,
    dim: usize,
    vocab: usize,
    h_scale: f32,
    targets: &[u32],
) {
    let (ch, gh) = p.tensor(&uniform(rng, rows * dim, h_scale), &[rows, dim]);
    let (ct, gt) = p.tensor(&uniform(rng, vocab * dim, 1.0), &[vocab, dim]);
    let (cids, gids) = p.ids(targets);
    let c = p.cpu.cross_entropy(&ch, &ct, &cids, true);
    let g = p.gpu.cross_entropy(&gh, &gt, &gids, true);
    assert_eq!(c.count, g.count, "cross_entropy count");
    // |logit| <= h_scale * dim. exp(x - lse) has a relative error of a few
    // ulps of |x - lse|, i.e. about 4 u |logit| (u = 2^-24): large logits
    // widen the relative tolerance of everything downstream of the softmax.
    let logit_bound = h_scale as f64 * dim as f64;
    let softmax_rel = 4.0 * (f32::EPSILON as f64 / 2.0) * logit_bound;
    p.check(
        "cross_entropy loss",
        &c.loss,
        &g.loss,
        Tol::new(1e-5, softmax_rel),
    );
    let grad_tol = Tol::new(
        softmax_rel.max(1e-4),
        1e-7 * h_scale.max(1.0) as f64 * (rows as f64).sqrt(),
    );
    p.check(
        "cross_entropy dh",
        c.dh.as_ref().unwrap(),
        g.dh.as_ref().unwrap(),
        grad_tol,
    );
    p.check(
        "cross_entropy dtable",
        c.dtable.as_ref().unwrap(),
        g.dtable.as_ref().unwrap(),
        grad_tol,
    );
    let no_grad = p.gpu.cross_entropy(&gh, &gt, &gids, false);
    assert!(no_grad.dh.is_none() && no_grad.dtable.is_none());
    assert_eq!(p.gpu.to_vec(&no_grad.loss), p.gpu.to_vec(&g.loss));
}

fn random_targets(rng: &mut ChaCha8Rng, rows: usize, vocab: usize) -> Vec<u32> {
    // About a third ignored (0), like left-padded sequences.
    (0..rows)
        .map(|_| {
            if rng.random_range(0..3) == 0 {
                0
            } else {
                rng.random_range(1..vocab as u32)
            }
        })
        .collect()
}

#[test]
fn cross_entropy_matches_cpu() {
    let Some(p) = BackendPair::new() else { return };
    let mut rng = rng(13);
    for (rows, dim, vocab) in [(1, 1, 2), (37, 16, 101), (300, 64, 1000)] {
        let targets = [&[1u32][..], &random_targets(&mut rng, rows - 1, vocab)].concat();
        check_cross_entropy(&p, &mut rng, rows, dim, vocab, 1.0, &targets);
    }
}

#[test]
fn gpu_cross_entropy_large_logits_stay_finite() {
    let Some(p) = BackendPair::new() else { return };
    let mut rng = rng(14);
    // |h| up to 1000 over 16 dims: logits in the thousands to ~1e4.
    let targets = random_targets(&mut rng, 40, 50);
    check_cross_entropy(&p, &mut rng, 40, 16, 50, 1000.0, &targets);
}

#[test]
fn gpu_cross_entropy_all_targets_ignored() {
    let Some(p) = BackendPair::new() else { return };
    let (cpu, gpu) = (&p.cpu, &p.gpu);
    let mut rng = rng(15);
    let (rows, dim, vocab) = (12, 8, 30);
    let (ch, gh) = p.tensor(&uniform(&mut rng, rows * dim, 1.0), &[rows, dim]);
    let (ct, gt) = p.tensor(&uniform(&mut rng, vocab * dim, 1.0), &[vocab, dim]);
    let (cids, gids) = p.ids(&vec![0; rows]);
    let c = cpu.cross_entropy(&ch, &ct, &cids, true);
    let g = gpu.cross_entropy(&gh, &gt, &gids, true);
    assert_eq!(g.count, 0);
    p.check("loss", &c.loss, &g.loss, Tol::EXACT);
    assert_eq!(gpu.to_vec(&g.loss), vec![0.0]);
    p.check(
        "dh",
        c.dh.as_ref().unwrap(),
        g.dh.as_ref().unwrap(),
        Tol::EXACT,
    );
    p.check(
        "dtable",
        c.dtable.as_ref().unwrap(),
        g.dtable.as_ref().unwrap(),
        Tol::EXACT,
    );
}

#[test]
fn softmax_cross_entropy_matches_cpu() {
    let Some(p) = BackendPair::new() else { return };
    let mut rng = rng(17);
    for (rows, classes, scale) in [(1, 1, 1.0), (37, 10, 3.0), (300, 1000, 3.0), (20, 50, 1e4)] {
        let (cz, gz) = p.tensor(&uniform(&mut rng, rows * classes, scale), &[rows, classes]);
        let tg: Vec<u32> = (0..rows)
            .map(|_| rng.random_range(0..classes as u32))
            .collect();
        let (ct, gt) = p.ids(&tg);
        // As for the fused loss: a few ulps of the largest |logit|.
        let softmax_rel = 4.0 * (f32::EPSILON as f64 / 2.0) * scale as f64;
        for ignore in [None, Some(0)] {
            let c = p.cpu.softmax_cross_entropy(&cz, &ct, ignore, true);
            let g = p.gpu.softmax_cross_entropy(&gz, &gt, ignore, true);
            assert_eq!(c.count, g.count);
            let what = format!("{rows}x{classes} ignore {ignore:?}");
            p.check(
                &format!("{what} loss"),
                &c.loss,
                &g.loss,
                Tol::new(1e-5, softmax_rel),
            );
            p.check(
                &format!("{what} dlogits"),
                c.dlogits.as_ref().unwrap(),
                g.dlogits.as_ref().unwrap(),
                Tol::new(softmax_rel.max(1e-5), 1e-8),
            );
        }
    }
}

#[test]
fn softmax_cross_entropy_in_small_chunks() {
    // 2 KiB bindings hold 5 rows of 101 logits: the compacted rows go in
    // chunks, and so do the gathers that compact and restore them.
    let Some(p) = BackendPair::narrow(2048) else {
        return;
    };
    let mut rng = rng(18);
    let (rows, classes) = (31, 101);
    let (cz, gz) = p.tensor(&uniform(&mut rng, rows * classes, 2.0), &[rows, classes]);
    let (ct, gt) = p.ids(&random_targets(&mut rng, rows, classes));
    let c = p.cpu.softmax_cross_entropy(&cz, &ct, Some(0), true);
    let g = p.gpu.softmax_cross_entropy(&gz, &gt, Some(0), true);
    p.check("loss", &c.loss, &g.loss, Tol::new(1e-5, 1e-6));
    p.check(
        "dlogits",
        c.dlogits.as_ref().unwrap(),
        g.dlogits.as_ref().unwrap(),
        Tol::new(1e-5, 1e-8),
    );
}

#[test]
fn cross_entropy_in_small_chunks() {
    let mut rng = rng(16);
    // h (31 x 16) and the kept rows fit a 2 KiB binding; the table does not.
    let (rows, dim, vocab) = (31, 16, 101);
    let targets = random_targets(&mut rng, rows, vocab);
    // 3 rows of logits per chunk (the kept rows are not a multiple of 3).
    let chunky = BackendPair::with(GpuOptions {
        ce_chunk_bytes: 3 * 4 * vocab as u64,
        ..GpuOptions::default()
    });
    // 2 KiB bindings: the table (1616 floats) is split inside every product
    // and a logits chunk holds at most 4 rows.
    let narrow = BackendPair::narrow(2048);
    for p in [chunky, narrow].into_iter().flatten() {
        check_cross_entropy(&p, &mut rng, rows, dim, vocab, 1.0, &targets);
    }
}

// ----- NaN and infinities -------------------------------------------------------

#[test]
fn a_nan_in_one_table_row_makes_the_loss_nan_on_both_backends() {
    let Some(p) = BackendPair::new() else { return };
    let mut r = rng(19);
    let (rows, dim, vocab) = (30, 8, 300);
    let h = uniform(&mut r, rows * dim, 1.0);
    let mut table = uniform(&mut r, vocab * dim, 1.0);
    // Row 123 is scored by every row of h; no target is 123.
    table[123 * dim + 5] = f32::NAN;
    let tg: Vec<u32> = (0..rows)
        .map(|i| if i % 4 == 0 { 0 } else { 1 + i as u32 })
        .collect();
    let (ch, gh) = p.tensor(&h, &[rows, dim]);
    let (ct, gt) = p.tensor(&table, &[vocab, dim]);
    let (cids, gids) = p.ids(&tg);
    for with_grad in [false, true] {
        let c = BE.cross_entropy(&ch, &ct, &cids, with_grad);
        let g = p.gpu.cross_entropy(&gh, &gt, &gids, with_grad);
        assert!(c.loss.data()[0].is_nan(), "CPU loss {:?}", c.loss.data());
        assert!(
            p.gpu.to_vec(&g.loss)[0].is_nan(),
            "GPU loss {:?}",
            p.gpu.to_vec(&g.loss)
        );
        if with_grad {
            let tol = Tol::new(1e-4, 1e-6);
            let (cdh, gdh) = (c.dh.unwrap(), g.dh.unwrap());
            // Ignored rows still get a zero gradient; every other row NaN.
            for (r, row) in cdh.data().chunks(dim).enumerate() {
                let ignored = tg[r] == 0;
                assert!(
                    row.iter()
                        .all(|&v| if ignored { v == 0.0 } else { v.is_nan() }),
                    "dh row {r}: {row:?}"
                );
            }
            p.check_with_non_finite("dh", &cdh, &gdh, tol);
            p.check_with_non_finite(
                "dtable",
                c.dtable.as_ref().unwrap(),
                g.dtable.as_ref().unwrap(),
                tol,
            );
        }
    }
}

#[test]
fn nan_and_infinite_logits_propagate_like_the_cpu() {
    let Some(p) = BackendPair::new() else { return };
    let (rows, classes) = (6, 300);
    let mut z = uniform(&mut rng(20), rows * classes, 3.0);
    z[classes + 7] = f32::NAN; // row 1: NaN loss and gradient
    z[2 * classes + 250] = f32::INFINITY; // row 2: inf - inf
    z[3 * classes + 9] = f32::NEG_INFINITY; // row 3: a logit that takes no part
    z[4 * classes + 4] = f32::NEG_INFINITY; // row 4: the target at -inf: infinite loss
    let tg = [1u32, 2, 3, 4, 4, 5];
    let (cz, gz) = p.tensor(&z, &[rows, classes]);
    let (ct, gt) = p.ids(&tg);
    let c = BE.softmax_cross_entropy(&cz, &ct, None, true);
    let g = p.gpu.softmax_cross_entropy(&gz, &gt, None, true);
    let dl = c.dlogits.as_ref().unwrap().data();
    let row = |r: usize| &dl[r * classes..(r + 1) * classes];
    assert!(row(1).iter().all(|v| v.is_nan()) && row(2).iter().all(|v| v.is_nan()));
    assert!(row(3).iter().chain(row(4)).all(|v| v.is_finite()));
    assert!(c.loss.data()[0].is_nan());
    let tol = Tol::new(1e-5, 1e-7);
    p.check_with_non_finite("loss", &c.loss, &g.loss, tol);
    p.check_with_non_finite(
        "dlogits",
        c.dlogits.as_ref().unwrap(),
        g.dlogits.as_ref().unwrap(),
        tol,
    );
    // Without the NaN rows the loss is finite but for row 4: +inf.
    let c = BE.softmax_cross_entropy(&cz, &BE.ids(&[0, 0, 3, 4, 4, 5]), Some(0), true);
    let g = p
        .gpu
        .softmax_cross_entropy(&gz, &p.gpu.ids(&[0, 0, 3, 4, 4, 5]), Some(0), true);
    assert!(
        c.loss.data()[0].is_nan(),
        "row 2's inf - inf: {:?}",
        c.loss.data()
    );
    p.check_with_non_finite("loss", &c.loss, &g.loss, tol);
    let c = BE.softmax_cross_entropy(&cz, &BE.ids(&[0, 0, 0, 4, 4, 5]), Some(0), false);
    let g = p
        .gpu
        .softmax_cross_entropy(&gz, &p.gpu.ids(&[0, 0, 0, 4, 4, 5]), Some(0), false);
    assert_eq!(c.loss.data()[0], f32::INFINITY);
    p.check_with_non_finite("loss", &c.loss, &g.loss, tol);
}

// ----- label smoothing -----------------------------------------------------------

/// PyTorch's `F.cross_entropy(h @ table^T, targets, ignore_index=0,
/// label_smoothing=e)` in f64, and its gradients `(loss, dh, dtable)`.
fn ref_smoothed(
    h: &[f64],
    table: &[f64],
    targets: &[u32],
    dim: usize,
    e: f64,
) -> (f64, Vec<f64>, Vec<f64>) {
    let vocab = table.len() / dim;
    let count = targets.iter().filter(|&&t| t != 0).count() as f64;
    let (mut loss, mut dh, mut dtable) = (0.0, vec![0.0; h.len()], vec![0.0; table.len()]);
    for (r, &t) in targets.iter().enumerate().filter(|(_, t)| **t != 0) {
        let hr = &h[r * dim..(r + 1) * dim];
        let z: Vec<f64> = (0..vocab)
            .map(|j| dot64(hr, &table[j * dim..(j + 1) * dim]))
            .collect();
        let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        // (1 - e) * nll + e * mean over classes of -log softmax.
        let smooth = z.iter().map(|v| lse - v).sum::<f64>() / vocab as f64;
        loss += (1.0 - e) * (lse - z[t as usize]) + e * smooth;
        for j in 0..vocab {
            let target = if j == t as usize { 1.0 - e } else { 0.0 };
            let g = ((z[j] - lse).exp() - target - e / vocab as f64) / count;
            for c in 0..dim {
                dh[r * dim + c] += g * table[j * dim + c];
                dtable[j * dim + c] += g * hr[c];
            }
        }
    }
    (loss / count, dh, dtable)
}

#[test]
fn label_smoothing_matches_reference_and_finite_differences() {
    let mut r = rng(40);
    let (rows, dim, vocab) = (23, 5, 300);
    let h = uniform(&mut r, rows * dim, 1.0);
    let table = uniform(&mut r, vocab * dim, 1.0);
    let tg = targets(&mut r, rows, vocab, 0.3);
    let (th, ttable, tids) = (t(&h, &[rows, dim]), t(&table, &[vocab, dim]), BE.ids(&tg));
    for e in [0.1f32, 0.9] {
        let (loss, dh, dtable) = ref_smoothed(&to64(&h), &to64(&table), &tg, dim, e as f64);
        // The backend's chunking and chunks of 4 rows; 300 columns span
        // several column blocks of the CPU's logits product.
        for ce in [
            BE.cross_entropy_smoothed(&th, &ttable, &tids, e, true),
            sasrec_kernels::cpu::cross_entropy_smoothed_chunked(&th, &ttable, &tids, e, true, 4),
        ] {
            assert_close(
                "smoothed loss",
                ce.loss.data(),
                &[loss],
                Tol::new(1e-5, 1e-6),
            );
            assert_close(
                "smoothed dh",
                ce.dh.unwrap().data(),
                &dh,
                Tol::new(1e-4, 1e-6),
            );
            assert_close(
                "smoothed dtable",
                ce.dtable.unwrap().data(),
                &dtable,
                Tol::new(1e-4, 1e-6),
            );
        }
    }
    // Finite differences of the f32 kernel itself, small sizes.
    let (rows, dim, vocab) = (6, 3, 7);
    let h = uniform(&mut r, rows * dim, 1.0);
    let table = uniform(&mut r, vocab * dim, 1.0);
    let tg = targets(&mut r, rows, vocab, 0.3);
    let tids = BE.ids(&tg);
    let ce = BE.cross_entropy_smoothed(
        &t(&h, &[rows, dim]),
        &t(&table, &[vocab, dim]),
        &tids,
        0.2,
        true,
    );
    let table64 = to64(&table);
    check_grad("smoothed dh (fd)", &h, ce.dh.unwrap().data(), |h| {
        ref_smoothed(h, &table64, &tg, dim, 0.2).0
    });
    // Smoothing 0 is the plain cross-entropy, bit for bit.
    let (th, ttable) = (t(&h, &[rows, dim]), t(&table, &[vocab, dim]));
    let plain = BE.cross_entropy(&th, &ttable, &tids, true);
    let zero = BE.cross_entropy_smoothed(&th, &ttable, &tids, 0.0, true);
    assert_eq!(plain.loss.data(), zero.loss.data());
    assert_eq!(plain.dh.unwrap().data(), zero.dh.unwrap().data());
}

#[test]
fn label_smoothing_gpu_matches_cpu() {
    let Some(p) = BackendPair::new() else { return };
    let mut r = rng(41);
    // Vocabularies below and past the 256-wide workgroup.
    for (rows, dim, vocab) in [(9, 4, 13), (70, 16, 1001)] {
        let (ch, gh) = p.tensor(&uniform(&mut r, rows * dim, 1.0), &[rows, dim]);
        let (ct, gt) = p.tensor(&uniform(&mut r, vocab * dim, 1.0), &[vocab, dim]);
        let tg = targets(&mut r, rows, vocab, 0.25);
        let (cids, gids) = (p.cpu.ids(&tg), p.gpu.ids(&tg));
        for e in [0.0f32, 0.1, 0.6] {
            let c = p.cpu.cross_entropy_smoothed(&ch, &ct, &cids, e, true);
            let g = p.gpu.cross_entropy_smoothed(&gh, &gt, &gids, e, true);
            let what = format!("smoothing {e} vocab {vocab}");
            p.check(
                &format!("{what} loss"),
                &c.loss,
                &g.loss,
                Tol::new(1e-5, 1e-6),
            );
            let tol = Tol::new(1e-4, 1e-6);
            p.check(&format!("{what} dh"), &c.dh.unwrap(), &g.dh.unwrap(), tol);
            p.check(
                &format!("{what} dtable"),
                &c.dtable.unwrap(),
                &g.dtable.unwrap(),
                tol,
            );
        }
    }
}
