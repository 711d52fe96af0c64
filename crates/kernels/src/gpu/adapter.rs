//! Finding and choosing a wgpu adapter.

use super::error::GpuError;

/// Which adapter [`WgpuBackend::new`](crate::gpu::WgpuBackend::new) opens.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AdapterChoice {
    /// The best one found: discrete GPUs first, then integrated, virtual and
    /// other GPUs, among the Vulkan, Metal and DX12 adapters; GL adapters
    /// only when there are none of those. CPU adapters (such as Mesa's
    /// llvmpipe) only when [`GpuOptions::allow_cpu_adapter`] is set.
    ///
    /// [`GpuOptions::allow_cpu_adapter`]: crate::gpu::GpuOptions::allow_cpu_adapter
    #[default]
    Best,
    /// The adapter at this index of [`list_adapters`] (what `sasrec devices`
    /// prints), whatever its type.
    Index(usize),
    /// The best adapter whose name contains this text (case-insensitive),
    /// whatever its type.
    NameContains(String),
}

/// What `sasrec devices` prints about one adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterReport {
    /// Position in the enumeration order, usable as [`AdapterChoice::Index`].
    pub index: usize,
    /// Adapter name, e.g. "NVIDIA H100 80GB HBM3" or "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub name: String,
    /// Graphics API: Vulkan, Metal, Dx12 or Gl.
    pub backend: String,
    /// DiscreteGpu, IntegratedGpu, VirtualGpu, Cpu or Other.
    pub device_type: String,
    /// Driver name.
    pub driver: String,
    /// Driver version or other details.
    pub driver_info: String,
    /// Largest storage buffer one binding can see, in bytes.
    pub max_storage_buffer_binding_size: u64,
    /// Largest buffer, in bytes.
    pub max_buffer_size: u64,
    /// Workgroup (shared) memory per workgroup, in bytes.
    pub max_compute_workgroup_storage_size: u32,
    /// Invocations per workgroup.
    pub max_compute_invocations_per_workgroup: u32,
    /// Workgroups per dispatch dimension.
    pub max_compute_workgroups_per_dimension: u32,
    /// Smallest and largest subgroup size.
    pub subgroup_sizes: (u32, u32),
    /// GPU timestamps for per-kernel profiling are available.
    pub timestamp_query: bool,
    /// A CPU implementation (such as llvmpipe): [`AdapterChoice::Best`]
    /// skips it unless `allow_cpu_adapter` is set.
    pub is_cpu: bool,
}

/// The adapters of `backends` (narrowed further by the usual `WGPU_*`
/// environment variables), in wgpu's enumeration order.
pub(crate) fn enumerate(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    // Only initialise the APIs asked for: probing GL is what prints EGL
    // warnings on headless machines.
    desc.backends &= backends;
    let instance = wgpu::Instance::new(desc);
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
}

/// The adapters the backend can open: those of Vulkan, Metal and DX12, or,
/// only when those have none, of every API (GL included). GL is probed
/// only then: probing it is what prints EGL warnings on headless machines.
pub(crate) fn usable() -> Vec<wgpu::Adapter> {
    let primary = enumerate(wgpu::Backends::PRIMARY);
    if primary.is_empty() {
        enumerate(wgpu::Backends::all())
    } else {
        primary
    }
}

/// Every adapter the backend can open (see [`AdapterChoice::Best`]), in
/// enumeration order, with its key limits.
pub fn list_adapters() -> Vec<AdapterReport> {
    usable()
        .iter()
        .enumerate()
        .map(|(index, adapter)| report(index, adapter))
        .collect()
}

fn report(index: usize, adapter: &wgpu::Adapter) -> AdapterReport {
    let info = adapter.get_info();
    let limits = adapter.limits();
    AdapterReport {
        index,
        name: info.name,
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: info.driver,
        driver_info: info.driver_info,
        max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        max_buffer_size: limits.max_buffer_size,
        max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
        max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        subgroup_sizes: (info.subgroup_min_size, info.subgroup_max_size),
        timestamp_query: adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY),
        is_cpu: info.device_type == wgpu::DeviceType::Cpu,
    }
}

/// Higher is better: the device type first, then the graphics API.
fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let device = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 4,
        wgpu::DeviceType::IntegratedGpu => 3,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 1,
        wgpu::DeviceType::Cpu => 0,
    };
    let api = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 2,
        wgpu::Backend::Gl => 1,
        _ => 0,
    };
    (device, api)
}

/// Picks the adapter `choice` asks for among `adapters`.
pub(crate) fn choose(
    adapters: Vec<wgpu::Adapter>,
    choice: &AdapterChoice,
    allow_cpu: bool,
) -> Result<wgpu::Adapter, GpuError> {
    let found = || {
        let names: Vec<String> = adapters
            .iter()
            .map(|a| {
                let info = a.get_info();
                format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
            })
            .collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join("; ")
        }
    };
    match choice {
        AdapterChoice::Index(i) => {
            if *i >= adapters.len() {
                let msg = format!("no adapter with index {i}; found: {}", found());
                return Err(GpuError::NoAdapter(msg));
            }
            Ok(adapters.into_iter().nth(*i).expect("index checked"))
        }
        AdapterChoice::NameContains(text) => {
            let needle = text.to_lowercase();
            let msg = format!("no adapter name contains {text:?}; found: {}", found());
            adapters
                .into_iter()
                .filter(|a| a.get_info().name.to_lowercase().contains(&needle))
                .rev() // ties go to the first enumerated
                .max_by_key(|a| rank(&a.get_info()))
                .ok_or(GpuError::NoAdapter(msg))
        }
        AdapterChoice::Best => {
            let msg = if adapters.is_empty() {
                "wgpu found no adapter (is a Vulkan, Metal or DX12 driver installed? \
                 On Linux without a GPU, Mesa's llvmpipe comes with `mesa-vulkan-drivers`)"
                    .to_string()
            } else {
                format!(
                    "only CPU adapters found ({}), which are used only when chosen by name or index",
                    found()
                )
            };
            adapters
                .into_iter()
                .filter(|a| allow_cpu || a.get_info().device_type != wgpu::DeviceType::Cpu)
                .rev() // ties go to the first enumerated
                .max_by_key(|a| rank(&a.get_info()))
                .ok_or(GpuError::NoAdapter(msg))
        }
    }
}
