//! LayerNorm over the last dimension (biased variance), forward and backward.

use super::par::{for_each_chunk, for_each_chunk2};
use super::sum_rows::sum_rows_of;
use super::tensor::CpuTensor;
use crate::contract;

/// `y = (x - mean) * rstd * gamma + beta` per row, `rstd = 1/sqrt(var + eps)`.
/// x `[n, d]`, gamma and beta `[d]`; returns `y` `[n, d]` and the statistics
/// `[n, 2]` = (mean, rstd).
pub(super) fn layer_norm(
    x: &CpuTensor,
    gamma: &CpuTensor,
    beta: &CpuTensor,
    eps: f32,
) -> (CpuTensor, CpuTensor) {
    let (n, d) = contract::layer_norm(x.shape(), gamma.shape(), beta.shape());
    let (x, gamma, beta) = (x.data(), gamma.data(), beta.data());
    let mut y = vec![0.0f32; n * d];
    let mut stats = vec![0.0f32; n * 2];
    for_each_chunk2(&mut y, d, &mut stats, 2, |r, y, st| {
        let x = &x[r * d..(r + 1) * d];
        // Two passes: the variance of centred values does not cancel.
        let mean = x.iter().sum::<f32>() / d as f32;
        let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let rstd = 1.0 / (var + eps).sqrt();
        for (((y, &v), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
            *y = (v - mean) * rstd * g + b;
        }
        st[0] = mean;
        st[1] = rstd;
    });
    (CpuTensor::new(y, &[n, d]), CpuTensor::new(stats, &[n, 2]))
}

/// Returns `(dx, dgamma, dbeta)` for upstream `dy` `[n, d]`, with
/// `xhat = (x - mean) * rstd`, `g = dy * gamma`:
/// `dx = rstd * (g - mean(g) - xhat * mean(g * xhat))`,
/// `dgamma = sum_rows(dy * xhat)`, `dbeta = sum_rows(dy)`.
pub(super) fn layer_norm_backward(
    dy: &CpuTensor,
    x: &CpuTensor,
    gamma: &CpuTensor,
    stats: &CpuTensor,
) -> (CpuTensor, CpuTensor, CpuTensor) {
    let (n, d) = contract::layer_norm_backward(dy.shape(), x.shape(), gamma.shape(), stats.shape());
    let (dy, x, gamma, stats) = (dy.data(), x.data(), gamma.data(), stats.data());

    let mut dx = vec![0.0f32; n * d];
    for_each_chunk(&mut dx, d, |r, dx| {
        let (mean, rstd) = (stats[2 * r], stats[2 * r + 1]);
        let x = &x[r * d..(r + 1) * d];
        let dy = &dy[r * d..(r + 1) * d];
        let mut sum_g = 0.0f32;
        let mut sum_g_xhat = 0.0f32;
        for ((&v, &g), &gm) in x.iter().zip(dy).zip(gamma) {
            let xhat = (v - mean) * rstd;
            sum_g += g * gm;
            sum_g_xhat += g * gm * xhat;
        }
        let (mean_g, mean_g_xhat) = (sum_g / d as f32, sum_g_xhat / d as f32);
        for (((dx, &v), &g), &gm) in dx.iter_mut().zip(x).zip(dy).zip(gamma) {
            let xhat = (v - mean) * rstd;
            *dx = rstd * (g * gm - mean_g - xhat * mean_g_xhat);
        }
    });

    // dgamma and dbeta side by side: one deterministic reduction of width 2d.
    let sums = sum_rows_of(n, 2 * d, |r, acc| {
        let (mean, rstd) = (stats[2 * r], stats[2 * r + 1]);
        let (dgamma, dbeta) = acc.split_at_mut(d);
        for (((dg, db), &v), &g) in dgamma
            .iter_mut()
            .zip(dbeta)
            .zip(&x[r * d..(r + 1) * d])
            .zip(&dy[r * d..(r + 1) * d])
        {
            *dg += g * (v - mean) * rstd;
            *db += g;
        }
    });
    let (dgamma, dbeta) = sums.split_at(d);
    (
        CpuTensor::new(dx, &[n, d]),
        CpuTensor::new(dgamma.to_vec(), &[d]),
        CpuTensor::new(dbeta.to_vec(), &[d]),
    )
}
