//! The sampled_loss family: sampled softmax (with and without the log-Q
//! correction) and the binary losses (BCE, gBCE's weighted positive), with
//! the negatives shared by the whole batch, by each sequence, or drawn for
//! each row. The CPU backend against a plain f64 reference and finite
//! differences, then the WGSL kernels against the CPU.

mod common;

use common::{BE, FWD, check_grad, dot64, rng, t, targets, to64, uniform};
use proptest::prelude::*;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use sasrec_kernels::cpu::{CpuTensor, SampledChunks, sampled_loss_chunked};
use sasrec_kernels::gpu::GpuOptions;
use sasrec_kernels::testing::{BackendPair, Tol, assert_close};
use sasrec_kernels::{Backend, Negatives, SampledLoss, SampledLossOutput};

/// The losses under test; the log-Q vector of `SoftmaxLogQ` comes with the case.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Softmax,
    SoftmaxLogQ,
    Binary(f32),
}

const KINDS: [Kind; 4] = [
    Kind::Softmax,
    Kind::SoftmaxLogQ,
    Kind::Binary(1.0),
    Kind::Binary(0.3),
];

/// One batch: h `[rows, dim]`, the table `[vocab, dim]`, the targets, the
/// negatives `[groups * n]` and log Q of every item.
#[derive(Clone, Debug)]
struct Case {
    dim: usize,
    n: usize,
    h: Vec<f32>,
    table: Vec<f32>,
    targets: Vec<u32>,
    ids: Vec<u32>,
    log_q: Vec<f32>,
}

impl Case {
    /// Random values (h of size `scale`), about a third of the targets
    /// ignored, `groups` groups of `n` negatives drawn from a table of
    /// `2n + 3` items (so some equal a row's target and some repeat).
    fn random(
        r: &mut ChaCha8Rng,
        rows: usize,
        dim: usize,
        groups: usize,
        n: usize,
        scale: f32,
    ) -> Case {
        assert_eq!(rows % groups, 0);
        let vocab = 2 * n + 3;
        Case {
            dim,
            n,
            h: uniform(r, rows * dim, scale),
            table: uniform(r, vocab * dim, 1.0),
            targets: targets(r, rows, vocab, 0.3),
            ids: (0..groups * n)
                .map(|_| r.random_range(1..vocab as u32))
                .collect(),
            log_q: (0..vocab).map(|_| r.random_range(-9.0..-1.0)).collect(),
        }
    }

    fn rows(&self) -> usize {
        self.targets.len()
    }

    fn vocab(&self) -> usize {
        self.log_q.len()
    }

    fn groups(&self) -> usize {
        self.ids.len() / self.n
    }

    /// The negatives of row `r`.
    fn negatives_of(&self, r: usize) -> &[u32] {
        let g = r / (self.rows() / self.groups());
        &self.ids[g * self.n..(g + 1) * self.n]
    }
}

/// The loss and its gradients, in f64.
struct Reference {
    loss: f64,
    dh: Vec<f64>,
    dtable: Vec<f64>,
}

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The mean loss over the rows whose target is not 0, and its gradients,
/// written directly from the definitions.
fn reference(c: &Case, kind: Kind, h: &[f64], table: &[f64]) -> Reference {
    let dim = c.dim;
    let count = c.targets.iter().filter(|&&t| t != 0).count();
    let mut out = Reference {
        loss: 0.0,
        dh: vec![0.0; h.len()],
        dtable: vec![0.0; table.len()],
    };
    let row = |x: &[f64], i: usize| x[i * dim..(i + 1) * dim].to_vec();
    for (r, &target) in c.targets.iter().enumerate() {
        if target == 0 {
            continue;
        }
        let ids = c.negatives_of(r);
        let hr = row(h, r);
        let s_pos = dot64(&hr, &row(table, target as usize));
        let s: Vec<f64> = ids
            .iter()
            .map(|&id| dot64(&hr, &row(table, id as usize)))
            .collect();
        let live: Vec<bool> = ids.iter().map(|&id| id != target).collect();
        let (loss, g_pos, g): (f64, f64, Vec<f64>) = match kind {
            Kind::Softmax | Kind::SoftmaxLogQ => {
                let lq = |id: u32| {
                    if kind == Kind::SoftmaxLogQ {
                        c.log_q[id as usize] as f64
                    } else {
                        0.0
                    }
                };
                let zp = s_pos - lq(target);
                let z: Vec<f64> = ids.iter().zip(&s).map(|(&id, s)| s - lq(id)).collect();
                let live_z = || z.iter().zip(&live).filter(|(_, l)| **l).map(|(z, _)| *z);
                let m = live_z().fold(zp, f64::max);
                let lse = m + ((zp - m).exp() + live_z().map(|z| (z - m).exp()).sum::<f64>()).ln();
                let g = z
                    .iter()
                    .zip(&live)
                    .map(|(z, &l)| if l { (z - lse).exp() } else { 0.0 })
                    .collect();
                (lse - zp, (zp - lse).exp() - 1.0, g)
            }
            Kind::Binary(w) => {
                let w = w as f64;
                let negatives: f64 = s
                    .iter()
                    .zip(&live)
                    .filter(|(_, l)| **l)
                    .map(|(s, _)| softplus(*s))
                    .sum();
                let g = s
                    .iter()
                    .zip(&live)
                    .map(|(s, &l)| if l { sigmoid(*s) } else { 0.0 })
                    .collect();
                (w * softplus(-s_pos) + negatives, -w * sigmoid(-s_pos), g)
            }
        };
        out.loss += loss;
        let scale = 1.0 / count as f64;
        let t = target as usize;
        for k in 0..dim {
            out.dh[r * dim + k] += scale * g_pos * table[t * dim + k];
            out.dtable[t * dim + k] += scale * g_pos * hr[k];
            for (j, &id) in ids.iter().enumerate() {
                let id = id as usize;
                out.dh[r * dim + k] += scale * g[j] * table[id * dim + k];
                out.dtable[id * dim + k] += scale * g[j] * hr[k];
            }
        }
    }
    if count > 0 {
        out.loss /= count as f64;
    }
    out
}

/// The op's `SampledLoss` for `kind`, with `log_q` for the corrected softmax.
fn loss_of<T>(kind: Kind, log_q: &T) -> SampledLoss<'_, T> {
    match kind {
        Kind::Softmax => SampledLoss::Softmax { log_q: None },
        Kind::SoftmaxLogQ => SampledLoss::Softmax { log_q: Some(log_q) },
        Kind::Binary(positive_weight) => SampledLoss::Binary { positive_weight },
    }
}

fn run_cpu(
    c: &Case,
    kind: Kind,
    with_grad: bool,
    chunks: Option<SampledChunks>,
) -> SampledLossOutput<CpuTensor> {
    let h = t(&c.h, &[c.rows(), c.dim]);
    let table = t(&c.table, &[c.vocab(), c.dim]);
    let log_q = t(&c.log_q, &[c.vocab()]);
    let (targets, ids) = (BE.ids(&c.targets), BE.ids(&c.ids));
    let negatives = Negatives {
        ids: &ids,
        per_group: c.n,
    };
    let loss = loss_of(kind, &log_q);
    match chunks {
        Some(chunks) => {
            sampled_loss_chunked(&h, &table, &targets, negatives, loss, with_grad, chunks)
        }
        None => BE.sampled_loss(&h, &table, &targets, negatives, loss, with_grad),
    }
}

// ----- CPU reference ---------------------------------------------------------

/// Checks the loss and both gradients against the f64 reference, with the
/// backend's budgets and with `chunks`, and the loss without gradients.
fn cpu_case(c: &Case, kind: Kind, chunks: SampledChunks, loss_tol: Tol, grad_tol: Tol) {
    let want = reference(c, kind, &to64(&c.h), &to64(&c.table));
    let what = format!(
        "{kind:?} rows {} dim {} groups {} n {} {chunks:?}",
        c.rows(),
        c.dim,
        c.groups(),
        c.n
    );
    for out in [
        run_cpu(c, kind, true, None),
        run_cpu(c, kind, true, Some(chunks)),
    ] {
        assert_eq!(out.count, c.targets.iter().filter(|&&t| t != 0).count());
        assert_close(
            &format!("{what} loss"),
            out.loss.data(),
            &[want.loss],
            loss_tol,
        );
        let (dh, dtable) = (out.dh.unwrap(), out.dtable.unwrap());
        assert_eq!(BE.shape(&dh), [c.rows(), c.dim]);
        assert_eq!(BE.shape(&dtable), [c.vocab(), c.dim]);
        assert_close(&format!("{what} dh"), dh.data(), &want.dh, grad_tol);
        assert_close(
            &format!("{what} dtable"),
            dtable.data(),
            &want.dtable,
            grad_tol,
        );
    }
    let no_grad = run_cpu(c, kind, false, Some(chunks));
    assert!(no_grad.dh.is_none() && no_grad.dtable.is_none());
    assert_close(
        &format!("{what} loss (no grad)"),
        no_grad.loss.data(),
        &[want.loss],
        loss_tol,
    );
}

const GRAD_F32: Tol = Tol::new(1e-4, 1e-6);

/// Budgets of `logits` and `negatives` floats.
fn chunks(logits: usize, negatives: usize) -> SampledChunks {
    SampledChunks { logits, negatives }
}

#[test]
fn every_loss_matches_the_reference_across_scopes_and_chunkings() {
    let mut r = rng(190);
    // One group (the batch), a group per sequence of 5 or 3, a group per
    // row; rows never a multiple of the pieces; budgets of one row and one
    // group, and larger than everything.
    for (rows, dim, groups, n, budget) in [
        (15, 5, 1, 17, chunks(3 * 17, 17 * 5)),
        (15, 5, 3, 17, chunks(4 * 17, 2 * 17 * 5)),
        (15, 5, 15, 17, chunks(2 * 17, 3 * 17 * 5)),
        (28, 7, 4, 31, chunks(31, 31 * 7)),
        (8, 3, 8, 5, chunks(1, 1)),
        (6, 4, 2, 9, chunks(1 << 20, 1 << 20)),
    ] {
        let c = Case::random(&mut r, rows, dim, groups, n, 1.0);
        for kind in KINDS {
            cpu_case(&c, kind, budget, FWD, GRAD_F32);
        }
    }
}

#[test]
fn each_group_sees_only_its_own_negatives() {
    // Two sequences of 3 rows: the loss over both is the count-weighted
    // mean of each sequence alone with its own negatives.
    let mut r = rng(197);
    let c = Case::random(&mut r, 6, 4, 2, 7, 1.0);
    let half = |k: usize| {
        let mut part = c.clone();
        for (i, t) in part.targets.iter_mut().enumerate() {
            if i / 3 != k {
                *t = 0;
            }
        }
        let count = part.targets.iter().filter(|&&t| t != 0).count() as f64;
        let loss = run_cpu(&part, Kind::Softmax, false, None).loss.data()[0] as f64;
        (loss * count, count)
    };
    let ((l0, c0), (l1, c1)) = (half(0), half(1));
    let both = run_cpu(&c, Kind::Softmax, false, None).loss.data()[0];
    assert_close(
        "two sequences",
        &[both],
        &[(l0 + l1) / (c0 + c1)],
        Tol::new(1e-6, 1e-7),
    );
    // Changing the second sequence's negatives leaves the first's rows alone.
    let mut other = c.clone();
    for id in &mut other.ids[7..] {
        *id = *id % (c.vocab() as u32 - 1) + 1;
    }
    let (a, b) = (
        run_cpu(&c, Kind::Softmax, true, None),
        run_cpu(&other, Kind::Softmax, true, None),
    );
    assert_eq!(a.dh.unwrap().data()[..12], b.dh.unwrap().data()[..12]);
}

#[test]
fn a_negative_equal_to_the_target_takes_no_part_in_that_row() {
    let mut r = rng(191);
    // Row 0's target is negatives 1 and 4 (a duplicate); row 1 has no hit,
    // row 2's target is negative 3; row 3 is ignored. All rows share the
    // negatives.
    let mut c = Case::random(&mut r, 4, 3, 1, 5, 1.0);
    c.targets = vec![7, 9, 4, 0];
    c.ids = vec![5, 7, 8, 4, 7];
    for kind in KINDS {
        cpu_case(&c, kind, chunks(10, 100), FWD, GRAD_F32);
        // Row 0 alone: its loss and gradients are those with the hits left
        // out of the negatives.
        let mut row0 = c.clone();
        row0.targets = vec![7, 0, 0, 0];
        let mut without = row0.clone();
        without.ids = vec![5, 8, 4];
        without.n = 3;
        let (a, b) = (
            run_cpu(&row0, kind, true, None),
            run_cpu(&without, kind, true, None),
        );
        let tol = Tol::new(1e-6, 1e-7);
        let what = format!("{kind:?}: masked = left out");
        assert_close(&what, a.loss.data(), b.loss.data(), tol);
        assert_close(&what, a.dh.unwrap().data(), b.dh.unwrap().data(), tol);
        assert_close(
            &what,
            a.dtable.unwrap().data(),
            b.dtable.unwrap().data(),
            tol,
        );
    }
}

#[test]
fn all_targets_ignored_give_zero_loss_and_gradients() {
    for groups in [1, 4] {
        let mut c = Case::random(&mut rng(192), 4, 3, groups, 6, 1.0);
        c.targets = vec![0; 4];
        for kind in KINDS {
            let out = run_cpu(&c, kind, true, None);
            assert_eq!(out.count, 0);
            assert_eq!(out.loss.data(), [0.0]);
            for g in [out.dh, out.dtable] {
                assert!(g.unwrap().data().iter().all(|&v| v == 0.0));
            }
        }
    }
}

#[test]
fn large_logits_stay_finite() {
    let mut r = rng(193);
    let mut c = Case::random(&mut r, 12, 12, 3, 23, 60.0);
    c.table.iter_mut().for_each(|v| *v *= 60.0);
    let row = |x: &[f32], i: usize| to64(&x[i * 12..(i + 1) * 12]);
    let largest = (0..c.rows())
        .flat_map(|i| (0..c.vocab()).map(move |j| (i, j)))
        .map(|(i, j)| dot64(&row(&c.h, i), &row(&c.table, j)).abs())
        .fold(0.0f64, f64::max);
    assert!(largest > 5e3, "test logits reach only {largest}");
    // f32 logits of size ~1e4 carry absolute errors ~1e-3: the loss (also
    // ~1e3..1e4) at rel 1e-5; gradients of saturated softmax and sigmoid
    // at rel 1e-4 with an absolute floor.
    for kind in KINDS {
        cpu_case(
            &c,
            kind,
            chunks(4 * 23, 23 * 12),
            Tol::new(1e-5, 1e-4),
            Tol::new(1e-4, 1e-5),
        );
    }
}

#[test]
fn backward_matches_finite_differences() {
    for groups in [1, 2, 6] {
        let mut r = rng(194);
        let mut c = Case::random(&mut r, 6, 4, groups, 7, 1.0);
        c.targets = vec![3, 0, 8, 1, 0, 5];
        c.ids[..7].copy_from_slice(&[2, 8, 11, 3, 3, 14, 6]);
        let (h64, table64) = (to64(&c.h), to64(&c.table));
        for kind in KINDS {
            let out = run_cpu(&c, kind, true, Some(chunks(14, 7 * 4)));
            let what = format!("{kind:?} groups {groups}");
            check_grad(&format!("{what} dh"), &c.h, out.dh.unwrap().data(), |h| {
                reference(&c, kind, h, &table64).loss
            });
            check_grad(
                &format!("{what} dtable"),
                &c.table,
                out.dtable.unwrap().data(),
                |tb| reference(&c, kind, &h64, tb).loss,
            );
        }
    }
}

#[test]
fn nan_propagates_on_the_cpu() {
    let mut c = Case::random(&mut rng(195), 6, 3, 1, 6, 1.0);
    c.targets = vec![1, 2, 3, 0, 4, 7];
    c.ids = vec![5, 6, 8, 9, 10, 11];
    // A NaN in negative 0's row of the table: every row scores it.
    c.table[5 * 3 + 1] = f32::NAN;
    for kind in KINDS {
        let out = run_cpu(&c, kind, true, None);
        assert!(
            out.loss.data()[0].is_nan(),
            "{kind:?}: loss {:?}",
            out.loss.data()
        );
        let dtable = out.dtable.unwrap();
        assert!(dtable.data()[15..18].iter().all(|v| v.is_nan()), "{kind:?}");
    }
    // One group per sequence of 3: the NaN is among the first sequence's
    // negatives only, so the second sequence's rows stay finite.
    let mut two = c.clone();
    two.ids = vec![5, 6, 8, 9, 10, 11, 12, 12, 13, 13, 14, 14];
    for kind in KINDS {
        let out = run_cpu(&two, kind, true, None);
        let dh = out.dh.unwrap();
        assert!(dh.data()[..9].iter().any(|v| v.is_nan()), "{kind:?}");
        assert!(dh.data()[9..].iter().all(|v| v.is_finite()), "{kind:?}");
    }
}

#[test]
fn thread_count_does_not_change_the_bits() {
    let c = Case::random(&mut rng(198), 40, 16, 8, 300, 1.0);
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let out = run_cpu(&c, Kind::SoftmaxLogQ, true, Some(chunks(2_000, 10_000)));
            let bits = |x: &CpuTensor| x.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            (
                bits(&out.loss),
                bits(&out.dh.unwrap()),
                bits(&out.dtable.unwrap()),
            )
        })
    };
    assert_eq!(run(1), run(3));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn prop_every_loss(sequences in 1usize..6, len in 1usize..5, per_row in any::<bool>(),
                       dim in 1usize..9, n in 1usize..30, logits in 1usize..100,
                       negatives in 1usize..400, seed: u64) {
        let rows = sequences * len;
        let groups = if per_row { rows } else { sequences };
        let c = Case::random(&mut rng(seed), rows, dim, groups, n, 2.0);
        for kind in KINDS {
            cpu_case(&c, kind, chunks(logits, negatives), FWD, GRAD_F32);
        }
    }
}

// ----- GPU against CPU ---------------------------------------------------------

/// Runs `c` on both backends and compares loss and gradients. The logits are
/// bounded by `logit_bound`: `exp` and `log` (and sigmoid's `exp`) have a
/// relative error of a few ulps of their argument, about `4 u logit_bound`
/// (u = 2^-24), which widens the relative tolerance for large logits.
fn check_pair(p: &BackendPair, c: &Case, kind: Kind, logit_bound: f64, h_scale: f64) {
    let (rows, dim, vocab) = (c.rows(), c.dim, c.vocab());
    let (ch, gh) = p.tensor(&c.h, &[rows, dim]);
    let (ctab, gtab) = p.tensor(&c.table, &[vocab, dim]);
    let (clq, glq) = p.tensor(&c.log_q, &[vocab]);
    let (ct, gt) = p.ids(&c.targets);
    let (cids, gids) = p.ids(&c.ids);
    let negatives = |ids| Negatives {
        ids,
        per_group: c.n,
    };
    let cpu = p
        .cpu
        .sampled_loss(&ch, &ctab, &ct, negatives(&cids), loss_of(kind, &clq), true);
    let gpu_run = |with_grad| {
        p.gpu.sampled_loss(
            &gh,
            &gtab,
            &gt,
            Negatives {
                ids: &gids,
                per_group: c.n,
            },
            loss_of(kind, &glq),
            with_grad,
        )
    };
    let gpu = gpu_run(true);
    assert_eq!(cpu.count, gpu.count);
    let what = format!(
        "{kind:?} rows {rows} dim {dim} groups {} n {}",
        c.groups(),
        c.n
    );
    let softmax_rel = 4.0 * (f32::EPSILON as f64 / 2.0) * logit_bound;
    p.check(
        &format!("{what} loss"),
        &cpu.loss,
        &gpu.loss,
        Tol::new(1e-5, softmax_rel),
    );
    let grad_tol = Tol::new(
        softmax_rel.max(1e-4),
        1e-7 * h_scale.max(1.0) * (rows as f64).sqrt(),
    );
    for (name, c, g) in [
        ("dh", &cpu.dh, &gpu.dh),
        ("dtable", &cpu.dtable, &gpu.dtable),
    ] {
        p.check(
            &format!("{what} {name}"),
            c.as_ref().unwrap(),
            g.as_ref().unwrap(),
            grad_tol,
        );
    }
    let no_grad = gpu_run(false);
    assert!(no_grad.dh.is_none() && no_grad.dtable.is_none());
    assert_eq!(p.gpu.to_vec(&no_grad.loss), p.gpu.to_vec(&gpu.loss));
}

#[test]
fn every_loss_matches_cpu() {
    let Some(p) = BackendPair::new() else { return };
    let mut r = rng(200);
    // Odd sizes, n below and above the workgroup (256), dim 1; one group,
    // a group per sequence, a group per row.
    for (rows, dim, groups, n) in [
        (1, 1, 1, 1),
        (36, 16, 4, 101),
        (300, 64, 1, 1000),
        (300, 64, 6, 300),
        (70, 9, 70, 257),
    ] {
        let mut c = Case::random(&mut r, rows, dim, groups, n, 1.0);
        c.targets[0] = c.ids[0]; // a hit in the first row
        for kind in KINDS {
            check_pair(&p, &c, kind, dim as f64, 1.0);
        }
    }
}

#[test]
fn gpu_large_logits_stay_finite() {
    let Some(p) = BackendPair::new() else { return };
    let mut r = rng(201);
    // |h| up to 1000 over 16 dims: logits in the thousands.
    let c = Case::random(&mut r, 40, 16, 8, 50, 1000.0);
    for kind in KINDS {
        check_pair(&p, &c, kind, 1000.0 * 16.0, 1000.0);
    }
}

#[test]
fn gpu_all_targets_ignored() {
    let Some(p) = BackendPair::new() else { return };
    let mut c = Case::random(&mut rng(202), 12, 8, 3, 30, 1.0);
    c.targets = vec![0; 12];
    for kind in KINDS {
        check_pair(&p, &c, kind, 8.0, 1.0);
    }
}

#[test]
fn gpu_in_small_chunks() {
    let mut r = rng(203);
    for groups in [1, 4, 32] {
        // 3 rows of logits per chunk (the kept rows are not a multiple of 3).
        let c = Case::random(&mut r, 32, 16, groups, 101, 1.0);
        let chunky = BackendPair::with(GpuOptions {
            ce_chunk_bytes: 3 * 4 * 101,
            ..GpuOptions::default()
        });
        if let Some(p) = chunky {
            for kind in KINDS {
                check_pair(&p, &c, kind, 16.0, 1.0);
            }
        }
        // 2 KiB bindings: the table (205 x 4) is gathered a block of rows at
        // a time, and a chunk holds one group's negatives (101 x 4) and a
        // few rows.
        let c = Case::random(&mut r, 32, 4, groups, 101, 1.0);
        if let Some(p) = BackendPair::narrow(2048) {
            for kind in KINDS {
                check_pair(&p, &c, kind, 4.0, 1.0);
            }
        }
    }
}

#[test]
fn nan_and_infinities_propagate_like_the_cpu() {
    let Some(p) = BackendPair::new() else { return };
    let mut c = Case::random(&mut rng(204), 6, 3, 2, 300, 1.0);
    // Two sequences of 3 rows; the first's negatives are items 7.., the
    // second's 300.., none a target but row 2's hit.
    c.targets = vec![1, 2, 3, 4, 0, 6];
    for (j, id) in c.ids.iter_mut().enumerate() {
        *id = if j < 300 { 7 } else { 300 } + (j % 290) as u32;
    }
    c.ids[250] = 3;
    c.table[14 * 3] = f32::NAN; // item 14: the first sequence scores it
    let (rows, dim, vocab) = (c.rows(), c.dim, c.vocab());
    let (ch, gh) = p.tensor(&c.h, &[rows, dim]);
    let (ctab, gtab) = p.tensor(&c.table, &[vocab, dim]);
    let (ct, gt) = p.ids(&c.targets);
    let (cids, gids) = p.ids(&c.ids);
    let tol = Tol::new(1e-4, 1e-6);
    for kind in [Kind::Softmax, Kind::Binary(0.5)] {
        let none = t(&[0.0], &[1]);
        let gnone = p.gpu.tensor(&[0.0], &[1]);
        let cpu = p.cpu.sampled_loss(
            &ch,
            &ctab,
            &ct,
            Negatives {
                ids: &cids,
                per_group: c.n,
            },
            loss_of(kind, &none),
            true,
        );
        let gpu = p.gpu.sampled_loss(
            &gh,
            &gtab,
            &gt,
            Negatives {
                ids: &gids,
                per_group: c.n,
            },
            loss_of(kind, &gnone),
            true,
        );
        assert!(cpu.loss.data()[0].is_nan(), "{kind:?}");
        p.check_with_non_finite(&format!("{kind:?} loss"), &cpu.loss, &gpu.loss, tol);
        for (name, c, g) in [
            ("dh", &cpu.dh, &gpu.dh),
            ("dtable", &cpu.dtable, &gpu.dtable),
        ] {
            p.check_with_non_finite(
                &format!("{kind:?} {name}"),
                c.as_ref().unwrap(),
                g.as_ref().unwrap(),
                tol,
            );
        }
    }
}
