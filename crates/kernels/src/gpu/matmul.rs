//! Launchers of `shaders/matmul.wgsl`: `matmul`, `linear`, and the block
//! planner every large product goes through (the cross-entropy's too).
//!
//! A product whose operands exceed one storage binding is cut into blocks
//! along m, n or k, each bound as sub-ranges of its buffers; blocks along k
//! after the first add their partial product into C, in order. A block with
//! few output tiles and a long k is split-K: grid layer z computes its own k
//! slice into a partial buffer and `split_k_sum` adds the slices in order.

use bytemuck::{Pod, Zeroable};

use super::device::WgpuBackend;
use super::dispatch::{Matrix, u32_of};
use super::kernel::{Binding, Kernel, KernelDesc, Shader, read, read_write};
use super::memory::GpuTensor;
use crate::contract;

/// Output tile of the matmul kernel (square).
const TILE: usize = 64;
/// Depth of one step of the matmul kernel; split-K slices are multiples of it.
const TILE_K: usize = 16;
/// Invocations per workgroup of `split_k_sum`.
const SUM_WG: u32 = 256;
/// Split-K aims at this many workgroups in flight.
const SPLIT_K_TARGET_GROUPS: usize = 1024;
/// Split-K slices are at least this deep.
const SPLIT_K_MIN_DEPTH: usize = 256;
/// At most this many split-K slices.
const SPLIT_K_MAX_SLICES: usize = 64;

/// `matmul.wgsl`'s `Params`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    bias_off: u32,
    accumulate: u32,
    has_bias: u32,
    k_split: u32,
    c_split_stride: u32,
    splits: u32,
}

static SHADER: Shader<Params> = Shader::new(
    "matmul.wgsl",
    include_str!("../../shaders/matmul.wgsl"),
    &[],
    &[
        ("TILE", TILE as u32),
        ("TILE_K", TILE_K as u32),
        ("SUM_WG", SUM_WG),
    ],
);

const MATMUL_BUFFERS: [Binding; 4] = [
    read(1, "a"),
    read(2, "b"),
    read(3, "bias"),
    read_write(4, "c"),
];
const MATMUL: Kernel<Params, 4> = Kernel::new(&SHADER, "matmul", MATMUL_BUFFERS);
/// The four transposition variants, indexed by `2 * trans_a + trans_b`.
static MATMULS: [Kernel<Params, 4>; 4] = [
    MATMUL.variant("[nn]", &[("TRANS_A", 0.0), ("TRANS_B", 0.0)]),
    MATMUL.variant("[nt]", &[("TRANS_A", 0.0), ("TRANS_B", 1.0)]),
    MATMUL.variant("[tn]", &[("TRANS_A", 1.0), ("TRANS_B", 0.0)]),
    MATMUL.variant("[tt]", &[("TRANS_A", 1.0), ("TRANS_B", 1.0)]),
];
static SPLIT_K_SUM: Kernel<Params, 3> = Kernel::new(
    &SHADER,
    "split_k_sum",
    [read(5, "partial"), read(3, "bias"), read_write(4, "c")],
);

/// Every kernel of the family.
pub(super) fn kernels() -> Vec<KernelDesc<'static>> {
    let mut all: Vec<_> = MATMULS.iter().map(Kernel::desc).collect();
    all.push(SPLIT_K_SUM.desc());
    all
}

pub(super) fn matmul(
    b: &WgpuBackend,
    x: &GpuTensor,
    y: &GpuTensor,
    trans_a: bool,
    trans_b: bool,
) -> GpuTensor {
    let dims = contract::matmul(&x.shape, &y.shape, trans_a, trans_b);
    let c = b.alloc(&[dims.m, dims.n]);
    gemm(
        b,
        Gemm {
            c: Matrix::of(&c),
            a: Matrix::of(x),
            trans_a,
            b: Matrix::of(y),
            trans_b,
            accumulate: false,
            bias: None,
        },
    );
    c
}

pub(super) fn linear(
    b: &WgpuBackend,
    x: &GpuTensor,
    w: &GpuTensor,
    bias: Option<&GpuTensor>,
) -> GpuTensor {
    let dims = contract::linear(&x.shape, &w.shape, bias.map(|t| &t.shape[..]));
    let c = b.alloc(&[dims.m, dims.n]);
    gemm(
        b,
        Gemm {
            c: Matrix::of(&c),
            a: Matrix::of(x),
            trans_a: false,
            b: Matrix::of(w),
            trans_b: true,
            accumulate: false,
            bias: bias.map(GpuTensor::buffer),
        },
    );
    c
}

/// A matrix product `c = op(a) @ op(b)` (+ c) (+ bias[col]).
#[derive(Clone, Copy)]
pub(super) struct Gemm<'a> {
    pub(super) c: Matrix<'a>,
    pub(super) a: Matrix<'a>,
    pub(super) trans_a: bool,
    pub(super) b: Matrix<'a>,
    pub(super) trans_b: bool,
    /// Add to the old c instead of overwriting it.
    pub(super) accumulate: bool,
    /// A `[n]` bias added to every row.
    pub(super) bias: Option<&'a wgpu::Buffer>,
}

/// The part of a product one block computes: rows `i0..i0 + rows` and
/// columns `j0..j0 + cols` of c, over `k0..k0 + depth`.
#[derive(Clone, Copy)]
struct GemmBlock {
    i0: usize,
    j0: usize,
    k0: usize,
    rows: usize,
    cols: usize,
    depth: usize,
}

/// Elements of a `rows x cols` block of a row-major matrix with row stride
/// `ld`, from its first to its last element.
fn span(rows: usize, cols: usize, ld: usize) -> usize {
    if rows == 0 || cols == 0 {
        1
    } else {
        (rows - 1) * ld + cols
    }
}

/// Block sizes `(mb, nb, kb)` for C[m, n] = op(A)[m, k] op(B)[k, n] such that
/// every block's part of A, B and C spans at most `limit` elements and its
/// grid fits `max_groups` workgroups per dimension. Halves whichever
/// dimension makes the largest operand span large.
fn plan_blocks(
    (m, n, k): (usize, usize, usize),
    (trans_a, trans_b): (bool, bool),
    (lda, ldb, ldc): (usize, usize, usize),
    limit: usize,
    max_groups: usize,
) -> (usize, usize, usize) {
    let half = |x: usize| x.div_ceil(2);
    let (mut mb, mut nb, mut kb) = (m, n, k.max(1));
    loop {
        if mb.div_ceil(TILE) > max_groups {
            mb = half(mb);
            continue;
        }
        if nb.div_ceil(TILE) > max_groups {
            nb = half(nb);
            continue;
        }
        let a = if trans_a {
            span(kb, mb, lda)
        } else {
            span(mb, kb, lda)
        };
        let b = if trans_b {
            span(nb, kb, ldb)
        } else {
            span(kb, nb, ldb)
        };
        let c = span(mb, nb, ldc);
        let worst = a.max(b).max(c);
        if worst <= limit {
            return (mb, nb, kb);
        }
        // Shrink the dimension that strides through the worst operand's
        // rows; once it is 1, the one along them.
        if a == worst {
            if (trans_a && kb > 1) || (!trans_a && mb == 1) {
                kb = half(kb);
            } else {
                mb = half(mb);
            }
        } else if b == worst {
            if (trans_b && nb > 1) || (!trans_b && kb == 1) {
                nb = half(nb);
            } else {
                kb = half(kb);
            }
        } else if mb > 1 {
            mb = half(mb);
        } else {
            nb = half(nb);
        }
    }
}

/// Split-K slices for a `rows x cols` output block of `depth`: enough to give
/// about [`SPLIT_K_TARGET_GROUPS`] workgroups when the block has few tiles,
/// each slice at least [`SPLIT_K_MIN_DEPTH`] deep, the partials within
/// `limit` elements, at most `max_slices`. 1 means no split.
fn split_k_slices(
    rows: usize,
    cols: usize,
    depth: usize,
    limit: usize,
    max_slices: usize,
) -> usize {
    let tiles = rows.div_ceil(TILE) * cols.div_ceil(TILE);
    if tiles * 4 >= SPLIT_K_TARGET_GROUPS {
        return 1;
    }
    SPLIT_K_TARGET_GROUPS
        .div_ceil(tiles)
        .min(depth / SPLIT_K_MIN_DEPTH)
        .min(max_slices)
        .min(limit / (rows * cols).max(1))
        .max(1)
}

/// `g.c = op(g.a) @ op(g.b)` (+ c when accumulating) (+ bias), in blocks
/// whose operands each fit one storage binding.
pub(super) fn gemm(b: &WgpuBackend, g: Gemm<'_>) {
    let (m, k) = if g.trans_a {
        (g.a.cols, g.a.rows)
    } else {
        (g.a.rows, g.a.cols)
    };
    let n = if g.trans_b { g.b.rows } else { g.b.cols };
    debug_assert_eq!((g.c.rows, g.c.cols), (m, n));
    if m == 0 || n == 0 {
        return;
    }
    let (mb, nb, kb) = plan_blocks(
        (m, n, k),
        (g.trans_a, g.trans_b),
        (g.a.cols, g.b.cols, g.c.cols),
        b.binding_elems(),
        b.max_groups(),
    );
    for i0 in (0..m).step_by(mb) {
        for j0 in (0..n).step_by(nb) {
            // k = 0 still runs one block: it writes the bias (or zeros).
            for k0 in (0..k.max(1)).step_by(kb) {
                let block = GemmBlock {
                    i0,
                    j0,
                    k0,
                    rows: mb.min(m - i0),
                    cols: nb.min(n - j0),
                    depth: kb.min(k - k0),
                };
                gemm_block(b, &g, block);
            }
        }
    }
}

/// One block of [`gemm`]: one matmul dispatch, or a split-K dispatch and
/// `split_k_sum` when the block has few tiles and a long k.
fn gemm_block(be: &WgpuBackend, g: &Gemm<'_>, blk: GemmBlock) {
    let GemmBlock {
        i0,
        j0,
        k0,
        rows,
        cols,
        depth,
    } = blk;
    let (a, b, c) = (g.a, g.b, g.c);
    let (a_first, a_span) = if g.trans_a {
        (k0 * a.cols + i0, span(depth, rows, a.cols))
    } else {
        (i0 * a.cols + k0, span(rows, depth, a.cols))
    };
    let (b_first, b_span) = if g.trans_b {
        (j0 * b.cols + k0, span(cols, depth, b.cols))
    } else {
        (k0 * b.cols + j0, span(depth, cols, b.cols))
    };
    let (a_range, a_off) = be.range(a.buffer, a.offset + a_first, a_span);
    let (b_range, b_off) = be.range(b.buffer, b.offset + b_first, b_span);
    let (c_range, c_off) = be.range(
        c.buffer,
        c.offset + i0 * c.cols + j0,
        span(rows, cols, c.cols),
    );
    // The bias joins the first k block only; without one, A's range
    // stands in for the unused binding.
    let with_bias = g.bias.filter(|_| k0 == 0);
    let (bias_range, bias_off) = match with_bias {
        Some(buffer) => be.range(buffer, j0, cols),
        None => (a_range, 0),
    };
    let kernel = &MATMULS[2 * usize::from(g.trans_a) + usize::from(g.trans_b)];
    let mut params = Params {
        m: u32_of(rows),
        n: u32_of(cols),
        k: u32_of(depth),
        lda: u32_of(a.cols),
        ldb: u32_of(b.cols),
        ldc: u32_of(c.cols),
        a_off,
        b_off,
        c_off,
        bias_off,
        accumulate: u32::from(g.accumulate || k0 > 0),
        has_bias: u32::from(with_bias.is_some()),
        k_split: u32_of(depth),
        c_split_stride: 0,
        splits: 1,
    };
    let grid_x = u32_of(cols.div_ceil(TILE));
    let grid_y = u32_of(rows.div_ceil(TILE));

    let max_slices = SPLIT_K_MAX_SLICES.min(be.max_groups());
    let slices = split_k_slices(rows, cols, depth, be.binding_elems(), max_slices);
    if slices == 1 {
        be.run(
            kernel,
            &params,
            [a_range, b_range, bias_range, c_range],
            [grid_x, grid_y, 1],
        );
        return;
    }
    // Slices of whole k-steps write [slices, rows, cols] partials, then
    // split_k_sum adds them (and the bias and old c) into c in order.
    let slice = depth.div_ceil(slices).next_multiple_of(TILE_K);
    let slices = depth.div_ceil(slice);
    let partial = be.alloc(&[slices, rows, cols]);
    let partial_range = be.whole(partial.buffer(), slices * rows * cols, "split-K partials");
    let split = Params {
        ldc: u32_of(cols),
        c_off: 0,
        bias_off: 0,
        accumulate: 0,
        has_bias: 0,
        k_split: u32_of(slice),
        c_split_stride: u32_of(rows * cols),
        ..params
    };
    be.run(
        kernel,
        &split,
        [a_range, b_range, a_range, partial_range],
        [grid_x, grid_y, u32_of(slices)],
    );
    params.splits = u32_of(slices);
    be.run(
        &SPLIT_K_SUM,
        &params,
        [partial_range, bias_range, c_range],
        be.grid((rows * cols).div_ceil(SUM_WG as usize)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_fit_the_binding() {
        for &(m, n, k) in &[(1, 1, 1), (50, 70, 40), (40_000, 64, 4096), (7, 3, 100_000)] {
            for (trans_a, trans_b) in [(false, false), (false, true), (true, false), (true, true)] {
                let lda = if trans_a { m } else { k };
                let ldb = if trans_b { k } else { n };
                for limit in [64, 1000, 1 << 20] {
                    let (mb, nb, kb) =
                        plan_blocks((m, n, k), (trans_a, trans_b), (lda, ldb, n), limit, 65_535);
                    assert!(mb >= 1 && nb >= 1 && kb >= 1);
                    let a = if trans_a {
                        span(kb, mb, lda)
                    } else {
                        span(mb, kb, lda)
                    };
                    let b = if trans_b {
                        span(nb, kb, ldb)
                    } else {
                        span(kb, nb, ldb)
                    };
                    let c = span(mb, nb, n);
                    assert!(a.max(b).max(c) <= limit, "{m}x{n}x{k} limit {limit}");
                }
            }
        }
    }

    #[test]
    fn split_k_only_for_few_tiles_and_long_k() {
        let max = SPLIT_K_MAX_SLICES;
        // Plenty of tiles, or a short k: no split.
        assert_eq!(split_k_slices(4096, 4096, 4096, usize::MAX, max), 1);
        assert_eq!(split_k_slices(64, 64, 300, usize::MAX, max), 1);
        // A weight gradient: 3 tiles, k = 6400.
        assert_eq!(
            split_k_slices(192, 64, 6400, usize::MAX, max),
            6400 / SPLIT_K_MIN_DEPTH
        );
        // Partials must fit one binding.
        assert_eq!(split_k_slices(192, 64, 6400, 3 * 192 * 64, max), 3);
    }
}
