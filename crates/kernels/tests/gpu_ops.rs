//! Every WGSL kernel against the CPU reference backend, forward and backward,
//! on seeded random inputs.
//!
//! The GPU backend comes from `sasrec_kernels::gpu::test_backend()`: any
//! adapter, CPU ones (llvmpipe) included. Without one a test prints why and
//! passes, unless `SASREC_REQUIRE_GPU=1` makes it fail. Each comparison
//! states its tolerance (relative, absolute); docs/kernels.md explains them.

use approx::relative_eq;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sasrec_kernels::gpu::{self, GpuOptions, WgpuBackend};
use sasrec_kernels::{AdamStep, AttentionShape, Backend, CpuBackend, Dropout};

/// A tolerance: |gpu - cpu| <= abs, or <= rel * max(|gpu|, |cpu|).
#[derive(Clone, Copy, Debug)]
struct Tol {
    rel: f32,
    abs: f32,
}

/// Bit-for-bit equality.
const EXACT: Tol = Tol { rel: 0.0, abs: 0.0 };

fn assert_close(what: &str, gpu: &[f32], cpu: &[f32], tol: Tol) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
    let mut worst: Option<(usize, f32)> = None;
    let mut failures = 0;
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        assert!(g.is_finite(), "{what}[{i}] = {g} is not finite");
        let ok = if tol.rel == 0.0 && tol.abs == 0.0 {
            g.to_bits() == c.to_bits() || g == c
        } else {
            relative_eq!(g, c, epsilon = tol.abs, max_relative = tol.rel)
        };
        if !ok {
            failures += 1;
            let err = (g - c).abs();
            if worst.is_none_or(|(_, e)| err > e) {
                worst = Some((i, err));
            }
        }
    }
    if let Some((i, err)) = worst {
        panic!(
            "{what}: {failures} of {} values outside {tol:?}; worst at {i}: gpu {} cpu {} (|diff| {err:e})",
            gpu.len(),
            gpu[i],
            cpu[i]
        );
    }
}

/// The two backends, or `None` (skip) when no GPU adapter is available.
fn backends() -> Option<(CpuBackend, WgpuBackend)> {
    Some((CpuBackend::new(), gpu::test_backend()?))
}

/// A GPU backend whose storage bindings hold at most `bytes`, to force the
/// ops to chunk their operands.
fn narrow_gpu(bytes: u64) -> Option<WgpuBackend> {
    gpu::test_backend_with(GpuOptions {
        max_binding_bytes: Some(bytes),
        ..GpuOptions::default()
    })
}

fn random(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// The same values on both backends.
struct Pair<'a> {
    cpu: &'a CpuBackend,
    gpu: &'a WgpuBackend,
}

impl Pair<'_> {
    fn tensor(
        &self,
        data: &[f32],
        shape: &[usize],
    ) -> (
        <CpuBackend as Backend>::Tensor,
        <WgpuBackend as Backend>::Tensor,
    ) {
        (self.cpu.tensor(data, shape), self.gpu.tensor(data, shape))
    }

    fn ids(&self, ids: &[u32]) -> (<CpuBackend as Backend>::Ids, <WgpuBackend as Backend>::Ids) {
        (self.cpu.ids(ids), self.gpu.ids(ids))
    }

    fn check(
        &self,
        what: &str,
        cpu: &<CpuBackend as Backend>::Tensor,
        gpu: &<WgpuBackend as Backend>::Tensor,
        tol: Tol,
    ) {
        assert_eq!(
            self.gpu.shape(gpu),
            self.cpu.shape(cpu),
            "{what}: shapes differ"
        );
        assert_close(what, &self.gpu.to_vec(gpu), &self.cpu.to_vec(cpu), tol);
    }
}

// ----- elementwise ------------------------------------------------------

#[test]
fn elementwise_ops_match_cpu_exactly() {
    let Some((cpu, gpu)) = backends() else { return };
    let p = Pair {
        cpu: &cpu,
        gpu: &gpu,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    // Sizes around the 256-wide workgroup, and an odd 2-D one.
    for shape in [vec![1], vec![255], vec![257], vec![37, 113]] {
        let n: usize = shape.iter().product();
        let (ca, ga) = p.tensor(&random(&mut rng, n, 2.0), &shape);
        let (cb, gb) = p.tensor(&random(&mut rng, n, 2.0), &shape);
        let (cs, gs) = p.tensor(&[-1.75], &[1]);
        // One IEEE operation per element: the results must be identical.
        p.check("add", &cpu.add(&ca, &cb), &gpu.add(&ga, &gb), EXACT);
        p.check("scale", &cpu.scale(&ca, &cs), &gpu.scale(&ga, &gs), EXACT);
        let (cy, gy) = (cpu.relu(&ca), gpu.relu(&ga));
        p.check("relu", &cy, &gy, EXACT);
        p.check(
            "relu_backward",
            &cpu.relu_backward(&cy, &cb),
            &gpu.relu_backward(&gy, &gb),
            EXACT,
        );
        let (mut cacc, mut gacc) = (ca.clone(), ga.clone());
        cpu.add_assign(&mut cacc, &cb);
        gpu.add_assign(&mut gacc, &gb);
        p.check("add_assign", &cacc, &gacc, EXACT);
        // The in-place op must not change the other handle of the buffer.
        p.check("add_assign left its clone alone", &ca, &ga, EXACT);
    }
}

#[test]
fn dropout_masks_are_bit_identical_to_cpu() {
    let Some((cpu, gpu)) = backends() else { return };
    let p = Pair {
        cpu: &cpu,
        gpu: &gpu,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let n = 10_007;
    let x = random(&mut rng, n, 1.0);
    let (cx, gx) = p.tensor(&x, &[n]);
    for (p_drop, site) in [(0.0, 0), (0.1, 3), (0.5, 7), (0.9, 11)] {
        let mask = Dropout::new(p_drop, 1234, 56, site);
        let out = gpu.to_vec(&gpu.dropout(&gx, &mask));
        p.check(
            "dropout",
            &cpu.dropout(&cx, &mask),
            &gpu.dropout(&gx, &mask),
            EXACT,
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

// ----- matmul -----------------------------------------------------------

/// Products of k terms of size <= 1 summed in a different order than the
/// CPU's sgemm: absolute error grows with k (see docs/kernels.md).
fn matmul_tol(k: usize) -> Tol {
    Tol {
        rel: 1e-5,
        abs: 2e-6 * (k as f32).sqrt().max(1.0),
    }
}

fn check_matmuls(p: &Pair<'_>, rng: &mut ChaCha8Rng, sizes: &[(usize, usize, usize)]) {
    for &(m, k, n) in sizes {
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                let a_shape = if trans_a { [k, m] } else { [m, k] };
                let b_shape = if trans_b { [n, k] } else { [k, n] };
                let (ca, ga) = p.tensor(&random(rng, m * k, 1.0), &a_shape);
                let (cb, gb) = p.tensor(&random(rng, k * n, 1.0), &b_shape);
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
fn matmul_all_transposes_odd_sizes() {
    let Some((cpu, gpu)) = backends() else { return };
    let p = Pair {
        cpu: &cpu,
        gpu: &gpu,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(3);
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
    let cpu = CpuBackend::new();
    // 1 KiB bindings hold 256 floats: every operand below is split along
    // m, n or k (k splits accumulate partial products).
    let Some(gpu) = narrow_gpu(1024) else { return };
    let p = Pair {
        cpu: &cpu,
        gpu: &gpu,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    check_matmuls(&p, &mut rng, &[(50, 40, 70), (9, 300, 3), (130, 5, 90)]);
}

#[test]
fn matmul_accumulate_adds_to_the_accumulator() {
    let Some((cpu, gpu)) = backends() else { return };
    let p = Pair {
        cpu: &cpu,
        gpu: &gpu,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (m, k, n) = (33, 70, 21);
    let (ca, ga) = p.tensor(&random(&mut rng, m * k, 1.0), &[k, m]);
    let (cb, gb) = p.tensor(&random(&mut rng, k * n, 1.0), &[k, n]);
    let (cacc, gacc) = p.tensor(&random(&mut rng, m * n, 1.0), &[m, n]);
    let mut acc = gacc.clone();
    gpu.matmul_accumulate(&mut acc, &ga, &gb, true, false);
    let expected = cpu.add(&cacc, &cpu.matmul(&ca, &cb, true, false));
    p.check("matmul_accumulate", &expected, &acc, matmul_tol(k));
    p.check(
        "matmul_accumulate left its clone alone",
        &cacc,
        &gacc,
        EXACT,
    );
}

#[test]
fn linear_with_and_without_bias() {
    let Some((cpu, gpu)) = backends() else { return };
    let p = Pair {
        cpu: &cpu,
        gpu: &gpu,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let (rows, inp, out) = (77, 48, 67);
    let (cx, gx) = p.tensor(&random(&mut rng, rows * inp, 1.0), &[rows, inp]);
    let (cw, gw) = p.tensor(&random(&mut rng, out * inp, 1.0), &[out, inp]);
    let (cb, gb) = p.tensor(&random(&mut rng, out, 1.0), &[out]);
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

#[test]
fn sum_rows_multi_level_reduction() {
    let Some((cpu, gpu)) = backends() else { return };
    let p = Pair {
        cpu: &cpu,
        gpu: &gpu,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    // 70_000 rows: 274 partial rows, then 2, then 1.
    for (rows, cols) in [(1, 5), (300, 65), (70_000, 3)] {
        let (cx, gx) = p.tensor(&random(&mut rng, rows * cols, 1.0), &[rows, cols]);
        let tol = Tol {
            rel: 1e-5,
            abs: 1e-6 * (rows as f32).sqrt(),
        };
        p.check("sum_rows", &cpu.sum_rows(&cx), &gpu.sum_rows(&gx), tol);
    }
}

// ----- layer norm ---------------------------------------------------------

#[test]
fn layer_norm_forward_and_backward() {
    let Some((cpu, gpu)) = backends() else { return };
    let p = Pair {
        cpu: &cpu,
        gpu: &gpu,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    // Widths below, at and above the 128-wide workgroup; 600 rows make the
    // dgamma/dbeta reduction take two levels.
    for (rows, dim) in [(1, 1), (37, 50), (5, 300), (600, 64)] {
        let mut x = random(&mut rng, rows * dim, 2.0);
        // An offset mean exercises the two-pass variance.
        x.iter_mut().for_each(|v| *v += 3.0);
        let (cx, gx) = p.tensor(&x, &[rows, dim]);
        let (cg, gg) = p.tensor(&random(&mut rng, dim, 1.0), &[dim]);
        let (cb, gb) = p.tensor(&random(&mut rng, dim, 1.0), &[dim]);
        let (cdy, gdy) = p.tensor(&random(&mut rng, rows * dim, 1.0), &[rows, dim]);
        let (cy, cstats) = cpu.layer_norm(&cx, &cg, &cb, 1e-5);
        let (gy, gstats) = gpu.layer_norm(&gx, &gg, &gb, 1e-5);
        let tol = Tol {
            rel: 1e-5,
            abs: 1e-5,
        };
        p.check("layer_norm y", &cy, &gy, tol);
        p.check("layer_norm stats", &cstats, &gstats, tol);
        let (cdx, cdg, cdb) = cpu.layer_norm_backward(&cdy, &cx, &cg, &cstats);
        let (gdx, gdg, gdb) = gpu.layer_norm_backward(&gdy, &gx, &gg, &gstats);
        p.check(
            "layer_norm dx",
            &cdx,
            &gdx,
            Tol {
                rel: 1e-4,
                abs: 1e-5,
            },
        );
        let sum_tol = Tol {
            rel: 1e-5,
            abs: 1e-5 * (rows as f32).sqrt(),
        };
        p.check("layer_norm dgamma", &cdg, &gdg, sum_tol);
        p.check("layer_norm dbeta", &cdb, &gdb, sum_tol);
    }
}

// ----- embedding ------------------------------------------------------------

fn check_embedding(p: &Pair<'_>, rng: &mut ChaCha8Rng, vocab: usize, dim: usize) {
    // Repeated ids and padding (0) in every pattern.
    let ids: Vec<u32> = (0..97).map(|_| rng.random_range(0..vocab as u32)).collect();
    let ids = [&[0u32, 0, 3, 3, 3][..], &ids].concat();
    let (ct, gt) = p.tensor(&random(rng, vocab * dim, 1.0), &[vocab, dim]);
    let (cids, gids) = p.ids(&ids);
    p.check(
        "embedding",
        &p.cpu.embedding(&ct, &cids),
        &p.gpu.embedding(&gt, &gids),
        EXACT,
    );
    let (cdy, gdy) = p.tensor(&random(rng, ids.len() * dim, 1.0), &[ids.len(), dim]);
    for padding in [Some(0), None] {
        // Sums in increasing position order on both sides: identical.
        p.check(
            &format!("embedding_backward padding {padding:?}"),
            &p.cpu.embedding_backward(&cdy, &cids, vocab, padding),
            &p.gpu.embedding_backward(&gdy, &gids, vocab, padding),
            EXACT,
        );
    }
}

#[test]
fn embedding_gather_and_scatter_add() {
    let Some((cpu, gpu)) = backends() else { return };
    let p = Pair {
        cpu: &cpu,
        gpu: &gpu,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    check_embedding(&p, &mut rng, 23, 10);
    check_embedding(&p, &mut rng, 1000, 67);
}

#[test]
fn embedding_table_chunked_across_small_bindings() {
    let cpu = CpuBackend::new();
    // 2 KiB bindings: the 1000 x 3 table is bound ~160 rows at a time.
    let Some(gpu) = narrow_gpu(2048) else { return };
    let p = Pair {
        cpu: &cpu,
        gpu: &gpu,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    check_embedding(&p, &mut rng, 1000, 3);
}

// ----- attention ------------------------------------------------------------

/// Key ids for `batch` left-padded sequences of `len`: sequence b has b * 3
/// padding slots (so sequence 0 has none and late ones are all padding).
fn left_padded_ids(batch: usize, len: usize) -> Vec<u32> {
    (0..batch)
        .flat_map(|b| (0..len).map(move |j| if j < b * 3 { 0 } else { (1 + j) as u32 }))
        .collect()
}

fn check_attention(p: &Pair<'_>, rng: &mut ChaCha8Rng, shape: AttentionShape, ids: &[u32]) {
    let tokens = shape.batch * shape.len;
    let dim = shape.dim();
    let (cqkv, gqkv) = p.tensor(&random(rng, tokens * 3 * dim, 1.0), &[tokens, 3 * dim]);
    let (cdctx, gdctx) = p.tensor(&random(rng, tokens * dim, 1.0), &[tokens, dim]);
    let (cids, gids) = p.ids(ids);
    // Softmax rows of up to len terms, then dot products over head_dim and
    // len: a few float roundings per term, in a different order.
    let tol = Tol {
        rel: 1e-4,
        abs: 2e-6 * ((shape.len + shape.head_dim) as f32).sqrt(),
    };
    for mask in [None, Some(Dropout::new(0.3, 7, 2, 5))] {
        let label = if mask.is_some() { " (dropout)" } else { "" };
        let (cctx, cprobs) = p.cpu.attention(&cqkv, &cids, shape, mask.as_ref());
        let (gctx, gprobs) = p.gpu.attention(&gqkv, &gids, shape, mask.as_ref());
        p.check(&format!("attention probs{label}"), &cprobs, &gprobs, tol);
        p.check(&format!("attention ctx{label}"), &cctx, &gctx, tol);
        let cd = p
            .cpu
            .attention_backward(&cdctx, &cqkv, &cprobs, shape, mask.as_ref());
        let gd = p
            .gpu
            .attention_backward(&gdctx, &gqkv, &gprobs, shape, mask.as_ref());
        p.check(&format!("attention dqkv{label}"), &cd, &gd, tol);

        // Queries with no visible key: zero context and zero gradient.
        let ctx = p.gpu.to_vec(&gctx);
        let dqkv = p.gpu.to_vec(&gd);
        for b in 0..shape.batch {
            for i in 0..shape.len {
                let visible = (0..=i).any(|j| ids[b * shape.len + j] != 0);
                let row = b * shape.len + i;
                if !visible {
                    assert!(ctx[row * dim..(row + 1) * dim].iter().all(|&v| v == 0.0));
                    assert!(
                        dqkv[row * 3 * dim..row * 3 * dim + dim]
                            .iter()
                            .all(|&v| v == 0.0)
                    );
                }
            }
        }
    }
}

#[test]
fn attention_with_padding_and_fully_masked_rows() {
    let Some((cpu, gpu)) = backends() else { return };
    let p = Pair {
        cpu: &cpu,
        gpu: &gpu,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    // Sequence 3 of len 9 is all padding; others have padded prefixes.
    let shape = AttentionShape {
        batch: 4,
        len: 9,
        heads: 2,
        head_dim: 5,
    };
    check_attention(&p, &mut rng, shape, &left_padded_ids(4, 9));
}

#[test]
fn attention_long_sequences_and_wide_heads() {
    let Some((cpu, gpu)) = backends() else { return };
    let p = Pair {
        cpu: &cpu,
        gpu: &gpu,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    // len 512 exceeds the 128-wide workgroup 4 times over; head_dim 128 is
    // the kernel's maximum.
    let shape = AttentionShape {
        batch: 1,
        len: 512,
        heads: 1,
        head_dim: 16,
    };
    let ids: Vec<u32> = (0..512).map(|j| if j < 100 { 0 } else { 1 }).collect();
    check_attention(&p, &mut rng, shape, &ids);
    let shape = AttentionShape {
        batch: 2,
        len: 20,
        heads: 2,
        head_dim: 128,
    };
    check_attention(&p, &mut rng, shape, &left_padded_ids(2, 20));
}

// ----- cross-entropy ---------------------------------------------------------

fn check_cross_entropy(
    p: &Pair<'_>,
    rng: &mut ChaCha8Rng,
    rows: usize,
    dim: usize,
    vocab: usize,
    h_scale: f32,
    targets: &[u32],
) {
    let (ch, gh) = p.tensor(&random(rng, rows * dim, h_scale), &[rows, dim]);
    let (ct, gt) = p.tensor(&random(rng, vocab * dim, 1.0), &[vocab, dim]);
    let (cids, gids) = p.ids(targets);
    let c = p.cpu.cross_entropy(&ch, &ct, &cids, true);
    let g = p.gpu.cross_entropy(&gh, &gt, &gids, true);
    assert_eq!(c.count, g.count, "cross_entropy count");
    // |logit| <= h_scale * dim. exp(x - lse) has a relative error of a few
    // ulps of |x - lse|, i.e. about 4 u |logit| (u = 2^-24): large logits
    // widen the relative tolerance of everything downstream of the softmax.
    let logit_bound = h_scale * dim as f32;
    let softmax_rel = 4.0 * (f32::EPSILON / 2.0) * logit_bound;
    p.check(
        "cross_entropy loss",
        &c.loss,
        &g.loss,
        Tol {
            rel: 1e-5,
            abs: softmax_rel,
        },
    );
    let grad_tol = Tol {
        rel: softmax_rel.max(1e-4),
        abs: 1e-7 * h_scale.max(1.0) * (rows as f32).sqrt(),
    };
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
    let Some((cpu, gpu)) = backends() else { return };
    let p = Pair {
        cpu: &cpu,
        gpu: &gpu,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for (rows, dim, vocab) in [(1, 1, 2), (37, 16, 101), (300, 64, 1000)] {
        let targets = [&[1u32][..], &random_targets(&mut rng, rows - 1, vocab)].concat();
        check_cross_entropy(&p, &mut rng, rows, dim, vocab, 1.0, &targets);
    }
}

#[test]
fn cross_entropy_large_logits_stay_finite() {
    let Some((cpu, gpu)) = backends() else { return };
    let p = Pair {
        cpu: &cpu,
        gpu: &gpu,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    // |h| up to 1000 over 16 dims: logits in the thousands to ~1e4.
    let targets = random_targets(&mut rng, 40, 50);
    check_cross_entropy(&p, &mut rng, 40, 16, 50, 1000.0, &targets);
}

#[test]
fn cross_entropy_all_targets_ignored() {
    let Some((cpu, gpu)) = backends() else { return };
    let p = Pair {
        cpu: &cpu,
        gpu: &gpu,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    let (rows, dim, vocab) = (12, 8, 30);
    let (ch, gh) = p.tensor(&random(&mut rng, rows * dim, 1.0), &[rows, dim]);
    let (ct, gt) = p.tensor(&random(&mut rng, vocab * dim, 1.0), &[vocab, dim]);
    let (cids, gids) = p.ids(&vec![0; rows]);
    let c = cpu.cross_entropy(&ch, &ct, &cids, true);
    let g = gpu.cross_entropy(&gh, &gt, &gids, true);
    assert_eq!(g.count, 0);
    p.check("loss", &c.loss, &g.loss, EXACT);
    assert_eq!(gpu.to_vec(&g.loss), vec![0.0]);
    p.check("dh", c.dh.as_ref().unwrap(), g.dh.as_ref().unwrap(), EXACT);
    p.check(
        "dtable",
        c.dtable.as_ref().unwrap(),
        g.dtable.as_ref().unwrap(),
        EXACT,
    );
}

#[test]
fn cross_entropy_in_small_chunks() {
    let cpu = CpuBackend::new();
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    // h (31 x 16) and the kept rows fit a 2 KiB binding; the table does not.
    let (rows, dim, vocab) = (31, 16, 101);
    let targets = random_targets(&mut rng, rows, vocab);
    // 3 rows of logits per chunk (the kept rows are not a multiple of 3).
    let chunky = gpu::test_backend_with(GpuOptions {
        ce_chunk_bytes: 3 * 4 * vocab as u64,
        ..GpuOptions::default()
    });
    // 2 KiB bindings: the table (1616 floats) is split inside every product
    // and a logits chunk holds at most 4 rows.
    let narrow = narrow_gpu(2048);
    for gpu in [chunky, narrow].into_iter().flatten() {
        let p = Pair {
            cpu: &cpu,
            gpu: &gpu,
        };
        check_cross_entropy(&p, &mut rng, rows, dim, vocab, 1.0, &targets);
    }
}

// ----- Adam ---------------------------------------------------------------

#[test]
fn adam_several_steps() {
    let Some((cpu, gpu)) = backends() else { return };
    let p = Pair {
        cpu: &cpu,
        gpu: &gpu,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let n = 1029;
    let (mut cp, mut gp) = p.tensor(&random(&mut rng, n, 1.0), &[n]);
    let (mut cm, mut gm) = (cpu.zeros(&[n]), gpu.zeros(&[n]));
    let (mut cv, mut gv) = (cpu.zeros(&[n]), gpu.zeros(&[n]));
    for step in 1..=5 {
        let (cg, gg) = p.tensor(&random(&mut rng, n, 0.1), &[n]);
        let hp = AdamStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step,
        };
        cpu.adam(&mut cp, &cg, &mut cm, &mut cv, &hp);
        gpu.adam(&mut gp, &gg, &mut gm, &mut gv, &hp);
    }
    // A few roundings per step (sqrt, division) that may differ by an ulp.
    let tol = Tol {
        rel: 1e-5,
        abs: 1e-7,
    };
    p.check("adam m", &cm, &gm, tol);
    p.check("adam v", &cv, &gv, tol);
    p.check("adam param", &cp, &gp, tol);
}

// ----- memory, profiling, adapters ------------------------------------------

#[test]
fn pooled_buffers_come_back_zeroed_and_uploads_land_in_order() {
    let Some(gpu) = gpu::test_backend() else {
        return;
    };
    // Free a buffer, then take the same size class twice: zeros() must
    // clear it and an upload must not overwrite a value still being read.
    let a = gpu.tensor(&[5.0; 300], &[300]);
    let doubled = gpu.add(&a, &a);
    drop(a);
    let z = gpu.zeros(&[300]);
    let b = gpu.tensor(&[1.0; 300], &[300]);
    assert_eq!(gpu.to_vec(&doubled), vec![10.0; 300]);
    assert_eq!(gpu.to_vec(&z), vec![0.0; 300]);
    assert_eq!(gpu.to_vec(&b), vec![1.0; 300]);
}

#[test]
fn list_adapters_reports_the_test_adapter() {
    let Some(gpu) = gpu::test_backend() else {
        return;
    };
    let adapters = gpu::list_adapters();
    assert!(
        adapters.iter().any(|a| a.name == gpu.adapter_name()),
        "{adapters:?}"
    );
    assert!(
        adapters
            .iter()
            .all(|a| a.max_storage_buffer_binding_size > 0)
    );
    assert!(gpu.name().contains(gpu.adapter_name()));
}

#[test]
fn profiling_reports_time_per_kernel() {
    let Some(gpu) = gpu::test_backend_with(GpuOptions::default()) else {
        return;
    };
    if gpu.enable_profiling().is_err() {
        eprintln!("skipping: no timestamp queries on {}", gpu.adapter_name());
        return;
    }
    let a = gpu.tensor(&[1.0; 64 * 64], &[64, 64]);
    let c = gpu.matmul(&a, &a, false, true);
    let _ = gpu.to_vec(&c);
    let report = gpu.profile_report();
    let matmul = report
        .iter()
        .find(|k| k.kernel == "matmul.wgsl:matmul[nt]")
        .unwrap_or_else(|| panic!("no matmul in {report:?}"));
    assert_eq!(matmul.calls, 1);
    assert!(matmul.total_ms >= 0.0);
    gpu.reset_profile();
    assert!(gpu.profile_report().is_empty());
}
