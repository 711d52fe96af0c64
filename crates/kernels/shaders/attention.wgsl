// Causal multi-head self-attention with key padding, forward and backward.
//
// qkv is [batch * len, 3 * dim] (PyTorch's fused in-projection: query, key,
// value side by side, head h in columns h * head_dim .. (h + 1) * head_dim of
// each part). Key j is visible from query i when j <= i and key_ids[j] != 0.
// A query with no visible key gets all-zero probabilities, a zero context and
// zero gradients (never NaN).
//
// Forward and the query half of backward run one workgroup per query row
// (b, h, i): invocations stride over the keys for the scores and reduce max
// and sum in workgroup memory. The key half of backward runs one workgroup
// per key row (b, h, j) and sums over the queries i >= j, so dK and dV need
// no atomics. Weighted sums of head-wide rows (the context, dQ, dK, dV) split
// the workgroup into WG / head_dim parts: invocation lid adds column
// lid % head_dim of every (WG / head_dim)-th row, and the parts are added in
// a fixed order, which shortens the serial chain of loads head_dim / WG
// times. The score row lives in workgroup memory: len <= MAX_LEN,
// head_dim <= MAX_HEAD_DIM.
//
// The host runs a batch larger than one storage binding in chunks of whole
// sequences: `batch` sequences from sequence `batch0` on, every buffer bound
// from the chunk's first element (`*_off` is that element's index inside the
// binding). Dropout indexes the whole [batch, heads, len, len] tensor, so the
// masks do not depend on the chunking.
//
// A (query, key) pair takes part in the context and the gradients when its
// probability (before dropout) is not 0: masked keys never do, not even as
// 0 * NaN. A pair that takes part carries NaN and infinities as IEEE
// arithmetic does, as on the CPU: the row maximum ignores NaN, exp(NaN) and
// exp(inf - inf) are NaN, so a row with a NaN or +inf score gets NaN
// probabilities for all its visible keys, and a dropped pair still adds
// 0 * v.
// Injected: WG, MAX_LEN, MAX_HEAD_DIM. Prepended: common.wgsl,
// workgroup_reduce.wgsl, dropout.wgsl.

// Below any finite score: the running maximum of a row starts here, so that
// a row whose visible scores are all -inf sums exp(-inf) = 0 and gets 0 / 0 =
// NaN probabilities, like the CPU's exp(-inf - -inf).
const KEY_FLOOR: f32 = -3.0e38;

struct Params {
    // sequences in this chunk, and the first one's index in the whole batch
    batch: u32,
    batch0: u32,
    len: u32,
    heads: u32,
    head_dim: u32,
    scale: f32,
    use_dropout: u32,
    drop_key: u32,
    drop_threshold: u32,
    drop_scale: f32,
    // element offsets of the chunk inside the bound ranges
    qkv_off: u32,
    ids_off: u32,
    probs_off: u32,
    ctx_off: u32,
    dscores_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> key_ids: array<u32>;
// forward outputs: probabilities [batch, heads, len, len] and context [batch * len, dim]
@group(0) @binding(3) var<storage, read_write> probs: array<f32>;
@group(0) @binding(4) var<storage, read_write> ctx: array<f32>;
// backward inputs
@group(0) @binding(5) var<storage, read> dctx: array<f32>;
@group(0) @binding(6) var<storage, read> saved_probs: array<f32>;
// gradient of the scores [batch, heads, len, len], from the query pass to the key pass
@group(0) @binding(7) var<storage, read_write> dscores: array<f32>;
@group(0) @binding(8) var<storage, read> dscores_in: array<f32>;
// laid out like qkv, so it shares qkv_off
@group(0) @binding(9) var<storage, read_write> dqkv: array<f32>;

var<workgroup> head_row: array<f32, MAX_HEAD_DIM>;
var<workgroup> row_a: array<f32, MAX_LEN>;
var<workgroup> row_b: array<f32, MAX_LEN>;
var<workgroup> row_c: array<f32, MAX_LEN>;
var<workgroup> part_a: array<f32, WG>;
var<workgroup> part_b: array<f32, WG>;

// The dropout factor of score `index` of the chunk (flat in [batch, heads,
// len, len]), masked by its index in the whole batch.
fn drop_factor(index: u32) -> f32 {
    if (p.use_dropout == 0u) {
        return 1.0;
    }
    let first = p.batch0 * p.heads * p.len * p.len;
    return dropout_factor(p.drop_key, p.drop_threshold, p.drop_scale, first + index);
}

// (b, h, i) of workgroup `row` in [batch, heads, len] order (b in the chunk).
fn split_row(row: u32) -> vec3<u32> {
    let i = row % p.len;
    let bh = row / p.len;
    return vec3<u32>(bh / p.heads, bh % p.heads, i);
}

fn row_stride() -> u32 {
    return 3u * p.heads * p.head_dim;
}

// Index in qkv (and dqkv) of column `col` of position j of sequence b.
fn qkv_index(b: u32, j: u32, col: u32) -> u32 {
    return p.qkv_off + (b * p.len + j) * row_stride() + col;
}

// Index in ctx (and dctx) of column `col` of position i of sequence b.
fn ctx_index(b: u32, i: u32, col: u32) -> u32 {
    return p.ctx_off + (b * p.len + i) * p.heads * p.head_dim + col;
}

// Whether a pair of probability `pr` takes part: pr is not 0 (NaN does). From
// the bits, since `NaN != 0.0` compiles to an ordered comparison (false).
fn takes_part(pr: f32) -> bool {
    return (bitcast<u32>(pr) & 0x7fffffffu) != 0u;
}

fn key_visible(b: u32, i: u32, j: u32) -> bool {
    return j <= i && key_ids[p.ids_off + b * p.len + j] != 0u;
}

// How many rows the weighted sums work on at once (see the top).
fn parts() -> u32 {
    return max(WG / p.head_dim, 1u);
}

// Adds the `parts()` partial sums in part_a (or part_b) for column lid.
fn sum_parts_a(lid: u32) -> f32 {
    var total = 0.0;
    for (var q = 0u; q < parts(); q++) {
        total += part_a[q * p.head_dim + lid];
    }
    return total;
}

fn sum_parts_b(lid: u32) -> f32 {
    var total = 0.0;
    for (var q = 0u; q < parts(); q++) {
        total += part_b[q * p.head_dim + lid];
    }
    return total;
}

// q_i . k_j with q_i (or dctx_i) staged in head_row; `col` selects the part of qkv.
fn dot_head_row(b: u32, h: u32, j: u32, col: u32) -> f32 {
    let base = qkv_index(b, j, col + h * p.head_dim);
    var s = 0.0;
    for (var d = 0u; d < p.head_dim; d++) {
        s += head_row[d] * qkv[base + d];
    }
    return s;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = workgroup_index(wid, nwg);
    if (row >= p.batch * p.heads * p.len) {
        return;
    }
    let lid = lid3.x;
    let bhi = split_row(row);
    let b = bhi.x;
    let h = bhi.y;
    let i = bhi.z;
    let dim = p.heads * p.head_dim;
    let q_base = qkv_index(b, i, h * p.head_dim);
    for (var d = lid; d < p.head_dim; d += WG) {
        head_row[d] = qkv[q_base + d];
    }
    workgroupBarrier();

    // Scores of the visible keys and their maximum. `select` (not max,
    // whose result with a NaN operand is undefined) skips NaN scores.
    var m = KEY_FLOOR;
    for (var j = lid; j <= i; j += WG) {
        if (key_visible(b, i, j)) {
            let s = dot_head_row(b, h, j, dim) * p.scale;
            row_a[j] = s;
            m = select(m, s, s > m);
        }
    }
    let row_max = workgroup_max(m, lid);

    var l = 0.0;
    for (var j = lid; j <= i; j += WG) {
        var e = 0.0;
        if (key_visible(b, i, j)) {
            e = exp(row_a[j] - row_max);
        }
        row_a[j] = e;
        l += e;
    }
    let total = workgroup_sum(l, lid);

    // Probabilities before dropout are saved; the context uses them after.
    let scores_row = row * p.len;
    for (var j = lid; j < p.len; j += WG) {
        var pr = 0.0;
        if (key_visible(b, i, j)) {
            pr = row_a[j] / total;
        }
        probs[p.probs_off + scores_row + j] = pr;
        if (j <= i) {
            row_a[j] = pr * drop_factor(scores_row + j);
            row_b[j] = pr;
        }
    }
    workgroupBarrier();

    let d = lid % p.head_dim;
    let part = lid / p.head_dim;
    var acc = 0.0;
    if (part < parts()) {
        let v_col = 2u * dim + h * p.head_dim + d;
        for (var j = part; j <= i; j += parts()) {
            if (takes_part(row_b[j])) {
                acc += row_a[j] * qkv[qkv_index(b, j, v_col)];
            }
        }
    }
    part_a[lid] = acc;
    workgroupBarrier();
    if (lid < p.head_dim) {
        ctx[ctx_index(b, i, h * p.head_dim + lid)] = sum_parts_a(lid);
    }
}

// Per query row: dP = dropout(dctx_i . v_j), dS = P * (dP - sum_j P dP),
// dQ_i = scale * sum_j dS_ij k_j. dS is saved for the key pass.
@compute @workgroup_size(WG)
fn backward_query(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = workgroup_index(wid, nwg);
    if (row >= p.batch * p.heads * p.len) {
        return;
    }
    let lid = lid3.x;
    let bhi = split_row(row);
    let b = bhi.x;
    let h = bhi.y;
    let i = bhi.z;
    let dim = p.heads * p.head_dim;
    let dctx_base = ctx_index(b, i, h * p.head_dim);
    for (var d = lid; d < p.head_dim; d += WG) {
        head_row[d] = dctx[dctx_base + d];
    }
    workgroupBarrier();

    let scores_row = row * p.len;
    var local = 0.0;
    for (var j = lid; j <= i; j += WG) {
        let pij = saved_probs[p.probs_off + scores_row + j];
        var dp = 0.0;
        if (takes_part(pij)) {
            dp = dot_head_row(b, h, j, 2u * dim) * drop_factor(scores_row + j);
        }
        row_a[j] = dp;
        row_b[j] = pij;
        local += pij * dp;
    }
    let row_dot = workgroup_sum(local, lid);

    for (var j = lid; j <= i; j += WG) {
        var ds = 0.0;
        if (takes_part(row_b[j])) {
            ds = row_b[j] * (row_a[j] - row_dot);
        }
        row_a[j] = ds;
        dscores[p.dscores_off + scores_row + j] = ds;
    }
    workgroupBarrier();

    let d = lid % p.head_dim;
    let part = lid / p.head_dim;
    var acc = 0.0;
    if (part < parts()) {
        let k_col = dim + h * p.head_dim + d;
        for (var j = part; j <= i; j += parts()) {
            if (takes_part(row_b[j])) {
                acc += row_a[j] * qkv[qkv_index(b, j, k_col)];
            }
        }
    }
    part_a[lid] = acc;
    workgroupBarrier();
    if (lid < p.head_dim) {
        dqkv[qkv_index(b, i, h * p.head_dim + lid)] = sum_parts_a(lid) * p.scale;
    }
}

// Per key row j: dK_j = scale * sum_{i >= j} dS_ij q_i and
// dV_j = sum_{i >= j} dropout(P_ij) dctx_i.
@compute @workgroup_size(WG)
fn backward_key(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = workgroup_index(wid, nwg);
    if (row >= p.batch * p.heads * p.len) {
        return;
    }
    let lid = lid3.x;
    let bhj = split_row(row);
    let b = bhj.x;
    let h = bhj.y;
    let j = bhj.z;
    let dim = p.heads * p.head_dim;
    let bh_base = (row - j) * p.len; // start of this (b, h) block of scores

    for (var i = j + lid; i < p.len; i += WG) {
        let idx = bh_base + i * p.len + j;
        let pij = saved_probs[p.probs_off + idx];
        row_a[i] = dscores_in[p.dscores_off + idx];
        row_b[i] = pij * drop_factor(idx);
        row_c[i] = pij;
    }
    workgroupBarrier();

    let d = lid % p.head_dim;
    let part = lid / p.head_dim;
    var dk = 0.0;
    var dv = 0.0;
    if (part < parts()) {
        for (var i = j + part; i < p.len; i += parts()) {
            if (takes_part(row_c[i])) {
                dk += row_a[i] * qkv[qkv_index(b, i, h * p.head_dim + d)];
                dv += row_b[i] * dctx[ctx_index(b, i, h * p.head_dim + d)];
            }
        }
    }
    part_a[lid] = dk;
    part_b[lid] = dv;
    workgroupBarrier();
    if (lid < p.head_dim) {
        let out = qkv_index(b, j, h * p.head_dim + lid);
        dqkv[out + dim] = sum_parts_a(lid) * p.scale;
        dqkv[out + 2u * dim] = sum_parts_b(lid);
    }
}
