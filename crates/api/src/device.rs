//! Which backend runs the model: the CPU, a GPU through wgpu, or the best
//! one found; and the CPU thread count.

use std::str::FromStr;

use anyhow::{Context, Result};
use sasrec_kernels::gpu::{AdapterChoice, GpuError, GpuOptions, WgpuBackend};
use sasrec_kernels::{Backend, CpuBackend};

use crate::Log;

/// The most CPU threads [`set_threads`] accepts.
pub const MAX_THREADS: usize = 1024;

/// Where to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceKind {
    /// The CPU backend (ndarray + rayon).
    Cpu,
    /// The wgpu backend on a GPU (a CPU adapter such as llvmpipe only when
    /// named as the adapter).
    Gpu,
    /// A GPU when one is found, else the CPU.
    #[default]
    Auto,
}

impl FromStr for DeviceKind {
    type Err = String;

    fn from_str(s: &str) -> Result<DeviceKind, String> {
        match s {
            "cpu" => Ok(DeviceKind::Cpu),
            "gpu" => Ok(DeviceKind::Gpu),
            "auto" => Ok(DeviceKind::Auto),
            _ => Err(format!(
                "unknown device {:?} (use cpu, gpu or auto)",
                sasrec_model::bounded(s, 20)
            )),
        }
    }
}

/// The device asked for.
#[derive(Clone, Debug, Default)]
pub struct DeviceChoice {
    /// CPU, GPU or the best found.
    pub kind: DeviceKind,
    /// The adapter to open, by index or part of its name as `sasrec
    /// devices` lists them (`llvmpipe` for Mesa's CPU driver).
    pub adapter: Option<String>,
    /// Time every GPU kernel with timestamp queries.
    pub profiling: bool,
}

/// An opened backend.
pub enum Device {
    /// The CPU backend.
    Cpu(CpuBackend),
    /// The wgpu backend.
    Gpu(WgpuBackend),
}

impl Device {
    /// Opens the backend `choice` asks for and says which one through `log`.
    pub fn open(choice: &DeviceChoice, log: Log) -> Result<Device> {
        let options = GpuOptions {
            adapter: match &choice.adapter {
                None => AdapterChoice::Best,
                Some(a) => match a.parse::<usize>() {
                    Ok(i) => AdapterChoice::Index(i),
                    Err(_) => AdapterChoice::NameContains(a.clone()),
                },
            },
            profiling: choice.profiling,
            ..GpuOptions::default()
        };
        let device = match choice.kind {
            DeviceKind::Cpu => Device::Cpu(CpuBackend),
            DeviceKind::Gpu => Device::Gpu(WgpuBackend::new(&options).context(
                "opening the GPU (see `sasrec devices`; --adapter llvmpipe uses Mesa's CPU driver)",
            )?),
            DeviceKind::Auto => match WgpuBackend::new(&options) {
                Ok(gpu) => Device::Gpu(gpu),
                Err(GpuError::NoAdapter(why)) => {
                    // Said only where a GPU was asked for (an adapter named);
                    // the device line below says what runs.
                    if choice.adapter.is_some() {
                        log(&format!("no GPU found ({why}); using the CPU"));
                    }
                    Device::Cpu(CpuBackend)
                }
                Err(err) => {
                    return Err(err).context("opening the GPU (use --device cpu to skip it)");
                }
            },
        };
        log(&format!("device: {}", device.name()));
        Ok(device)
    }

    /// The backend's name.
    pub fn name(&self) -> String {
        match self {
            Device::Cpu(b) => b.name(),
            Device::Gpu(b) => b.name(),
        }
    }
}

/// Sizes the CPU thread pools to `threads`: rayon's global pool (the
/// row-parallel ops) and matrixmultiply's (the matrix products). Call it
/// before anything runs on the CPU: rayon's pool can be sized only before
/// its first use, and reading a log already uses it.
pub fn set_threads(threads: usize) -> Result<()> {
    if !(1..=MAX_THREADS).contains(&threads) {
        anyhow::bail!("--threads must be between 1 and {MAX_THREADS}, got {threads}");
    }
    // SAFETY: called before the CPU work starts; matrixmultiply reads the
    // variable when its first product runs.
    unsafe { std::env::set_var("MATMUL_NUM_THREADS", threads.to_string()) };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .context("setting the CPU thread count")
}
