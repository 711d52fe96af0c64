//! SwiGLU's gating, `silu(gate) * up`, forward and backward.

use super::par::{ELEM_BLOCK, for_each_chunk, for_each_chunk2};
use super::tensor::CpuTensor;
use crate::contract;

/// `1 / (1 + exp(-a))`, as the elementwise sigmoid computes it.
fn sigmoid(a: f32) -> f32 {
    1.0 / (1.0 + (-a).exp())
}

/// `silu(gate) * up` with `silu(a) = a * sigmoid(a)`.
pub(super) fn swiglu(gate: &CpuTensor, up: &CpuTensor) -> CpuTensor {
    contract::swiglu(gate.shape(), up.shape());
    let (gate_data, up_data) = (gate.data(), up.data());
    let mut out = vec![0.0f32; gate.len()];
    for_each_chunk(&mut out, ELEM_BLOCK, |blk, o| {
        let start = blk * ELEM_BLOCK;
        let a = &gate_data[start..start + o.len()];
        let b = &up_data[start..start + o.len()];
        for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
            *o = a * sigmoid(a) * b;
        }
    });
    CpuTensor::new(out, gate.shape())
}

/// `(dgate, dup)`: with `s = sigmoid(gate)`,
/// `dgate = dy * up * s * (1 + gate * (1 - s))`, `dup = dy * gate * s`.
pub(super) fn swiglu_backward(
    dy: &CpuTensor,
    gate: &CpuTensor,
    up: &CpuTensor,
) -> (CpuTensor, CpuTensor) {
    contract::swiglu_backward(dy.shape(), gate.shape(), up.shape());
    let (dy_data, gate_data, up_data) = (dy.data(), gate.data(), up.data());
    let mut dgate = vec![0.0f32; gate.len()];
    let mut dup = vec![0.0f32; gate.len()];
    for_each_chunk2(
        &mut dgate,
        ELEM_BLOCK,
        &mut dup,
        ELEM_BLOCK,
        |blk, dgate, dup| {
            let start = blk * ELEM_BLOCK;
            let range = start..start + dgate.len();
            let (dy, a, b) = (
                &dy_data[range.clone()],
                &gate_data[range.clone()],
                &up_data[range],
            );
            for i in 0..dgate.len() {
                let s = sigmoid(a[i]);
                dgate[i] = dy[i] * b[i] * s * (1.0 + a[i] * (1.0 - s));
                dup[i] = dy[i] * a[i] * s;
            }
        },
    );
    (
        CpuTensor::new(dgate, gate.shape()),
        CpuTensor::new(dup, gate.shape()),
    )
}
