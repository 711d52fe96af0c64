//! The wgpu backend's device: [`WgpuBackend`] (the device, queue, kernels,
//! buffer pool and pending commands it shares between clones), how to open
//! it ([`GpuOptions`]) and what it reports. Opening it, which builds every
//! family's kernels, is in `mod.rs`; the op families use what is here.

use std::sync::{Arc, Mutex};

use super::adapter::AdapterChoice;
use super::error::GpuError;
use super::kernel::Pipelines;
use super::memory::BufferPool;
use super::recorder::Recorder;

/// How to open a [`WgpuBackend`].
#[derive(Clone, Debug)]
pub struct GpuOptions {
    /// Which adapter to open.
    pub adapter: AdapterChoice,
    /// Let [`AdapterChoice::Best`] pick a CPU adapter (such as Mesa's
    /// llvmpipe) when no GPU is found. Correct, but slow.
    pub allow_cpu_adapter: bool,
    /// Use at most this many bytes per storage binding, below the adapter's
    /// own limit. Tests set it small to exercise chunking.
    pub max_binding_bytes: Option<u64>,
    /// Use at most this many workgroups per grid dimension, below the
    /// adapter's own limit (65535). Tests set it small to exercise the
    /// grids that spill into the second dimension.
    pub max_workgroups_per_dimension: Option<u32>,
    /// Memory budget for one chunk of cross-entropy logits, in bytes.
    pub ce_chunk_bytes: u64,
    /// Bytes of freed buffers kept for reuse.
    pub max_pooled_bytes: u64,
    /// Time every kernel with GPU timestamps from the start (see
    /// [`WgpuBackend::enable_profiling`]).
    pub profiling: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            adapter: AdapterChoice::Best,
            allow_cpu_adapter: false,
            max_binding_bytes: None,
            max_workgroups_per_dimension: None,
            ce_chunk_bytes: 256 << 20,
            max_pooled_bytes: 2 << 30,
            profiling: false,
        }
    }
}

/// Total GPU time of one kernel while profiling.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// `file.wgsl:entry_point`, e.g. `matmul.wgsl:matmul[nt]`.
    pub kernel: String,
    /// Total milliseconds over all its dispatches.
    pub total_ms: f64,
    /// Number of dispatches.
    pub calls: u64,
}

/// Device limits the ops plan their chunks and grids with.
#[derive(Clone, Copy, Debug)]
pub(super) struct DeviceLimits {
    /// Bytes one storage binding may cover.
    pub(super) max_binding: u64,
    /// Storage binding offsets are multiples of this.
    pub(super) storage_align: u64,
    /// Bytes one buffer may hold.
    pub(super) max_buffer: u64,
    /// Workgroups per grid dimension.
    pub(super) max_groups: u32,
}

pub(super) struct Inner {
    pub(super) device: wgpu::Device,
    pub(super) queue: wgpu::Queue,
    pub(super) info: wgpu::AdapterInfo,
    pub(super) limits: DeviceLimits,
    pub(super) pipelines: Pipelines,
    pub(super) pool: Arc<Mutex<BufferPool>>,
    pub(super) recorder: Mutex<Recorder>,
    pub(super) ce_chunk_bytes: u64,
    pub(super) timestamps: bool,
}

/// The wgpu backend. Cheap to clone: clones share the device, the kernels,
/// the buffer pool and the pending commands.
#[derive(Clone)]
pub struct WgpuBackend {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for WgpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WgpuBackend({})", self.adapter_name())
    }
}

impl WgpuBackend {
    /// The adapter's name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn adapter_name(&self) -> &str {
        &self.inner.info.name
    }

    /// Everything wgpu reports about the adapter in use.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// The largest storage binding the ops use, in bytes (the adapter's limit
    /// or [`GpuOptions::max_binding_bytes`]).
    pub fn max_binding_bytes(&self) -> u64 {
        self.inner.limits.max_binding
    }

    /// The wgpu device, e.g. to build pipelines of your own kernels.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The wgpu queue. Work recorded by the ops is submitted only at
    /// [`WgpuBackend::flush`] (or when the host reads a tensor), so call it
    /// before submitting your own work that reads their results, or record
    /// your work with [`WgpuBackend::record`] instead.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// Records work of your own (compute passes of your kernels on tensors'
    /// [`GpuTensor::buffer`]s, copies) into the pending command encoder, in
    /// order with the ops recorded before and after it.
    pub fn record<R>(&self, f: impl FnOnce(&wgpu::Device, &mut wgpu::CommandEncoder) -> R) -> R {
        let device = &self.inner.device;
        f(device, self.recorder().encoder(device))
    }

    /// Submits the recorded work to the GPU without waiting for it.
    pub fn flush(&self) {
        self.recorder().flush(&self.inner.device, &self.inner.queue);
    }

    /// Drops the buffers kept for reuse (they are allocated again as needed).
    pub fn release_pooled_buffers(&self) {
        self.inner
            .pool
            .lock()
            .expect("buffer pool poisoned")
            .clear();
    }

    /// Starts timing every kernel with GPU timestamps. Batches then wait for
    /// the GPU when they are submitted, so use it to find where time goes,
    /// not for production runs.
    pub fn enable_profiling(&self) -> Result<(), GpuError> {
        if !self.inner.timestamps {
            return Err(GpuError::Unsupported("TIMESTAMP_QUERY (kernel profiling)"));
        }
        self.recorder()
            .enable_profiling(&self.inner.device, &self.inner.queue);
        Ok(())
    }

    /// Total GPU time per kernel since profiling started or was last reset,
    /// slowest first. Submits pending work first. Empty when profiling is off.
    pub fn profile_report(&self) -> Vec<KernelTime> {
        let mut recorder = self.recorder();
        recorder.flush(&self.inner.device, &self.inner.queue);
        recorder
            .profile()
            .into_iter()
            .map(|(kernel, total_ms, calls)| KernelTime {
                kernel,
                total_ms,
                calls,
            })
            .collect()
    }

    /// Clears the profile totals (e.g. after each step).
    pub fn reset_profile(&self) {
        let mut recorder = self.recorder();
        recorder.flush(&self.inner.device, &self.inner.queue);
        recorder.reset_profile();
    }

    pub(super) fn recorder(&self) -> std::sync::MutexGuard<'_, Recorder> {
        self.inner.recorder.lock().expect("recorder poisoned")
    }
}
