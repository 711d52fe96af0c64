//! `sasrec devices`: the adapters wgpu finds, their limits, and which one the
//! GPU backend opens by default (building every kernel on it as a check).

use sasrec_kernels::Backend;
use sasrec_kernels::gpu::{self, AdapterReport, GpuOptions, WgpuBackend};

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
        Ok(backend) => println!("default: {} (all kernels build)", backend.name()),
        Err(err) => {
            println!("default: none ({err})");
            let cpu_ok = GpuOptions {
                allow_cpu_adapter: true,
                ..GpuOptions::default()
            };
            match WgpuBackend::new(&cpu_ok) {
                Ok(backend) => println!(
                    "with CPU adapters allowed: {} (all kernels build; slow)",
                    backend.name()
                ),
                Err(err) => println!("with CPU adapters allowed: none ({err})"),
            }
        }
    }
    Ok(())
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
