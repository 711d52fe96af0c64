//! Launchers of `shaders/sum_rows.wgsl`: column sums (`sum_rows`, also
//! LayerNorm's dgamma and dbeta) and the sum of all elements, without
//! atomics. Each pass turns every block of [`ROWS_PER_GROUP`] rows into one
//! partial row; passes repeat until one row is left (70 000 rows: 274, then
//! 2, then 1).

use bytemuck::{Pod, Zeroable};

use super::device::WgpuBackend;
use super::dispatch::{Matrix, u32_of};
use super::kernel::{Kernel, KernelDesc, Shader, read, read_write};
use super::memory::GpuTensor;
use crate::{Backend, contract};

/// Columns per workgroup.
pub(super) const COLS: u32 = 64;
/// Row lanes per workgroup: lane `y` adds rows `y, y + LANES, ...`.
pub(super) const LANES: u32 = 4;
/// Rows per workgroup (per partial sum).
pub(super) const ROWS_PER_GROUP: u32 = 256;

/// `sum_rows.wgsl`'s `Params`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    x_off: u32,
    col_groups: u32,
    partial_off: u32,
}

static SHADER: Shader<Params> = Shader::new(
    "sum_rows.wgsl",
    include_str!("../../shaders/sum_rows.wgsl"),
    &[],
    &[
        ("COLS", COLS),
        ("LANES", LANES),
        ("ROWS_PER_GROUP", ROWS_PER_GROUP),
    ],
);

static SUM_ROWS: Kernel<Params, 2> = Kernel::new(
    &SHADER,
    "sum_rows",
    [read(1, "x"), read_write(2, "partial")],
);

/// Every kernel of the family.
pub(super) fn kernels() -> Vec<KernelDesc<'static>> {
    vec![SUM_ROWS.desc()]
}

pub(super) fn sum_rows(b: &WgpuBackend, x: &GpuTensor) -> GpuTensor {
    contract::sum_rows(&x.shape);
    sum_rows_of(b, Matrix::of(x))
}

/// The sum of every element: the column sum of the elements as one column.
pub(super) fn sum(b: &WgpuBackend, x: &GpuTensor) -> GpuTensor {
    let column = Matrix {
        buffer: x.buffer(),
        offset: 0,
        rows: x.numel(),
        cols: 1,
    };
    sum_rows_of(b, column)
}

/// Column sums of `x`, `[cols]`.
pub(super) fn sum_rows_of(b: &WgpuBackend, x: Matrix<'_>) -> GpuTensor {
    if x.rows == 0 {
        return b.zeros(&[x.cols]);
    }
    let mut partial = pass(b, x);
    while partial.shape[0] > 1 {
        partial = pass(b, Matrix::of(&partial));
    }
    partial.shape = vec![x.cols];
    partial
}

/// Number of partial rows a pass leaves of `rows` rows.
pub(super) fn blocks(rows: usize) -> usize {
    rows.div_ceil(ROWS_PER_GROUP as usize)
}

/// Workgroups of a pass over a `rows x cols` matrix (each does one column
/// group of one block of rows), and the number of column groups.
pub(super) fn groups(rows: usize, cols: usize) -> (usize, u32) {
    let col_groups = cols.div_ceil(COLS as usize);
    (col_groups * blocks(rows), u32_of(col_groups))
}

/// One pass: `[rows, cols]` -> `[ceil(rows / 256), cols]`, binding at most
/// one storage binding of `x` per dispatch.
fn pass(b: &WgpuBackend, x: Matrix<'_>) -> GpuTensor {
    let out = b.alloc(&[blocks(x.rows), x.cols]);
    if x.cols == 0 {
        return out;
    }
    let group_rows = ROWS_PER_GROUP as usize;
    let per_dispatch = b.rows_per_binding(group_rows * x.cols, "sum_rows: 256 rows") * group_rows;
    for r0 in (0..x.rows).step_by(per_dispatch) {
        let rows = per_dispatch.min(x.rows - r0);
        let (x_range, x_off) = b.range(x.buffer, x.offset + r0 * x.cols, rows * x.cols);
        let (out_range, partial_off) =
            b.range(out.buffer(), blocks(r0) * x.cols, blocks(rows) * x.cols);
        let (groups, col_groups) = groups(rows, x.cols);
        b.run(
            &SUM_ROWS,
            &Params {
                rows: u32_of(rows),
                cols: u32_of(x.cols),
                x_off,
                col_groups,
                partial_off,
            },
            [x_range, out_range],
            b.grid(groups),
        );
    }
    out
}
