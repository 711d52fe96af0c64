//! Launchers of `shaders/rms_norm.wgsl`: forward (one workgroup per row),
//! backward (dx, one workgroup per row; dgamma as partial column sums
//! finished by `sum_rows`).

use bytemuck::{Pod, Zeroable};

use super::device::WgpuBackend;
use super::dispatch::{Matrix, u32_of};
use super::kernel::{Kernel, KernelDesc, Shader, WORKGROUP_REDUCE_WGSL, read, read_write};
use super::memory::GpuTensor;
use super::sum_rows;
use crate::{Backend, contract};

/// Invocations per workgroup of `forward` and `backward`.
const WG: u32 = 128;

/// `rms_norm.wgsl`'s `Params`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    dim: u32,
    eps: f32,
    col_groups: u32,
}

static SHADER: Shader<Params> = Shader::new(
    "rms_norm.wgsl",
    include_str!("../../shaders/rms_norm.wgsl"),
    &[WORKGROUP_REDUCE_WGSL],
    &[
        ("WG", WG),
        ("COLS", sum_rows::COLS),
        ("LANES", sum_rows::LANES),
        ("ROWS_PER_GROUP", sum_rows::ROWS_PER_GROUP),
    ],
);

static FORWARD: Kernel<Params, 4> = Kernel::new(
    &SHADER,
    "forward",
    [
        read(1, "x"),
        read(2, "gamma"),
        read_write(4, "rstd"),
        read_write(5, "out"),
    ],
);
static BACKWARD: Kernel<Params, 5> = Kernel::new(
    &SHADER,
    "backward",
    [
        read(1, "x"),
        read(2, "gamma"),
        read(3, "dy"),
        read(7, "saved_rstd"),
        read_write(5, "out"),
    ],
);
static PARAM_GRADS: Kernel<Params, 4> = Kernel::new(
    &SHADER,
    "param_grads",
    [
        read(1, "x"),
        read(3, "dy"),
        read(7, "saved_rstd"),
        read_write(6, "partial"),
    ],
);

/// Every kernel of the family.
pub(super) fn kernels() -> Vec<KernelDesc<'static>> {
    vec![FORWARD.desc(), BACKWARD.desc(), PARAM_GRADS.desc()]
}

pub(super) fn rms_norm(
    b: &WgpuBackend,
    x: &GpuTensor,
    gamma: &GpuTensor,
    eps: f32,
) -> (GpuTensor, GpuTensor) {
    let (rows, dim) = contract::rms_norm(&x.shape, &gamma.shape);
    let y = b.alloc(&x.shape);
    let rstd = b.alloc(&[rows]);
    if rows > 0 {
        b.run(
            &FORWARD,
            &Params {
                rows: u32_of(rows),
                dim: u32_of(dim),
                eps,
                col_groups: 0,
            },
            [
                b.whole(x.buffer(), rows * dim, "rms_norm x"),
                b.whole(gamma.buffer(), dim, "rms_norm gamma"),
                b.whole(rstd.buffer(), rows, "rms_norm rstd"),
                b.whole(y.buffer(), rows * dim, "rms_norm y"),
            ],
            b.grid(rows),
        );
    }
    (y, rstd)
}

pub(super) fn rms_norm_backward(
    b: &WgpuBackend,
    dy: &GpuTensor,
    x: &GpuTensor,
    gamma: &GpuTensor,
    rstd: &GpuTensor,
) -> (GpuTensor, GpuTensor) {
    let (rows, dim) = contract::rms_norm_backward(&dy.shape, &x.shape, &gamma.shape, &rstd.shape);
    if rows == 0 {
        return (b.zeros(&x.shape), b.zeros(&[dim]));
    }
    let x_range = b.whole(x.buffer(), rows * dim, "rms_norm_backward x");
    let dy_range = b.whole(dy.buffer(), rows * dim, "rms_norm_backward dy");
    let rstd_range = b.whole(rstd.buffer(), rows, "rms_norm_backward rstd");
    let (groups, col_groups) = sum_rows::groups(rows, dim);
    let params = Params {
        rows: u32_of(rows),
        dim: u32_of(dim),
        eps: 0.0,
        col_groups,
    };

    let dx = b.alloc(&x.shape);
    b.run(
        &BACKWARD,
        &params,
        [
            x_range,
            b.whole(gamma.buffer(), dim, "rms_norm_backward gamma"),
            dy_range,
            rstd_range,
            b.whole(dx.buffer(), rows * dim, "rms_norm_backward dx"),
        ],
        b.grid(rows),
    );

    let blocks = sum_rows::blocks(rows);
    let partial = b.alloc(&[blocks, dim]);
    b.run(
        &PARAM_GRADS,
        &params,
        [
            x_range,
            dy_range,
            rstd_range,
            b.whole(partial.buffer(), blocks * dim, "rms_norm partials"),
        ],
        b.grid(groups),
    );
    let dgamma = sum_rows::sum_rows_of(b, Matrix::of(&partial));
    (dx, dgamma)
}
