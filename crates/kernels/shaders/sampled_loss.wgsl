// Losses over sampled negatives: sampled softmax (with an optional log-Q
// correction) and binary cross-entropy with a weighted positive (BCE,
// gBCE), fused with their gradients. The rows come in groups that share
// their negatives (the batch, a sequence, or one position).
//
// The host compacts the rows whose target is not 0 (h_c, and pos_c = the
// targets' table rows), then:
// - `pos_logits`: one invocation per row, s+ = h . pos (- log Q(target)).
// - per chunk of rows, with the chunk's groups' negatives gathered into
//   neg_c (`n` rows per group, group `row_group[k]` for chunk row `k`):
//   - `logits`: one invocation per (row, negative), its dot product.
//   - `rows`: one workgroup per row. Every invocation reads its strided
//     share of the row's negative logits; a negative whose id is the row's
//     target is masked (no loss, gradient exactly 0). Softmax: a running
//     (max, sum of exp) per invocation, the positive added by invocation 0,
//     merged into lse; the row's loss is lse - s+. Binary: softplus sums
//     per invocation, added in a fixed tree order, plus weight *
//     softplus(-s+). With gradients the logits are overwritten in place by
//     d loss / d logit divided by count (each by the invocation that read
//     it), and d loss / d s+ goes to dpos_logit.
//   - `dh`: one invocation per element, dh = dlogits @ neg_g + ds+ * pos.
//   - `slot_grads`: one invocation per element of the gradient of each
//     negative slot (the sum over its group's rows of dlogit * h) and of each
//     row's positive (ds+ * h); the host then adds them into the table's
//     gradient with the embedding's deterministic scatter-add.
// The mean over the rows is cross_entropy.wgsl's `mean_loss`.
//
// NaN and +inf logits are not added to the softmax's running sums: the
// invocation notes them and the row gets a NaN loss and NaN gradients (but
// for its masked negatives), as on the CPU. In the binary loss every logit
// is its own term: a NaN one makes the loss NaN and its own gradient NaN.
// Injected: WG. Prepended: common.wgsl, workgroup_reduce.wgsl.

struct Params {
    // rows of this dispatch (pos_logits: all rows; the others: a chunk)
    rows: u32,
    n: u32,
    dim: u32,
    // index of the chunk's first row among the compacted rows
    row0: u32,
    count: u32,
    // 0: softmax, 1: binary
    binary: u32,
    has_log_q: u32,
    with_grad: u32,
    // negative slots of the chunk: its groups times n
    slots: u32,
    positive_weight: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> h_c: array<f32>;
@group(0) @binding(2) var<storage, read> pos_c: array<f32>;
@group(0) @binding(3) var<storage, read> targets_c: array<u32>;
@group(0) @binding(4) var<storage, read> log_q: array<f32>;
@group(0) @binding(5) var<storage, read_write> pos_logit: array<f32>;
@group(0) @binding(6) var<storage, read> neg_c: array<f32>;
@group(0) @binding(7) var<storage, read> row_group: array<u32>;
@group(0) @binding(8) var<storage, read_write> logits: array<f32>;
@group(0) @binding(9) var<storage, read> slot_ids: array<u32>;
@group(0) @binding(10) var<storage, read> pos_logit_in: array<f32>;
@group(0) @binding(11) var<storage, read_write> loss_rows: array<f32>;
@group(0) @binding(12) var<storage, read_write> dpos_logit: array<f32>;
@group(0) @binding(13) var<storage, read> dlogits: array<f32>;
@group(0) @binding(14) var<storage, read> dpos_logit_in: array<f32>;
@group(0) @binding(15) var<storage, read_write> dh_c: array<f32>;
@group(0) @binding(16) var<storage, read> group_rows: array<u32>;
@group(0) @binding(17) var<storage, read_write> slot_grads: array<f32>;

fn element(wid: vec3<u32>, nwg: vec3<u32>, lid3: vec3<u32>) -> u32 {
    return workgroup_index(wid, nwg) * WG + lid3.x;
}

@compute @workgroup_size(WG)
fn pos_logits(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid3: vec3<u32>) {
    let r = element(wid, nwg, lid3);
    if (r >= p.rows) {
        return;
    }
    var s = 0.0;
    for (var c = 0u; c < p.dim; c++) {
        s += h_c[r * p.dim + c] * pos_c[r * p.dim + c];
    }
    if (p.has_log_q != 0u) {
        s -= log_q[targets_c[r]];
    }
    pos_logit[r] = s;
}

@compute @workgroup_size(WG)
fn negative_logits(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid3: vec3<u32>) {
    let i = element(wid, nwg, lid3);
    if (i >= p.rows * p.n) {
        return;
    }
    let k = i / p.n;
    let neg_row = row_group[k] * p.n + i % p.n;
    let h_row = p.row0 + k;
    var s = 0.0;
    for (var c = 0u; c < p.dim; c++) {
        s += h_c[h_row * p.dim + c] * neg_c[neg_row * p.dim + c];
    }
    logits[i] = s;
}

// ln(1 + y) for 0 <= y <= 1: 2 atanh(y / (2 + y)) by its series (as the CPU).
fn ln_1p_unit(y: f32) -> f32 {
    let t = y / (2.0 + y);
    let t2 = t * t;
    var q = 1.0 / 17.0;
    q = q * t2 + 1.0 / 15.0;
    q = q * t2 + 1.0 / 13.0;
    q = q * t2 + 1.0 / 11.0;
    q = q * t2 + 1.0 / 9.0;
    q = q * t2 + 1.0 / 7.0;
    q = q * t2 + 1.0 / 5.0;
    q = q * t2 + 1.0 / 3.0;
    q = q * t2 + 1.0;
    return 2.0 * t * q;
}

// (softplus(x), sigmoid(x)) for x that is not NaN; +-inf give their limits.
fn softplus_sigmoid(x: f32) -> vec2<f32> {
    // exp(-87) is the smallest normal float's order: the terms below it
    // are 0 on the CPU and below any tolerance here.
    let e = exp(-min(abs(x), 87.0));
    let r = 1.0 / (1.0 + e);
    return vec2<f32>(select(0.0, x, x > 0.0) + ln_1p_unit(e), select(e * r, r, x >= 0.0));
}

@compute @workgroup_size(WG)
fn rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid3: vec3<u32>) {
    let r = workgroup_index(wid, nwg);
    if (r >= p.rows) {
        return;
    }
    let lid = lid3.x;
    let row = p.row0 + r;
    let base = r * p.n;
    let slot0 = row_group[r] * p.n;
    let target_id = targets_c[row];
    let s_pos = pos_logit_in[row];
    let inv_count = 1.0 / f32(p.count);
    let with_grad = p.with_grad != 0u;

    if (p.binary == 0u) {
        var acc = vec2<f32>(-3.0e38, 0.0);
        var poisoned = 0.0;
        if (lid == 0u) {
            if (is_nan(s_pos) || bitcast<u32>(s_pos) == 0x7f800000u) {
                poisoned = 1.0;
            } else {
                acc = add_exp(acc, s_pos);
            }
        }
        for (var j = lid; j < p.n; j += WG) {
            let id = slot_ids[slot0 + j];
            var x = logits[base + j];
            if (p.has_log_q != 0u) {
                x -= log_q[id];
            }
            if (id == target_id) {
                continue;
            }
            if (is_nan(x) || bitcast<u32>(x) == 0x7f800000u) {
                // NaN or +inf
                poisoned = 1.0;
            } else {
                acc = add_exp(acc, x);
            }
        }
        let row_poisoned = workgroup_max(poisoned, lid) > 0.0;
        var lse = workgroup_logsumexp(acc, lid);
        if (row_poisoned) {
            lse = nan();
        }
        if (lid == 0u) {
            loss_rows[row] = lse - s_pos;
            // lse is NaN in a poisoned row: so is every gradient but the masked ones.
            dpos_logit[row] = select((exp(s_pos - lse) - 1.0) * inv_count, lse, row_poisoned);
        }
        if (with_grad) {
            for (var j = lid; j < p.n; j += WG) {
                let id = slot_ids[slot0 + j];
                var x = logits[base + j];
                if (p.has_log_q != 0u) {
                    x -= log_q[id];
                }
                let g = select(exp(x - lse) * inv_count, lse, row_poisoned);
                logits[base + j] = select(g, 0.0, id == target_id);
            }
        }
        return;
    }

    var sum = 0.0;
    for (var j = lid; j < p.n; j += WG) {
        let x = logits[base + j];
        var g = 0.0;
        if (slot_ids[slot0 + j] != target_id) {
            if (is_nan(x)) {
                sum = x;
                g = x;
            } else {
                let ss = softplus_sigmoid(x);
                sum += ss.x;
                g = ss.y * inv_count;
            }
        }
        if (with_grad) {
            logits[base + j] = g;
        }
    }
    // A NaN in one invocation's sum makes the total NaN.
    let total = workgroup_sum(sum, lid);
    if (lid == 0u) {
        var pos_term = vec2<f32>(s_pos, s_pos);
        if (!is_nan(s_pos)) {
            // d softplus(-s+) / d s+ = -sigmoid(-s+).
            pos_term = softplus_sigmoid(-s_pos);
        }
        loss_rows[row] = p.positive_weight * pos_term.x + total;
        dpos_logit[row] = -p.positive_weight * pos_term.y * inv_count;
    }
}

@compute @workgroup_size(WG)
fn dh(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
      @builtin(local_invocation_id) lid3: vec3<u32>) {
    let i = element(wid, nwg, lid3);
    if (i >= p.rows * p.dim) {
        return;
    }
    let k = i / p.dim;
    let c = i % p.dim;
    let slot0 = row_group[k] * p.n;
    var s = 0.0;
    for (var j = 0u; j < p.n; j++) {
        s += dlogits[k * p.n + j] * neg_c[(slot0 + j) * p.dim + c];
    }
    let row = p.row0 + k;
    dh_c[row * p.dim + c] = s + dpos_logit_in[row] * pos_c[row * p.dim + c];
}

@compute @workgroup_size(WG)
fn negative_grads(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid3: vec3<u32>) {
    let i = element(wid, nwg, lid3);
    if (i >= (p.slots + p.rows) * p.dim) {
        return;
    }
    let s = i / p.dim;
    let c = i % p.dim;
    if (s >= p.slots) {
        // The positive of chunk row s - slots.
        let row = p.row0 + s - p.slots;
        slot_grads[i] = dpos_logit_in[row] * h_c[row * p.dim + c];
        return;
    }
    let g = s / p.n;
    let j = s % p.n;
    var sum = 0.0;
    for (var k = group_rows[g]; k < group_rows[g + 1u]; k++) {
        sum += dlogits[k * p.n + j] * h_c[(p.row0 + k) * p.dim + c];
    }
    slot_grads[i] = sum;
}
