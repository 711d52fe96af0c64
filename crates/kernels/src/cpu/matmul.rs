//! Matrix products and `nn.Linear`, through the backend's sgemm
//! (`sgemm/`: AVX-512 or AVX2 microkernels, matrixmultiply elsewhere).
//!
//! Transposed operands are read through their strides or packed by the
//! sgemm, never transposed in memory here. Work is split into blocks fixed
//! by the sizes, each summed in a fixed order, so the results do not depend
//! on the number of threads.

use super::tensor::CpuTensor;
use crate::contract;

/// `c = op(a) @ op(b) + beta * c` on row-major buffers (see [`super::sgemm::sgemm`]),
/// under the name the op families call it by.
pub(crate) use super::sgemm::sgemm as gemm;

/// `op(a) @ op(b)`: `op(a)` `[m, k]`, `op(b)` `[k, n]` -> `[m, n]`.
pub(super) fn matmul(a: &CpuTensor, b: &CpuTensor, trans_a: bool, trans_b: bool) -> CpuTensor {
    let contract::MatmulDims { m, k, n } = contract::matmul(a.shape(), b.shape(), trans_a, trans_b);
    let mut c = vec![0.0f32; m * n];
    gemm(m, k, n, a.data(), trans_a, b.data(), trans_b, 0.0, &mut c);
    CpuTensor::new(c, &[m, n])
}

/// `x @ w^T + bias`: x `[n, in]`, w `[out, in]`, bias `[out]` -> `[n, out]`.
pub(super) fn linear(x: &CpuTensor, w: &CpuTensor, bias: Option<&CpuTensor>) -> CpuTensor {
    let contract::MatmulDims {
        m: n,
        k: fan_in,
        n: out,
    } = contract::linear(x.shape(), w.shape(), bias.map(CpuTensor::shape));
    let mut y = vec![0.0f32; n * out];
    let beta = match bias {
        Some(bias) => {
            for row in y.chunks_exact_mut(out.max(1)) {
                row.copy_from_slice(bias.data());
            }
            1.0
        }
        None => 0.0,
    };
    gemm(
        n,
        fan_in,
        out,
        x.data(),
        false,
        w.data(),
        true,
        beta,
        &mut y,
    );
    CpuTensor::new(y, &[n, out])
}
