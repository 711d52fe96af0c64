//! The backend that runs the model, as `--device` opened it (the flags
//! are [`crate::args::DeviceArgs`]), and the profiles it prints.

use sasrec_kernels::gpu::WgpuBackend;
use sasrec_kernels::{Backend, CpuBackend};

/// An opened backend.
pub enum Device {
    /// The CPU backend.
    Cpu(CpuBackend),
    /// The wgpu backend.
    Gpu(WgpuBackend),
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
