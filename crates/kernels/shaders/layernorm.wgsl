// LayerNorm over the last dimension of x [rows, dim], biased variance.
//
// Forward and dx: one workgroup of WG invocations per row; each invocation
// walks the row with stride WG and the partial sums are combined with a tree
// reduction in workgroup memory. Mean and variance are two passes over the row
// (not E[x^2] - E[x]^2, which cancels badly).
//
// dgamma and dbeta are column sums over the rows; `param_grads` writes one
// partial sum per block of ROWS_PER_GROUP rows and the host finishes with
// reduce.wgsl, so the result is deterministic (no atomics).

const WG: u32 = 128u;
const COLS: u32 = 64u;
const LANES: u32 = 4u;
const ROWS_PER_GROUP: u32 = 256u;

struct Params {
    rows: u32,
    dim: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
// stats[2 r] = mean, stats[2 r + 1] = 1 / sqrt(var + eps): written by
// forward, read back as saved_stats
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
// forward: y; backward: dx
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
// param_grads: dgamma partials [blocks, dim] then dbeta partials [blocks, dim]
@group(0) @binding(7) var<storage, read_write> partial: array<f32>;
@group(0) @binding(8) var<storage, read> saved_stats: array<f32>;

var<workgroup> red: array<f32, WG>;
var<workgroup> lane_sums: array<f32, 256>; // LANES * COLS

// Sum of `v` over the workgroup, returned to every invocation.
fn workgroup_sum(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

fn row_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = row_index(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let lid = lid3.x;
    let base = row * p.dim;
    let inv_dim = 1.0 / f32(p.dim);

    var s = 0.0;
    for (var j = lid; j < p.dim; j += WG) {
        s += x[base + j];
    }
    let mean = workgroup_sum(s, lid) * inv_dim;

    var q = 0.0;
    for (var j = lid; j < p.dim; j += WG) {
        let d = x[base + j] - mean;
        q += d * d;
    }
    let rstd = 1.0 / sqrt(workgroup_sum(q, lid) * inv_dim + p.eps);

    for (var j = lid; j < p.dim; j += WG) {
        out[base + j] = (x[base + j] - mean) * rstd * gamma[j] + beta[j];
    }
    if (lid == 0u) {
        stats[2u * row] = mean;
        stats[2u * row + 1u] = rstd;
    }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma.
@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = row_index(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let lid = lid3.x;
    let base = row * p.dim;
    let inv_dim = 1.0 / f32(p.dim);
    let mean = saved_stats[2u * row];
    let rstd = saved_stats[2u * row + 1u];

    var sg = 0.0;
    var sgx = 0.0;
    for (var j = lid; j < p.dim; j += WG) {
        let g = dy[base + j] * gamma[j];
        sg += g;
        sgx += g * (x[base + j] - mean) * rstd;
    }
    let mean_g = workgroup_sum(sg, lid) * inv_dim;
    let mean_gx = workgroup_sum(sgx, lid) * inv_dim;

    for (var j = lid; j < p.dim; j += WG) {
        let xhat = (x[base + j] - mean) * rstd;
        let g = dy[base + j] * gamma[j];
        out[base + j] = rstd * (g - mean_g - xhat * mean_gx);
    }
}

// Per block of ROWS_PER_GROUP rows: partial dgamma = sum dy * xhat and
// partial dbeta = sum dy, laid out like reduce.wgsl's column sums.
@compute @workgroup_size(64, 4)
fn param_grads(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let col = wid.x * COLS + lid.x;
    let block = wid.y;
    let blocks = nwg.y;
    let first = block * ROWS_PER_GROUP;
    let last = min(first + ROWS_PER_GROUP, p.rows);
    var dg = 0.0;
    var db = 0.0;
    if (col < p.dim) {
        for (var r = first + lid.y; r < last; r += LANES) {
            let g = dy[r * p.dim + col];
            let xhat = (x[r * p.dim + col] - saved_stats[2u * r]) * saved_stats[2u * r + 1u];
            dg += g * xhat;
            db += g;
        }
    }
    // The lanes of the two sums are added one sum after the other.
    lane_sums[lid.y * COLS + lid.x] = dg;
    workgroupBarrier();
    if (lid.y == 0u && col < p.dim) {
        partial[block * p.dim + col] = ((lane_sums[lid.x] + lane_sums[COLS + lid.x])
            + lane_sums[2u * COLS + lid.x]) + lane_sums[3u * COLS + lid.x];
    }
    workgroupBarrier();
    lane_sums[lid.y * COLS + lid.x] = db;
    workgroupBarrier();
    if (lid.y == 0u && col < p.dim) {
        partial[(blocks + block) * p.dim + col] = ((lane_sums[lid.x] + lane_sums[COLS + lid.x])
            + lane_sums[2u * COLS + lid.x]) + lane_sums[3u * COLS + lid.x];
    }
}
