//! Losses over sampled negatives shared by every row (`sampled_loss`):
//! sampled softmax (with an optional log-Q correction) and binary
//! cross-entropy with a weighted positive (BCE, gBCE).
//!
//! Fused like the cross-entropy, for each chunk of rows whose target is not
//! 0 (ignored rows cost nothing):
//!
//! ```text
//! z       = h_chunk @ neg^T                 [chunk, n]  (reused buffer)
//! s+      = rowwise h . pos                 [chunk]
//! loss   += row loss of (s+, z)             (f64)
//! z, ds+  = d row loss / d (z, s+) / count  (z in place: dz)
//! dh_chunk = dz @ neg + ds+ * pos           [chunk, dim]
//! dpos_chunk = ds+ * h                      [chunk, dim]
//! dneg   += dz^T @ h_chunk                  [n, dim]
//! ```
//!
//! A negative whose id is the row's target takes no part in that row: no
//! loss, and a gradient of exactly 0 (NaN rows included). Peak memory is one
//! `[chunk, n]` buffer of about [`SAMPLED_BUFFER_BYTES`] plus the outputs.

use super::cross_entropy::{exp_nonpositive, exp_shifted_sum, max_of};
use super::matmul::gemm;
use super::par::for_each_chunk2;
use super::simd::simd_dispatch;
use super::tensor::{CpuIds, CpuTensor};
use crate::{SampledLoss, SampledLossOutput, contract};

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

/// Byte budget of the `[chunk, n]` logits buffer.
const SAMPLED_BUFFER_BYTES: usize = 8 << 20;

/// Rows per chunk with `n` negatives: as many as fit
/// [`SAMPLED_BUFFER_BYTES`] (at least 1), rounded down to a multiple of 128
/// when there are that many (sgemm's 64-row blocks split evenly over 2 or 4
/// threads). With hundreds of negatives that is thousands of rows, so the
/// `dneg` product (inner size = chunk rows) is never thin.
fn sampled_chunk_rows(n: usize) -> usize {
    let rows = (SAMPLED_BUFFER_BYTES / (size_of::<f32>() * n.max(1))).max(1);
    if rows >= 128 { rows / 128 * 128 } else { rows }
}

/// The sampled loss of `Backend::sampled_loss`, working through the
/// non-ignored rows `chunk_rows` at a time (the backend uses
/// [`sampled_chunk_rows`]`(n)`; tests pass small values to exercise chunk
/// edges).
///
/// h and pos `[rows, dim]`, neg `[n, dim]`, targets `[rows]` (0 = ignored),
/// negatives `[n]`.
#[allow(clippy::too_many_arguments)]
pub fn sampled_loss_chunked(
    h: &CpuTensor,
    pos: &CpuTensor,
    neg: &CpuTensor,
    targets: &CpuIds,
    negatives: &CpuIds,
    loss: SampledLoss<'_, CpuTensor>,
    with_grad: bool,
    chunk_rows: usize,
) -> SampledLossOutput<CpuTensor> {
    let (targets, negatives) = (targets.as_slice(), negatives.as_slice());
    let log_q = match loss {
        SampledLoss::Softmax { log_q } => log_q,
        SampledLoss::Binary { .. } => None,
    };
    let contract::SampledLossDims { rows, dim, n } = contract::sampled_loss(
        h.shape(),
        pos.shape(),
        neg.shape(),
        targets,
        negatives,
        log_q.map(|q| (q.targets.shape(), q.negatives.shape())),
    );
    assert!(chunk_rows > 0, "sampled_loss: chunk_rows must be positive");
    let (h, pos, neg) = (h.data(), pos.data(), neg.data());
    let (pos_log_q, neg_log_q) = match log_q {
        Some(q) => (Some(q.targets.data()), Some(q.negatives.data())),
        None => (None, None),
    };

    let active: Vec<usize> = (0..rows).filter(|&r| targets[r] != 0).collect();
    let count = active.len();
    let mut dh = with_grad.then(|| vec![0.0f32; rows * dim]);
    let mut dpos = with_grad.then(|| vec![0.0f32; rows * dim]);
    let mut dneg = with_grad.then(|| vec![0.0f32; n * dim]);

    let chunk = chunk_rows.min(count);
    let grad_scale = with_grad.then(|| 1.0 / count as f32);
    let mut z = vec![0.0f32; chunk * n];
    let mut h_chunk = vec![0.0f32; chunk * dim];
    let mut dh_chunk = vec![0.0f32; if with_grad { chunk * dim } else { 0 }];
    // Per row: (loss, positive logit in, its gradient out).
    let mut row_out = vec![(0.0f64, 0.0f32); chunk];
    let mut loss_sum = 0.0f64;
    for part in active.chunks(chunk.max(1)) {
        let c = part.len();
        let (hc, zc, out) = (&mut h_chunk[..c * dim], &mut z[..c * n], &mut row_out[..c]);
        for ((dst, o), &r) in hc
            .chunks_exact_mut(dim.max(1))
            .zip(out.iter_mut())
            .zip(part)
        {
            let hr = &h[r * dim..(r + 1) * dim];
            dst.copy_from_slice(hr);
            let lq = pos_log_q.map_or(0.0, |q| q[r]);
            o.1 = dot(hr, &pos[r * dim..(r + 1) * dim]) - lq;
        }
        gemm(c, dim, n, hc, false, neg, true, 0.0, zc);
        for_each_chunk2(zc, n.max(1), out, 1, |i, z, o| {
            let target = targets[part[i]];
            o[0] = match loss {
                SampledLoss::Softmax { .. } => {
                    softmax_row(z, o[0].1, negatives, target, neg_log_q, grad_scale)
                }
                SampledLoss::Binary { positive_weight } => {
                    binary_row(z, o[0].1, negatives, target, positive_weight, grad_scale)
                }
            };
        });
        // Sequential f64 sum in row order: deterministic and accurate.
        loss_sum += out.iter().map(|o| o.0).sum::<f64>();

        if let (Some(dh), Some(dpos), Some(dneg)) = (dh.as_mut(), dpos.as_mut(), dneg.as_mut()) {
            let dhc = &mut dh_chunk[..c * dim];
            gemm(c, n, dim, zc, false, neg, false, 0.0, dhc);
            for ((src, o), &r) in dhc.chunks_exact(dim.max(1)).zip(out.iter()).zip(part) {
                let g = o.1;
                let row = r * dim..(r + 1) * dim;
                for ((d, &s), &p) in dh[row.clone()].iter_mut().zip(src).zip(&pos[row.clone()]) {
                    *d = s + g * p;
                }
                for (d, &x) in dpos[row.clone()].iter_mut().zip(&h[row]) {
                    *d = g * x;
                }
            }
            gemm(n, c, dim, zc, true, hc, false, 1.0, dneg);
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
        dpos: dpos.map(|d| CpuTensor::new(d, &[rows, dim])),
        dneg: dneg.map(|d| CpuTensor::new(d, &[n, dim])),
    }
}

/// [`sampled_loss_chunked`] with the backend's chunk size.
#[allow(clippy::too_many_arguments)]
pub(super) fn sampled_loss(
    h: &CpuTensor,
    pos: &CpuTensor,
    neg: &CpuTensor,
    targets: &CpuIds,
    negatives: &CpuIds,
    loss: SampledLoss<'_, CpuTensor>,
    with_grad: bool,
) -> SampledLossOutput<CpuTensor> {
    let n = neg.shape().first().copied().unwrap_or(0);
    sampled_loss_chunked(
        h,
        pos,
        neg,
        targets,
        negatives,
        loss,
        with_grad,
        sampled_chunk_rows(n),
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
