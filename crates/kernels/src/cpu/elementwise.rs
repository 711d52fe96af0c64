//! Elementwise ops: add, scale, ReLU, dropout (each its own backward or a
//! trivial one, see the `Backend` docs).

use super::par::{ELEM_BLOCK, for_each_chunk};
use super::simd::avx2_dispatch;
use super::tensor::CpuTensor;
use crate::Dropout;

fn assert_same_shape(op: &str, a: &CpuTensor, b: &CpuTensor) {
    assert_eq!(
        a.shape(),
        b.shape(),
        "{op}: shapes {:?} and {:?} differ",
        a.shape(),
        b.shape()
    );
}

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
    assert_same_shape("add", a, b);
    zip_map(a, b, |x, y| x + y)
}

/// `acc += b`.
pub(super) fn add_assign(acc: &mut CpuTensor, b: &CpuTensor) {
    assert_same_shape("add_assign", acc, b);
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
    assert_eq!(
        s.shape(),
        [1],
        "scale: the scalar must have shape [1], got {:?}",
        s.shape()
    );
    let s = s.data()[0];
    map(x, |v| v * s)
}

/// `max(x, 0)`.
pub(super) fn relu(x: &CpuTensor) -> CpuTensor {
    map(x, |v| v.max(0.0))
}

/// `dy * (y > 0)` given the forward output `y`.
pub(super) fn relu_backward(y: &CpuTensor, dy: &CpuTensor) -> CpuTensor {
    assert_same_shape("relu_backward", y, dy);
    zip_map(y, dy, |y, g| if y > 0.0 { g } else { 0.0 })
}

/// `x[i] * mask.factor(i)`; also dropout's backward.
pub(super) fn dropout(x: &CpuTensor, mask: &Dropout) -> CpuTensor {
    assert!(
        x.len() as u64 <= 1 << 32,
        "dropout: {} elements exceed the mask's u32 index",
        x.len()
    );
    let x_data = x.data();
    let mut out = vec![0.0f32; x.len()];
    for_each_chunk(&mut out, ELEM_BLOCK, |blk, o| {
        let start = blk * ELEM_BLOCK;
        dropout_block(&x_data[start..start + o.len()], o, start, mask);
    });
    CpuTensor::new(out, x.shape())
}

avx2_dispatch! {
    /// `out[j] = x[j] * mask.factor(start + j)`.
    fn dropout_block = dropout_block_body(x: &[f32], out: &mut [f32], start: usize, mask: &Dropout)
}

#[inline(always)]
fn dropout_block_body(x: &[f32], out: &mut [f32], start: usize, mask: &Dropout) {
    for (j, (o, &v)) in out.iter_mut().zip(x).enumerate() {
        *o = v * mask.factor((start + j) as u32);
    }
}
