//! Causal multi-head self-attention with key padding, forward and backward.
//!
//! Work is split over sequences (one rayon task per sequence, all heads):
//! a sequence owns a contiguous block of rows of the context, of `dqkv` and
//! of the probabilities, so tasks never share an output.

use super::par::{for_each_chunk, for_each_chunk2};
use super::simd::simd_dispatch;
use super::tensor::{CpuIds, CpuTensor};
use crate::{AttentionShape, Dropout, contract};

/// `sum(a[i] * b[i])` with eight independent partial sums (fixed order;
/// lets the compiler vectorise).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y += s * x`.
#[inline(always)]
fn axpy(s: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += s * x;
    }
}

/// The dropout factor of probability `(b, h, i, j)` (1 without dropout).
#[inline(always)]
fn drop_factor(
    dropout: Option<&Dropout>,
    s: AttentionShape,
    b: usize,
    h: usize,
    i: usize,
    j: usize,
) -> f32 {
    match dropout {
        Some(d) => d.factor((((b * s.heads + h) * s.len + i) * s.len + j) as u32),
        None => 1.0,
    }
}

/// Returns the context `[batch * len, dim]` and the probabilities before
/// dropout `[batch, heads, len, len]` (see `Backend::attention`).
pub(super) fn attention(
    qkv: &CpuTensor,
    key_ids: &CpuIds,
    s: AttentionShape,
    dropout: Option<&Dropout>,
) -> (CpuTensor, CpuTensor) {
    let n_probs = contract::attention(qkv.shape(), key_ids.as_slice(), s);
    let (len, dim) = (s.len, s.dim());
    let (qkv, ids) = (qkv.data(), key_ids.as_slice());
    let mut ctx = vec![0.0f32; s.batch * len * dim];
    let mut probs = vec![0.0f32; n_probs];
    for_each_chunk2(
        &mut ctx,
        len * dim,
        &mut probs,
        s.heads * len * len,
        |b, ctx, probs| {
            let qkv = &qkv[b * len * 3 * dim..(b + 1) * len * 3 * dim];
            attend_sequence(s, b, qkv, &ids[b * len..(b + 1) * len], ctx, probs, dropout);
        },
    );
    (
        CpuTensor::new(ctx, &[s.batch * len, dim]),
        CpuTensor::new(probs, &[s.batch, s.heads, len, len]),
    )
}

simd_dispatch! {
    /// Forward of sequence `b`: `qkv` `[len, 3 * dim]`, `ids` `[len]` -> `ctx`
    /// `[len, dim]` and `probs` `[heads, len, len]` (both zeroed on entry).
    fn attend_sequence = attend_sequence_body(
        s: AttentionShape,
        b: usize,
        qkv: &[f32],
        ids: &[u32],
        ctx: &mut [f32],
        probs: &mut [f32],
        dropout: Option<&Dropout>,
    )
}

#[inline(always)]
fn attend_sequence_body(
    s: AttentionShape,
    b: usize,
    qkv: &[f32],
    ids: &[u32],
    ctx: &mut [f32],
    probs: &mut [f32],
    dropout: Option<&Dropout>,
) {
    let (len, dim, hd) = (s.len, s.dim(), s.head_dim);
    let scale = 1.0 / (hd as f32).sqrt();
    for h in 0..s.heads {
        let (q_off, k_off, v_off) = (h * hd, dim + h * hd, 2 * dim + h * hd);
        for i in 0..len {
            let q = &qkv[i * 3 * dim + q_off..][..hd];
            // Only keys j <= i with a non-zero id take part; the rest stay 0.
            let keys = || (0..=i).filter(|&j| ids[j] != 0);
            if keys().next().is_none() {
                // No key to attend to: zero probabilities and context.
                continue;
            }
            let row = &mut probs[(h * len + i) * len..][..len];
            let mut max = f32::NEG_INFINITY;
            for j in keys() {
                row[j] = dot(q, &qkv[j * 3 * dim + k_off..][..hd]) * scale;
                max = max.max(row[j]);
            }
            let mut sum = 0.0f32;
            for j in keys() {
                row[j] = (row[j] - max).exp();
                sum += row[j];
            }
            let inv = 1.0 / sum;
            let out = &mut ctx[i * dim + h * hd..][..hd];
            for j in keys() {
                row[j] *= inv;
                // A pair of probability 0 takes no part, even as 0 * NaN
                // (as in backward).
                if row[j] != 0.0 {
                    let w = row[j] * drop_factor(dropout, s, b, h, i, j);
                    axpy(w, &qkv[j * 3 * dim + v_off..][..hd], out);
                }
            }
        }
    }
}

/// Gradient of the context with respect to `qkv` (see
/// `Backend::attention_backward`). With `P` the saved probabilities,
/// `f` the dropout factors and `dC` the upstream gradient, per head:
/// `dV_j = sum_i P_ij f_ij dC_i`, `dP_ij = f_ij (dC_i . V_j)`,
/// `dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik)`, `dQ_i = scale sum_j dS_ij K_j`,
/// `dK_j = scale sum_i dS_ij Q_i`. Pairs with `P_ij = 0` (masked keys,
/// fully masked rows) take no part, so a NaN or infinite value of a masked
/// position reaches no gradient (not even as 0 * NaN); the others carry NaN
/// and infinities as IEEE arithmetic does.
pub(super) fn attention_backward(
    dctx: &CpuTensor,
    qkv: &CpuTensor,
    probs: &CpuTensor,
    s: AttentionShape,
    dropout: Option<&Dropout>,
) -> CpuTensor {
    contract::attention_backward(dctx.shape(), qkv.shape(), probs.shape(), s);
    let (len, dim) = (s.len, s.dim());
    let (dctx, qkv, probs) = (dctx.data(), qkv.data(), probs.data());
    let mut dqkv = vec![0.0f32; s.batch * len * 3 * dim];
    for_each_chunk(&mut dqkv, len * 3 * dim, |b, dqkv| {
        let qkv = &qkv[b * len * 3 * dim..(b + 1) * len * 3 * dim];
        let dctx = &dctx[b * len * dim..(b + 1) * len * dim];
        let probs = &probs[b * s.heads * len * len..(b + 1) * s.heads * len * len];
        attend_sequence_backward(s, b, qkv, dctx, probs, dqkv, dropout);
    });
    CpuTensor::new(dqkv, &[s.batch * len, 3 * dim])
}

simd_dispatch! {
    /// Backward of sequence `b`: `qkv` `[len, 3 * dim]`, `dctx` `[len, dim]`,
    /// `probs` `[heads, len, len]` -> `dqkv` `[len, 3 * dim]` (zeroed on entry).
    fn attend_sequence_backward = attend_sequence_backward_body(
        s: AttentionShape,
        b: usize,
        qkv: &[f32],
        dctx: &[f32],
        probs: &[f32],
        dqkv: &mut [f32],
        dropout: Option<&Dropout>,
    )
}

#[inline(always)]
fn attend_sequence_backward_body(
    s: AttentionShape,
    b: usize,
    qkv: &[f32],
    dctx: &[f32],
    probs: &[f32],
    dqkv: &mut [f32],
    dropout: Option<&Dropout>,
) {
    let (len, dim, hd) = (s.len, s.dim(), s.head_dim);
    let scale = 1.0 / (hd as f32).sqrt();
    let mut dp = vec![0.0f32; len];
    for h in 0..s.heads {
        let (q_off, k_off, v_off) = (h * hd, dim + h * hd, 2 * dim + h * hd);
        for i in 0..len {
            let p = &probs[(h * len + i) * len..][..len];
            let dc = &dctx[i * dim + h * hd..][..hd];
            let mut sum = 0.0f32;
            for j in (0..=i).filter(|&j| p[j] != 0.0) {
                let f = drop_factor(dropout, s, b, h, i, j);
                let v = &qkv[j * 3 * dim + v_off..][..hd];
                dp[j] = dot(dc, v) * f;
                sum += p[j] * dp[j];
                axpy(p[j] * f, dc, &mut dqkv[j * 3 * dim + v_off..][..hd]);
            }
            for j in (0..=i).filter(|&j| p[j] != 0.0) {
                let ds = p[j] * (dp[j] - sum) * scale;
                let (k, q) = (
                    &qkv[j * 3 * dim + k_off..][..hd],
                    &qkv[i * 3 * dim + q_off..][..hd],
                );
                axpy(ds, k, &mut dqkv[i * 3 * dim + q_off..][..hd]);
                axpy(ds, q, &mut dqkv[j * 3 * dim + k_off..][..hd]);
            }
        }
    }
}
