//! Launchers of `shaders/swiglu.wgsl`: SwiGLU's gating `silu(gate) * up`
//! and its backward, one invocation per element, tensors larger than one
//! binding in chunks.

use bytemuck::{Pod, Zeroable};

use super::device::WgpuBackend;
use super::dispatch::{Operand, u32_of};
use super::kernel::{Kernel, KernelDesc, Shader, read, read_write};
use super::memory::GpuTensor;
use crate::contract;

/// Invocations per workgroup.
const WG: u32 = 256;

/// `swiglu.wgsl`'s `Params`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
}

static SHADER: Shader<Params> = Shader::new(
    "swiglu.wgsl",
    include_str!("../../shaders/swiglu.wgsl"),
    &[],
    &[("WG", WG)],
);

static FORWARD: Kernel<Params, 3> = Kernel::new(
    &SHADER,
    "forward",
    [read(1, "gate"), read(2, "up"), read_write(4, "out")],
);
static BACKWARD: Kernel<Params, 5> = Kernel::new(
    &SHADER,
    "backward",
    [
        read(1, "gate"),
        read(2, "up"),
        read(3, "dy"),
        read_write(4, "out"),
        read_write(5, "out_up"),
    ],
);

/// Every kernel of the family.
pub(super) fn kernels() -> Vec<KernelDesc<'static>> {
    vec![FORWARD.desc(), BACKWARD.desc()]
}

fn params(len: usize, _first: usize) -> Params {
    Params { n: u32_of(len) }
}

pub(super) fn swiglu(b: &WgpuBackend, gate: &GpuTensor, up: &GpuTensor) -> GpuTensor {
    let n = contract::swiglu(&gate.shape, &up.shape);
    let out = b.alloc(&gate.shape);
    b.elementwise(
        &FORWARD,
        WG,
        n,
        [
            Operand::Elements(gate.buffer()),
            Operand::Elements(up.buffer()),
            Operand::Elements(out.buffer()),
        ],
        params,
    );
    out
}

pub(super) fn swiglu_backward(
    b: &WgpuBackend,
    dy: &GpuTensor,
    gate: &GpuTensor,
    up: &GpuTensor,
) -> (GpuTensor, GpuTensor) {
    let n = contract::swiglu_backward(&dy.shape, &gate.shape, &up.shape);
    let dgate = b.alloc(&gate.shape);
    let dup = b.alloc(&gate.shape);
    b.elementwise(
        &BACKWARD,
        WG,
        n,
        [
            Operand::Elements(gate.buffer()),
            Operand::Elements(up.buffer()),
            Operand::Elements(dy.buffer()),
            Operand::Elements(dgate.buffer()),
            Operand::Elements(dup.buffer()),
        ],
        params,
    );
    (dgate, dup)
}
