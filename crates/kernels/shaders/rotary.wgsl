// Rotary position embedding of attention's queries and keys, one invocation
// per element of qkv [rows, 3 * dim] (or of its gradient): an element of a
// query's or key's head is computed from itself and its pair partner half a
// head away, turned by the angle of its row's position; a value element is
// copied. The table [len, head_dim] holds each position's cosines, then its
// sines. sign = 1 turns forward, -1 back (the gradient).
// Injected: WG. Prepended: common.wgsl.

struct Params {
    rows: u32,
    dim: u32,
    len: u32,
    head_dim: u32,
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
    if (col >= 2u * p.dim) {
        out[i] = x[i];
        return;
    }
    let half = p.head_dim / 2u;
    let k = col % p.head_dim;
    let angle = (i / width) % p.len * p.head_dim + k % half;
    let c = table[angle];
    let s = p.sign * table[angle + half];
    if (k < half) {
        out[i] = x[i] * c - x[i + half] * s;
    } else {
        out[i] = x[i - half] * s + x[i] * c;
    }
}
