//! Launcher of `shaders/rotary.wgsl`: rotary position embedding of the
//! queries and keys in attention's `qkv`, forward and backward (the
//! backward turns by the opposite angles), one invocation per element,
//! tensors larger than one binding in chunks of whole rows.

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
    first_row: u32,
    x_off: u32,
    out_off: u32,
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
    let (rows, width) = (s.batch * s.len, 3 * s.dim());
    let table_range = b.whole(table.buffer(), s.len * s.head_dim, "rotary table");
    let per_dispatch = b.rows_per_binding(width, "rotary: one row of qkv");
    for r0 in (0..rows).step_by(per_dispatch) {
        let chunk = per_dispatch.min(rows - r0);
        let (x_range, x_off) = b.range(x.buffer(), r0 * width, chunk * width);
        let (out_range, out_off) = b.range(out.buffer(), r0 * width, chunk * width);
        b.run(
            &ROTARY,
            &Params {
                rows: u32_of(chunk),
                dim: u32_of(s.dim()),
                len: u32_of(s.len),
                head_dim: u32_of(s.head_dim),
                first_row: u32_of(r0),
                x_off,
                out_off,
                sign: turn.sin_sign(),
            },
            [x_range, table_range, out_range],
            b.grid((chunk * width).div_ceil(WG as usize)),
        );
    }
    out
}
