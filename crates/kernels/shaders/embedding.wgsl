// Embedding lookup (row gather) and its backward (row scatter-add).
//
// Both use one invocation per output element, consecutive invocations on
// consecutive columns of a row (coalesced). A table larger than one storage
// binding is processed in blocks of rows [v0, v1): the host binds the block
// and passes `table_off`, the element offset of row v0 inside the binding.
// A gather whose output is larger than one binding goes a block of output
// rows at a time (`ids_off`, `out_off`).
// Injected: WG, MISSING (an id that gathers a row of zeros, used to put rows
// back in place, e.g. in the cross-entropy). Prepended: common.wgsl.

struct Params {
    // gather: rows gathered; scatter_add: distinct ids in this block
    count: u32,
    dim: u32,
    // the block of table rows [v0, v1) bound in this dispatch
    v0: u32,
    v1: u32,
    // element offset of row v0 inside the bound table (gather) or dtable (scatter_add)
    table_off: u32,
    // scatter_add: the block's first distinct id is uniq[t0]
    t0: u32,
    // gather: offsets of the block's first id and first output element
    // inside their bindings
    ids_off: u32,
    out_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> gathered: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read> uniq: array<u32>;
@group(0) @binding(6) var<storage, read> row_ptr: array<u32>;
@group(0) @binding(7) var<storage, read> pos: array<u32>;
@group(0) @binding(8) var<storage, read_write> dtable: array<f32>;

fn element_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return workgroup_index(wid, nwg) * WG + lid.x;
}

// gathered[r] = table[ids[r]] for the ids inside this block of the table.
@compute @workgroup_size(WG)
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element_index(wid, nwg, lid);
    if (i >= p.count * p.dim) {
        return;
    }
    let r = i / p.dim;
    let col = i % p.dim;
    let id = ids[p.ids_off + r];
    if (id == MISSING) {
        if (p.v0 == 0u) {
            gathered[p.out_off + i] = 0.0;
        }
    } else if (id >= p.v0 && id < p.v1) {
        gathered[p.out_off + i] = table[p.table_off + (id - p.v0) * p.dim + col];
    }
}

// Deterministic scatter-add without float atomics. The host sorts the
// positions by id (CSR): the positions holding id uniq[t] are
// pos[row_ptr[t] .. row_ptr[t + 1]], in increasing order. One invocation per
// (distinct id, column) adds its rows of dy in that order, then adds the sum
// to the output (zeros for the embedding's backward; the sampled losses add
// chunk after chunk into the table's gradient).
@compute @workgroup_size(WG)
fn scatter_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element_index(wid, nwg, lid);
    if (i >= p.count * p.dim) {
        return;
    }
    let t = p.t0 + i / p.dim;
    let col = i % p.dim;
    var sum = 0.0;
    for (var q = row_ptr[t]; q < row_ptr[t + 1u]; q++) {
        sum += dy[pos[q] * p.dim + col];
    }
    let at = p.table_off + (uniq[t] - p.v0) * p.dim + col;
    dtable[at] = dtable[at] + sum;
}
