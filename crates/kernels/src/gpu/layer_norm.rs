//! Launchers of `shaders/layer_norm.wgsl`: forward (one workgroup per row),
//! backward (dx, one workgroup per row; dgamma and dbeta as partial column
//! sums finished by `sum_rows`).

use bytemuck::{Pod, Zeroable};

use super::device::WgpuBackend;
use super::dispatch::{Matrix, u32_of};
use super::kernel::{Kernel, KernelDesc, Shader, WORKGROUP_REDUCE_WGSL, read, read_write};
use super::memory::GpuTensor;
use super::sum_rows;
use crate::{Backend, contract};

/// Invocations per workgroup of `forward` and `backward`.
const WG: u32 = 128;

/// `layer_norm.wgsl`'s `Params`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    dim: u32,
    eps: f32,
    col_groups: u32,
}

static SHADER: Shader<Params> = Shader::new(
    "layer_norm.wgsl",
    include_str!("../../shaders/layer_norm.wgsl"),
    &[WORKGROUP_REDUCE_WGSL],
    &[
        ("WG", WG),
        ("COLS", sum_rows::COLS),
        ("LANES", sum_rows::LANES),
        ("ROWS_PER_GROUP", sum_rows::ROWS_PER_GROUP),
    ],
);

static FORWARD: Kernel<Params, 5> = Kernel::new(
    &SHADER,
    "forward",
    [
        read(1, "x"),
        read(2, "gamma"),
        read(3, "beta"),
        read_write(5, "stats"),
        read_write(6, "out"),
    ],
);
static BACKWARD: Kernel<Params, 5> = Kernel::new(
    &SHADER,
    "backward",
    [
        read(1, "x"),
        read(2, "gamma"),
        read(4, "dy"),
        read(8, "saved_stats"),
        read_write(6, "out"),
    ],
);
static PARAM_GRADS: Kernel<Params, 4> = Kernel::new(
    &SHADER,
    "param_grads",
    [
        read(1, "x"),
        read(4, "dy"),
        read(8, "saved_stats"),
        read_write(7, "partial"),
    ],
);

/// Every kernel of the family.
pub(super) fn kernels() -> Vec<KernelDesc<'static>> {
    vec![FORWARD.desc(), BACKWARD.desc(), PARAM_GRADS.desc()]
}

pub(super) fn layer_norm(
    b: &WgpuBackend,
    x: &GpuTensor,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    eps: f32,
) -> (GpuTensor, GpuTensor) {
    let (rows, dim) = contract::layer_norm(&x.shape, &gamma.shape, &beta.shape);
    let y = b.alloc(&x.shape);
    let stats = b.alloc(&[rows, 2]);
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
                b.whole(x.buffer(), rows * dim, "layer_norm x"),
                b.whole(gamma.buffer(), dim, "layer_norm gamma"),
                b.whole(beta.buffer(), dim, "layer_norm beta"),
                b.whole(stats.buffer(), 2 * rows, "layer_norm stats"),
                b.whole(y.buffer(), rows * dim, "layer_norm y"),
            ],
            b.grid(rows),
        );
    }
    (y, stats)
}

pub(super) fn layer_norm_backward(
    b: &WgpuBackend,
    dy: &GpuTensor,
    x: &GpuTensor,
    gamma: &GpuTensor,
    stats: &GpuTensor,
) -> (GpuTensor, GpuTensor, GpuTensor) {
    let (rows, dim) =
        contract::layer_norm_backward(&dy.shape, &x.shape, &gamma.shape, &stats.shape);
    if rows == 0 {
        return (b.zeros(&x.shape), b.zeros(&[dim]), b.zeros(&[dim]));
    }
    let x_range = b.whole(x.buffer(), rows * dim, "layer_norm_backward x");
    let dy_range = b.whole(dy.buffer(), rows * dim, "layer_norm_backward dy");
    let stats_range = b.whole(stats.buffer(), 2 * rows, "layer_norm_backward stats");
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
            b.whole(gamma.buffer(), dim, "layer_norm_backward gamma"),
            dy_range,
            stats_range,
            b.whole(dx.buffer(), rows * dim, "layer_norm_backward dx"),
        ],
        b.grid(rows),
    );

    // Partial dgamma (first `blocks` rows) and dbeta (next `blocks`).
    let blocks = sum_rows::blocks(rows);
    let partial = b.alloc(&[2 * blocks, dim]);
    b.run(
        &PARAM_GRADS,
        &params,
        [
            x_range,
            dy_range,
            stats_range,
            b.whole(partial.buffer(), 2 * blocks * dim, "layer_norm partials"),
        ],
        b.grid(groups),
    );
    let partials = Matrix::of(&partial);
    let dgamma = sum_rows::sum_rows_of(b, partials.rows(0, blocks));
    let dbeta = sum_rows::sum_rows_of(b, partials.rows(blocks, blocks));
    (dx, dgamma, dbeta)
}
