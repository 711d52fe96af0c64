//! Launchers of `shaders/embedding.wgsl`: the row gather (also used to pick
//! and to put back rows of any matrix) and its deterministic scatter-add
//! backward (also the sampled losses' table gradient). A table, and a
//! gathered output, larger than one storage binding are bound a block of
//! rows at a time.

use bytemuck::{Pod, Zeroable};

use super::device::WgpuBackend;
use super::dispatch::u32_of;
use super::kernel::{Kernel, KernelDesc, Shader, read, read_write};
use super::memory::{GpuIds, GpuTensor};
use crate::{Backend, contract};

/// Invocations per workgroup.
const WG: u32 = 256;
/// An id that gathers a row of zeros.
pub(super) const MISSING: u32 = u32::MAX;

/// `embedding.wgsl`'s `Params`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    count: u32,
    dim: u32,
    v0: u32,
    v1: u32,
    table_off: u32,
    t0: u32,
    ids_off: u32,
    out_off: u32,
}

static SHADER: Shader<Params> = Shader::new(
    "embedding.wgsl",
    include_str!("../../shaders/embedding.wgsl"),
    &[],
    &[("WG", WG), ("MISSING", MISSING)],
);

static GATHER: Kernel<Params, 3> = Kernel::new(
    &SHADER,
    "gather",
    [read(1, "table"), read(2, "ids"), read_write(3, "gathered")],
);
static SCATTER_ADD: Kernel<Params, 5> = Kernel::new(
    &SHADER,
    "scatter_add",
    [
        read(4, "dy"),
        read(5, "uniq"),
        read(6, "row_ptr"),
        read(7, "pos"),
        read_write(8, "dtable"),
    ],
);

/// Every kernel of the family.
pub(super) fn kernels() -> Vec<KernelDesc<'static>> {
    vec![GATHER.desc(), SCATTER_ADD.desc()]
}

pub(super) fn embedding(b: &WgpuBackend, table: &GpuTensor, ids: &GpuIds) -> GpuTensor {
    let (vocab, dim) = contract::embedding(&table.shape, &ids.host);
    gather_rows(
        b,
        table.buffer(),
        (vocab, dim),
        ids.buffer(),
        ids.host.len(),
    )
}

/// `out[r] = table[ids[r]]` (a zero row for [`MISSING`]) for a table of
/// `vocab` rows of `dim`, the table and the output bound a block of rows at
/// a time.
pub(super) fn gather_rows(
    b: &WgpuBackend,
    table: &wgpu::Buffer,
    (vocab, dim): (usize, usize),
    ids: &wgpu::Buffer,
    n: usize,
) -> GpuTensor {
    let out = b.alloc(&[n, dim]);
    if n == 0 || dim == 0 {
        return out;
    }
    let block = b.rows_per_binding(dim, "embedding rows");
    for r0 in (0..n).step_by(block) {
        let rows = block.min(n - r0);
        let (out_range, out_off) = b.range(out.buffer(), r0 * dim, rows * dim);
        let (ids_range, ids_off) = b.range(ids, r0, rows);
        // At least one pass, which also writes the zero rows.
        for v0 in (0..vocab.max(1)).step_by(block) {
            let v1 = (v0 + block).min(vocab);
            let (table_range, table_off) = b.range(table, v0 * dim, (v1 - v0) * dim);
            b.run(
                &GATHER,
                &Params {
                    count: u32_of(rows),
                    dim: u32_of(dim),
                    v0: u32_of(v0),
                    v1: u32_of(v1),
                    table_off,
                    t0: 0,
                    ids_off,
                    out_off,
                },
                [table_range, ids_range, out_range],
                b.grid((rows * dim).div_ceil(WG as usize)),
            );
        }
    }
    out
}

pub(super) fn embedding_backward(
    b: &WgpuBackend,
    dy: &GpuTensor,
    ids: &GpuIds,
    vocab: usize,
    padding_idx: Option<u32>,
) -> GpuTensor {
    let dim = contract::embedding_backward(&dy.shape, &ids.host, vocab);
    let out = b.zeros(&[vocab, dim]);
    scatter_add_rows(b, dy.buffer(), &ids.host, padding_idx, &out);
    out
}

/// `dtable[ids[i]] += dy[i]` for every `i` whose id is not `padding_idx`:
/// dy `[ids.len(), dim]`, dtable `[vocab, dim]` (sizes checked by the
/// caller). Each distinct id's rows are added in increasing `i` by one
/// invocation per element, so the result is deterministic.
pub(super) fn scatter_add_rows(
    b: &WgpuBackend,
    dy: &wgpu::Buffer,
    host: &[u32],
    padding_idx: Option<u32>,
    dtable: &GpuTensor,
) {
    let (vocab, dim) = (dtable.shape[0], dtable.shape[1]);
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
        if distinct.last() != Some(&id) {
            distinct.push(id);
            row_ptr.push(u32_of(q));
        }
    }
    row_ptr.push(u32_of(positions.len()));
    if distinct.is_empty() || dim == 0 {
        return;
    }

    let distinct_buf = b.upload_u32(&distinct);
    let row_ptr_buf = b.upload_u32(&row_ptr);
    let positions_buf = b.upload_u32(&positions);
    let dy_range = b.whole(dy, host.len() * dim, "embedding_backward dy");
    let distinct_range = b.whole(distinct_buf.buffer(), distinct.len(), "distinct ids");
    let row_ptr_range = b.whole(row_ptr_buf.buffer(), row_ptr.len(), "row_ptr");
    let positions_range = b.whole(positions_buf.buffer(), positions.len(), "positions");
    // The output is bound a block of table rows at a time.
    let block = b.rows_per_binding(dim, "embedding_backward table");
    for v0 in (0..vocab).step_by(block) {
        let v1 = (v0 + block).min(vocab);
        let t0 = distinct.partition_point(|&id| (id as usize) < v0);
        let t1 = distinct.partition_point(|&id| (id as usize) < v1);
        if t0 == t1 {
            continue;
        }
        let (out_range, table_off) = b.range(dtable.buffer(), v0 * dim, (v1 - v0) * dim);
        b.run(
            &SCATTER_ADD,
            &Params {
                count: u32_of(t1 - t0),
                dim: u32_of(dim),
                v0: u32_of(v0),
                v1: u32_of(v1),
                table_off,
                t0: u32_of(t0),
                ids_off: 0,
                out_off: 0,
            },
            [
                dy_range,
                distinct_range,
                row_ptr_range,
                positions_range,
                out_range,
            ],
            b.grid(((t1 - t0) * dim).div_ceil(WG as usize)),
        );
    }
}
