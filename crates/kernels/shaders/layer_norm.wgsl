// LayerNorm over the last dimension of x [rows, dim], biased variance.
//
// Forward and dx: one workgroup of WG invocations per row; each invocation
// walks the row with stride WG and the partial sums are combined with
// workgroup_sum. Mean and variance are two passes over the row (not
// E[x^2] - E[x]^2, which cancels badly).
//
// dgamma and dbeta are column sums over the rows; `param_grads` writes one
// partial sum per block of ROWS_PER_GROUP rows exactly like sum_rows.wgsl,
// and the host finishes with sum_rows.wgsl, so the result is deterministic
// (no atomics).
// Injected: WG, COLS, LANES, ROWS_PER_GROUP (the last three sum_rows'). Prepended:
// common.wgsl, workgroup_reduce.wgsl.

struct Params {
    rows: u32,
    dim: u32,
    eps: f32,
    // param_grads: ceil(dim / COLS)
    col_groups: u32,
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

var<workgroup> lane_sums: array<f32, LANES * COLS>;

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = workgroup_index(wid, nwg);
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
    let row = workgroup_index(wid, nwg);
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

// The lanes of lane_sums added in a fixed order, for column lid.
fn add_lanes(lid: u32) -> f32 {
    var total = lane_sums[lid];
    for (var lane = 1u; lane < LANES; lane++) {
        total += lane_sums[lane * COLS + lid];
    }
    return total;
}

// Per block of ROWS_PER_GROUP rows: partial dgamma = sum dy * xhat and
// partial dbeta = sum dy, laid out like sum_rows.wgsl's partials. Workgroup
// g of the flat grid does column group g % col_groups of row block
// g / col_groups.
@compute @workgroup_size(COLS, LANES)
fn param_grads(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = workgroup_index(wid, nwg);
    let blocks = (p.rows + ROWS_PER_GROUP - 1u) / ROWS_PER_GROUP;
    if (g >= p.col_groups * blocks) {
        return;
    }
    let col = (g % p.col_groups) * COLS + lid.x;
    let block = g / p.col_groups;
    let first = block * ROWS_PER_GROUP;
    let last = min(first + ROWS_PER_GROUP, p.rows);
    var dg = 0.0;
    var db = 0.0;
    if (col < p.dim) {
        for (var r = first + lid.y; r < last; r += LANES) {
            let gr = dy[r * p.dim + col];
            let xhat = (x[r * p.dim + col] - saved_stats[2u * r]) * saved_stats[2u * r + 1u];
            dg += gr * xhat;
            db += gr;
        }
    }
    // The lanes of the two sums are added one sum after the other.
    lane_sums[lid.y * COLS + lid.x] = dg;
    workgroupBarrier();
    if (lid.y == 0u && col < p.dim) {
        partial[block * p.dim + col] = add_lanes(lid.x);
    }
    workgroupBarrier();
    lane_sums[lid.y * COLS + lid.x] = db;
    workgroupBarrier();
    if (lid.y == 0u && col < p.dim) {
        partial[(blocks + block) * p.dim + col] = add_lanes(lid.x);
    }
}
