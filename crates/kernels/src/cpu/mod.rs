//! The CPU backend: plain loops over row-major `f32` buffers, rayon across
//! rows, and matrixmultiply's sgemm for the matrix products.
//!
//! It is the reference the other backends are tested against and a real
//! trainer. Every op is deterministic: work is split by sizes alone (see
//! `par`), so results are bit-for-bit the same whatever the thread count or
//! scheduling. The hottest loops (softmax, dropout, attention) also have an
//! AVX2 build picked at run time that gives the same bits (see `simd`).
//!
//! One file per op family, each a forward/backward pair with explicit shapes.

mod adam;
mod attention;
mod cross_entropy;
mod elementwise;
mod embedding;
mod layer_norm;
mod matmul;
mod non_finite;
mod par;
mod sampled_loss;
mod simd;
mod sum_rows;
mod tensor;

pub use cross_entropy::{CE_BUFFER_BYTES, ce_chunk_rows, cross_entropy_chunked};
pub use sampled_loss::sampled_loss_chunked;
pub use tensor::{CpuIds, CpuTensor};

use crate::{
    AdamStep, AttentionShape, Backend, CrossEntropy, Dropout, SampledLoss, SampledLossOutput,
    SoftmaxCrossEntropy,
};

/// The CPU backend. Threads: rayon's global pool for row-parallel ops and
/// matrixmultiply's own pool (`MATMUL_NUM_THREADS`, default: physical cores)
/// inside the matrix products.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

impl CpuBackend {
    /// The CPU backend (stateless; same as `CpuBackend`).
    pub fn new() -> Self {
        CpuBackend
    }
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;
    type Ids = CpuIds;

    fn name(&self) -> String {
        match rayon::current_num_threads() {
            1 => "cpu (1 thread)".to_string(),
            n => format!("cpu ({n} threads)"),
        }
    }

    fn tensor(&self, data: &[f32], shape: &[usize]) -> CpuTensor {
        CpuTensor::new(data.to_vec(), shape)
    }

    fn zeros(&self, shape: &[usize]) -> CpuTensor {
        CpuTensor::zeros(shape)
    }

    fn shape(&self, t: &CpuTensor) -> Vec<usize> {
        t.shape().to_vec()
    }

    fn to_vec(&self, t: &CpuTensor) -> Vec<f32> {
        t.data().to_vec()
    }

    fn ids(&self, ids: &[u32]) -> CpuIds {
        CpuIds::new(ids.to_vec())
    }

    fn ids_host<'a>(&self, ids: &'a CpuIds) -> &'a [u32] {
        ids.as_slice()
    }

    fn add(&self, a: &CpuTensor, b: &CpuTensor) -> CpuTensor {
        elementwise::add(a, b)
    }

    fn sub(&self, a: &CpuTensor, b: &CpuTensor) -> CpuTensor {
        elementwise::sub(a, b)
    }

    fn mul(&self, a: &CpuTensor, b: &CpuTensor) -> CpuTensor {
        elementwise::mul(a, b)
    }

    fn add_assign(&self, acc: &mut CpuTensor, b: &CpuTensor) {
        elementwise::add_assign(acc, b)
    }

    fn scale(&self, x: &CpuTensor, s: &CpuTensor) -> CpuTensor {
        elementwise::scale(x, s)
    }

    fn broadcast(&self, s: &CpuTensor, shape: &[usize]) -> CpuTensor {
        elementwise::broadcast(s, shape)
    }

    fn relu(&self, x: &CpuTensor) -> CpuTensor {
        elementwise::relu(x)
    }

    fn relu_backward(&self, y: &CpuTensor, dy: &CpuTensor) -> CpuTensor {
        elementwise::relu_backward(y, dy)
    }

    fn sigmoid(&self, x: &CpuTensor) -> CpuTensor {
        elementwise::sigmoid(x)
    }

    fn sigmoid_backward(&self, y: &CpuTensor, dy: &CpuTensor) -> CpuTensor {
        elementwise::sigmoid_backward(y, dy)
    }

    fn dropout(&self, x: &CpuTensor, mask: &Dropout) -> CpuTensor {
        elementwise::dropout(x, mask)
    }

    fn embedding(&self, table: &CpuTensor, ids: &CpuIds) -> CpuTensor {
        embedding::embedding(table, ids)
    }

    fn embedding_backward(
        &self,
        dy: &CpuTensor,
        ids: &CpuIds,
        vocab: usize,
        padding_idx: Option<u32>,
    ) -> CpuTensor {
        embedding::embedding_backward(dy, ids, vocab, padding_idx)
    }

    fn layer_norm(
        &self,
        x: &CpuTensor,
        gamma: &CpuTensor,
        beta: &CpuTensor,
        eps: f32,
    ) -> (CpuTensor, CpuTensor) {
        layer_norm::layer_norm(x, gamma, beta, eps)
    }

    fn layer_norm_backward(
        &self,
        dy: &CpuTensor,
        x: &CpuTensor,
        gamma: &CpuTensor,
        stats: &CpuTensor,
    ) -> (CpuTensor, CpuTensor, CpuTensor) {
        layer_norm::layer_norm_backward(dy, x, gamma, stats)
    }

    fn matmul(&self, a: &CpuTensor, b: &CpuTensor, trans_a: bool, trans_b: bool) -> CpuTensor {
        matmul::matmul(a, b, trans_a, trans_b)
    }

    fn linear(&self, x: &CpuTensor, w: &CpuTensor, bias: Option<&CpuTensor>) -> CpuTensor {
        matmul::linear(x, w, bias)
    }

    fn sum_rows(&self, x: &CpuTensor) -> CpuTensor {
        sum_rows::sum_rows(x)
    }

    fn sum(&self, x: &CpuTensor) -> CpuTensor {
        sum_rows::sum(x)
    }

    fn attention(
        &self,
        qkv: &CpuTensor,
        key_ids: &CpuIds,
        shape: AttentionShape,
        dropout: Option<&Dropout>,
    ) -> (CpuTensor, CpuTensor) {
        attention::attention(qkv, key_ids, shape, dropout)
    }

    fn attention_backward(
        &self,
        dctx: &CpuTensor,
        qkv: &CpuTensor,
        probs: &CpuTensor,
        shape: AttentionShape,
        dropout: Option<&Dropout>,
    ) -> CpuTensor {
        attention::attention_backward(dctx, qkv, probs, shape, dropout)
    }

    fn cross_entropy(
        &self,
        h: &CpuTensor,
        table: &CpuTensor,
        targets: &CpuIds,
        with_grad: bool,
    ) -> CrossEntropy<CpuTensor> {
        let vocab = table.shape().first().copied().unwrap_or(0);
        cross_entropy_chunked(h, table, targets, with_grad, ce_chunk_rows(vocab))
    }

    fn softmax_cross_entropy(
        &self,
        logits: &CpuTensor,
        targets: &CpuIds,
        ignore_index: Option<u32>,
        with_grad: bool,
    ) -> SoftmaxCrossEntropy<CpuTensor> {
        cross_entropy::softmax_cross_entropy(logits, targets, ignore_index, with_grad)
    }

    fn sampled_loss(
        &self,
        h: &CpuTensor,
        pos: &CpuTensor,
        neg: &CpuTensor,
        targets: &CpuIds,
        negatives: &CpuIds,
        loss: SampledLoss<'_, CpuTensor>,
        with_grad: bool,
    ) -> SampledLossOutput<CpuTensor> {
        sampled_loss::sampled_loss(h, pos, neg, targets, negatives, loss, with_grad)
    }

    fn count_non_finite(&self, tensors: &[&CpuTensor]) -> Vec<usize> {
        non_finite::count_non_finite(tensors)
    }

    fn adam(
        &self,
        param: &mut CpuTensor,
        grad: &CpuTensor,
        m: &mut CpuTensor,
        v: &mut CpuTensor,
        hp: &AdamStep,
    ) {
        adam::adam(param, grad, m, v, hp)
    }
}
