// RMSNorm over the last dimension of x [rows, dim]: y = x * rstd * gamma,
// rstd = 1 / sqrt(mean(x^2) + eps).
//
// Forward and dx: one workgroup of WG invocations per row; each invocation
// walks the row with stride WG and the partial sums are combined with
// workgroup_sum.
//
// dgamma is a column sum over the rows; `param_grads` writes one partial
// sum per block of ROWS_PER_GROUP rows exactly like sum_rows.wgsl, and the
// host finishes with sum_rows.wgsl, so the result is deterministic (no
// atomics).
// Injected: WG, COLS, LANES, ROWS_PER_GROUP (the last three sum_rows').
// Prepended: common.wgsl, workgroup_reduce.wgsl.

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
@group(0) @binding(3) var<storage, read> dy: array<f32>;
// rstd[r]: written by forward, read back as saved_rstd
@group(0) @binding(4) var<storage, read_write> rstd: array<f32>;
// forward: y; backward: dx
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
// param_grads: dgamma partials [blocks, dim]
@group(0) @binding(6) var<storage, read_write> partial: array<f32>;
@group(0) @binding(7) var<storage, read> saved_rstd: array<f32>;

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

    var q = 0.0;
    for (var j = lid; j < p.dim; j += WG) {
        let v = x[base + j];
        q += v * v;
    }
    let s = 1.0 / sqrt(workgroup_sum(q, lid) / f32(p.dim) + p.eps);

    for (var j = lid; j < p.dim; j += WG) {
        out[base + j] = x[base + j] * s * gamma[j];
    }
    if (lid == 0u) {
        rstd[row] = s;
    }
}

// dx = rstd * (g - xhat * mean(g * xhat)), g = dy * gamma, xhat = x * rstd.
@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = workgroup_index(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let lid = lid3.x;
    let base = row * p.dim;
    let s = saved_rstd[row];

    var sgx = 0.0;
    for (var j = lid; j < p.dim; j += WG) {
        sgx += dy[base + j] * gamma[j] * x[base + j] * s;
    }
    let mean_gx = workgroup_sum(sgx, lid) / f32(p.dim);

    for (var j = lid; j < p.dim; j += WG) {
        let g = dy[base + j] * gamma[j];
        out[base + j] = s * (g - x[base + j] * s * mean_gx);
    }
}

// Per block of ROWS_PER_GROUP rows: partial dgamma = sum dy * xhat, laid
// out like sum_rows.wgsl's partials. Workgroup g of the flat grid does
// column group g % col_groups of row block g / col_groups.
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
    if (col < p.dim) {
        for (var r = first + lid.y; r < last; r += LANES) {
            dg += dy[r * p.dim + col] * x[r * p.dim + col] * saved_rstd[r];
        }
    }
    lane_sums[lid.y * COLS + lid.x] = dg;
    workgroupBarrier();
    if (lid.y == 0u && col < p.dim) {
        var total = lane_sums[lid.x];
        for (var lane = 1u; lane < LANES; lane++) {
            total += lane_sums[lane * COLS + lid.x];
        }
        partial[block * p.dim + col] = total;
    }
}
