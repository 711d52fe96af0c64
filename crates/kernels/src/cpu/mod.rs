//! The CPU backend: plain loops over row-major `f32` buffers, rayon across
//! rows, and its own sgemm for the matrix products (`sgemm`).
//!
//! It is the reference the other backends are tested against and a real
//! trainer. Every op is deterministic: work is split by sizes alone (see
//! `par`), so results are bit-for-bit the same whatever the thread count or
//! scheduling. The hottest loops (softmax, dropout, attention) also have
//! AVX2 + FMA and AVX-512 builds picked at run time (see `simd`): the same
//! bits as the default build, except the softmax's `exp`, which fuses its
//! multiply-adds there (the same bits in both, within 2 ulp of the exact
//! value in all three).
//!
//! One file per op family, each a forward/backward pair with explicit shapes.
//!
//! [`CpuBackend::with_precision`] gives a backend whose fused cross-entropy
//! multiplies bf16 operands into f32 sums (`bf16.rs`); every other op, and
//! the default backend, stay f32.

mod adam;
mod attention;
mod bf16;
mod cross_entropy;
mod elementwise;
mod embedding;
mod layer_norm;
mod line_buf;
mod matmul;
mod memory;
mod non_finite;
mod output_layer;
mod par;
mod profile;
mod rms_norm;
mod rotary;
mod sampled_loss;
mod sgemm;
mod simd;
mod sum_rows;
mod swiglu;
mod tensor;

pub use bf16::{Bf16Kernel, Bf16Unsupported, Precision};
pub use cross_entropy::{
    CE_BUFFER_BYTES, CE_CHUNK_ROWS, ce_chunk_rows, cross_entropy_chunked,
    cross_entropy_chunked_bf16, cross_entropy_smoothed_chunked,
};
pub use memory::retain_freed_memory;
pub use profile::OpTime;
pub use sampled_loss::{SampledChunks, sampled_loss_chunked};
pub use tensor::{CpuIds, CpuTensor};

use crate::rotary::Turn;
use crate::{
    AdamStep, AttentionShape, Backend, CrossEntropy, Dropout, Negatives, SampledLoss,
    SampledLossOutput, SoftmaxCrossEntropy,
};

/// The CPU backend. Threads: rayon's global pool, for the row-parallel ops
/// and the matrix products (`sgemm/`; matrixmultiply's own pool, sized by
/// `MATMUL_NUM_THREADS`, on CPUs without AVX2 + FMA).
///
/// `CpuBackend` is also the name of the f32 backend's value (a constant),
/// so `&CpuBackend` reads as it would for a unit struct; the bf16 one comes
/// from [`CpuBackend::with_precision`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuBackend {
    /// The kernel of the fused cross-entropy's bf16 products; `None`: f32.
    bf16: Option<Bf16Kernel>,
}

/// The f32 CPU backend (the default).
#[allow(non_upper_case_globals)]
pub const CpuBackend: CpuBackend = CpuBackend { bf16: None };

impl CpuBackend {
    /// The f32 CPU backend (same as `CpuBackend`).
    pub fn new() -> Self {
        CpuBackend
    }

    /// The backend whose fused cross-entropy multiplies operands of this
    /// precision: bf16 runs on the fastest kernel this CPU has
    /// ([`Bf16Kernel::detect`]: AMX, else AVX512-BF16), and is refused on
    /// CPUs with neither.
    pub fn with_precision(precision: Precision) -> Result<Self, Bf16Unsupported> {
        match precision {
            Precision::Fp32 => Ok(CpuBackend),
            Precision::Bf16 => Bf16Kernel::detect()
                .map(|kernel| CpuBackend { bf16: Some(kernel) })
                .ok_or(Bf16Unsupported { kernel: None }),
        }
    }

    /// The bf16 backend on a given kernel (to compare the kernels on one
    /// machine), refused where the CPU cannot run it.
    pub fn with_bf16_kernel(kernel: Bf16Kernel) -> Result<Self, Bf16Unsupported> {
        if kernel.supported() {
            Ok(CpuBackend { bf16: Some(kernel) })
        } else {
            Err(Bf16Unsupported {
                kernel: Some(kernel),
            })
        }
    }

    /// The precision of the fused cross-entropy's products.
    pub fn precision(&self) -> Precision {
        match self.bf16 {
            None => Precision::Fp32,
            Some(_) => Precision::Bf16,
        }
    }

    /// The kernel of the bf16 products (`None` with f32).
    pub fn bf16_kernel(&self) -> Option<Bf16Kernel> {
        self.bf16
    }

    /// Starts timing every op (wall time per call, summed per op name; see
    /// [`CpuBackend::profile_report`]). The profile belongs to the process:
    /// every `CpuBackend` records into it.
    pub fn enable_profiling(&self) {
        profile::set_enabled(true);
    }

    /// Total wall time per op since profiling started or was last reset,
    /// slowest first: `family.op` names (`matmul.linear`,
    /// `attention.backward`, ...); the fused cross-entropy is split into its
    /// phases (`cross_entropy.logits`, `.softmax`, `.dh`, `.dtable`, ...),
    /// so the entries do not overlap and add up to the time spent in ops.
    /// Empty when profiling is off.
    pub fn profile_report(&self) -> Vec<OpTime> {
        profile::report()
    }

    /// Clears the profile.
    pub fn reset_profile(&self) {
        profile::reset();
    }
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;
    type Ids = CpuIds;

    fn name(&self) -> String {
        let threads = match rayon::current_num_threads() {
            1 => "1 thread".to_string(),
            n => format!("{n} threads"),
        };
        match self.bf16 {
            None => format!("cpu ({threads})"),
            Some(kernel) => format!("cpu ({threads}, bf16 products on {kernel})"),
        }
    }

    fn tensor(&self, data: &[f32], shape: &[usize]) -> CpuTensor {
        let _t = profile::time("host.tensor");
        CpuTensor::new(data.to_vec(), shape)
    }

    fn zeros(&self, shape: &[usize]) -> CpuTensor {
        let _t = profile::time("host.zeros");
        CpuTensor::zeros(shape)
    }

    fn shape(&self, t: &CpuTensor) -> Vec<usize> {
        t.shape().to_vec()
    }

    fn to_vec(&self, t: &CpuTensor) -> Vec<f32> {
        let _t = profile::time("host.to_vec");
        t.data().to_vec()
    }

    fn ids(&self, ids: &[u32]) -> CpuIds {
        let _t = profile::time("host.ids");
        CpuIds::new(ids.to_vec())
    }

    fn ids_host<'a>(&self, ids: &'a CpuIds) -> &'a [u32] {
        ids.as_slice()
    }

    fn add(&self, a: &CpuTensor, b: &CpuTensor) -> CpuTensor {
        let _t = profile::time("elementwise.add");
        elementwise::add(a, b)
    }

    fn sub(&self, a: &CpuTensor, b: &CpuTensor) -> CpuTensor {
        let _t = profile::time("elementwise.sub");
        elementwise::sub(a, b)
    }

    fn mul(&self, a: &CpuTensor, b: &CpuTensor) -> CpuTensor {
        let _t = profile::time("elementwise.mul");
        elementwise::mul(a, b)
    }

    fn add_assign(&self, acc: &mut CpuTensor, b: &CpuTensor) {
        let _t = profile::time("elementwise.add_assign");
        elementwise::add_assign(acc, b)
    }

    fn scale(&self, x: &CpuTensor, s: &CpuTensor) -> CpuTensor {
        let _t = profile::time("elementwise.scale");
        elementwise::scale(x, s)
    }

    fn broadcast(&self, s: &CpuTensor, shape: &[usize]) -> CpuTensor {
        let _t = profile::time("elementwise.broadcast");
        elementwise::broadcast(s, shape)
    }

    fn relu(&self, x: &CpuTensor) -> CpuTensor {
        let _t = profile::time("elementwise.relu");
        elementwise::relu(x)
    }

    fn relu_backward(&self, y: &CpuTensor, dy: &CpuTensor) -> CpuTensor {
        let _t = profile::time("elementwise.relu_backward");
        elementwise::relu_backward(y, dy)
    }

    fn sigmoid(&self, x: &CpuTensor) -> CpuTensor {
        let _t = profile::time("elementwise.sigmoid");
        elementwise::sigmoid(x)
    }

    fn sigmoid_backward(&self, y: &CpuTensor, dy: &CpuTensor) -> CpuTensor {
        let _t = profile::time("elementwise.sigmoid_backward");
        elementwise::sigmoid_backward(y, dy)
    }

    fn dropout(&self, x: &CpuTensor, mask: &Dropout) -> CpuTensor {
        let _t = profile::time("elementwise.dropout");
        elementwise::dropout(x, mask)
    }

    fn embedding(&self, table: &CpuTensor, ids: &CpuIds) -> CpuTensor {
        let _t = profile::time("embedding.gather");
        embedding::embedding(table, ids)
    }

    fn embedding_backward(
        &self,
        dy: &CpuTensor,
        ids: &CpuIds,
        vocab: usize,
        padding_idx: Option<u32>,
    ) -> CpuTensor {
        let _t = profile::time("embedding.backward");
        embedding::embedding_backward(dy, ids, vocab, padding_idx)
    }

    fn layer_norm(
        &self,
        x: &CpuTensor,
        gamma: &CpuTensor,
        beta: &CpuTensor,
        eps: f32,
    ) -> (CpuTensor, CpuTensor) {
        let _t = profile::time("layer_norm.forward");
        layer_norm::layer_norm(x, gamma, beta, eps)
    }

    fn layer_norm_backward(
        &self,
        dy: &CpuTensor,
        x: &CpuTensor,
        gamma: &CpuTensor,
        stats: &CpuTensor,
    ) -> (CpuTensor, CpuTensor, CpuTensor) {
        let _t = profile::time("layer_norm.backward");
        layer_norm::layer_norm_backward(dy, x, gamma, stats)
    }

    fn rms_norm(&self, x: &CpuTensor, gamma: &CpuTensor, eps: f32) -> (CpuTensor, CpuTensor) {
        let _t = profile::time("rms_norm.forward");
        rms_norm::rms_norm(x, gamma, eps)
    }

    fn rms_norm_backward(
        &self,
        dy: &CpuTensor,
        x: &CpuTensor,
        gamma: &CpuTensor,
        rstd: &CpuTensor,
    ) -> (CpuTensor, CpuTensor) {
        let _t = profile::time("rms_norm.backward");
        rms_norm::rms_norm_backward(dy, x, gamma, rstd)
    }

    fn swiglu(&self, gate: &CpuTensor, up: &CpuTensor) -> CpuTensor {
        let _t = profile::time("swiglu.forward");
        swiglu::swiglu(gate, up)
    }

    fn swiglu_backward(
        &self,
        dy: &CpuTensor,
        gate: &CpuTensor,
        up: &CpuTensor,
    ) -> (CpuTensor, CpuTensor) {
        let _t = profile::time("swiglu.backward");
        swiglu::swiglu_backward(dy, gate, up)
    }

    fn matmul(&self, a: &CpuTensor, b: &CpuTensor, trans_a: bool, trans_b: bool) -> CpuTensor {
        let _t = profile::time("matmul.matmul");
        matmul::matmul(a, b, trans_a, trans_b)
    }

    fn linear(&self, x: &CpuTensor, w: &CpuTensor, bias: Option<&CpuTensor>) -> CpuTensor {
        let _t = profile::time("matmul.linear");
        matmul::linear(x, w, bias)
    }

    fn sum_rows(&self, x: &CpuTensor) -> CpuTensor {
        let _t = profile::time("sum_rows.sum_rows");
        sum_rows::sum_rows(x)
    }

    fn sum(&self, x: &CpuTensor) -> CpuTensor {
        let _t = profile::time("sum_rows.sum");
        sum_rows::sum(x)
    }

    fn attention(
        &self,
        qkv: &CpuTensor,
        key_ids: &CpuIds,
        shape: AttentionShape,
        dropout: Option<&Dropout>,
    ) -> (CpuTensor, CpuTensor) {
        let _t = profile::time("attention.forward");
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
        let _t = profile::time("attention.backward");
        attention::attention_backward(dctx, qkv, probs, shape, dropout)
    }

    fn rotary(&self, qkv: &CpuTensor, table: &CpuTensor, shape: AttentionShape) -> CpuTensor {
        let _t = profile::time("rotary.forward");
        rotary::rotary(qkv, table, shape, Turn::Forward)
    }

    fn rotary_backward(
        &self,
        dqkv: &CpuTensor,
        table: &CpuTensor,
        shape: AttentionShape,
    ) -> CpuTensor {
        let _t = profile::time("rotary.backward");
        rotary::rotary(dqkv, table, shape, Turn::Backward)
    }

    fn cross_entropy_smoothed(
        &self,
        h: &CpuTensor,
        table: &CpuTensor,
        targets: &CpuIds,
        smoothing: f32,
        with_grad: bool,
    ) -> CrossEntropy<CpuTensor> {
        let vocab = table.shape().first().copied().unwrap_or(0);
        cross_entropy::fused(
            h,
            table,
            targets,
            smoothing,
            with_grad,
            ce_chunk_rows(vocab),
            self.bf16,
        )
    }

    fn softmax_cross_entropy(
        &self,
        logits: &CpuTensor,
        targets: &CpuIds,
        ignore_index: Option<u32>,
        with_grad: bool,
    ) -> SoftmaxCrossEntropy<CpuTensor> {
        let _t = profile::time("cross_entropy.softmax_cross_entropy");
        cross_entropy::softmax_cross_entropy(logits, targets, ignore_index, with_grad)
    }

    fn sampled_loss(
        &self,
        h: &CpuTensor,
        table: &CpuTensor,
        targets: &CpuIds,
        negatives: Negatives<'_, CpuIds>,
        loss: SampledLoss<'_, CpuTensor>,
        with_grad: bool,
    ) -> SampledLossOutput<CpuTensor> {
        let _t = profile::time("sampled_loss.sampled_loss");
        sampled_loss::sampled_loss(h, table, targets, negatives, loss, with_grad)
    }

    fn count_non_finite(&self, tensors: &[&CpuTensor]) -> Vec<usize> {
        let _t = profile::time("non_finite.count");
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
        let _t = profile::time("adam.step");
        adam::adam(param, grad, m, v, hp)
    }
}
