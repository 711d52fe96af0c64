// Embedding lookup (row gather) and its backward (row scatter-add).
//
// Both use one invocation per output element, consecutive invocations on
// consecutive columns of a row (coalesced). A table larger than one storage
// binding is processed in blocks of rows [v0, v1): the host binds the block
// and passes `table_off`, the element offset of row v0 inside the binding.

const WG: u32 = 256u;
// An id equal to MISSING gathers a row of zeros (used to scatter rows back
// into place, e.g. in the cross-entropy).
const MISSING: u32 = 0xffffffffu;

struct GatherParams {
    rows: u32,
    dim: u32,
    v0: u32,
    v1: u32,
    table_off: u32,
}

@group(0) @binding(0) var<uniform> gp: GatherParams;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> gathered: array<f32>;

fn element_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// gathered[r] = table[ids[r]] for the ids inside this block of the table.
@compute @workgroup_size(WG)
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element_index(wid, nwg, lid);
    if (i >= gp.rows * gp.dim) {
        return;
    }
    let r = i / gp.dim;
    let col = i % gp.dim;
    let id = ids[r];
    if (id == MISSING) {
        if (gp.v0 == 0u) {
            gathered[i] = 0.0;
        }
    } else if (id >= gp.v0 && id < gp.v1) {
        gathered[i] = table[gp.table_off + (id - gp.v0) * gp.dim + col];
    }
}

// Deterministic scatter-add without float atomics. The host sorts the
// positions by id (CSR): the positions holding id uniq[t] are
// pos[row_ptr[t] .. row_ptr[t + 1]], in increasing order. One invocation per
// (distinct id, column) adds its rows of dy in that order; rows of the output
// that no id touches were cleared by the host.
struct ScatterParams {
    // distinct ids in this block: uniq[t0 .. t0 + count]
    count: u32,
    dim: u32,
    t0: u32,
    v0: u32,
    out_off: u32,
}

@group(0) @binding(4) var<uniform> sp: ScatterParams;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read> uniq: array<u32>;
@group(0) @binding(7) var<storage, read> row_ptr: array<u32>;
@group(0) @binding(8) var<storage, read> pos: array<u32>;
@group(0) @binding(9) var<storage, read_write> dtable: array<f32>;

@compute @workgroup_size(WG)
fn scatter_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element_index(wid, nwg, lid);
    if (i >= sp.count * sp.dim) {
        return;
    }
    let t = sp.t0 + i / sp.dim;
    let col = i % sp.dim;
    var sum = 0.0;
    for (var q = row_ptr[t]; q < row_ptr[t + 1u]; q++) {
        sum += dy[pos[q] * sp.dim + col];
    }
    dtable[sp.out_off + (uniq[t] - sp.v0) * sp.dim + col] = sum;
}
