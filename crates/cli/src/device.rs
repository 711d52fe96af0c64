//! `--device cpu|gpu|auto`: which backend runs the model.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use sasrec_kernels::gpu::{AdapterChoice, GpuError, GpuOptions, WgpuBackend};
use sasrec_kernels::{Backend, CpuBackend};

/// The most CPU threads `--threads` accepts.
const MAX_THREADS: usize = 1024;

/// Where to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceKind {
    /// The CPU backend (ndarray + rayon).
    Cpu,
    /// The wgpu backend on a GPU (a CPU adapter such as llvmpipe only with --adapter).
    Gpu,
    /// A GPU when one is found, else the CPU.
    Auto,
}

/// Device flags shared by the commands that run the model.
#[derive(Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Backend to run on.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceKind,
    /// With --device gpu: the adapter to open, by index or part of its name as
    /// `sasrec devices` lists them (e.g. `llvmpipe` for Mesa's CPU driver).
    #[arg(long, value_name = "INDEX|NAME")]
    pub adapter: Option<String>,
    /// CPU threads, for the row-parallel ops and the matrix products
    /// (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Time every GPU kernel with timestamp queries and print the time per
    /// kernel per step at the end of each epoch.
    #[arg(long)]
    pub profile_kernels: bool,
    /// Time every CPU op and print the time per op per step at the end of
    /// each epoch (the CPU backend's counterpart of --profile-kernels).
    #[arg(long)]
    pub profile_ops: bool,
}

/// An opened backend.
pub enum Device {
    /// The CPU backend.
    Cpu(CpuBackend),
    /// The wgpu backend.
    Gpu(WgpuBackend),
}

impl DeviceArgs {
    /// Opens the backend these flags ask for and says which one on stderr.
    pub fn open(&self) -> Result<Device> {
        if let Some(threads) = self.threads {
            if !(1..=MAX_THREADS).contains(&threads) {
                anyhow::bail!("--threads must be between 1 and {MAX_THREADS}, got {threads}");
            }
            // SAFETY: called before any other thread of this process exists
            // (the commands open the device first); matrixmultiply reads the
            // variable when its first product runs.
            unsafe { std::env::set_var("MATMUL_NUM_THREADS", threads.to_string()) };
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build_global()
                .context("setting the CPU thread count")?;
        }
        let options = GpuOptions {
            adapter: match &self.adapter {
                None => AdapterChoice::Best,
                Some(a) => match a.parse::<usize>() {
                    Ok(i) => AdapterChoice::Index(i),
                    Err(_) => AdapterChoice::NameContains(a.clone()),
                },
            },
            profiling: self.profile_kernels,
            ..GpuOptions::default()
        };
        let device = match self.device {
            DeviceKind::Cpu => Device::Cpu(CpuBackend),
            DeviceKind::Gpu => Device::Gpu(WgpuBackend::new(&options).context(
                "opening the GPU (see `sasrec devices`; --adapter llvmpipe uses Mesa's CPU driver)",
            )?),
            DeviceKind::Auto => match WgpuBackend::new(&options) {
                Ok(gpu) => Device::Gpu(gpu),
                Err(GpuError::NoAdapter(why)) => {
                    eprintln!("no GPU found ({why}); training on the CPU");
                    Device::Cpu(CpuBackend)
                }
                Err(err) => {
                    return Err(err).context("opening the GPU (use --device cpu to skip it)");
                }
            },
        };
        eprintln!("device: {}", device.name());
        Ok(device)
    }
}

impl Device {
    /// The backend's name.
    pub fn name(&self) -> String {
        match self {
            Device::Cpu(b) => b.name(),
            Device::Gpu(b) => b.name(),
        }
    }
}
