//! `sasrec devices`: the adapters the GPU backend can use, their limits, and
//! which one `--device gpu` opens (building every kernel on it as a check).

use sasrec_kernels::Backend;
use sasrec_kernels::gpu::{self, AdapterChoice, AdapterReport, GpuOptions, WgpuBackend};

/// Runs `sasrec devices`.
pub fn run() -> anyhow::Result<()> {
    let adapters = gpu::list_adapters();
    if adapters.is_empty() {
        println!("wgpu found no adapter.");
    }
    for adapter in &adapters {
        print_adapter(adapter);
    }
    println!();
    match WgpuBackend::new(&GpuOptions::default()) {
        Ok(backend) => println!("--device gpu: {} (all kernels build)", backend.name()),
        Err(err) => {
            println!("--device gpu: none ({err})");
            // A CPU adapter works when named: say how, and check it builds.
            if let Some(cpu) = adapters.iter().find(|a| a.is_cpu) {
                let options = GpuOptions {
                    adapter: AdapterChoice::Index(cpu.index),
                    ..GpuOptions::default()
                };
                let hint = format!("--device gpu --adapter {}", adapter_flag(&adapters, cpu));
                match WgpuBackend::new(&options) {
                    Ok(backend) => {
                        println!("{hint}: {} (all kernels build; slow)", backend.name())
                    }
                    Err(err) => println!("{hint}: none ({err})"),
                }
            }
        }
    }
    Ok(())
}

/// How to name an adapter with --adapter: the first word of its name when
/// that names no other adapter, else its index.
fn adapter_flag(adapters: &[AdapterReport], adapter: &AdapterReport) -> String {
    let word = adapter
        .name
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_lowercase();
    let matching = adapters
        .iter()
        .filter(|a| a.name.to_lowercase().contains(&word))
        .count();
    if !word.is_empty() && matching == 1 {
        word
    } else {
        adapter.index.to_string()
    }
}

fn print_adapter(a: &AdapterReport) {
    println!("[{}] {}", a.index, a.name);
    println!(
        "    backend {}, type {}, driver {} {}",
        a.backend, a.device_type, a.driver, a.driver_info
    );
    println!(
        "    max storage binding {}, max buffer {}, workgroup memory {}",
        bytes(a.max_storage_buffer_binding_size),
        bytes(a.max_buffer_size),
        bytes(u64::from(a.max_compute_workgroup_storage_size)),
    );
    println!(
        "    invocations/workgroup {}, workgroups/dimension {}, subgroup size {}..{}, timestamps {}",
        a.max_compute_invocations_per_workgroup,
        a.max_compute_workgroups_per_dimension,
        a.subgroup_sizes.0,
        a.subgroup_sizes.1,
        if a.timestamp_query { "yes" } else { "no" },
    );
}

/// `bytes` in the largest binary unit that keeps it at least 1.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
