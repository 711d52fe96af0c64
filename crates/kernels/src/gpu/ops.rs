//! [`Backend`] for [`WgpuBackend`]: each op checks its shapes, takes its
//! outputs from the buffer pool and records its kernels. Operands that may
//! outgrow one storage binding (anything the size of the item table or of a
//! logits chunk) are bound a block at a time; see docs/kernels.md.

use std::sync::Arc;

use super::WgpuBackend;
use super::kernels::Kernel;
use super::memory::{GpuIds, GpuTensor, Storage};
use super::recorder::BufferRange;
use crate::{AdamStep, AttentionShape, Backend, CrossEntropy, Dropout};

/// An id that gathers a row of zeros (embedding.wgsl's MISSING).
const MISSING: u32 = u32::MAX;
/// Longest sequence attention.wgsl keeps in workgroup memory.
const MAX_ATTENTION_LEN: usize = 1024;
/// Widest head attention.wgsl keeps in workgroup memory.
const MAX_HEAD_DIM: usize = 128;
/// Invocations per workgroup of the one-element-per-invocation kernels.
const ELEMENT_WG: usize = 256;
/// Output tile of matmul.wgsl (square).
const MATMUL_TILE: usize = 64;
/// Depth of one step of matmul.wgsl; split-K slices are multiples of it.
const MATMUL_TILE_K: usize = 16;
/// Split-K aims at this many workgroups in flight.
const SPLIT_K_TARGET_GROUPS: usize = 1024;
/// Split-K slices are at least this deep.
const SPLIT_K_MIN_DEPTH: usize = 256;
/// At most this many split-K slices.
const SPLIT_K_MAX_SLICES: usize = 64;
/// Rows per workgroup of the column-sum kernels.
const COLUMN_SUM_ROWS: usize = 256;
/// Columns per workgroup of the column-sum kernels.
const COLUMN_SUM_COLS: usize = 64;

/// A row-major matrix stored in `buffer` from element `offset` on.
#[derive(Clone, Copy)]
struct Matrix<'a> {
    buffer: &'a wgpu::Buffer,
    offset: usize,
    rows: usize,
    cols: usize,
}

impl<'a> Matrix<'a> {
    /// A 2-D tensor as a matrix.
    fn of(t: &'a GpuTensor, op: &str) -> Self {
        assert!(
            t.shape.len() == 2,
            "{op}: expected a matrix, got shape {:?}",
            t.shape
        );
        Matrix {
            buffer: t.buffer(),
            offset: 0,
            rows: t.shape[0],
            cols: t.shape[1],
        }
    }

    /// Rows `first .. first + rows`.
    fn rows(self, first: usize, rows: usize) -> Self {
        Matrix {
            offset: self.offset + first * self.cols,
            rows,
            ..self
        }
    }
}

/// A matrix product `c = op(a) @ op(b)` (+ c) (+ bias[col]).
#[derive(Clone, Copy)]
struct Gemm<'a> {
    c: Matrix<'a>,
    a: Matrix<'a>,
    trans_a: bool,
    b: Matrix<'a>,
    trans_b: bool,
    /// Add to the old c instead of overwriting it.
    accumulate: bool,
    /// A `[n]` bias added to every row.
    bias: Option<&'a wgpu::Buffer>,
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

/// matmul.wgsl's `Params`, field for field.
struct MatmulParams {
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
}

impl MatmulParams {
    fn words(&self) -> [u32; 14] {
        [
            self.m,
            self.n,
            self.k,
            self.lda,
            self.ldb,
            self.ldc,
            self.a_off,
            self.b_off,
            self.c_off,
            self.bias_off,
            self.accumulate,
            self.has_bias,
            self.k_split,
            self.c_split_stride,
        ]
    }
}

/// One operand of an elementwise kernel.
enum Operand<'a> {
    /// As long as the output: bound chunk by chunk.
    Elements(&'a wgpu::Buffer),
    /// A `[1]` tensor, bound whole for every chunk.
    Scalar(&'a wgpu::Buffer),
}

fn u32_of(x: usize) -> u32 {
    u32::try_from(x).unwrap_or_else(|_| panic!("size {x} does not fit the kernels' u32 indices"))
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
fn plan_matmul_blocks(
    (m, n, k): (usize, usize, usize),
    (trans_a, trans_b): (bool, bool),
    (lda, ldb, ldc): (usize, usize, usize),
    limit: usize,
    max_groups: usize,
) -> (usize, usize, usize) {
    let half = |x: usize| x.div_ceil(2);
    let (mut mb, mut nb, mut kb) = (m, n, k.max(1));
    loop {
        if mb.div_ceil(MATMUL_TILE) > max_groups {
            mb = half(mb);
            continue;
        }
        if nb.div_ceil(MATMUL_TILE) > max_groups {
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
/// `limit` elements. 1 means no split.
fn split_k_slices(rows: usize, cols: usize, depth: usize, limit: usize) -> usize {
    let tiles = rows.div_ceil(MATMUL_TILE) * cols.div_ceil(MATMUL_TILE);
    if tiles * 4 >= SPLIT_K_TARGET_GROUPS {
        return 1;
    }
    SPLIT_K_TARGET_GROUPS
        .div_ceil(tiles)
        .min(depth / SPLIT_K_MIN_DEPTH)
        .min(SPLIT_K_MAX_SLICES)
        .min(limit / (rows * cols).max(1))
        .max(1)
}

impl WgpuBackend {
    // ----- memory and recording helpers ---------------------------------

    /// An uninitialised tensor from the pool.
    fn alloc(&self, shape: &[usize]) -> GpuTensor {
        let bytes = 4 * shape.iter().product::<usize>() as u64;
        assert!(
            bytes <= self.inner.limits.max_buffer,
            "a tensor of shape {shape:?} ({bytes} bytes) exceeds the adapter's largest buffer ({} bytes)",
            self.inner.limits.max_buffer
        );
        GpuTensor {
            storage: Arc::new(Storage::new(&self.inner.device, &self.inner.pool, bytes)),
            shape: shape.to_vec(),
        }
    }

    fn upload(&self, dst: &wgpu::Buffer, data: &[u8]) {
        self.recorder().upload(&self.inner.device, dst, data);
    }

    fn clear(&self, buffer: &wgpu::Buffer, elems: usize) {
        if elems > 0 {
            self.recorder().encoder(&self.inner.device).clear_buffer(
                buffer,
                0,
                Some(4 * elems as u64),
            );
        }
    }

    /// Gives `t` a buffer of its own before an in-place op, so that clones of
    /// the handle keep their values.
    fn make_unique(&self, t: &mut GpuTensor) {
        if Arc::strong_count(&t.storage) > 1 {
            let copy = self.alloc(&t.shape);
            let bytes = 4 * t.numel() as u64;
            if bytes > 0 {
                self.recorder()
                    .encoder(&self.inner.device)
                    .copy_buffer_to_buffer(t.buffer(), 0, copy.buffer(), 0, bytes);
            }
            *t = copy;
        }
    }

    fn run(&self, kernel: Kernel, params: &[u32], buffers: &[BufferRange<'_>], grid: [u32; 3]) {
        self.recorder().dispatch(
            &self.inner.device,
            &self.inner.queue,
            kernel,
            self.inner.pipelines.get(kernel),
            params,
            buffers,
            grid,
        );
    }

    /// The first `elems` elements of `buffer` as one binding.
    ///
    /// # Panics
    /// If they do not fit one storage binding; `what` names the operand.
    fn whole<'a>(&self, buffer: &'a wgpu::Buffer, elems: usize, what: &str) -> BufferRange<'a> {
        let size = 4 * elems.max(1) as u64;
        assert!(
            size <= self.inner.limits.max_binding,
            "{what}: {size} bytes exceed one storage binding ({} bytes) on this adapter",
            self.inner.limits.max_binding
        );
        BufferRange {
            buffer,
            offset: 0,
            size,
        }
    }

    /// Elements `first .. first + len` of `buffer`, bound from the aligned
    /// offset at or below `first`; returns the binding and the index of
    /// `first` inside it.
    fn range<'a>(
        &self,
        buffer: &'a wgpu::Buffer,
        first: usize,
        len: usize,
    ) -> (BufferRange<'a>, u32) {
        let align = self.inner.limits.storage_align;
        let first_byte = 4 * first as u64;
        let start = first_byte / align * align;
        let end = 4 * (first + len.max(1)) as u64;
        debug_assert!(end - start <= self.inner.limits.max_binding);
        let range = BufferRange {
            buffer,
            offset: start,
            size: end - start,
        };
        (range, u32_of(((first_byte - start) / 4) as usize))
    }

    /// Elements one binding may span, less the alignment slack of `range`.
    fn binding_elems(&self) -> usize {
        ((self.inner.limits.max_binding - self.inner.limits.storage_align) / 4) as usize
    }

    /// How many rows of `row_elems` elements one binding holds.
    fn rows_per_binding(&self, row_elems: usize, what: &str) -> usize {
        let rows = self.binding_elems() / row_elems.max(1);
        assert!(
            rows > 0,
            "{what}: one row of {row_elems} elements does not fit one storage binding"
        );
        rows
    }

    /// A grid of `groups` workgroups: along x up to the per-dimension limit,
    /// then along y (kernels flatten it back and skip the excess).
    fn grid(&self, groups: usize) -> [u32; 3] {
        let max = self.inner.limits.max_groups as usize;
        if groups <= max {
            [u32_of(groups), 1, 1]
        } else {
            let rows = groups.div_ceil(max);
            assert!(rows <= max, "grid of {groups} workgroups is too large");
            [u32_of(max), u32_of(rows), 1]
        }
    }

    // ----- kernel drivers -----------------------------------------------

    /// Runs an elementwise kernel over `n` elements, in chunks of at most
    /// one binding; `params(len, first)` gives each chunk's parameters.
    fn elementwise(
        &self,
        kernel: Kernel,
        n: usize,
        operands: &[Operand<'_>],
        params: impl Fn(usize, usize) -> Vec<u32>,
    ) {
        // max_binding is a multiple of the alignment, so chunks start aligned.
        let chunk = (self.inner.limits.max_binding / 4) as usize;
        let mut first = 0;
        while first < n {
            let len = chunk.min(n - first);
            let ranges: Vec<BufferRange<'_>> = operands
                .iter()
                .map(|operand| match operand {
                    Operand::Elements(buffer) => BufferRange {
                        buffer,
                        offset: 4 * first as u64,
                        size: 4 * len as u64,
                    },
                    Operand::Scalar(buffer) => BufferRange {
                        buffer,
                        offset: 0,
                        size: 4,
                    },
                })
                .collect();
            self.run(
                kernel,
                &params(len, first),
                &ranges,
                self.grid(len.div_ceil(ELEMENT_WG)),
            );
            first += len;
        }
    }

    /// Parameters of elementwise.wgsl (no dropout).
    fn plain_params(len: usize, first: usize) -> Vec<u32> {
        vec![u32_of(len), u32_of(first), 0, 0, 0]
    }

    /// `g.c = op(g.a) @ op(g.b)` (+ c when accumulating) (+ bias), in blocks
    /// whose operands each fit one storage binding. Blocks along k after the
    /// first add their partial product into c, in order.
    fn gemm(&self, g: Gemm<'_>) {
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
        let (mb, nb, kb) = plan_matmul_blocks(
            (m, n, k),
            (g.trans_a, g.trans_b),
            (g.a.cols, g.b.cols, g.c.cols),
            self.binding_elems(),
            self.inner.limits.max_groups as usize,
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
                    self.gemm_block(&g, block);
                }
            }
        }
    }

    /// One block of [`Self::gemm`]: one matmul dispatch, or a split-K
    /// dispatch and `split_k_sum` when the block has few tiles and a long k.
    fn gemm_block(&self, g: &Gemm<'_>, blk: GemmBlock) {
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
        let (a_range, a_off) = self.range(a.buffer, a.offset + a_first, a_span);
        let (b_range, b_off) = self.range(b.buffer, b.offset + b_first, b_span);
        let (c_range, c_off) = self.range(
            c.buffer,
            c.offset + i0 * c.cols + j0,
            span(rows, cols, c.cols),
        );
        // The bias joins the first k block only; without one, A's range
        // stands in for the unused binding.
        let with_bias = g.bias.filter(|_| k0 == 0);
        let (bias_range, bias_off) = match with_bias {
            Some(buffer) => self.range(buffer, j0, cols),
            None => (a_range, 0),
        };
        let accumulate = u32::from(g.accumulate || k0 > 0);
        let has_bias = u32::from(with_bias.is_some());
        let kernel = Kernel::Matmul {
            trans_a: g.trans_a,
            trans_b: g.trans_b,
        };
        let mut params = MatmulParams {
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
            accumulate,
            has_bias,
            k_split: u32_of(depth),
            c_split_stride: 0,
        };
        let grid_x = u32_of(cols.div_ceil(MATMUL_TILE));
        let grid_y = u32_of(rows.div_ceil(MATMUL_TILE));

        let slices = split_k_slices(rows, cols, depth, self.binding_elems());
        if slices == 1 {
            self.run(
                kernel,
                &params.words(),
                &[a_range, b_range, bias_range, c_range],
                [grid_x, grid_y, 1],
            );
            return;
        }
        // Slices of whole k-steps write [slices, rows, cols] partials, then
        // split_k_sum adds them (and the bias and old c) into c in order.
        let slice = depth.div_ceil(slices).next_multiple_of(MATMUL_TILE_K);
        let slices = depth.div_ceil(slice);
        let partial = self.alloc(&[slices, rows, cols]);
        let partial_range = self.whole(partial.buffer(), slices * rows * cols, "split-K partials");
        params.ldc = u32_of(cols);
        params.c_off = 0;
        params.bias_off = 0;
        params.accumulate = 0;
        params.has_bias = 0;
        params.k_split = u32_of(slice);
        params.c_split_stride = u32_of(rows * cols);
        self.run(
            kernel,
            &params.words(),
            &[a_range, b_range, a_range, partial_range],
            [grid_x, grid_y, u32_of(slices)],
        );
        self.run(
            Kernel::MatmulSplitSum,
            &[
                u32_of(rows),
                u32_of(cols),
                u32_of(slices),
                u32_of(c.cols),
                c_off,
                bias_off,
                accumulate,
                has_bias,
            ],
            &[partial_range, bias_range, c_range],
            self.grid((rows * cols).div_ceil(ELEMENT_WG)),
        );
    }

    /// Column sums of `x`, `[cols]`: reduce.wgsl turns every 256 rows into
    /// one partial row, repeated until one row is left.
    fn column_sums(&self, x: Matrix<'_>) -> GpuTensor {
        if x.rows == 0 {
            return self.zeros(&[x.cols]);
        }
        let mut partial = self.column_sum_pass(x);
        while partial.shape[0] > 1 {
            partial = self.column_sum_pass(Matrix::of(&partial, "sum_rows"));
        }
        partial.shape = vec![x.cols];
        partial
    }

    fn column_sum_pass(&self, x: Matrix<'_>) -> GpuTensor {
        let blocks = x.rows.div_ceil(COLUMN_SUM_ROWS);
        let out = self.alloc(&[blocks, x.cols]);
        if x.cols == 0 {
            return out;
        }
        let elems = x.rows * x.cols;
        assert!(
            elems <= self.binding_elems(),
            "sum_rows: a {}x{} matrix exceeds one storage binding",
            x.rows,
            x.cols
        );
        let (x_range, x_off) = self.range(x.buffer, x.offset, elems);
        let out_range = self.whole(out.buffer(), blocks * x.cols, "sum_rows");
        self.run(
            Kernel::ColumnSum,
            &[u32_of(x.rows), u32_of(x.cols), x_off],
            &[x_range, out_range],
            [u32_of(x.cols.div_ceil(COLUMN_SUM_COLS)), u32_of(blocks), 1],
        );
        out
    }

    /// `out[r] = table[ids[r]]` (a zero row for [`MISSING`]) for a table of
    /// `vocab` rows of `dim`, bound a block of rows at a time.
    fn gather_rows(
        &self,
        table: &wgpu::Buffer,
        (vocab, dim): (usize, usize),
        ids: &wgpu::Buffer,
        n: usize,
    ) -> GpuTensor {
        let out = self.alloc(&[n, dim]);
        if n == 0 || dim == 0 {
            return out;
        }
        let out_range = self.whole(out.buffer(), n * dim, "embedding output");
        let ids_range = self.whole(ids, n, "embedding ids");
        let block = self.rows_per_binding(dim, "embedding table");
        let mut v0 = 0;
        loop {
            let v1 = (v0 + block).min(vocab);
            let (table_range, table_off) = self.range(table, v0 * dim, (v1 - v0) * dim);
            self.run(
                Kernel::Gather,
                &[u32_of(n), u32_of(dim), u32_of(v0), u32_of(v1), table_off],
                &[table_range, ids_range, out_range],
                self.grid((n * dim).div_ceil(ELEMENT_WG)),
            );
            v0 = v1;
            if v0 >= vocab {
                break;
            }
        }
        out
    }

    fn upload_u32(&self, data: &[u32]) -> Storage {
        let storage = Storage::new(&self.inner.device, &self.inner.pool, 4 * data.len() as u64);
        self.upload(storage.buffer(), bytemuck::cast_slice(data));
        storage
    }

    /// `acc += op(a) @ op(b)` in place (the matmul kernel's accumulate mode,
    /// beta = 1), e.g. to sum weight gradients without a temporary.
    pub fn matmul_accumulate(
        &self,
        acc: &mut GpuTensor,
        a: &GpuTensor,
        b: &GpuTensor,
        trans_a: bool,
        trans_b: bool,
    ) {
        let shape = matmul_shape(a, b, trans_a, trans_b);
        assert_eq!(
            acc.shape, shape,
            "matmul_accumulate: accumulator shape {:?} != product shape {shape:?}",
            acc.shape
        );
        self.make_unique(acc);
        self.gemm(Gemm {
            c: Matrix::of(acc, "matmul_accumulate"),
            a: Matrix::of(a, "matmul_accumulate"),
            trans_a,
            b: Matrix::of(b, "matmul_accumulate"),
            trans_b,
            accumulate: true,
            bias: None,
        });
    }
}

/// Shape of `op(a) @ op(b)`, checking the inner dimensions agree.
fn matmul_shape(a: &GpuTensor, b: &GpuTensor, trans_a: bool, trans_b: bool) -> Vec<usize> {
    assert!(
        a.shape.len() == 2 && b.shape.len() == 2,
        "matmul: expected matrices, got {:?} and {:?}",
        a.shape,
        b.shape
    );
    let (m, k) = if trans_a {
        (a.shape[1], a.shape[0])
    } else {
        (a.shape[0], a.shape[1])
    };
    let (k2, n) = if trans_b {
        (b.shape[1], b.shape[0])
    } else {
        (b.shape[0], b.shape[1])
    };
    assert_eq!(
        k,
        k2,
        "matmul: inner dimensions differ: {:?}{} @ {:?}{}",
        a.shape,
        if trans_a { "^T" } else { "" },
        b.shape,
        if trans_b { "^T" } else { "" }
    );
    vec![m, n]
}

fn assert_same_shape(op: &str, a: &GpuTensor, b: &GpuTensor) {
    assert_eq!(
        a.shape, b.shape,
        "{op}: shapes differ: {:?} vs {:?}",
        a.shape, b.shape
    );
}

fn dropout_params(mask: Option<&Dropout>) -> [u32; 4] {
    match mask {
        Some(d) => [1, d.key, d.threshold, d.scale.to_bits()],
        None => [0, 0, 0, 1f32.to_bits()],
    }
}

impl Backend for WgpuBackend {
    type Tensor = GpuTensor;
    type Ids = GpuIds;

    fn name(&self) -> String {
        let info = &self.inner.info;
        format!(
            "wgpu: {} ({:?}, {:?})",
            info.name, info.backend, info.device_type
        )
    }

    fn tensor(&self, data: &[f32], shape: &[usize]) -> GpuTensor {
        assert_eq!(
            data.len(),
            shape.iter().product::<usize>(),
            "tensor: {} values for shape {shape:?}",
            data.len()
        );
        let t = self.alloc(shape);
        self.upload(t.buffer(), bytemuck::cast_slice(data));
        t
    }

    fn zeros(&self, shape: &[usize]) -> GpuTensor {
        let t = self.alloc(shape);
        self.clear(t.buffer(), t.numel());
        t
    }

    fn shape(&self, t: &GpuTensor) -> Vec<usize> {
        t.shape.clone()
    }

    fn to_vec(&self, t: &GpuTensor) -> Vec<f32> {
        let bytes = self.recorder().read(
            &self.inner.device,
            &self.inner.queue,
            t.buffer(),
            4 * t.numel() as u64,
        );
        bytemuck::pod_collect_to_vec(&bytes)
    }

    fn ids(&self, ids: &[u32]) -> GpuIds {
        GpuIds {
            storage: Arc::new(self.upload_u32(ids)),
            host: Arc::from(ids),
        }
    }

    fn ids_host<'a>(&self, ids: &'a GpuIds) -> &'a [u32] {
        &ids.host
    }

    fn add(&self, a: &GpuTensor, b: &GpuTensor) -> GpuTensor {
        assert_same_shape("add", a, b);
        let out = self.alloc(&a.shape);
        self.elementwise(
            Kernel::Add,
            a.numel(),
            &[
                Operand::Elements(a.buffer()),
                Operand::Elements(b.buffer()),
                Operand::Elements(out.buffer()),
            ],
            Self::plain_params,
        );
        out
    }

    fn add_assign(&self, acc: &mut GpuTensor, b: &GpuTensor) {
        assert_same_shape("add_assign", acc, b);
        self.make_unique(acc);
        self.elementwise(
            Kernel::AddAssign,
            acc.numel(),
            &[
                Operand::Elements(b.buffer()),
                Operand::Elements(acc.buffer()),
            ],
            Self::plain_params,
        );
    }

    fn scale(&self, x: &GpuTensor, s: &GpuTensor) -> GpuTensor {
        assert_eq!(
            s.numel(),
            1,
            "scale: the factor has shape {:?}, not [1]",
            s.shape
        );
        let out = self.alloc(&x.shape);
        self.elementwise(
            Kernel::Scale,
            x.numel(),
            &[
                Operand::Elements(x.buffer()),
                Operand::Scalar(s.buffer()),
                Operand::Elements(out.buffer()),
            ],
            Self::plain_params,
        );
        out
    }

    fn relu(&self, x: &GpuTensor) -> GpuTensor {
        let out = self.alloc(&x.shape);
        self.elementwise(
            Kernel::Relu,
            x.numel(),
            &[
                Operand::Elements(x.buffer()),
                Operand::Elements(out.buffer()),
            ],
            Self::plain_params,
        );
        out
    }

    fn relu_backward(&self, y: &GpuTensor, dy: &GpuTensor) -> GpuTensor {
        assert_same_shape("relu_backward", y, dy);
        let out = self.alloc(&y.shape);
        self.elementwise(
            Kernel::ReluBackward,
            y.numel(),
            &[
                Operand::Elements(y.buffer()),
                Operand::Elements(dy.buffer()),
                Operand::Elements(out.buffer()),
            ],
            Self::plain_params,
        );
        out
    }

    fn dropout(&self, x: &GpuTensor, mask: &Dropout) -> GpuTensor {
        let out = self.alloc(&x.shape);
        self.elementwise(
            Kernel::Dropout,
            x.numel(),
            &[
                Operand::Elements(x.buffer()),
                Operand::Elements(out.buffer()),
            ],
            |len, first| {
                vec![
                    u32_of(len),
                    u32_of(first),
                    mask.key,
                    mask.threshold,
                    mask.scale.to_bits(),
                ]
            },
        );
        out
    }

    fn embedding(&self, table: &GpuTensor, ids: &GpuIds) -> GpuTensor {
        let t = Matrix::of(table, "embedding");
        if let Some(&bad) = ids.host.iter().find(|&&id| id as usize >= t.rows) {
            panic!(
                "embedding: id {bad} is out of range for a table of {} rows",
                t.rows
            );
        }
        self.gather_rows(
            table.buffer(),
            (t.rows, t.cols),
            ids.buffer(),
            ids.host.len(),
        )
    }

    fn embedding_backward(
        &self,
        dy: &GpuTensor,
        ids: &GpuIds,
        vocab: usize,
        padding_idx: Option<u32>,
    ) -> GpuTensor {
        let d = Matrix::of(dy, "embedding_backward");
        let host = &ids.host;
        assert_eq!(
            d.rows,
            host.len(),
            "embedding_backward: {} gradient rows for {} ids",
            d.rows,
            host.len()
        );
        let dim = d.cols;
        let out = self.zeros(&[vocab, dim]);

        // CSR on the host: positions sorted by id (stably, so each id's
        // positions stay in increasing order), then one entry per distinct id.
        let mut positions: Vec<u32> = (0..u32_of(host.len()))
            .filter(|&i| Some(host[i as usize]) != padding_idx)
            .collect();
        positions.sort_by_key(|&i| host[i as usize]);
        let mut distinct: Vec<u32> = Vec::new();
        let mut row_ptr: Vec<u32> = Vec::new();
        for (q, &i) in positions.iter().enumerate() {
            let id = host[i as usize];
            assert!(
                (id as usize) < vocab,
                "embedding_backward: id {id} is out of range for {vocab} rows"
            );
            if distinct.last() != Some(&id) {
                distinct.push(id);
                row_ptr.push(u32_of(q));
            }
        }
        row_ptr.push(u32_of(positions.len()));
        if distinct.is_empty() || dim == 0 {
            return out;
        }

        let distinct_buf = self.upload_u32(&distinct);
        let row_ptr_buf = self.upload_u32(&row_ptr);
        let positions_buf = self.upload_u32(&positions);
        let dy_range = self.whole(dy.buffer(), d.rows * dim, "embedding_backward dy");
        let distinct_range = self.whole(distinct_buf.buffer(), distinct.len(), "distinct ids");
        let row_ptr_range = self.whole(row_ptr_buf.buffer(), row_ptr.len(), "row_ptr");
        let positions_range = self.whole(positions_buf.buffer(), positions.len(), "positions");
        // The output is bound a block of table rows at a time.
        let block = self.rows_per_binding(dim, "embedding_backward table");
        for v0 in (0..vocab).step_by(block) {
            let v1 = (v0 + block).min(vocab);
            let t0 = distinct.partition_point(|&id| (id as usize) < v0);
            let t1 = distinct.partition_point(|&id| (id as usize) < v1);
            if t0 == t1 {
                continue;
            }
            let (out_range, out_off) = self.range(out.buffer(), v0 * dim, (v1 - v0) * dim);
            self.run(
                Kernel::ScatterAdd,
                &[
                    u32_of(t1 - t0),
                    u32_of(dim),
                    u32_of(t0),
                    u32_of(v0),
                    out_off,
                ],
                &[
                    dy_range,
                    distinct_range,
                    row_ptr_range,
                    positions_range,
                    out_range,
                ],
                self.grid(((t1 - t0) * dim).div_ceil(ELEMENT_WG)),
            );
        }
        out
    }

    fn layer_norm(
        &self,
        x: &GpuTensor,
        gamma: &GpuTensor,
        beta: &GpuTensor,
        eps: f32,
    ) -> (GpuTensor, GpuTensor) {
        let m = Matrix::of(x, "layer_norm");
        assert!(
            gamma.shape == [m.cols] && beta.shape == [m.cols],
            "layer_norm: x {:?} with gamma {:?} and beta {:?}",
            x.shape,
            gamma.shape,
            beta.shape
        );
        let y = self.alloc(&x.shape);
        let stats = self.alloc(&[m.rows, 2]);
        if m.rows > 0 && m.cols > 0 {
            self.run(
                Kernel::LayerNorm,
                &[u32_of(m.rows), u32_of(m.cols), eps.to_bits()],
                &[
                    self.whole(x.buffer(), x.numel(), "layer_norm x"),
                    self.whole(gamma.buffer(), m.cols, "layer_norm gamma"),
                    self.whole(beta.buffer(), m.cols, "layer_norm beta"),
                    self.whole(stats.buffer(), 2 * m.rows, "layer_norm stats"),
                    self.whole(y.buffer(), y.numel(), "layer_norm y"),
                ],
                self.grid(m.rows),
            );
        }
        (y, stats)
    }

    fn layer_norm_backward(
        &self,
        dy: &GpuTensor,
        x: &GpuTensor,
        gamma: &GpuTensor,
        stats: &GpuTensor,
    ) -> (GpuTensor, GpuTensor, GpuTensor) {
        assert_same_shape("layer_norm_backward", dy, x);
        let m = Matrix::of(x, "layer_norm_backward");
        let (rows, dim) = (m.rows, m.cols);
        assert!(
            gamma.shape == [dim] && stats.shape == [rows, 2],
            "layer_norm_backward: x {:?} with gamma {:?} and stats {:?}",
            x.shape,
            gamma.shape,
            stats.shape
        );
        if rows == 0 || dim == 0 {
            return (self.zeros(&x.shape), self.zeros(&[dim]), self.zeros(&[dim]));
        }
        let x_range = self.whole(x.buffer(), rows * dim, "layer_norm_backward x");
        let dy_range = self.whole(dy.buffer(), rows * dim, "layer_norm_backward dy");
        let stats_range = self.whole(stats.buffer(), 2 * rows, "layer_norm_backward stats");
        let params = [u32_of(rows), u32_of(dim), 0];

        let dx = self.alloc(&x.shape);
        self.run(
            Kernel::LayerNormBackward,
            &params,
            &[
                x_range,
                self.whole(gamma.buffer(), dim, "layer_norm_backward gamma"),
                dy_range,
                stats_range,
                self.whole(dx.buffer(), rows * dim, "layer_norm_backward dx"),
            ],
            self.grid(rows),
        );

        // Partial dgamma (first `blocks` rows) and dbeta (next `blocks`).
        let blocks = rows.div_ceil(COLUMN_SUM_ROWS);
        let partial = self.alloc(&[2 * blocks, dim]);
        self.run(
            Kernel::LayerNormParamGrads,
            &params,
            &[
                x_range,
                dy_range,
                stats_range,
                self.whole(partial.buffer(), 2 * blocks * dim, "layer_norm partials"),
            ],
            [u32_of(dim.div_ceil(COLUMN_SUM_COLS)), u32_of(blocks), 1],
        );
        let partials = Matrix::of(&partial, "layer_norm_backward");
        let dgamma = self.column_sums(partials.rows(0, blocks));
        let dbeta = self.column_sums(partials.rows(blocks, blocks));
        (dx, dgamma, dbeta)
    }

    fn matmul(&self, a: &GpuTensor, b: &GpuTensor, trans_a: bool, trans_b: bool) -> GpuTensor {
        let c = self.alloc(&matmul_shape(a, b, trans_a, trans_b));
        self.gemm(Gemm {
            c: Matrix::of(&c, "matmul"),
            a: Matrix::of(a, "matmul"),
            trans_a,
            b: Matrix::of(b, "matmul"),
            trans_b,
            accumulate: false,
            bias: None,
        });
        c
    }

    fn linear(&self, x: &GpuTensor, w: &GpuTensor, bias: Option<&GpuTensor>) -> GpuTensor {
        let shape = matmul_shape(x, w, false, true);
        if let Some(bias) = bias {
            assert_eq!(
                bias.shape,
                [shape[1]],
                "linear: bias {:?} for weight {:?}",
                bias.shape,
                w.shape
            );
        }
        let c = self.alloc(&shape);
        self.gemm(Gemm {
            c: Matrix::of(&c, "linear"),
            a: Matrix::of(x, "linear"),
            trans_a: false,
            b: Matrix::of(w, "linear"),
            trans_b: true,
            accumulate: false,
            bias: bias.map(GpuTensor::buffer),
        });
        c
    }

    fn sum_rows(&self, x: &GpuTensor) -> GpuTensor {
        self.column_sums(Matrix::of(x, "sum_rows"))
    }

    fn attention(
        &self,
        qkv: &GpuTensor,
        key_ids: &GpuIds,
        shape: AttentionShape,
        dropout: Option<&Dropout>,
    ) -> (GpuTensor, GpuTensor) {
        let (tokens, dim) = check_attention(qkv, shape);
        assert_eq!(
            key_ids.host.len(),
            tokens,
            "attention: {} key ids for {tokens} positions",
            key_ids.host.len()
        );
        let AttentionShape {
            batch, len, heads, ..
        } = shape;
        let scores = batch * heads * len * len;
        if scores == 0 || dim == 0 {
            return (
                self.zeros(&[tokens, dim]),
                self.zeros(&[batch, heads, len, len]),
            );
        }
        let probs = self.alloc(&[batch, heads, len, len]);
        let ctx = self.alloc(&[tokens, dim]);
        self.run(
            Kernel::AttentionForward,
            &attention_params(shape, dropout),
            &[
                self.whole(qkv.buffer(), 3 * tokens * dim, "attention qkv"),
                self.whole(key_ids.buffer(), tokens, "attention key ids"),
                self.whole(probs.buffer(), scores, "attention probabilities"),
                self.whole(ctx.buffer(), tokens * dim, "attention context"),
            ],
            self.grid(batch * heads * len),
        );
        (ctx, probs)
    }

    fn attention_backward(
        &self,
        dctx: &GpuTensor,
        qkv: &GpuTensor,
        probs: &GpuTensor,
        shape: AttentionShape,
        dropout: Option<&Dropout>,
    ) -> GpuTensor {
        let (tokens, dim) = check_attention(qkv, shape);
        let AttentionShape {
            batch, len, heads, ..
        } = shape;
        assert_eq!(
            dctx.shape,
            [tokens, dim],
            "attention_backward: dctx {:?}",
            dctx.shape
        );
        assert_eq!(
            probs.shape,
            [batch, heads, len, len],
            "attention_backward: probs {:?}",
            probs.shape
        );
        let scores = batch * heads * len * len;
        if scores == 0 || dim == 0 {
            return self.zeros(&qkv.shape);
        }
        let dqkv = self.alloc(&qkv.shape);
        let dscores = self.alloc(&[scores]);
        let params = attention_params(shape, dropout);
        let qkv_range = self.whole(qkv.buffer(), 3 * tokens * dim, "attention qkv");
        let dctx_range = self.whole(dctx.buffer(), tokens * dim, "attention dctx");
        let probs_range = self.whole(probs.buffer(), scores, "attention probabilities");
        let dscores_range = self.whole(dscores.buffer(), scores, "attention dscores");
        let dqkv_range = self.whole(dqkv.buffer(), 3 * tokens * dim, "attention dqkv");
        let grid = self.grid(batch * heads * len);
        self.run(
            Kernel::AttentionBackwardQuery,
            &params,
            &[
                qkv_range,
                dctx_range,
                probs_range,
                dscores_range,
                dqkv_range,
            ],
            grid,
        );
        self.run(
            Kernel::AttentionBackwardKey,
            &params,
            &[
                qkv_range,
                dctx_range,
                probs_range,
                dscores_range,
                dqkv_range,
            ],
            grid,
        );
        dqkv
    }

    fn cross_entropy(
        &self,
        h: &GpuTensor,
        table: &GpuTensor,
        targets: &GpuIds,
        with_grad: bool,
    ) -> CrossEntropy<GpuTensor> {
        let hm = Matrix::of(h, "cross_entropy");
        let tm = Matrix::of(table, "cross_entropy");
        let (rows, dim, vocab) = (hm.rows, hm.cols, tm.rows);
        assert_eq!(
            tm.cols, dim,
            "cross_entropy: h {:?} with table {:?}",
            h.shape, table.shape
        );
        assert_eq!(
            targets.host.len(),
            rows,
            "cross_entropy: {} targets for {rows} rows",
            targets.host.len()
        );

        // The rows that count, compacted on the host.
        let mut kept: Vec<u32> = Vec::new();
        let mut kept_targets: Vec<u32> = Vec::new();
        let mut compact_index = vec![MISSING; rows];
        for (r, &t) in targets.host.iter().enumerate() {
            if t != 0 {
                assert!(
                    (t as usize) < vocab,
                    "cross_entropy: target {t} is out of range for {vocab} items"
                );
                compact_index[r] = u32_of(kept.len());
                kept.push(u32_of(r));
                kept_targets.push(t);
            }
        }
        let count = kept.len();
        if count == 0 {
            return CrossEntropy {
                loss: self.zeros(&[1]),
                count,
                dh: with_grad.then(|| self.zeros(&[rows, dim])),
                dtable: with_grad.then(|| self.zeros(&[vocab, dim])),
            };
        }

        let kept_buf = self.upload_u32(&kept);
        let hc = self.gather_rows(h.buffer(), (rows, dim), kept_buf.buffer(), count);
        let targets_buf = self.upload_u32(&kept_targets);
        let loss_rows = self.alloc(&[count]);
        let dhc = with_grad.then(|| self.alloc(&[count, dim]));
        let dtable = with_grad.then(|| self.alloc(&[vocab, dim]));

        // Rows per chunk: within the memory budget and one storage binding.
        let budget_rows = (self.inner.ce_chunk_bytes / (4 * vocab.max(1) as u64)) as usize;
        let chunk_rows = budget_rows
            .min(self.rows_per_binding(vocab, "cross_entropy logits"))
            .clamp(1, count);
        let logits = self.alloc(&[chunk_rows, vocab]);
        let hc_m = Matrix::of(&hc, "cross_entropy");
        let targets_range = self.whole(targets_buf.buffer(), count, "cross_entropy targets");
        let loss_rows_range = self.whole(loss_rows.buffer(), count, "cross_entropy losses");

        for c0 in (0..count).step_by(chunk_rows) {
            let cr = chunk_rows.min(count - c0);
            let logits_m = Matrix::of(&logits, "cross_entropy").rows(0, cr);
            let h_chunk = hc_m.rows(c0, cr);
            self.gemm(Gemm {
                c: logits_m,
                a: h_chunk,
                trans_a: false,
                b: tm,
                trans_b: true,
                accumulate: false,
                bias: None,
            });
            self.run(
                Kernel::CrossEntropyRows,
                &[
                    u32_of(cr),
                    u32_of(vocab),
                    u32_of(c0),
                    u32_of(count),
                    u32::from(with_grad),
                ],
                &[
                    self.whole(logits.buffer(), cr * vocab, "cross_entropy logits"),
                    targets_range,
                    loss_rows_range,
                ],
                self.grid(cr),
            );
            if let (Some(dhc), Some(dtable)) = (&dhc, &dtable) {
                // logits now hold dlogits.
                self.gemm(Gemm {
                    c: Matrix::of(dhc, "cross_entropy").rows(c0, cr),
                    a: logits_m,
                    trans_a: false,
                    b: tm,
                    trans_b: false,
                    accumulate: false,
                    bias: None,
                });
                self.gemm(Gemm {
                    c: Matrix::of(dtable, "cross_entropy"),
                    a: logits_m,
                    trans_a: true,
                    b: h_chunk,
                    trans_b: false,
                    accumulate: c0 > 0,
                    bias: None,
                });
            }
        }

        let loss = self.alloc(&[1]);
        self.run(
            Kernel::MeanLoss,
            // cross_entropy.wgsl's Params, of which mean_loss reads count.
            &[0, 0, 0, u32_of(count), 0],
            &[loss_rows_range, self.whole(loss.buffer(), 1, "loss")],
            [1, 1, 1],
        );
        // Put the gradient rows back in place, zeros for ignored rows.
        let dh = dhc.map(|dhc| {
            let index_buf = self.upload_u32(&compact_index);
            self.gather_rows(dhc.buffer(), (count, dim), index_buf.buffer(), rows)
        });
        CrossEntropy {
            loss,
            count,
            dh,
            dtable,
        }
    }

    fn adam(
        &self,
        param: &mut GpuTensor,
        grad: &GpuTensor,
        m: &mut GpuTensor,
        v: &mut GpuTensor,
        hp: &AdamStep,
    ) {
        assert_same_shape("adam", param, grad);
        assert_same_shape("adam", param, m);
        assert_same_shape("adam", param, v);
        self.make_unique(param);
        self.make_unique(m);
        self.make_unique(v);
        let constants = [
            hp.one_minus_beta1(),
            hp.beta2_f32(),
            hp.one_minus_beta2(),
            hp.eps_f32(),
            hp.step_size(),
            hp.bias_correction2_sqrt(),
        ];
        self.elementwise(
            Kernel::Adam,
            param.numel(),
            &[
                Operand::Elements(grad.buffer()),
                Operand::Elements(param.buffer()),
                Operand::Elements(m.buffer()),
                Operand::Elements(v.buffer()),
            ],
            |len, _| {
                let mut params = vec![u32_of(len)];
                params.extend(constants.iter().map(|c| c.to_bits()));
                params
            },
        );
    }
}

/// Checks `qkv` against `shape`; returns (batch * len, dim).
fn check_attention(qkv: &GpuTensor, shape: AttentionShape) -> (usize, usize) {
    let tokens = shape.batch * shape.len;
    let dim = shape.dim();
    assert_eq!(
        qkv.shape,
        [tokens, 3 * dim],
        "attention: qkv {:?} for {shape:?}",
        qkv.shape
    );
    assert!(
        shape.len <= MAX_ATTENTION_LEN && shape.head_dim <= MAX_HEAD_DIM,
        "attention: len {} (at most {MAX_ATTENTION_LEN}) or head_dim {} (at most {MAX_HEAD_DIM}) too large",
        shape.len,
        shape.head_dim
    );
    (tokens, dim)
}

/// Parameters of attention.wgsl.
fn attention_params(shape: AttentionShape, dropout: Option<&Dropout>) -> Vec<u32> {
    let scale = (1.0 / (shape.head_dim as f64).sqrt()) as f32;
    let mut params = vec![
        u32_of(shape.batch),
        u32_of(shape.len),
        u32_of(shape.heads),
        u32_of(shape.head_dim),
        scale.to_bits(),
    ];
    params.extend(dropout_params(dropout));
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_blocks_fit_the_binding() {
        for &(m, n, k) in &[(1, 1, 1), (50, 70, 40), (40_000, 64, 4096), (7, 3, 100_000)] {
            for (trans_a, trans_b) in [(false, false), (false, true), (true, false), (true, true)] {
                let lda = if trans_a { m } else { k };
                let ldb = if trans_b { k } else { n };
                for limit in [64, 1000, 1 << 20] {
                    let (mb, nb, kb) = plan_matmul_blocks(
                        (m, n, k),
                        (trans_a, trans_b),
                        (lda, ldb, n),
                        limit,
                        65_535,
                    );
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
        // Plenty of tiles, or a short k: no split.
        assert_eq!(split_k_slices(4096, 4096, 4096, usize::MAX), 1);
        assert_eq!(split_k_slices(64, 64, 300, usize::MAX), 1);
        // A weight gradient: 3 tiles, k = 6400.
        assert_eq!(
            split_k_slices(192, 64, 6400, usize::MAX),
            6400 / SPLIT_K_MIN_DEPTH
        );
        // Partials must fit one binding.
        assert_eq!(split_k_slices(192, 64, 6400, 3 * 192 * 64), 3);
    }
}
