//! What every launcher uses: buffers from the pool, bindings of whole
//! buffers or of aligned sub-ranges, grids that spill into the second
//! dimension, the typed dispatch, and the chunked elementwise driver.

use std::sync::Arc;

use super::device::WgpuBackend;
use super::kernel::Kernel;
use super::memory::{GpuTensor, Storage};
use super::recorder::BufferRange;

/// A row-major matrix stored in `buffer` from element `offset` on.
#[derive(Clone, Copy)]
pub(super) struct Matrix<'a> {
    pub(super) buffer: &'a wgpu::Buffer,
    pub(super) offset: usize,
    pub(super) rows: usize,
    pub(super) cols: usize,
}

impl<'a> Matrix<'a> {
    /// A 2-D tensor as a matrix (shapes were checked by the op's contract).
    pub(super) fn of(t: &'a GpuTensor) -> Self {
        let [rows, cols] = t.shape[..] else {
            unreachable!("the contract checked that {:?} is a matrix", t.shape)
        };
        Matrix {
            buffer: t.buffer(),
            offset: 0,
            rows,
            cols,
        }
    }

    /// Rows `first .. first + rows`.
    pub(super) fn rows(self, first: usize, rows: usize) -> Self {
        Matrix {
            offset: self.offset + first * self.cols,
            rows,
            ..self
        }
    }
}

/// One operand of an elementwise kernel.
pub(super) enum Operand<'a> {
    /// As long as the output: bound chunk by chunk.
    Elements(&'a wgpu::Buffer),
    /// The first `n` elements, bound whole for every chunk (a `[1]` scalar).
    Whole(&'a wgpu::Buffer, usize),
}

/// `x` as a kernel's `u32` size or index.
///
/// # Panics
/// If it does not fit in 32 bits.
pub(super) fn u32_of(x: usize) -> u32 {
    u32::try_from(x).unwrap_or_else(|_| panic!("size {x} does not fit the kernels' u32 indices"))
}

impl WgpuBackend {
    /// An uninitialised tensor from the pool.
    pub(super) fn alloc(&self, shape: &[usize]) -> GpuTensor {
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

    pub(super) fn upload(&self, dst: &wgpu::Buffer, data: &[u8]) {
        self.recorder().upload(&self.inner.device, dst, data);
    }

    pub(super) fn upload_u32(&self, data: &[u32]) -> Storage {
        let storage = Storage::new(&self.inner.device, &self.inner.pool, 4 * data.len() as u64);
        self.upload(storage.buffer(), bytemuck::cast_slice(data));
        storage
    }

    /// Submits the pending work and reads the first `bytes` bytes of `buffer`.
    pub(super) fn read_bytes(&self, buffer: &wgpu::Buffer, bytes: u64) -> Vec<u8> {
        self.recorder()
            .read(&self.inner.device, &self.inner.queue, buffer, bytes)
    }

    /// Records zeroing the first `elems` elements of `buffer`.
    pub(super) fn clear(&self, buffer: &wgpu::Buffer, elems: usize) {
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
    pub(super) fn make_unique(&self, t: &mut GpuTensor) {
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

    /// Records one dispatch of `kernel` with `params` and its `N` buffers on
    /// `grid` workgroups.
    pub(super) fn run<P: bytemuck::Pod, const N: usize>(
        &self,
        kernel: &'static Kernel<P, N>,
        params: &P,
        buffers: [BufferRange<'_>; N],
        grid: [u32; 3],
    ) {
        self.recorder().dispatch(
            &self.inner.device,
            &self.inner.queue,
            self.inner.pipelines.get(kernel.key()),
            bytemuck::bytes_of(params),
            &buffers,
            grid,
        );
    }

    /// The first `elems` elements of `buffer` as one binding.
    ///
    /// # Panics
    /// If they do not fit one storage binding; `what` names the operand.
    pub(super) fn whole<'a>(
        &self,
        buffer: &'a wgpu::Buffer,
        elems: usize,
        what: &str,
    ) -> BufferRange<'a> {
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
    pub(super) fn range<'a>(
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
    pub(super) fn binding_elems(&self) -> usize {
        ((self.inner.limits.max_binding - self.inner.limits.storage_align) / 4) as usize
    }

    /// How many rows of `row_elems` elements one binding holds.
    pub(super) fn rows_per_binding(&self, row_elems: usize, what: &str) -> usize {
        let rows = self.binding_elems() / row_elems.max(1);
        assert!(
            rows > 0,
            "{what}: one row of {row_elems} elements does not fit one storage binding"
        );
        rows
    }

    /// Workgroups per grid dimension.
    pub(super) fn max_groups(&self) -> usize {
        self.inner.limits.max_groups as usize
    }

    /// A grid of `groups` workgroups: along x up to the per-dimension limit,
    /// then along y (kernels flatten it back with `workgroup_index` and skip
    /// the excess).
    pub(super) fn grid(&self, groups: usize) -> [u32; 3] {
        let max = self.max_groups();
        if groups <= max {
            [u32_of(groups), 1, 1]
        } else {
            let rows = groups.div_ceil(max);
            assert!(rows <= max, "grid of {groups} workgroups is too large");
            [u32_of(max), u32_of(rows), 1]
        }
    }

    /// Runs an elementwise kernel (`wg` invocations per workgroup, one per
    /// element) over `n` elements, in chunks of at most one binding;
    /// `params(len, first)` gives each chunk's parameters.
    pub(super) fn elementwise<P: bytemuck::Pod, const N: usize>(
        &self,
        kernel: &'static Kernel<P, N>,
        wg: u32,
        n: usize,
        operands: [Operand<'_>; N],
        params: impl Fn(usize, usize) -> P,
    ) {
        // max_binding is a multiple of the alignment, so chunks start aligned.
        let chunk = (self.inner.limits.max_binding / 4) as usize;
        let mut first = 0;
        while first < n {
            let len = chunk.min(n - first);
            let ranges = operands.each_ref().map(|operand| match operand {
                Operand::Elements(buffer) => BufferRange {
                    buffer,
                    offset: 4 * first as u64,
                    size: 4 * len as u64,
                },
                Operand::Whole(buffer, n) => self.whole(buffer, *n, "an elementwise operand"),
            });
            self.run(
                kernel,
                &params(len, first),
                ranges,
                self.grid(len.div_ceil(wg as usize)),
            );
            first += len;
        }
    }
}
