//! The wgpu backend: hand-written WGSL compute kernels (`shaders/*.wgsl`).
//!
//! - [`WgpuBackend::new`] opens an adapter chosen by [`GpuOptions`], compiles
//!   every kernel once (a compile failure is a [`GpuError::Kernel`] naming the
//!   file and entry point) and keeps one pending command encoder: ops are
//!   recorded, not run, until the host reads a tensor back ([`Backend::to_vec`])
//!   or a batch of passes has accumulated.
//! - Tensors live in pooled buffers that return to the pool on drop, so a
//!   training step reuses the previous step's memory.
//! - Operands larger than one storage binding (the item table, the logits of
//!   the cross-entropy) are processed in chunks; see docs/kernels.md.
//! - [`list_adapters`] reports what wgpu finds (`sasrec devices`);
//!   [`test_backend`] gives tests a backend on any adapter, CPU ones included.
//!
//! [`Backend::to_vec`]: crate::Backend::to_vec

mod adapter;
mod kernels;
mod memory;
mod ops;
mod recorder;

use std::sync::{Arc, Mutex, OnceLock};

pub use adapter::{AdapterChoice, AdapterReport, list_adapters};
pub use memory::{GpuIds, GpuTensor};

use kernels::Pipelines;
use memory::BufferPool;
use recorder::Recorder;

/// Why a GPU backend could not be created or an optional feature used.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No adapter matches the request; the message lists what was found.
    #[error("no usable GPU adapter: {0}")]
    NoAdapter(String),
    /// The adapter refused to open a device.
    #[error("could not open a device on {adapter}: {message}")]
    Device {
        /// The adapter's name.
        adapter: String,
        /// The driver's reason.
        message: String,
    },
    /// A shader or pipeline failed to build.
    #[error("kernel {kernel} failed to build: {message}")]
    Kernel {
        /// `file.wgsl` or `file.wgsl:entry_point`.
        kernel: String,
        /// The compiler's or validator's message.
        message: String,
    },
    /// The adapter lacks a feature that was asked for.
    #[error("{0} is not supported by this adapter")]
    Unsupported(&'static str),
}

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
struct DeviceLimits {
    /// Bytes one storage binding may cover.
    max_binding: u64,
    /// Storage binding offsets are multiples of this.
    storage_align: u64,
    /// Bytes one buffer may hold.
    max_buffer: u64,
    /// Workgroups per grid dimension.
    max_groups: u32,
}

struct Inner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: DeviceLimits,
    pipelines: Pipelines,
    pool: Arc<Mutex<BufferPool>>,
    recorder: Mutex<Recorder>,
    ce_chunk_bytes: u64,
    timestamps: bool,
}

/// The wgpu backend. Cheap to clone: clones share the device, the kernels,
/// the buffer pool and the pending commands.
#[derive(Clone)]
pub struct WgpuBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WgpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WgpuBackend({})", self.adapter_name())
    }
}

impl WgpuBackend {
    /// Opens the adapter `options` chooses with its full limits and builds
    /// every kernel.
    pub fn new(options: &GpuOptions) -> Result<Self, GpuError> {
        let choose = |backends| {
            adapter::choose(
                adapter::enumerate(backends),
                &options.adapter,
                options.allow_cpu_adapter,
            )
        };
        let adapter = match options.adapter {
            // Indices refer to list_adapters(), which lists every backend.
            AdapterChoice::Index(_) => choose(wgpu::Backends::all())?,
            // Vulkan, Metal and DX12 first; GL only when they have nothing.
            _ => choose(wgpu::Backends::PRIMARY).or_else(|_| choose(wgpu::Backends::all()))?,
        };
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
            max_groups: adapter_limits.max_compute_workgroups_per_dimension,
        };

        let pipelines = Pipelines::build(&device)?;
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

    fn recorder(&self) -> std::sync::MutexGuard<'_, Recorder> {
        self.inner.recorder.lock().expect("recorder poisoned")
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
