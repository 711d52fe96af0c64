//! Launcher of `shaders/rotary.wgsl`: rotary position embedding of the
//! queries and keys in attention's `qkv`, forward and backward (the
//! backward turns by the opposite angles), one invocation per element.

use bytemuck::{Pod, Zeroable};

use super::device::WgpuBackend;
use super::dispatch::u32_of;
use super::kernel::{Kernel, KernelDesc, Shader, read, read_write};
use super::memory::GpuTensor;
use crate::rotary::Turn;
use crate::{AttentionShape, contract};

/// Invocations per workgroup.
const WG: u32 = 256;

/// `rotary.wgsl`'s `Params`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    dim: u32,
    len: u32,
    head_dim: u32,
    sign: f32,
}

static SHADER: Shader<Params> = Shader::new(
    "rotary.wgsl",
    include_str!("../../shaders/rotary.wgsl"),
    &[],
    &[("WG", WG)],
);

static ROTARY: Kernel<Params, 3> = Kernel::new(
    &SHADER,
    "rotary",
    [read(1, "x"), read(2, "table"), read_write(3, "out")],
);

/// Every kernel of the family.
pub(super) fn kernels() -> Vec<KernelDesc<'static>> {
    vec![ROTARY.desc()]
}

pub(super) fn rotary(
    b: &WgpuBackend,
    x: &GpuTensor,
    table: &GpuTensor,
    s: AttentionShape,
    turn: Turn,
) -> GpuTensor {
    let n = contract::rotary(&x.shape, &table.shape, s);
    let out = b.alloc(&x.shape);
    if n == 0 {
        return out;
    }
    b.run(
        &ROTARY,
        &Params {
            rows: u32_of(s.batch * s.len),
            dim: u32_of(s.dim()),
            len: u32_of(s.len),
            head_dim: u32_of(s.head_dim),
            sign: turn.sin_sign(),
        },
        [
            b.whole(x.buffer(), n, "rotary qkv"),
            b.whole(table.buffer(), s.len * s.head_dim, "rotary table"),
            b.whole(out.buffer(), n, "rotary out"),
        ],
        b.grid(n.div_ceil(WG as usize)),
    );
    out
}
