//! Losses over sampled negatives (`sampled_loss`): sampled softmax (with an
//! optional log-Q correction) and binary cross-entropy with a weighted
//! positive (BCE, gBCE).
//!
//! The rows are split into groups of consecutive rows that share their
//! negatives (the whole batch, a sequence, or a single position). The work
//! is cut into pieces, a piece being up to [`sampled_chunk_rows`] rows of
//! one group whose target is not 0 (ignored rows cost nothing), and pieces
//! are taken in blocks whose logits and gathered negatives stay within
//! [`SampledChunks`]. For each block:
//!
//! ```text
//! neg      = table[the block's negative ids]        [groups in block * n, dim]
//! per piece (in parallel), with its group's neg_g  [n, dim]:
//!   z      = h_piece @ neg_g^T                      [piece rows, n]
//!   s+     = rowwise h . table[target] (- log Q)    [piece rows]
//!   loss  += row loss of (s+, z)                    (f64)
//!   z, ds+ = d row loss / d (z, s+) / count         (z in place: dz)
//!   dh     = dz @ neg_g + ds+ * table[target]       [piece rows, dim]
//!   dneg_p = dz^T @ h_piece                         [n, dim]
//! then in piece order: dtable[id_j] += dneg_p[j], dtable[target] += ds+ * h
//! ```
//!
//! A negative whose id is the row's target takes no part in that row: no
//! loss, and a gradient of exactly 0 (NaN rows included). Every partition
//! is fixed by the sizes and every sum runs in a fixed order, so the result
//! does not depend on the thread count.

use super::cross_entropy::{exp_nonpositive, exp_shifted_sum, max_of};
use super::matmul::gemm;
use rayon::prelude::*;

use super::par::{for_each_chunk, for_each_chunk2};
use super::simd::simd_dispatch;
use super::tensor::{CpuIds, CpuTensor};
use crate::{Negatives, SampledLoss, SampledLossOutput, contract};

/// `ln(1 + y)` for `0 <= y <= 1` within a few ulp, in plain float ops so
/// that loops over it vectorise (`f32::ln_1p` is a libm call per element).
///
/// `ln(1 + y) = 2 atanh(t)` with `t = y / (2 + y) <= 1/3`, and
/// `atanh(t) = t + t^3/3 + .. + t^17/17 + O(t^19)`: the truncation is below
/// `t^18 / 19 < 2e-10` relative. NaN gives NaN.
#[inline(always)]
fn ln_1p_unit(y: f32) -> f32 {
    let t = y / (2.0 + y);
    let t2 = t * t;
    let mut p = 1.0 / 17.0;
    for c in [15.0f32, 13.0, 11.0, 9.0, 7.0, 5.0, 3.0] {
        p = p * t2 + 1.0 / c;
    }
    p = p * t2 + 1.0;
    2.0 * t * p
}

/// `softplus(x) = ln(1 + e^x)` and `sigmoid(x)`, sharing `e^-|x|`.
/// Infinities give their limits; NaN gives NaN for both.
#[inline(always)]
fn softplus_sigmoid<const FMA: bool>(x: f32) -> (f32, f32) {
    let e = exp_nonpositive::<FMA>(-x.abs());
    // Not `x.max(0.0)`, which turns NaN into 0 (the NaN still reaches the
    // sum through `e`, but this way each part keeps it).
    let positive_part = if x > 0.0 { x } else { 0.0 };
    let r = 1.0 / (1.0 + e);
    (
        positive_part + ln_1p_unit(e),
        if x >= 0.0 { r } else { e * r },
    )
}

/// `softplus(x)` and `sigmoid(x)` in f64, for the one positive per row.
fn softplus_sigmoid_f64(x: f64) -> (f64, f64) {
    let e = (-x.abs()).exp();
    let positive_part = if x > 0.0 { x } else { 0.0 };
    let r = 1.0 / (1.0 + e);
    (positive_part + e.ln_1p(), if x >= 0.0 { r } else { e * r })
}

/// Zeroes the entries of `z` whose negative is the row's target.
#[inline(always)]
fn mask_hits(z: &mut [f32], negatives: &[u32], target: u32, masked_value: f32) {
    for (v, &id) in z.iter_mut().zip(negatives) {
        if id == target {
            *v = masked_value;
        }
    }
}

simd_dispatch! {
    /// One row of the sampled softmax: `z` holds the negative logits, `pos`
    /// the positive one (both already log-Q corrected but for `log_q`,
    /// which is subtracted from `z` here). Returns the row's loss and, with
    /// `grad_scale = Some(g)`, the gradient of the positive logit, `z` then
    /// holding the negatives' gradients (all scaled by `g`).
    fn softmax_row = softmax_row_body::<FMA>(
        z: &mut [f32],
        pos: f32,
        negatives: &[u32],
        target: u32,
        log_q: Option<&[f32]>,
        grad_scale: Option<f32>,
    ) -> (f64, f32)
}

#[inline(always)]
fn softmax_row_body<const FMA: bool>(
    z: &mut [f32],
    pos: f32,
    negatives: &[u32],
    target: u32,
    log_q: Option<&[f32]>,
    grad_scale: Option<f32>,
) -> (f64, f32) {
    if let Some(log_q) = log_q {
        for (v, &q) in z.iter_mut().zip(log_q) {
            *v -= q;
        }
    }
    // A masked negative adds exp(-inf) = 0.
    mask_hits(z, negatives, target, f32::NEG_INFINITY);
    // `f32::max` skips NaN; a NaN comes back through exp(NaN - max).
    let max = max_of(z).max(pos);
    let pos_exp = exp_nonpositive::<FMA>(pos - max);
    let sum = exp_shifted_sum::<FMA>(z, max) + pos_exp;
    let loss = (sum as f64).ln() + (max as f64 - pos as f64);
    let dpos = match grad_scale {
        Some(g) => {
            let s = g / sum;
            for v in z.iter_mut() {
                *v *= s;
            }
            mask_hits(z, negatives, target, 0.0);
            pos_exp * s - g
        }
        None => 0.0,
    };
    (loss, dpos)
}

simd_dispatch! {
    /// One row of the binary loss: `positive_weight * softplus(-pos) +
    /// sum_j softplus(z_j)` over the unmasked negatives. Returns the row's
    /// loss and, with `grad_scale = Some(g)`, the gradient of `pos`, `z`
    /// then holding the negatives' gradients `g * sigmoid(z_j)`.
    fn binary_row = binary_row_body::<FMA>(
        z: &mut [f32],
        pos: f32,
        negatives: &[u32],
        target: u32,
        positive_weight: f32,
        grad_scale: Option<f32>,
    ) -> (f64, f32)
}

#[inline(always)]
fn binary_row_body<const FMA: bool>(
    z: &mut [f32],
    pos: f32,
    negatives: &[u32],
    target: u32,
    positive_weight: f32,
    grad_scale: Option<f32>,
) -> (f64, f32) {
    // Eight partial sums in a fixed order, so that the loop vectorises.
    let mut acc = [0.0f32; 8];
    let g = grad_scale.unwrap_or(0.0);
    let (mut zc, mut ic) = (z.chunks_exact_mut(8), negatives.chunks_exact(8));
    for (zs, ids) in (&mut zc).zip(&mut ic) {
        for l in 0..8 {
            let (softplus, sigmoid) = softplus_sigmoid::<FMA>(zs[l]);
            let hit = ids[l] == target;
            acc[l] += if hit { 0.0 } else { softplus };
            zs[l] = if hit { 0.0 } else { g * sigmoid };
        }
    }
    let mut tail = 0.0f32;
    for (v, &id) in zc.into_remainder().iter_mut().zip(ic.remainder()) {
        let (softplus, sigmoid) = softplus_sigmoid::<FMA>(*v);
        let hit = id == target;
        tail += if hit { 0.0 } else { softplus };
        *v = if hit { 0.0 } else { g * sigmoid };
    }
    let negatives_sum = acc.iter().sum::<f32>() + tail;
    // d softplus(-pos) / d pos = -sigmoid(-pos).
    let (softplus, sigmoid) = softplus_sigmoid_f64(-(pos as f64));
    let w = positive_weight as f64;
    let loss = w * softplus + negatives_sum as f64;
    (loss, (-(g as f64) * w * sigmoid) as f32)
}

/// `sum_i a[i] * b[i]` in eight lanes (a fixed order, vectorised).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// How much [`sampled_loss_chunked`] holds at once, in floats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampledChunks {
    /// Logits `[rows, n]` of one block (at least one row's).
    pub logits: usize,
    /// Gathered negatives `[groups, n, dim]` of one block (at least one
    /// group's); their gradients take as much again.
    pub negatives: usize,
}

impl SampledChunks {
    /// The backend's budgets: 8 MiB of logits, 16 MiB of negatives.
    pub const DEFAULT: SampledChunks = SampledChunks {
        logits: (8 << 20) / size_of::<f32>(),
        negatives: (16 << 20) / size_of::<f32>(),
    };
}

/// Rows per piece with `n` negatives: as many as `logits` floats hold (at
/// least 1), rounded down to a multiple of 128 when there are that many
/// (sgemm's 64-row blocks split evenly over 2 or 4 threads). With hundreds
/// of negatives that is thousands of rows, so the `dneg` product of a batch
/// that shares its negatives (inner size = piece rows) is never thin.
fn sampled_chunk_rows(logits: usize, n: usize) -> usize {
    let rows = (logits / n.max(1)).max(1);
    if rows >= 128 { rows / 128 * 128 } else { rows }
}

/// Rows of one group whose target is not 0, computed together.
struct Piece<'a> {
    group: usize,
    rows: &'a [usize],
}

/// What a piece writes: its rows' logits (then their gradients), its rows'
/// (loss, positive logit then its gradient), its rows of `dh`, and its
/// part of the negatives' gradient.
struct PieceOut<'a> {
    z: &'a mut [f32],
    row_out: &'a mut [(f64, f32)],
    dh: &'a mut [f32],
    dneg: &'a mut [f32],
}

/// The inputs every piece reads.
struct Shared<'a> {
    h: &'a [f32],
    table: &'a [f32],
    targets: &'a [u32],
    /// The block's gathered negatives, their ids (and log Q): `n` rows for
    /// each group of the block that has a piece, in order.
    neg: &'a [f32],
    ids: &'a [u32],
    neg_log_q: Option<&'a [f32]>,
    log_q: Option<&'a [f32]>,
    loss: SampledLoss<'a, CpuTensor>,
    grad_scale: Option<f32>,
    dim: usize,
    n: usize,
}

/// One piece, whose group is the block's `g`-th: its logits, row losses
/// and, with gradients, its rows of `dh` and its part of `dneg`.
fn run_piece(s: &Shared<'_>, piece: &Piece<'_>, g: usize, out: PieceOut<'_>) {
    let (dim, n) = (s.dim, s.n);
    let c = piece.rows.len();
    let neg = &s.neg[g * n * dim..(g + 1) * n * dim];
    let ids = &s.ids[g * n..(g + 1) * n];
    let neg_log_q = s.neg_log_q.map(|q| &q[g * n..(g + 1) * n]);
    let mut hc = vec![0.0f32; c * dim];
    for ((dst, o), &r) in hc
        .chunks_exact_mut(dim.max(1))
        .zip(out.row_out.iter_mut())
        .zip(piece.rows)
    {
        let hr = &s.h[r * dim..(r + 1) * dim];
        dst.copy_from_slice(hr);
        let t = s.targets[r] as usize;
        let lq = s.log_q.map_or(0.0, |q| q[t]);
        o.1 = dot(hr, &s.table[t * dim..(t + 1) * dim]) - lq;
    }
    gemm(c, dim, n, &hc, false, neg, true, 0.0, out.z);
    for_each_chunk2(out.z, n.max(1), out.row_out, 1, |i, z, o| {
        let target = s.targets[piece.rows[i]];
        o[0] = match s.loss {
            SampledLoss::Softmax { .. } => {
                softmax_row(z, o[0].1, ids, target, neg_log_q, s.grad_scale)
            }
            SampledLoss::Binary { positive_weight } => {
                binary_row(z, o[0].1, ids, target, positive_weight, s.grad_scale)
            }
        };
    });
    if s.grad_scale.is_some() {
        gemm(c, n, dim, out.z, false, neg, false, 0.0, out.dh);
        for ((d, o), &r) in out
            .dh
            .chunks_exact_mut(dim.max(1))
            .zip(out.row_out.iter())
            .zip(piece.rows)
        {
            let t = s.targets[r] as usize;
            for (d, &p) in d.iter_mut().zip(&s.table[t * dim..(t + 1) * dim]) {
                *d += o.1 * p;
            }
        }
        gemm(n, c, dim, out.z, true, &hc, false, 0.0, out.dneg);
    }
}

/// The sampled loss of `Backend::sampled_loss`, holding at most `chunks`
/// at once (the backend uses [`SampledChunks::DEFAULT`]; tests pass small
/// budgets to exercise the block edges).
///
/// h `[rows, dim]`, table `[vocab, dim]`, targets `[rows]` (0 = ignored),
/// the negatives' ids `[groups * n]`.
pub fn sampled_loss_chunked(
    h: &CpuTensor,
    table: &CpuTensor,
    targets: &CpuIds,
    negatives: Negatives<'_, CpuIds>,
    loss: SampledLoss<'_, CpuTensor>,
    with_grad: bool,
    chunks: SampledChunks,
) -> SampledLossOutput<CpuTensor> {
    let (targets, ids) = (targets.as_slice(), negatives.ids.as_slice());
    let log_q = match loss {
        SampledLoss::Softmax { log_q } => log_q,
        SampledLoss::Binary { .. } => None,
    };
    let dims = contract::sampled_loss(
        h.shape(),
        table.shape(),
        targets,
        ids,
        negatives.per_group,
        log_q.map(|q| q.shape()),
    );
    let contract::SampledLossDims {
        rows,
        dim,
        vocab,
        n,
        ..
    } = dims;
    let log_q = log_q.map(|q| q.data());
    let (h, table) = (h.data(), table.data());

    let kept: Vec<usize> = (0..rows).filter(|&r| targets[r] != 0).collect();
    let count = kept.len();
    let mut dh = with_grad.then(|| vec![0.0f32; rows * dim]);
    let mut dtable = with_grad.then(|| vec![0.0f32; vocab * dim]);

    // Pieces: each group's kept rows, cut into runs of at most `chunk` rows.
    let chunk = sampled_chunk_rows(chunks.logits, n);
    let rows_per_group = dims.rows_per_group().max(1);
    let mut pieces = Vec::new();
    for group_rows in kept.chunk_by(|&a, &b| a / rows_per_group == b / rows_per_group) {
        for part in group_rows.chunks(chunk) {
            pieces.push(Piece {
                group: part[0] / rows_per_group,
                rows: part,
            });
        }
    }
    // Blocks: consecutive pieces within both budgets (at least one piece).
    let mut blocks: Vec<&[Piece<'_>]> = Vec::new();
    let mut rest = &pieces[..];
    while !rest.is_empty() {
        let (mut len, mut block_rows, mut block_groups) = (0, 0, 0);
        for (i, p) in rest.iter().enumerate() {
            let new_group = i == 0 || p.group != rest[i - 1].group;
            let groups = block_groups + usize::from(new_group);
            let fits = (block_rows + p.rows.len()) * n <= chunks.logits
                && groups * n * dim <= chunks.negatives;
            if len > 0 && !fits {
                break;
            }
            (len, block_rows, block_groups) = (i + 1, block_rows + p.rows.len(), groups);
        }
        blocks.push(&rest[..len]);
        rest = &rest[len..];
    }

    let grad_scale = with_grad.then(|| 1.0 / count as f32);
    let mut loss_sum = 0.0f64;
    for block in blocks {
        // The block's groups in order, and each piece's index among them.
        let mut slots = Vec::with_capacity(block.len());
        let mut block_ids: Vec<u32> = Vec::new();
        for (i, p) in block.iter().enumerate() {
            if i == 0 || p.group != block[i - 1].group {
                block_ids.extend_from_slice(&ids[p.group * n..(p.group + 1) * n]);
            }
            slots.push(block_ids.len() / n - 1);
        }
        let mut neg = vec![0.0f32; block_ids.len() * dim];
        for_each_chunk(&mut neg, dim.max(1), |j, row| {
            let id = block_ids[j] as usize;
            row.copy_from_slice(&table[id * dim..(id + 1) * dim]);
        });
        let neg_log_q: Option<Vec<f32>> =
            log_q.map(|q| block_ids.iter().map(|&id| q[id as usize]).collect());
        let block_rows: usize = block.iter().map(|p| p.rows.len()).sum();
        let mut z = vec![0.0f32; block_rows * n];
        let mut row_out = vec![(0.0f64, 0.0f32); block_rows];
        let mut dh_block = vec![0.0f32; if with_grad { block_rows * dim } else { 0 }];
        let mut dneg = vec![0.0f32; if with_grad { block.len() * n * dim } else { 0 }];
        let shared = Shared {
            h,
            table,
            targets,
            neg: &neg,
            ids: &block_ids,
            neg_log_q: neg_log_q.as_deref(),
            log_q,
            loss,
            grad_scale,
            dim,
            n,
        };
        // Each piece's own slices of the block's buffers.
        let mut outs = Vec::with_capacity(block.len());
        let (mut z_rest, mut out_rest) = (&mut z[..], &mut row_out[..]);
        let (mut dh_rest, mut dneg_rest) = (&mut dh_block[..], &mut dneg[..]);
        for (p, &slot) in block.iter().zip(&slots) {
            let c = p.rows.len();
            let (z_p, zr) = z_rest.split_at_mut(c * n);
            let (o_p, or) = out_rest.split_at_mut(c);
            let grad_len = |len: usize| if with_grad { len } else { 0 };
            let (dh_p, dhr) = dh_rest.split_at_mut(grad_len(c * dim));
            let (dneg_p, dnr) = dneg_rest.split_at_mut(grad_len(n * dim));
            (z_rest, out_rest, dh_rest, dneg_rest) = (zr, or, dhr, dnr);
            outs.push((
                p,
                slot,
                PieceOut {
                    z: z_p,
                    row_out: o_p,
                    dh: dh_p,
                    dneg: dneg_p,
                },
            ));
        }
        if outs.len() > 1 {
            outs.into_par_iter()
                .for_each(|(p, slot, out)| run_piece(&shared, p, slot, out));
        } else {
            outs.into_iter()
                .for_each(|(p, slot, out)| run_piece(&shared, p, slot, out));
        }
        // Sequential sums in row and piece order: deterministic.
        loss_sum += row_out.iter().map(|o| o.0).sum::<f64>();
        if let (Some(dh), Some(dtable)) = (dh.as_mut(), dtable.as_mut()) {
            let block_kept = block.iter().flat_map(|p| p.rows.iter().copied());
            for ((&(_, ds), src), r) in row_out
                .iter()
                .zip(dh_block.chunks_exact(dim.max(1)))
                .zip(block_kept)
            {
                dh[r * dim..(r + 1) * dim].copy_from_slice(src);
                let t = targets[r] as usize;
                let dst = &mut dtable[t * dim..(t + 1) * dim];
                for (d, &x) in dst.iter_mut().zip(&h[r * dim..(r + 1) * dim]) {
                    *d += ds * x;
                }
            }
            for (&g, part) in slots.iter().zip(dneg.chunks_exact(n * dim.max(1))) {
                for (&id, src) in block_ids[g * n..(g + 1) * n]
                    .iter()
                    .zip(part.chunks_exact(dim.max(1)))
                {
                    let id = id as usize;
                    for (d, &v) in dtable[id * dim..(id + 1) * dim].iter_mut().zip(src) {
                        *d += v;
                    }
                }
            }
        }
    }

    let mean = if count == 0 {
        0.0
    } else {
        (loss_sum / count as f64) as f32
    };
    SampledLossOutput {
        loss: CpuTensor::new(vec![mean], &[1]),
        count,
        dh: dh.map(|d| CpuTensor::new(d, &[rows, dim])),
        dtable: dtable.map(|d| CpuTensor::new(d, &[vocab, dim])),
    }
}

/// [`sampled_loss_chunked`] with the backend's budgets.
pub(super) fn sampled_loss(
    h: &CpuTensor,
    table: &CpuTensor,
    targets: &CpuIds,
    negatives: Negatives<'_, CpuIds>,
    loss: SampledLoss<'_, CpuTensor>,
    with_grad: bool,
) -> SampledLossOutput<CpuTensor> {
    sampled_loss_chunked(
        h,
        table,
        targets,
        negatives,
        loss,
        with_grad,
        SampledChunks::DEFAULT,
    )
}

#[cfg(test)]
mod tests {
    use super::super::simd::{Level, with_level};
    use super::*;

    #[test]
    fn ln_1p_unit_within_four_ulp_of_f64() {
        let mut worst = 0.0f64;
        let n = 1_000_003;
        for i in 0..=n {
            // Dense near 0 (where ln(1 + y) ~ y) and across [0, 1].
            let y = (i as f32 / n as f32).powi(3);
            let exact = (y as f64).ln_1p();
            let got = ln_1p_unit(y) as f64;
            if exact > 0.0 {
                worst = worst.max((got - exact).abs() / (f32::EPSILON as f64 / 2.0 * exact));
            } else {
                assert_eq!(got, 0.0);
            }
        }
        assert!(worst <= 4.0, "ln_1p_unit off by {worst} ulp");
        assert!(ln_1p_unit(f32::NAN).is_nan());
    }

    #[test]
    fn softplus_and_sigmoid_at_the_limits() {
        for softplus_sigmoid in [softplus_sigmoid::<false>, softplus_sigmoid::<true>] {
            assert_eq!(softplus_sigmoid(f32::INFINITY), (f32::INFINITY, 1.0));
            assert_eq!(softplus_sigmoid(f32::NEG_INFINITY), (0.0, 0.0));
            let (sp, sg) = softplus_sigmoid(f32::NAN);
            assert!(sp.is_nan() && sg.is_nan());
            // Large arguments: no overflow, no cancellation.
            let (sp, sg) = softplus_sigmoid(1e4);
            assert_eq!((sp, sg), (1e4, 1.0));
            // Far below: e^x ~ 2e-9, accurate; below e^-87.3 the fast exp
            // flushes to 0 (the true values are subnormal).
            let (sp, sg) = softplus_sigmoid(-20.0);
            let exact = (-20.0f64).exp();
            assert!(((sp as f64) / exact - 1.0).abs() < 1e-6, "{sp}");
            assert!(((sg as f64) / exact - 1.0).abs() < 1e-6, "{sg}");
            assert_eq!(softplus_sigmoid(-100.0), (0.0, 0.0));
        }
    }

    #[test]
    fn fma_builds_give_the_same_bits_and_the_baseline_is_close() {
        let z: Vec<f32> = (0..1001)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.7)
            .collect();
        let ids: Vec<u32> = (0..1001).map(|i| (i * 13 % 97) as u32).collect();
        let lq: Vec<f32> = (0..1001).map(|i| -((i % 7) as f32) - 3.0).collect();
        // Both rows at each build level: loss and gradient bits of each.
        let run = |level| {
            with_level(level, || {
                let (mut a, mut b) = (z.clone(), z.clone());
                let ra = softmax_row(&mut a, 1.5, &ids, 5, Some(&lq), Some(0.25));
                let rb = binary_row(&mut b, -0.5, &ids, 5, 0.3, Some(0.25));
                [(ra, a), (rb, b)]
            })
        };
        let bits = |rows: &[((f64, f32), Vec<f32>); 2]| {
            rows.iter()
                .map(|((loss, dpos), dz)| {
                    let dz: Vec<u32> = dz.iter().map(|v| v.to_bits()).collect();
                    (loss.to_bits(), dpos.to_bits(), dz)
                })
                .collect::<Vec<_>>()
        };
        let fused = run(Level::Avx512);
        assert_eq!(bits(&run(Level::Avx2)), bits(&fused));
        // The baseline build rounds the exp's multiply-adds twice: each exp
        // within 2 ulp of the exact value, so the builds agree to a few ulp
        // (2e-6 is about 16).
        for (((loss, dpos), dz), ((loss_f, dpos_f), dz_f)) in
            run(Level::Baseline).iter().zip(&fused)
        {
            assert!(
                (loss - loss_f).abs() <= 2e-6 * loss.abs(),
                "{loss} vs {loss_f}"
            );
            assert!(
                (dpos - dpos_f).abs() <= 2e-6 * dpos.abs(),
                "{dpos} vs {dpos_f}"
            );
            for (a, b) in dz.iter().zip(dz_f) {
                assert!((a - b).abs() <= 2e-6 * a.abs(), "{a} vs {b}");
            }
        }
    }
}
