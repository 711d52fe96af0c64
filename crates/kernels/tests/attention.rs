//! The attention family (causal multi-head self-attention with key padding
//! and dropout on the probabilities): the CPU backend against a plain f64
//! attention and finite differences of it, then the WGSL kernels against
//! the CPU.

mod common;

use common::{BE, FWD, check_grad, dot64, padded_ids, rng, t, to64, uniform};
use proptest::prelude::*;
use rand_chacha::ChaCha8Rng;
use sasrec_kernels::testing::{BackendPair, Tol, assert_close};
use sasrec_kernels::{AttentionShape, Backend, Dropout};

// ----- CPU reference ---------------------------------------------------------

/// Returns (context, probabilities before dropout).
fn ref_attention(
    qkv: &[f64],
    ids: &[u32],
    s: AttentionShape,
    dropout: Option<&Dropout>,
) -> (Vec<f64>, Vec<f64>) {
    let (l, hd, d) = (s.len, s.head_dim, s.dim());
    let mut ctx = vec![0.0; s.batch * l * d];
    let mut probs = vec![0.0; s.batch * s.heads * l * l];
    for b in 0..s.batch {
        for h in 0..s.heads {
            for i in 0..l {
                let keys: Vec<usize> = (0..=i).filter(|&j| ids[b * l + j] != 0).collect();
                if keys.is_empty() {
                    continue;
                }
                let q = |c: usize| qkv[(b * l + i) * 3 * d + h * hd + c];
                let k = |j: usize, c: usize| qkv[(b * l + j) * 3 * d + d + h * hd + c];
                let v = |j: usize, c: usize| qkv[(b * l + j) * 3 * d + 2 * d + h * hd + c];
                let scores: Vec<f64> = keys
                    .iter()
                    .map(|&j| (0..hd).map(|c| q(c) * k(j, c)).sum::<f64>() / (hd as f64).sqrt())
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                for (&j, s_j) in keys.iter().zip(&scores) {
                    let idx = ((b * s.heads + h) * l + i) * l + j;
                    let p = (s_j - max).exp() / z;
                    probs[idx] = p;
                    let f = dropout.map_or(1.0, |m| m.factor(idx as u32) as f64);
                    for c in 0..hd {
                        ctx[(b * l + i) * d + h * hd + c] += p * f * v(j, c);
                    }
                }
            }
        }
    }
    (ctx, probs)
}

fn attention_forward_case(seed: u64, s: AttentionShape, ids: &[u32], dropout: Option<&Dropout>) {
    let mut r = rng(seed);
    let rows = s.batch * s.len;
    let qkv = uniform(&mut r, rows * 3 * s.dim(), 1.5);
    let (ctx, probs) = BE.attention(&t(&qkv, &[rows, 3 * s.dim()]), &BE.ids(ids), s, dropout);
    assert_eq!(BE.shape(&ctx), [rows, s.dim()]);
    assert_eq!(BE.shape(&probs), [s.batch, s.heads, s.len, s.len]);
    let (ref_ctx, ref_probs) = ref_attention(&to64(&qkv), ids, s, dropout);
    assert_close("attention probs", probs.data(), &ref_probs, FWD);
    assert_close("attention ctx", ctx.data(), &ref_ctx, FWD);
    // Every row sums to 1, or is all zeros when its query sees no key.
    for (row_idx, row) in probs.data().chunks(s.len).enumerate() {
        let (b, i) = (row_idx / (s.heads * s.len), row_idx % s.len);
        let sum: f32 = row.iter().sum();
        let visible = (0..=i).any(|j| ids[b * s.len + j] != 0);
        let expected = if visible { 1.0 } else { 0.0 };
        assert!(
            (sum - expected).abs() < 1e-5,
            "probability row {row_idx} sums to {sum}"
        );
    }
}

#[test]
fn attention_forward_masks_and_padding() {
    let s = AttentionShape {
        batch: 5,
        len: 7,
        heads: 2,
        head_dim: 5,
    };
    let ids: Vec<u32> = [
        [3, 1, 4, 1, 5, 9, 2], // no padding
        [0, 0, 0, 0, 0, 0, 0], // all padding: every row fully masked
        [0, 0, 0, 0, 0, 0, 8], // a single real item
        [0, 0, 6, 2, 7, 1, 8], // left padding
        [4, 0, 2, 0, 3, 0, 1], // interior padding
    ]
    .concat();
    attention_forward_case(70, s, &ids, None);
    attention_forward_case(71, s, &ids, Some(&Dropout::new(0.3, 1, 2, 3)));
}

#[test]
fn attention_forward_len_one_and_fully_masked_batch() {
    let s = AttentionShape {
        batch: 3,
        len: 1,
        heads: 3,
        head_dim: 1,
    };
    attention_forward_case(72, s, &[5, 0, 1], None);
    let s = AttentionShape {
        batch: 2,
        len: 4,
        heads: 1,
        head_dim: 3,
    };
    let rows = 8;
    let qkv = vec![f32::MAX; rows * 9];
    let (ctx, probs) = BE.attention(&t(&qkv, &[rows, 9]), &BE.ids(&[0; 8]), s, None);
    assert!(ctx.data().iter().all(|&v| v == 0.0));
    assert!(probs.data().iter().all(|&v| v == 0.0));
}

#[test]
fn attention_large_on_rayon_pool() {
    let s = AttentionShape {
        batch: 40,
        len: 23,
        heads: 2,
        head_dim: 8,
    };
    let ids = padded_ids(&mut rng(73), s.batch, s.len);
    attention_forward_case(74, s, &ids, Some(&Dropout::new(0.2, 9, 9, 9)));
}

fn attention_backward_case(seed: u64, s: AttentionShape, ids: &[u32], dropout: Option<&Dropout>) {
    let mut r = rng(seed);
    let rows = s.batch * s.len;
    let qkv = uniform(&mut r, rows * 3 * s.dim(), 1.5);
    let dctx = uniform(&mut r, rows * s.dim(), 1.0);
    let tqkv = t(&qkv, &[rows, 3 * s.dim()]);
    let (_, probs) = BE.attention(&tqkv, &BE.ids(ids), s, dropout);
    let dqkv = BE.attention_backward(&t(&dctx, &[rows, s.dim()]), &tqkv, &probs, s, dropout);
    assert_eq!(BE.shape(&dqkv), [rows, 3 * s.dim()]);
    let dctx64 = to64(&dctx);
    check_grad("attention dqkv", &qkv, dqkv.data(), |qkv| {
        dot64(&dctx64, &ref_attention(qkv, ids, s, dropout).0)
    });
    // Queries that see no key pass no gradient to their q.
    for b in 0..s.batch {
        for i in 0..s.len {
            if (0..=i).all(|j| ids[b * s.len + j] == 0) {
                let row = &dqkv.data()[(b * s.len + i) * 3 * s.dim()..][..s.dim()];
                assert!(
                    row.iter().all(|&g| g == 0.0),
                    "masked query {b},{i} got gradient"
                );
            }
        }
    }
}

#[test]
fn attention_backward_matches_finite_differences() {
    let s = AttentionShape {
        batch: 3,
        len: 5,
        heads: 2,
        head_dim: 3,
    };
    let ids: Vec<u32> = [[2, 7, 1, 8, 2], [0, 0, 0, 0, 0], [0, 0, 3, 0, 5]].concat();
    attention_backward_case(80, s, &ids, None);
    attention_backward_case(81, s, &ids, Some(&Dropout::new(0.25, 4, 5, 6)));
    let single = AttentionShape {
        batch: 1,
        len: 1,
        heads: 1,
        head_dim: 2,
    };
    attention_backward_case(82, single, &[4], None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn prop_attention(batch in 1usize..4, len in 1usize..7, heads in 1usize..3,
                      head_dim in 1usize..5, p in 0.0f32..0.5, seed: u64) {
        let s = AttentionShape { batch, len, heads, head_dim };
        let ids = padded_ids(&mut rng(seed), batch, len);
        let drop = Dropout::new(p, seed, 1, 2);
        attention_forward_case(seed, s, &ids, Some(&drop));
        attention_backward_case(seed, s, &ids, Some(&drop));
    }
}

// ----- GPU against CPU ---------------------------------------------------------

/// Key ids for `batch` left-padded sequences of `len`: sequence b has b * 3
/// padding slots (so sequence 0 has none and late ones are all padding).
fn left_padded_ids(batch: usize, len: usize) -> Vec<u32> {
    (0..batch)
        .flat_map(|b| (0..len).map(move |j| if j < b * 3 { 0 } else { (1 + j) as u32 }))
        .collect()
}

fn check_attention(p: &BackendPair, rng: &mut ChaCha8Rng, shape: AttentionShape, ids: &[u32]) {
    let tokens = shape.batch * shape.len;
    let dim = shape.dim();
    let (cqkv, gqkv) = p.tensor(&uniform(rng, tokens * 3 * dim, 1.0), &[tokens, 3 * dim]);
    let (cdctx, gdctx) = p.tensor(&uniform(rng, tokens * dim, 1.0), &[tokens, dim]);
    let (cids, gids) = p.ids(ids);
    // Softmax rows of up to len terms, then dot products over head_dim and
    // len: a few float roundings per term, in a different order.
    let tol = Tol::new(1e-4, 2e-6 * ((shape.len + shape.head_dim) as f64).sqrt());
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
    let Some(p) = BackendPair::new() else { return };
    let mut rng = rng(11);
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
    let Some(p) = BackendPair::new() else { return };
    let mut rng = rng(12);
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

// ----- chunks, large grids, NaN -------------------------------------------------------

#[test]
fn attention_chunked_by_sequences_across_small_bindings() {
    // 8 KiB bindings hold the probabilities of two sequences (2 heads x
    // 20 x 20 floats = 3.2 KB each): 7 sequences go in 4 chunks, dropout
    // masks indexed over the whole batch.
    let Some(p) = BackendPair::narrow(8192) else {
        return;
    };
    let mut rng = rng(13);
    let shape = AttentionShape {
        batch: 7,
        len: 20,
        heads: 2,
        head_dim: 3,
    };
    check_attention(&p, &mut rng, shape, &left_padded_ids(7, 20));
}

#[test]
fn attention_grid_past_65535_workgroups() {
    // batch 256 x 2 heads x len 200 = 102 400 query rows, one workgroup each:
    // more than one grid dimension holds (65 535), so the grid spills into y.
    let Some(p) = BackendPair::new() else { return };
    let mut rng = rng(14);
    let shape = AttentionShape {
        batch: 256,
        len: 200,
        heads: 2,
        head_dim: 32,
    };
    let ids = padded_ids(&mut rng, shape.batch, shape.len);
    check_attention(&p, &mut rng, shape, &ids);
}

#[test]
fn nan_and_infinities_propagate_like_the_cpu() {
    let Some(p) = BackendPair::new() else { return };
    let shape = AttentionShape {
        batch: 2,
        len: 6,
        heads: 2,
        head_dim: 3,
    };
    let (tokens, dim) = (shape.batch * shape.len, shape.dim());
    let mut qkv = uniform(&mut rng(15), tokens * 3 * dim, 1.0);
    // Sequence 0: a NaN in the query of position 2, head 0; +inf in the key
    // of position 4, head 1 (every query that sees it gets inf - inf).
    // Sequence 1: -inf in every key of head 0 (exp(-inf - -inf) = NaN).
    qkv[2 * 3 * dim] = f32::NAN;
    qkv[4 * 3 * dim + dim + 3] = f32::INFINITY;
    for j in 0..shape.len {
        qkv[(shape.len + j) * 3 * dim + dim] = f32::NEG_INFINITY;
    }
    let ids: Vec<u32> = [[1, 1, 1, 1, 1, 1], [0, 0, 3, 4, 5, 6]].concat();
    let (cqkv, gqkv) = p.tensor(&qkv, &[tokens, 3 * dim]);
    let (cids, gids) = p.ids(&ids);
    let (cctx, cprobs) = BE.attention(&cqkv, &cids, shape, None);
    let (gctx, gprobs) = p.gpu.attention(&gqkv, &gids, shape, None);
    let prob = |b: usize, h: usize, i: usize, j: usize| {
        cprobs.data()[((b * shape.heads + h) * shape.len + i) * shape.len + j]
    };
    // Row (0, 0, 2) is NaN where keys are visible, 0 beyond the diagonal.
    assert!((0..=2).all(|j| prob(0, 0, 2, j).is_nan()) && prob(0, 0, 2, 3) == 0.0);
    // Fully masked rows of sequence 1 stay zero, NaN or not.
    assert!((0..6).all(|j| prob(1, 0, 1, j) == 0.0));
    let tol = Tol::new(1e-4, 2e-6 * ((shape.len + shape.head_dim) as f64).sqrt());
    p.check_with_non_finite("attention probs", &cprobs, &gprobs, tol);
    p.check_with_non_finite("attention ctx", &cctx, &gctx, tol);

    let (cdctx, gdctx) = p.tensor(&uniform(&mut rng(16), tokens * dim, 1.0), &[tokens, dim]);
    p.check_with_non_finite(
        "attention dqkv",
        &BE.attention_backward(&cdctx, &cqkv, &cprobs, shape, None),
        &p.gpu
            .attention_backward(&gdctx, &gqkv, &gprobs, shape, None),
        tol,
    );
}
