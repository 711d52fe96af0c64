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
    /// A GPU when one is found, else the CPU (quietly, unless --adapter
    /// names one).
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
    /// Time every GPU kernel with timestamp queries and print the time spent
    /// in each (train: per step, after every epoch).
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
    /// Sizes the CPU thread pools to `--threads` (all cores without it).
    /// Every command calls it first: rayon's pool can be sized only before
    /// its first use, and reading a log already uses it.
    pub fn set_threads(&self) -> Result<()> {
        let Some(threads) = self.threads else {
            return Ok(());
        };
        if !(1..=MAX_THREADS).contains(&threads) {
            anyhow::bail!("--threads must be between 1 and {MAX_THREADS}, got {threads}");
        }
        // SAFETY: called first by the commands, before any other thread of
        // this process exists; matrixmultiply reads the variable when its
        // first product runs.
        unsafe { std::env::set_var("MATMUL_NUM_THREADS", threads.to_string()) };
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .context("setting the CPU thread count")
    }

    /// Opens the backend these flags ask for and says which one on stderr
    /// (after [`DeviceArgs::set_threads`]).
    pub fn open(&self) -> Result<Device> {
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
                    // Said only where a GPU was asked for (an adapter named);
                    // the device line below says what runs.
                    if self.adapter.is_some() {
                        eprintln!("no GPU found ({why}); using the CPU");
                    }
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

/// Prints the GPU time of every kernel since profiling was reset, divided
/// by `steps` (`per` says what by, e.g. "per step"; 1 and "in all" for
/// totals), longest first.
pub fn print_kernel_times(backend: &WgpuBackend, steps: usize, per: &str) {
    let times = backend.profile_report();
    let rows = times
        .iter()
        .map(|t| (t.total_ms, t.calls, t.kernel.as_str()));
    print_times(&format!("GPU time {per}"), steps, rows.collect());
}

/// Prints the CPU time of every op since profiling was reset, per step,
/// longest first.
pub fn print_op_times(backend: &CpuBackend, steps: usize) {
    let times = backend.profile_report();
    let rows = times.iter().map(|t| (t.total_ms, t.calls, t.op));
    print_times("CPU op time per step", steps, rows.collect());
}

/// Prints `(total ms, calls, name)` rows divided by `steps`, longest first,
/// on stderr.
fn print_times(title: &str, steps: usize, mut rows: Vec<(f64, u64, &str)>) {
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let total: f64 = rows.iter().map(|r| r.0).sum();
    let steps = steps.max(1) as f64;
    eprintln!("{title}: {:.3} ms", total / steps);
    for (ms, calls, name) in rows {
        eprintln!(
            "  {:>8.3} ms  {:>5.1}%  {:>6.1} calls  {name}",
            ms / steps,
            100.0 * ms / total.max(1e-12),
            calls as f64 / steps,
        );
    }
}
