//! The backends themselves: tensor handles and their sharing, the GPU's
//! buffer pool, adapters and per-kernel profiling.

mod common;

use common::BE;
use sasrec_kernels::Backend;
use sasrec_kernels::cpu::CpuTensor;
use sasrec_kernels::gpu::{self, GpuOptions};

// ----- CPU ---------------------------------------------------------------------

#[test]
fn tensor_handles_share_until_written() {
    let a = CpuTensor::new((0..6).map(|v| v as f32).collect(), &[2, 3]);
    let mut b = a.clone();
    b.data_mut()[0] = 10.0;
    assert_eq!(a.data()[0], 0.0, "writing a clone changed the original");
    assert_eq!(b.data()[0], 10.0);
    assert_eq!(a.dims2("test"), (2, 3));
    assert_eq!(a.view()[[1, 2]], 5.0);
    assert_eq!(BE.to_vec(&a), a.clone().into_vec());
    assert_eq!(BE.zeros(&[0, 4]).len(), 0);
    // Debug shows the shape and the first values only.
    let big = CpuTensor::zeros(&[1000, 1000]);
    assert!(format!("{big:?}").len() < 100);
    assert!(BE.name().starts_with("cpu ("));
}

#[test]
#[should_panic(expected = "tensor: 5 values do not fill shape [2, 3]")]
fn tensor_rejects_wrong_length() {
    CpuTensor::new(vec![0.0; 5], &[2, 3]);
}

// ----- GPU ---------------------------------------------------------------------

#[test]
fn pooled_buffers_come_back_zeroed_and_uploads_land_in_order() {
    let Some(gpu) = gpu::test_backend() else {
        return;
    };
    // Free a buffer, then take the same size class twice: zeros() must
    // clear it and an upload must not overwrite a value still being read.
    let a = gpu.tensor(&[5.0; 300], &[300]);
    let doubled = gpu.add(&a, &a);
    drop(a);
    let z = gpu.zeros(&[300]);
    let b = gpu.tensor(&[1.0; 300], &[300]);
    assert_eq!(gpu.to_vec(&doubled), vec![10.0; 300]);
    assert_eq!(gpu.to_vec(&z), vec![0.0; 300]);
    assert_eq!(gpu.to_vec(&b), vec![1.0; 300]);
}

#[test]
fn list_adapters_reports_the_test_adapter() {
    let Some(gpu) = gpu::test_backend() else {
        return;
    };
    let adapters = gpu::list_adapters();
    assert!(
        adapters.iter().any(|a| a.name == gpu.adapter_name()),
        "{adapters:?}"
    );
    assert!(
        adapters
            .iter()
            .all(|a| a.max_storage_buffer_binding_size > 0)
    );
    assert!(gpu.name().contains(gpu.adapter_name()));
}

#[test]
fn profiling_reports_time_per_kernel() {
    let Some(gpu) = gpu::test_backend_with(GpuOptions::default()) else {
        return;
    };
    if gpu.enable_profiling().is_err() {
        eprintln!("skipping: no timestamp queries on {}", gpu.adapter_name());
        return;
    }
    let a = gpu.tensor(&[1.0; 64 * 64], &[64, 64]);
    let c = gpu.matmul(&a, &a, false, true);
    let _ = gpu.to_vec(&c);
    let report = gpu.profile_report();
    let matmul = report
        .iter()
        .find(|k| k.kernel == "matmul.wgsl:matmul[nt]")
        .unwrap_or_else(|| panic!("no matmul in {report:?}"));
    assert_eq!(matmul.calls, 1);
    assert!(matmul.total_ms >= 0.0);
    gpu.reset_profile();
    assert!(gpu.profile_report().is_empty());
}
