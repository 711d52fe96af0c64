//! The sampled_loss family: sampled softmax (with and without the log-Q
//! correction) and the binary losses (BCE, gBCE's weighted positive) over
//! negatives shared by every row. The CPU backend against a plain f64
//! reference and finite differences, then the WGSL kernels against the CPU.

mod common;

use common::{BE, FWD, check_grad, dot64, rng, t, targets, to64, uniform};
use proptest::prelude::*;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use sasrec_kernels::cpu::{CpuTensor, sampled_loss_chunked};
use sasrec_kernels::gpu::GpuOptions;
use sasrec_kernels::testing::{BackendPair, Tol, assert_close};
use sasrec_kernels::{Backend, LogQ, SampledLoss, SampledLossOutput};

/// The losses under test; the log-Q vectors of `SoftmaxLogQ` come with the case.
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

/// One batch: h and pos `[rows, dim]`, neg `[n, dim]`, the ids, and log Q
/// of every target and negative.
#[derive(Clone, Debug)]
struct Case {
    dim: usize,
    h: Vec<f32>,
    pos: Vec<f32>,
    neg: Vec<f32>,
    targets: Vec<u32>,
    negatives: Vec<u32>,
    lq_targets: Vec<f32>,
    lq_negatives: Vec<f32>,
}

impl Case {
    /// Random values of size `scale`, about a third of the targets ignored,
    /// negatives drawn from the targets' range (so some equal a row's target
    /// and some repeat).
    fn random(r: &mut ChaCha8Rng, rows: usize, dim: usize, n: usize, scale: f32) -> Case {
        let items = 2 * n as u32 + 3;
        let negatives = (0..n).map(|_| r.random_range(1..items)).collect();
        Case {
            dim,
            h: uniform(r, rows * dim, scale),
            pos: uniform(r, rows * dim, 1.0),
            neg: uniform(r, n * dim, 1.0),
            targets: targets(r, rows, items as usize, 0.3),
            negatives,
            lq_targets: (0..rows).map(|_| r.random_range(-9.0..-1.0)).collect(),
            lq_negatives: (0..n).map(|_| r.random_range(-9.0..-1.0)).collect(),
        }
    }

    fn rows(&self) -> usize {
        self.targets.len()
    }

    fn n(&self) -> usize {
        self.negatives.len()
    }

    /// Whether some row has a negative equal to its target.
    fn has_hit(&self) -> bool {
        self.targets
            .iter()
            .any(|&t| t != 0 && self.negatives.contains(&t))
    }
}

/// The loss and its gradients, in f64.
struct Reference {
    loss: f64,
    dh: Vec<f64>,
    dpos: Vec<f64>,
    dneg: Vec<f64>,
}

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The mean loss over the rows whose target is not 0, and its gradients,
/// written directly from the definitions.
fn reference(c: &Case, kind: Kind, h: &[f64], pos: &[f64], neg: &[f64]) -> Reference {
    let (dim, n) = (c.dim, c.n());
    let count = c.targets.iter().filter(|&&t| t != 0).count();
    let mut out = Reference {
        loss: 0.0,
        dh: vec![0.0; h.len()],
        dpos: vec![0.0; pos.len()],
        dneg: vec![0.0; neg.len()],
    };
    for (r, &target) in c.targets.iter().enumerate() {
        if target == 0 {
            continue;
        }
        let row = r * dim..(r + 1) * dim;
        let (hr, pr) = (&h[row.clone()], &pos[row.clone()]);
        let s_pos = dot64(hr, pr);
        let s: Vec<f64> = (0..n)
            .map(|j| dot64(hr, &neg[j * dim..(j + 1) * dim]))
            .collect();
        let live: Vec<bool> = c.negatives.iter().map(|&id| id != target).collect();
        let (loss, g_pos, g): (f64, f64, Vec<f64>) = match kind {
            Kind::Softmax | Kind::SoftmaxLogQ => {
                let corrected = kind == Kind::SoftmaxLogQ;
                let zp = s_pos
                    - if corrected {
                        c.lq_targets[r] as f64
                    } else {
                        0.0
                    };
                let z: Vec<f64> = (0..n)
                    .map(|j| {
                        s[j] - if corrected {
                            c.lq_negatives[j] as f64
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let m = (0..n).filter(|&j| live[j]).fold(zp, |m, j| m.max(z[j]));
                let sum = (zp - m).exp()
                    + (0..n)
                        .filter(|&j| live[j])
                        .map(|j| (z[j] - m).exp())
                        .sum::<f64>();
                let lse = m + sum.ln();
                let g = (0..n)
                    .map(|j| if live[j] { (z[j] - lse).exp() } else { 0.0 })
                    .collect();
                (lse - zp, (zp - lse).exp() - 1.0, g)
            }
            Kind::Binary(w) => {
                let w = w as f64;
                let loss = w * softplus(-s_pos)
                    + (0..n)
                        .filter(|&j| live[j])
                        .map(|j| softplus(s[j]))
                        .sum::<f64>();
                let g = (0..n)
                    .map(|j| if live[j] { sigmoid(s[j]) } else { 0.0 })
                    .collect();
                (loss, -w * sigmoid(-s_pos), g)
            }
        };
        out.loss += loss;
        let scale = 1.0 / count as f64;
        for k in 0..dim {
            out.dpos[r * dim + k] = scale * g_pos * hr[k];
            out.dh[r * dim + k] += scale * g_pos * pr[k];
            for j in 0..n {
                out.dh[r * dim + k] += scale * g[j] * neg[j * dim + k];
                out.dneg[j * dim + k] += scale * g[j] * hr[k];
            }
        }
    }
    if count > 0 {
        out.loss /= count as f64;
    }
    out
}

/// The op's `SampledLoss` for `kind`, with the case's log Q as `lq`.
fn loss_of<T>(kind: Kind, lq: &(T, T)) -> SampledLoss<'_, T> {
    match kind {
        Kind::Softmax => SampledLoss::Softmax { log_q: None },
        Kind::SoftmaxLogQ => SampledLoss::Softmax {
            log_q: Some(LogQ {
                targets: &lq.0,
                negatives: &lq.1,
            }),
        },
        Kind::Binary(positive_weight) => SampledLoss::Binary { positive_weight },
    }
}

/// The case's tensors on the CPU.
struct CpuCase {
    h: CpuTensor,
    pos: CpuTensor,
    neg: CpuTensor,
    lq: (CpuTensor, CpuTensor),
}

fn on_cpu(c: &Case) -> CpuCase {
    let (rows, n, dim) = (c.rows(), c.n(), c.dim);
    CpuCase {
        h: t(&c.h, &[rows, dim]),
        pos: t(&c.pos, &[rows, dim]),
        neg: t(&c.neg, &[n, dim]),
        lq: (t(&c.lq_targets, &[rows]), t(&c.lq_negatives, &[n])),
    }
}

fn run_cpu(
    c: &Case,
    kind: Kind,
    with_grad: bool,
    chunk: Option<usize>,
) -> SampledLossOutput<CpuTensor> {
    let x = on_cpu(c);
    let (targets, negatives) = (BE.ids(&c.targets), BE.ids(&c.negatives));
    let loss = loss_of(kind, &x.lq);
    match chunk {
        Some(chunk) => sampled_loss_chunked(
            &x.h, &x.pos, &x.neg, &targets, &negatives, loss, with_grad, chunk,
        ),
        None => BE.sampled_loss(&x.h, &x.pos, &x.neg, &targets, &negatives, loss, with_grad),
    }
}

// ----- CPU reference ---------------------------------------------------------

/// Checks the loss and the three gradients against the f64 reference, with
/// the backend's chunking and with `chunk` rows per chunk, and the loss
/// without gradients.
fn cpu_case(c: &Case, kind: Kind, chunk: usize, loss_tol: Tol, grad_tol: Tol) {
    let want = reference(c, kind, &to64(&c.h), &to64(&c.pos), &to64(&c.neg));
    let what = format!(
        "{kind:?} rows {} n {} dim {} chunk {chunk}",
        c.rows(),
        c.n(),
        c.dim
    );
    for out in [
        run_cpu(c, kind, true, None),
        run_cpu(c, kind, true, Some(chunk)),
    ] {
        assert_eq!(out.count, c.targets.iter().filter(|&&t| t != 0).count());
        assert_close(
            &format!("{what} loss"),
            out.loss.data(),
            &[want.loss],
            loss_tol,
        );
        assert_eq!(BE.shape(out.dh.as_ref().unwrap()), [c.rows(), c.dim]);
        assert_eq!(BE.shape(out.dneg.as_ref().unwrap()), [c.n(), c.dim]);
        assert_close(
            &format!("{what} dh"),
            out.dh.unwrap().data(),
            &want.dh,
            grad_tol,
        );
        assert_close(
            &format!("{what} dpos"),
            out.dpos.unwrap().data(),
            &want.dpos,
            grad_tol,
        );
        assert_close(
            &format!("{what} dneg"),
            out.dneg.unwrap().data(),
            &want.dneg,
            grad_tol,
        );
    }
    let no_grad = run_cpu(c, kind, false, Some(chunk));
    assert!(no_grad.dh.is_none() && no_grad.dpos.is_none() && no_grad.dneg.is_none());
    assert_close(
        &format!("{what} loss (no grad)"),
        no_grad.loss.data(),
        &[want.loss],
        loss_tol,
    );
}

const GRAD_F32: Tol = Tol::new(1e-4, 1e-6);

#[test]
fn every_loss_matches_the_reference_across_chunkings() {
    let mut r = rng(190);
    // Rows never a multiple of the chunk; chunk 1, and larger than the rows.
    for (rows, dim, n, chunk) in [(13, 5, 17, 3), (29, 7, 31, 4), (8, 3, 5, 1), (6, 4, 9, 100)] {
        let c = Case::random(&mut r, rows, dim, n, 1.0);
        for kind in KINDS {
            cpu_case(&c, kind, chunk, FWD, GRAD_F32);
        }
    }
}

#[test]
fn a_negative_equal_to_the_target_takes_no_part_in_that_row() {
    let mut r = rng(191);
    let dim = 3;
    // Row 0's target is negatives 1 and 4 (a duplicate), row 2's is
    // negative 3; row 1 has no hit, row 3 is ignored.
    let mut c = Case::random(&mut r, 4, dim, 5, 1.0);
    c.targets = vec![7, 9, 4, 0];
    c.negatives = vec![5, 7, 8, 4, 7];
    for kind in KINDS {
        cpu_case(&c, kind, 2, FWD, GRAD_F32);
        // Row 0 alone: its hits get exactly zero gradient, and its loss is
        // the loss with the hits left out of the negatives.
        let mut row0 = c.clone();
        row0.targets = vec![7, 0, 0, 0];
        let out = run_cpu(&row0, kind, true, None);
        let dneg = out.dneg.unwrap();
        for j in [1, 4] {
            let g = &dneg.data()[j * dim..(j + 1) * dim];
            assert!(
                g.iter().all(|&v| v == 0.0),
                "{kind:?}: negative {j} got {g:?}"
            );
        }
        let keep = [0usize, 2, 3];
        let mut without = row0.clone();
        without.negatives = keep.iter().map(|&j| c.negatives[j]).collect();
        without.lq_negatives = keep.iter().map(|&j| c.lq_negatives[j]).collect();
        without.neg = keep
            .iter()
            .flat_map(|&j| c.neg[j * dim..(j + 1) * dim].to_vec())
            .collect();
        let expected = run_cpu(&without, kind, false, None);
        assert_close(
            &format!("{kind:?}: masked = left out"),
            out.loss.data(),
            expected.loss.data(),
            Tol::new(1e-6, 1e-7),
        );
    }
}

#[test]
fn all_targets_ignored_give_zero_loss_and_gradients() {
    let mut c = Case::random(&mut rng(192), 4, 3, 6, 1.0);
    c.targets = vec![0; 4];
    for kind in KINDS {
        let out = run_cpu(&c, kind, true, None);
        assert_eq!(out.count, 0);
        assert_eq!(out.loss.data(), [0.0]);
        for g in [out.dh, out.dpos, out.dneg] {
            assert!(g.unwrap().data().iter().all(|&v| v == 0.0));
        }
    }
}

#[test]
fn large_logits_stay_finite() {
    let mut r = rng(193);
    let mut c = Case::random(&mut r, 11, 12, 23, 60.0);
    c.neg.iter_mut().for_each(|v| *v *= 60.0);
    let row = |x: &[f32], i: usize| to64(&x[i * 12..(i + 1) * 12]);
    let largest = (0..c.rows())
        .flat_map(|i| (0..c.n()).map(move |j| (i, j)))
        .map(|(i, j)| dot64(&row(&c.h, i), &row(&c.neg, j)).abs())
        .fold(0.0f64, f64::max);
    assert!(largest > 5e3, "test logits reach only {largest}");
    // f32 logits of size ~1e4 carry absolute errors ~1e-3: the loss (also
    // ~1e3..1e4) at rel 1e-5; gradients of saturated softmax and sigmoid
    // at rel 1e-4 with an absolute floor.
    for kind in KINDS {
        cpu_case(&c, kind, 4, Tol::new(1e-5, 1e-4), Tol::new(1e-4, 1e-5));
    }
}

#[test]
fn backward_matches_finite_differences() {
    let mut r = rng(194);
    let mut c = Case::random(&mut r, 6, 4, 7, 1.0);
    c.targets = vec![3, 0, 8, 1, 0, 5];
    c.negatives = vec![2, 8, 11, 3, 3, 14, 6];
    assert!(c.has_hit());
    let (h64, pos64, neg64) = (to64(&c.h), to64(&c.pos), to64(&c.neg));
    for kind in KINDS {
        let out = run_cpu(&c, kind, true, Some(2));
        check_grad(&format!("{kind:?} dh"), &c.h, out.dh.unwrap().data(), |h| {
            reference(&c, kind, h, &pos64, &neg64).loss
        });
        check_grad(
            &format!("{kind:?} dpos"),
            &c.pos,
            out.dpos.unwrap().data(),
            |p| reference(&c, kind, &h64, p, &neg64).loss,
        );
        check_grad(
            &format!("{kind:?} dneg"),
            &c.neg,
            out.dneg.unwrap().data(),
            |ng| reference(&c, kind, &h64, &pos64, ng).loss,
        );
    }
}

#[test]
fn nan_propagates_on_the_cpu() {
    let mut c = Case::random(&mut rng(195), 5, 3, 6, 1.0);
    c.targets = vec![1, 2, 3, 0, 4];
    c.negatives = vec![5, 6, 7, 8, 9, 3];
    // A NaN in negative 0's row of the table: every row scores it.
    c.neg[1] = f32::NAN;
    for kind in KINDS {
        let out = run_cpu(&c, kind, true, None);
        assert!(
            out.loss.data()[0].is_nan(),
            "{kind:?}: loss {:?}",
            out.loss.data()
        );
        let dneg = out.dneg.unwrap();
        assert!(dneg.data()[..3].iter().all(|v| v.is_nan()), "{kind:?}");
    }
    // Only in the masked negative (id 3 = row 2's target): row 2 does not
    // see it, the other rows do.
    let mut c2 = c.clone();
    c2.neg = uniform(&mut rng(196), 6 * 3, 1.0);
    c2.neg[5 * 3] = f32::NAN;
    c2.targets = vec![0, 0, 3, 0, 0];
    for kind in KINDS {
        let out = run_cpu(&c2, kind, true, None);
        assert!(out.loss.data()[0].is_finite(), "{kind:?}");
        let dneg = out.dneg.unwrap();
        assert!(dneg.data()[15..18].iter().all(|&g| g == 0.0), "{kind:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn prop_every_loss(rows in 1usize..20, dim in 1usize..9, n in 1usize..30,
                       chunk in 1usize..8, seed: u64) {
        let c = Case::random(&mut rng(seed), rows, dim, n, 2.0);
        for kind in KINDS {
            cpu_case(&c, kind, chunk, FWD, GRAD_F32);
        }
    }
}

// ----- GPU against CPU ---------------------------------------------------------

/// Runs `c` on both backends and compares loss and gradients. The logits are
/// bounded by `logit_bound`: `exp` and `log` (and sigmoid's `exp`) have a
/// relative error of a few ulps of their argument, about `4 u logit_bound`
/// (u = 2^-24), which widens the relative tolerance for large logits.
fn check_pair(p: &BackendPair, c: &Case, kind: Kind, logit_bound: f64, h_scale: f64) {
    let (rows, n, dim) = (c.rows(), c.n(), c.dim);
    let (ch, gh) = p.tensor(&c.h, &[rows, dim]);
    let (cp, gp) = p.tensor(&c.pos, &[rows, dim]);
    let (cn, gn) = p.tensor(&c.neg, &[n, dim]);
    let (clt, glt) = p.tensor(&c.lq_targets, &[rows]);
    let (cln, gln) = p.tensor(&c.lq_negatives, &[n]);
    let (ct, gt) = p.ids(&c.targets);
    let (cneg, gneg) = p.ids(&c.negatives);
    let (clq, glq) = ((clt, cln), (glt, gln));
    let cpu = p
        .cpu
        .sampled_loss(&ch, &cp, &cn, &ct, &cneg, loss_of(kind, &clq), true);
    let gpu = p
        .gpu
        .sampled_loss(&gh, &gp, &gn, &gt, &gneg, loss_of(kind, &glq), true);
    assert_eq!(cpu.count, gpu.count);
    let what = format!("{kind:?} rows {rows} n {n} dim {dim}");
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
        ("dpos", &cpu.dpos, &gpu.dpos),
        ("dneg", &cpu.dneg, &gpu.dneg),
    ] {
        p.check(
            &format!("{what} {name}"),
            c.as_ref().unwrap(),
            g.as_ref().unwrap(),
            grad_tol,
        );
    }
    let no_grad = p
        .gpu
        .sampled_loss(&gh, &gp, &gn, &gt, &gneg, loss_of(kind, &glq), false);
    assert!(no_grad.dh.is_none() && no_grad.dpos.is_none() && no_grad.dneg.is_none());
    assert_eq!(p.gpu.to_vec(&no_grad.loss), p.gpu.to_vec(&gpu.loss));
}

#[test]
fn every_loss_matches_cpu() {
    let Some(p) = BackendPair::new() else { return };
    let mut r = rng(200);
    // Odd sizes, n below and above the workgroup (256), dim 1.
    for (rows, dim, n) in [(1, 1, 1), (37, 16, 101), (300, 64, 1000), (70, 9, 257)] {
        let mut c = Case::random(&mut r, rows, dim, n, 1.0);
        c.targets[0] = c.negatives[0]; // a hit in the first row
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
    let c = Case::random(&mut r, 40, 16, 50, 1000.0);
    for kind in KINDS {
        check_pair(&p, &c, kind, 1000.0 * 16.0, 1000.0);
    }
}

#[test]
fn gpu_all_targets_ignored() {
    let Some(p) = BackendPair::new() else { return };
    let mut c = Case::random(&mut rng(202), 12, 8, 30, 1.0);
    c.targets = vec![0; 12];
    for kind in KINDS {
        check_pair(&p, &c, kind, 8.0, 1.0);
    }
}

#[test]
fn gpu_in_small_chunks() {
    let mut r = rng(203);
    // h (31 x 16) fits a 2 KiB binding; neg (101 x 16) does not.
    let c = Case::random(&mut r, 31, 16, 101, 1.0);
    // 3 rows of logits per chunk (the kept rows are not a multiple of 3).
    let chunky = BackendPair::with(GpuOptions {
        ce_chunk_bytes: 3 * 4 * 101,
        ..GpuOptions::default()
    });
    // 2 KiB bindings: neg is split inside every product and a logits chunk
    // holds at most 4 rows.
    let narrow = BackendPair::narrow(2048);
    for p in [chunky, narrow].into_iter().flatten() {
        for kind in KINDS {
            check_pair(&p, &c, kind, 16.0, 1.0);
        }
    }
}

#[test]
fn nan_and_infinities_propagate_like_the_cpu() {
    let Some(p) = BackendPair::new() else { return };
    let mut c = Case::random(&mut rng(204), 6, 3, 300, 1.0);
    c.targets = vec![1, 2, 3, 4, 0, 6];
    for id in c.negatives.iter_mut() {
        *id += 100;
    }
    c.negatives[250] = 3; // row 2's hit
    c.neg[7 * 3] = f32::NAN; // every row scores negative 7
    c.neg[250 * 3] = f32::INFINITY; // only row 2 would, and it is masked
    c.pos[3 * 3 + 1] = f32::NEG_INFINITY; // row 3's positive logit
    let (rows, n, dim) = (c.rows(), c.n(), c.dim);
    let (ch, gh) = p.tensor(&c.h, &[rows, dim]);
    let (cp, gp) = p.tensor(&c.pos, &[rows, dim]);
    let (cn, gn) = p.tensor(&c.neg, &[n, dim]);
    let (ct, gt) = p.ids(&c.targets);
    let (cneg, gneg) = p.ids(&c.negatives);
    let tol = Tol::new(1e-4, 1e-6);
    for kind in [Kind::Softmax, Kind::Binary(0.5)] {
        let none = (t(&[0.0], &[1]), t(&[0.0], &[1]));
        let gnone = (p.gpu.tensor(&[0.0], &[1]), p.gpu.tensor(&[0.0], &[1]));
        let cpu = p
            .cpu
            .sampled_loss(&ch, &cp, &cn, &ct, &cneg, loss_of(kind, &none), true);
        let gpu = p
            .gpu
            .sampled_loss(&gh, &gp, &gn, &gt, &gneg, loss_of(kind, &gnone), true);
        assert!(cpu.loss.data()[0].is_nan(), "{kind:?}");
        p.check_with_non_finite(&format!("{kind:?} loss"), &cpu.loss, &gpu.loss, tol);
        for (name, c, g) in [
            ("dh", &cpu.dh, &gpu.dh),
            ("dpos", &cpu.dpos, &gpu.dpos),
            ("dneg", &cpu.dneg, &gpu.dneg),
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
