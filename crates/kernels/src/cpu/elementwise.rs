//! Elementwise ops: add, sub, mul, scale, broadcast, ReLU, sigmoid, dropout
//! (each its own backward or a trivial one, see the `Backend` docs).

use super::par::{ELEM_BLOCK, for_each_chunk};
use super::simd::simd_dispatch;
use super::tensor::CpuTensor;
use crate::{Dropout, contract};

/// A new tensor shaped like `a` with elements `f(a[i])`.
fn map(a: &CpuTensor, f: impl Fn(f32) -> f32 + Send + Sync) -> CpuTensor {
    let a_data = a.data();
    let mut out = vec![0.0f32; a.len()];
    for_each_chunk(&mut out, ELEM_BLOCK, |blk, o| {
        let a = &a_data[blk * ELEM_BLOCK..][..o.len()];
        for (o, &x) in o.iter_mut().zip(a) {
            *o = f(x);
        }
    });
    CpuTensor::new(out, a.shape())
}

/// A new tensor shaped like `a` with elements `f(a[i], b[i])`.
fn zip_map(a: &CpuTensor, b: &CpuTensor, f: impl Fn(f32, f32) -> f32 + Send + Sync) -> CpuTensor {
    let (a_data, b_data) = (a.data(), b.data());
    let mut out = vec![0.0f32; a.len()];
    for_each_chunk(&mut out, ELEM_BLOCK, |blk, o| {
        let a = &a_data[blk * ELEM_BLOCK..][..o.len()];
        let b = &b_data[blk * ELEM_BLOCK..][..o.len()];
        for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
            *o = f(x, y);
        }
    });
    CpuTensor::new(out, a.shape())
}

/// `a + b`.
pub(super) fn add(a: &CpuTensor, b: &CpuTensor) -> CpuTensor {
    contract::same_shape("add", a.shape(), b.shape());
    zip_map(a, b, |x, y| x + y)
}

/// `a - b`.
pub(super) fn sub(a: &CpuTensor, b: &CpuTensor) -> CpuTensor {
    contract::same_shape("sub", a.shape(), b.shape());
    zip_map(a, b, |x, y| x - y)
}

/// `a * b`.
pub(super) fn mul(a: &CpuTensor, b: &CpuTensor) -> CpuTensor {
    contract::same_shape("mul", a.shape(), b.shape());
    zip_map(a, b, |x, y| x * y)
}

/// `acc += b`.
pub(super) fn add_assign(acc: &mut CpuTensor, b: &CpuTensor) {
    contract::same_shape("add_assign", acc.shape(), b.shape());
    let b_data = b.data();
    for_each_chunk(acc.data_mut(), ELEM_BLOCK, |blk, o| {
        let b = &b_data[blk * ELEM_BLOCK..][..o.len()];
        for (o, &y) in o.iter_mut().zip(b) {
            *o += y;
        }
    });
}

/// `x * s[0]`.
pub(super) fn scale(x: &CpuTensor, s: &CpuTensor) -> CpuTensor {
    contract::scalar("scale", s.shape());
    let s = s.data()[0];
    map(x, |v| v * s)
}

/// A tensor of `shape` filled with `s[0]`.
pub(super) fn broadcast(s: &CpuTensor, shape: &[usize]) -> CpuTensor {
    contract::scalar("broadcast", s.shape());
    CpuTensor::new(vec![s.data()[0]; shape.iter().product()], shape)
}

/// `max(x, 0)`, NaN kept (`f32::max` would drop it).
pub(super) fn relu(x: &CpuTensor) -> CpuTensor {
    map(x, |v| if v <= 0.0 { 0.0 } else { v })
}

/// 0 where the forward output `y <= 0`, else `dy` (PyTorch's
/// `threshold_backward`: a NaN `y` passes `dy`).
pub(super) fn relu_backward(y: &CpuTensor, dy: &CpuTensor) -> CpuTensor {
    contract::same_shape("relu_backward", y.shape(), dy.shape());
    zip_map(y, dy, |y, g| if y <= 0.0 { 0.0 } else { g })
}

/// `1 / (1 + exp(-x))`.
pub(super) fn sigmoid(x: &CpuTensor) -> CpuTensor {
    map(x, |v| 1.0 / (1.0 + (-v).exp()))
}

/// `dy * y * (1 - y)` given the forward output `y`.
pub(super) fn sigmoid_backward(y: &CpuTensor, dy: &CpuTensor) -> CpuTensor {
    contract::same_shape("sigmoid_backward", y.shape(), dy.shape());
    zip_map(y, dy, |y, g| g * y * (1.0 - y))
}

/// `x[i] * mask.factor(i)`; also dropout's backward.
pub(super) fn dropout(x: &CpuTensor, mask: &Dropout) -> CpuTensor {
    contract::dropout(x.shape());
    let x_data = x.data();
    let mut out = vec![0.0f32; x.len()];
    for_each_chunk(&mut out, ELEM_BLOCK, |blk, o| {
        let start = blk * ELEM_BLOCK;
        dropout_block(&x_data[start..start + o.len()], o, start, mask);
    });
    CpuTensor::new(out, x.shape())
}

simd_dispatch! {
    /// `out[j] = x[j] * mask.factor(start + j)`.
    fn dropout_block = dropout_block_body(x: &[f32], out: &mut [f32], start: usize, mask: &Dropout)
}

#[inline(always)]
fn dropout_block_body(x: &[f32], out: &mut [f32], start: usize, mask: &Dropout) {
    for (j, (o, &v)) in out.iter_mut().zip(x).enumerate() {
        *o = v * mask.factor((start + j) as u32);
    }
}
