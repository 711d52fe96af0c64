// Rotary position embedding of attention's queries and keys, one invocation
// per element of qkv [rows, 3 * dim] (or of its gradient): an element of a
// query's or key's head is computed from itself and its pair partner half a
// head away, turned by the angle of its row's position; a value element is
// copied. The table [len, head_dim] holds each position's cosines, then its
// sines. sign = 1 turns forward, -1 back (the gradient).
//
// A dispatch covers rows first_row .. first_row + rows, bound from the
// aligned offsets at or below them (x_off, out_off): tensors larger than one
// binding go in chunks of whole rows.
// Injected: WG. Prepended: common.wgsl.

struct Params {
    // rows of this dispatch
    rows: u32,
    dim: u32,
    len: u32,
    head_dim: u32,
    // the index of this dispatch's first row in the whole tensor
    first_row: u32,
    // element offsets of that row inside the bound ranges of x and out
    x_off: u32,
    out_off: u32,
    sign: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn rotary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = workgroup_index(wid, nwg) * WG + lid.x;
    let width = 3u * p.dim;
    if (i >= p.rows * width) {
        return;
    }
    let col = i % width;
    let xi = p.x_off + i;
    let oi = p.out_off + i;
    if (col >= 2u * p.dim) {
        out[oi] = x[xi];
        return;
    }
    let half = p.head_dim / 2u;
    let k = col % p.head_dim;
    let angle = (p.first_row + i / width) % p.len * p.head_dim + k % half;
    let c = table[angle];
    let s = p.sign * table[angle + half];
    if (k < half) {
        out[oi] = x[xi] * c - x[xi + half] * s;
    } else {
        out[oi] = x[xi - half] * s + x[xi] * c;
    }
}
