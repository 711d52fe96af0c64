//! RMSNorm over the last dimension, forward and backward.

use super::par::{for_each_chunk, for_each_chunk2};
use super::sum_rows::sum_rows_of;
use super::tensor::CpuTensor;
use crate::contract;

/// `y = x * rstd * gamma` per row, `rstd = 1/sqrt(mean(x^2) + eps)`.
/// x `[n, d]`, gamma `[d]`; returns `y` `[n, d]` and `rstd` `[n]`.
pub(super) fn rms_norm(x: &CpuTensor, gamma: &CpuTensor, eps: f32) -> (CpuTensor, CpuTensor) {
    let (n, d) = contract::rms_norm(x.shape(), gamma.shape());
    let (x, gamma) = (x.data(), gamma.data());
    let mut y = vec![0.0f32; n * d];
    let mut rstd = vec![0.0f32; n];
    for_each_chunk2(&mut y, d, &mut rstd, 1, |r, y, rs| {
        let x = &x[r * d..(r + 1) * d];
        let mean_square = x.iter().map(|&v| v * v).sum::<f32>() / d as f32;
        let s = 1.0 / (mean_square + eps).sqrt();
        for ((y, &v), &g) in y.iter_mut().zip(x).zip(gamma) {
            *y = v * s * g;
        }
        rs[0] = s;
    });
    (CpuTensor::new(y, &[n, d]), CpuTensor::new(rstd, &[n]))
}

/// Returns `(dx, dgamma)` for upstream `dy` `[n, d]`, with `xhat = x * rstd`,
/// `g = dy * gamma`: `dx = rstd * (g - xhat * mean(g * xhat))`,
/// `dgamma = sum_rows(dy * xhat)`.
pub(super) fn rms_norm_backward(
    dy: &CpuTensor,
    x: &CpuTensor,
    gamma: &CpuTensor,
    rstd: &CpuTensor,
) -> (CpuTensor, CpuTensor) {
    let (n, d) = contract::rms_norm_backward(dy.shape(), x.shape(), gamma.shape(), rstd.shape());
    let (dy, x, gamma, rstd) = (dy.data(), x.data(), gamma.data(), rstd.data());

    let mut dx = vec![0.0f32; n * d];
    for_each_chunk(&mut dx, d, |r, dx| {
        let s = rstd[r];
        let x = &x[r * d..(r + 1) * d];
        let dy = &dy[r * d..(r + 1) * d];
        let sum_g_xhat: f32 = x
            .iter()
            .zip(dy)
            .zip(gamma)
            .map(|((&v, &g), &gm)| g * gm * v * s)
            .sum();
        let mean_g_xhat = sum_g_xhat / d as f32;
        for (((dx, &v), &g), &gm) in dx.iter_mut().zip(x).zip(dy).zip(gamma) {
            *dx = s * (g * gm - v * s * mean_g_xhat);
        }
    });

    let dgamma = sum_rows_of(n, d, |r, acc| {
        let s = rstd[r];
        for ((dg, &v), &g) in acc
            .iter_mut()
            .zip(&x[r * d..(r + 1) * d])
            .zip(&dy[r * d..(r + 1) * d])
        {
            *dg += g * v * s;
        }
    });
    (CpuTensor::new(dx, &[n, d]), CpuTensor::new(dgamma, &[d]))
}
