//! A kernel of the user's own, written in WGSL, run on this crate's GPU
//! buffers between two of its ops and checked against the CPU reference with
//! the public testing helpers: what a researcher adding a kernel does.

use sasrec_kernels::gpu::{GpuTensor, wgpu};
use sasrec_kernels::testing::{BackendPair, Tol};
use sasrec_kernels::{Backend, WgpuBackend};

/// `y = x * x`, one invocation per element.
const SQUARE_WGSL: &str = r#"
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn square(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&y)) {
        y[id.x] = x[id.x] * x[id.x];
    }
}
"#;

/// Records `y = x * x` into the backend's pending work.
fn square(gpu: &WgpuBackend, x: &GpuTensor) -> GpuTensor {
    let n = x.numel();
    let y = gpu.zeros(x.shape());
    let device = gpu.device();
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("square"),
        source: wgpu::ShaderSource::Wgsl(SQUARE_WGSL.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("square"),
        layout: None,
        module: &module,
        entry_point: Some("square"),
        compilation_options: Default::default(),
        cache: None,
    });
    // Pooled buffers may be larger than the tensor: bind exactly n floats.
    let bytes = wgpu::BufferSize::new(4 * n as u64);
    let entry = |binding, buffer| wgpu::BindGroupEntry {
        binding,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer,
            offset: 0,
            size: bytes,
        }),
    };
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("square"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[entry(0, x.buffer()), entry(1, y.buffer())],
    });
    gpu.record(|_, encoder| {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(n.div_ceil(64) as u32, 1, 1);
    });
    y
}

#[test]
fn user_kernel_runs_on_our_buffers_in_order_with_our_ops() {
    let Some(p) = BackendPair::new() else { return };
    let n = 1000;
    let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.731).sin() * 3.0).collect();
    let (cx, gx) = p.tensor(&x, &[n]);
    // Our op before (its result is what the user kernel reads), the user's
    // kernel, our op after (it reads what the user kernel wrote).
    let (cx2, gx2) = (p.cpu.add(&cx, &cx), p.gpu.add(&gx, &gx));
    let gy = square(&p.gpu, &gx2);
    let gz = p.gpu.add(&gy, &gx);
    let cz = p.cpu.add(&p.cpu.mul(&cx2, &cx2), &cx);
    // One rounding per operation on both sides: identical.
    p.check("x2 * x2 + x", &cz, &gz, Tol::EXACT);
}
