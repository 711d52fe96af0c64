//! The wgpu backend: hand-written WGSL compute kernels (`shaders/*.wgsl`).
//!
//! - [`WgpuBackend::new`] opens an adapter chosen by [`GpuOptions`], checks
//!   every kernel's declared interface against its WGSL and compiles it once
//!   (a failure is a [`GpuError::Kernel`] naming the file and entry point),
//!   and keeps one pending command encoder: ops are recorded, not run, until
//!   the host reads a tensor back ([`Backend::to_vec`]) or a batch of passes
//!   has accumulated.
//! - One file per op family holds its launchers (`elementwise.rs`,
//!   `embedding.rs`, `layer_norm.rs`, `rms_norm.rs`, `rotary.rs`, `swiglu.rs`,
//!   `matmul.rs`, `sum_rows.rs`,
//!   `attention.rs`, `cross_entropy.rs`, `sampled_loss.rs`, `adam.rs`,
//!   `non_finite.rs`), each
//!   beside its shader
//!   `shaders/<family>.wgsl`; `kernel.rs` types the interfaces and builds the
//!   pipelines, `dispatch.rs` binds buffers and plans grids.
//! - Tensors live in pooled buffers that return to the pool on drop, so a
//!   training step reuses the previous step's memory.
//! - Operands larger than one storage binding (the item table, the logits of
//!   the cross-entropy) are processed in chunks; see docs/kernels.md.
//! - [`list_adapters`] reports what wgpu finds (`sasrec devices`);
//!   [`test_backend`] gives tests a backend on any adapter, CPU ones included.
//!
//! [`Backend::to_vec`]: crate::Backend::to_vec

mod adam;
mod adapter;
mod attention;
mod cross_entropy;
mod device;
mod dispatch;
mod elementwise;
mod embedding;
mod error;
mod kernel;
mod layer_norm;
mod matmul;
mod memory;
mod non_finite;
mod recorder;
mod rms_norm;
mod rotary;
mod sampled_loss;
mod sum_rows;
mod swiglu;

use std::sync::{Arc, Mutex, OnceLock};

pub use adapter::{AdapterChoice, AdapterReport, list_adapters};
pub use device::{GpuOptions, KernelTime, WgpuBackend};
pub use error::GpuError;
pub use memory::{GpuIds, GpuTensor};
/// The wgpu this backend is built on, for kernels of your own on its device
/// ([`WgpuBackend::device`], [`WgpuBackend::record`]).
pub use wgpu;

use crate::rotary::Turn;
use crate::{
    AdamStep, AttentionShape, Backend, CrossEntropy, Dropout, Negatives, SampledLoss,
    SampledLossOutput, SoftmaxCrossEntropy,
};
use device::{DeviceLimits, Inner};
use kernel::{KernelDesc, Pipelines};
use memory::BufferPool;
use recorder::Recorder;

/// Every kernel of every family, which [`WgpuBackend::new`] builds.
fn all_kernels() -> Vec<KernelDesc<'static>> {
    [
        elementwise::kernels(),
        embedding::kernels(),
        layer_norm::kernels(),
        rms_norm::kernels(),
        rotary::kernels(),
        swiglu::kernels(),
        matmul::kernels(),
        sum_rows::kernels(),
        attention::kernels(),
        cross_entropy::kernels(),
        sampled_loss::kernels(),
        adam::kernels(),
        non_finite::kernels(),
    ]
    .concat()
}

impl WgpuBackend {
    /// Opens the adapter `options` chooses with its full limits and builds
    /// every kernel.
    pub fn new(options: &GpuOptions) -> Result<Self, GpuError> {
        // The adapters list_adapters() lists, which indices refer to.
        let adapter = adapter::choose(
            adapter::usable(),
            &options.adapter,
            options.allow_cpu_adapter,
        )?;
        let info = adapter.get_info();
        let adapter_limits = adapter.limits();
        let timestamps = adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let required_features = if timestamps {
            wgpu::Features::TIMESTAMP_QUERY
        } else {
            wgpu::Features::empty()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("sasrec"),
            required_features,
            required_limits: adapter_limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| GpuError::Device {
            adapter: info.name.clone(),
            message: e.to_string(),
        })?;

        let storage_align = u64::from(adapter_limits.min_storage_buffer_offset_alignment);
        let mut max_binding = adapter_limits
            .max_storage_buffer_binding_size
            .min(adapter_limits.max_buffer_size);
        if let Some(cap) = options.max_binding_bytes {
            max_binding = max_binding.min(cap);
        }
        // Keep whole multiples of the alignment so chunks start aligned.
        max_binding = max_binding / storage_align * storage_align;
        assert!(
            max_binding >= 2 * storage_align,
            "max binding of {max_binding} bytes is too small"
        );
        let limits = DeviceLimits {
            max_binding,
            storage_align,
            max_buffer: adapter_limits.max_buffer_size,
            max_groups: options
                .max_workgroups_per_dimension
                .unwrap_or(u32::MAX)
                .clamp(1, adapter_limits.max_compute_workgroups_per_dimension),
        };

        let pipelines = Pipelines::build(&device, &all_kernels())?;
        let recorder = Recorder::new(&device);
        let backend = WgpuBackend {
            inner: Arc::new(Inner {
                device,
                queue,
                info,
                limits,
                pipelines,
                pool: Arc::new(Mutex::new(BufferPool::new(options.max_pooled_bytes))),
                recorder: Mutex::new(recorder),
                ce_chunk_bytes: options.ce_chunk_bytes.max(1),
                timestamps,
            }),
        };
        if options.profiling {
            backend.enable_profiling()?;
        }
        Ok(backend)
    }
}

impl Backend for WgpuBackend {
    type Tensor = GpuTensor;
    type Ids = GpuIds;

    fn name(&self) -> String {
        let info = &self.inner.info;
        format!(
            "wgpu: {} ({:?}, {:?})",
            info.name, info.backend, info.device_type
        )
    }

    fn tensor(&self, data: &[f32], shape: &[usize]) -> GpuTensor {
        assert_eq!(
            data.len(),
            shape.iter().product::<usize>(),
            "tensor: {} values do not fill shape {shape:?}",
            data.len()
        );
        let t = self.alloc(shape);
        self.upload(t.buffer(), bytemuck::cast_slice(data));
        t
    }

    fn zeros(&self, shape: &[usize]) -> GpuTensor {
        let t = self.alloc(shape);
        self.clear(t.buffer(), t.numel());
        t
    }

    fn shape(&self, t: &GpuTensor) -> Vec<usize> {
        t.shape.clone()
    }

    fn to_vec(&self, t: &GpuTensor) -> Vec<f32> {
        bytemuck::pod_collect_to_vec(&self.read_bytes(t.buffer(), 4 * t.numel() as u64))
    }

    fn ids(&self, ids: &[u32]) -> GpuIds {
        GpuIds {
            storage: Arc::new(self.upload_u32(ids)),
            host: Arc::from(ids),
        }
    }

    fn ids_host<'a>(&self, ids: &'a GpuIds) -> &'a [u32] {
        &ids.host
    }

    fn add(&self, a: &GpuTensor, b: &GpuTensor) -> GpuTensor {
        elementwise::add(self, a, b)
    }

    fn sub(&self, a: &GpuTensor, b: &GpuTensor) -> GpuTensor {
        elementwise::sub(self, a, b)
    }

    fn mul(&self, a: &GpuTensor, b: &GpuTensor) -> GpuTensor {
        elementwise::mul(self, a, b)
    }

    fn add_assign(&self, acc: &mut GpuTensor, b: &GpuTensor) {
        elementwise::add_assign(self, acc, b)
    }

    fn scale(&self, x: &GpuTensor, s: &GpuTensor) -> GpuTensor {
        elementwise::scale(self, x, s)
    }

    fn broadcast(&self, s: &GpuTensor, shape: &[usize]) -> GpuTensor {
        elementwise::broadcast(self, s, shape)
    }

    fn relu(&self, x: &GpuTensor) -> GpuTensor {
        elementwise::relu(self, x)
    }

    fn relu_backward(&self, y: &GpuTensor, dy: &GpuTensor) -> GpuTensor {
        elementwise::relu_backward(self, y, dy)
    }

    fn sigmoid(&self, x: &GpuTensor) -> GpuTensor {
        elementwise::sigmoid(self, x)
    }

    fn sigmoid_backward(&self, y: &GpuTensor, dy: &GpuTensor) -> GpuTensor {
        elementwise::sigmoid_backward(self, y, dy)
    }

    fn dropout(&self, x: &GpuTensor, mask: &Dropout) -> GpuTensor {
        elementwise::dropout(self, x, mask)
    }

    fn embedding(&self, table: &GpuTensor, ids: &GpuIds) -> GpuTensor {
        embedding::embedding(self, table, ids)
    }

    fn embedding_backward(
        &self,
        dy: &GpuTensor,
        ids: &GpuIds,
        vocab: usize,
        padding_idx: Option<u32>,
    ) -> GpuTensor {
        embedding::embedding_backward(self, dy, ids, vocab, padding_idx)
    }

    fn layer_norm(
        &self,
        x: &GpuTensor,
        gamma: &GpuTensor,
        beta: &GpuTensor,
        eps: f32,
    ) -> (GpuTensor, GpuTensor) {
        layer_norm::layer_norm(self, x, gamma, beta, eps)
    }

    fn layer_norm_backward(
        &self,
        dy: &GpuTensor,
        x: &GpuTensor,
        gamma: &GpuTensor,
        stats: &GpuTensor,
    ) -> (GpuTensor, GpuTensor, GpuTensor) {
        layer_norm::layer_norm_backward(self, dy, x, gamma, stats)
    }

    fn rms_norm(&self, x: &GpuTensor, gamma: &GpuTensor, eps: f32) -> (GpuTensor, GpuTensor) {
        rms_norm::rms_norm(self, x, gamma, eps)
    }

    fn rms_norm_backward(
        &self,
        dy: &GpuTensor,
        x: &GpuTensor,
        gamma: &GpuTensor,
        rstd: &GpuTensor,
    ) -> (GpuTensor, GpuTensor) {
        rms_norm::rms_norm_backward(self, dy, x, gamma, rstd)
    }

    fn swiglu(&self, gate: &GpuTensor, up: &GpuTensor) -> GpuTensor {
        swiglu::swiglu(self, gate, up)
    }

    fn swiglu_backward(
        &self,
        dy: &GpuTensor,
        gate: &GpuTensor,
        up: &GpuTensor,
    ) -> (GpuTensor, GpuTensor) {
        swiglu::swiglu_backward(self, dy, gate, up)
    }

    fn matmul(&self, a: &GpuTensor, b: &GpuTensor, trans_a: bool, trans_b: bool) -> GpuTensor {
        matmul::matmul(self, a, b, trans_a, trans_b)
    }

    fn linear(&self, x: &GpuTensor, w: &GpuTensor, bias: Option<&GpuTensor>) -> GpuTensor {
        matmul::linear(self, x, w, bias)
    }

    fn sum_rows(&self, x: &GpuTensor) -> GpuTensor {
        sum_rows::sum_rows(self, x)
    }

    fn sum(&self, x: &GpuTensor) -> GpuTensor {
        sum_rows::sum(self, x)
    }

    fn attention(
        &self,
        qkv: &GpuTensor,
        key_ids: &GpuIds,
        shape: AttentionShape,
        dropout: Option<&Dropout>,
    ) -> (GpuTensor, GpuTensor) {
        attention::attention(self, qkv, key_ids, shape, dropout)
    }

    fn attention_backward(
        &self,
        dctx: &GpuTensor,
        qkv: &GpuTensor,
        probs: &GpuTensor,
        shape: AttentionShape,
        dropout: Option<&Dropout>,
    ) -> GpuTensor {
        attention::attention_backward(self, dctx, qkv, probs, shape, dropout)
    }

    fn rotary(&self, qkv: &GpuTensor, table: &GpuTensor, shape: AttentionShape) -> GpuTensor {
        rotary::rotary(self, qkv, table, shape, Turn::Forward)
    }

    fn rotary_backward(
        &self,
        dqkv: &GpuTensor,
        table: &GpuTensor,
        shape: AttentionShape,
    ) -> GpuTensor {
        rotary::rotary(self, dqkv, table, shape, Turn::Backward)
    }

    fn cross_entropy_smoothed(
        &self,
        h: &GpuTensor,
        table: &GpuTensor,
        targets: &GpuIds,
        smoothing: f32,
        with_grad: bool,
    ) -> CrossEntropy<GpuTensor> {
        cross_entropy::cross_entropy(self, h, table, targets, smoothing, with_grad)
    }

    fn softmax_cross_entropy(
        &self,
        logits: &GpuTensor,
        targets: &GpuIds,
        ignore_index: Option<u32>,
        with_grad: bool,
    ) -> SoftmaxCrossEntropy<GpuTensor> {
        cross_entropy::softmax_cross_entropy(self, logits, targets, ignore_index, with_grad)
    }

    fn sampled_loss(
        &self,
        h: &GpuTensor,
        table: &GpuTensor,
        targets: &GpuIds,
        negatives: Negatives<'_, GpuIds>,
        loss: SampledLoss<'_, GpuTensor>,
        with_grad: bool,
    ) -> SampledLossOutput<GpuTensor> {
        sampled_loss::sampled_loss(self, h, table, targets, negatives, loss, with_grad)
    }

    fn count_non_finite(&self, tensors: &[&GpuTensor]) -> Vec<usize> {
        non_finite::count_non_finite(self, tensors)
    }

    fn adam(
        &self,
        param: &mut GpuTensor,
        grad: &GpuTensor,
        m: &mut GpuTensor,
        v: &mut GpuTensor,
        hp: &AdamStep,
    ) {
        adam::adam(self, param, grad, m, v, hp)
    }
}

/// A backend for tests, on any adapter including CPU ones (llvmpipe), shared
/// by every caller in the process so kernels compile once.
///
/// When none can be opened it prints why and returns `None` (the test then
/// skips), unless the environment sets `SASREC_REQUIRE_GPU=1`, in which case
/// it panics with the reason (the test fails).
pub fn test_backend() -> Option<WgpuBackend> {
    static SHARED: OnceLock<Result<WgpuBackend, String>> = OnceLock::new();
    let shared = SHARED.get_or_init(|| {
        WgpuBackend::new(&GpuOptions {
            allow_cpu_adapter: true,
            ..GpuOptions::default()
        })
        .map_err(|e| e.to_string())
    });
    match shared {
        Ok(backend) => Some(backend.clone()),
        Err(reason) => skip_or_panic(reason),
    }
}

/// Like [`test_backend`] but a new backend with `options` (CPU adapters are
/// always allowed), e.g. with a tiny `max_binding_bytes` to exercise chunking.
pub fn test_backend_with(options: GpuOptions) -> Option<WgpuBackend> {
    let options = GpuOptions {
        allow_cpu_adapter: true,
        ..options
    };
    match WgpuBackend::new(&options) {
        Ok(backend) => Some(backend),
        Err(e) => skip_or_panic(&e.to_string()),
    }
}

fn skip_or_panic(reason: &str) -> Option<WgpuBackend> {
    if std::env::var("SASREC_REQUIRE_GPU").as_deref() == Ok("1") {
        panic!("SASREC_REQUIRE_GPU=1 but no GPU backend: {reason}");
    }
    eprintln!("skipping GPU test: {reason}");
    None
}
