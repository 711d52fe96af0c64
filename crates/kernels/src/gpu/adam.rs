//! Launcher of `shaders/adam.wgsl`: one Adam step in place, elementwise, in
//! `torch.optim.Adam`'s order of operations, in chunks of one binding.

use bytemuck::{Pod, Zeroable};

use super::device::WgpuBackend;
use super::dispatch::{Operand, u32_of};
use super::kernel::{Kernel, KernelDesc, Shader, read, read_write};
use super::memory::GpuTensor;
use crate::{AdamStep, contract};

/// Invocations per workgroup.
const WG: u32 = 256;

/// `adam.wgsl`'s `Params`: the step's constants as `AdamStep` derives them.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    eps: f32,
    step_size: f32,
    bias_correction2_sqrt: f32,
}

static SHADER: Shader<Params> = Shader::new(
    "adam.wgsl",
    include_str!("../../shaders/adam.wgsl"),
    &[],
    &[("WG", WG)],
);

static STEP: Kernel<Params, 4> = Kernel::new(
    &SHADER,
    "step",
    [
        read(1, "grad"),
        read_write(2, "param"),
        read_write(3, "m"),
        read_write(4, "v"),
    ],
);

/// Every kernel of the family.
pub(super) fn kernels() -> Vec<KernelDesc<'static>> {
    vec![STEP.desc()]
}

pub(super) fn adam(
    b: &WgpuBackend,
    param: &mut GpuTensor,
    grad: &GpuTensor,
    m: &mut GpuTensor,
    v: &mut GpuTensor,
    hp: &AdamStep,
) {
    let n = contract::adam(&param.shape, &grad.shape, &m.shape, &v.shape);
    b.make_unique(param);
    b.make_unique(m);
    b.make_unique(v);
    b.elementwise(
        &STEP,
        WG,
        n,
        [
            Operand::Elements(grad.buffer()),
            Operand::Elements(param.buffer()),
            Operand::Elements(m.buffer()),
            Operand::Elements(v.buffer()),
        ],
        |len, _| Params {
            n: u32_of(len),
            one_minus_beta1: hp.one_minus_beta1(),
            beta2: hp.beta2_f32(),
            one_minus_beta2: hp.one_minus_beta2(),
            eps: hp.eps_f32(),
            step_size: hp.step_size(),
            bias_correction2_sqrt: hp.bias_correction2_sqrt(),
        },
    );
}
