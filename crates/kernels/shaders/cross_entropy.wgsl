// Softmax cross-entropy over a chunk of logits rows, fused with its gradient.
//
// The host computes one chunk of logits = h @ table^T at a time (rows whose
// target is 0 were dropped beforehand). `rows` then runs one workgroup per
// row: every invocation keeps a running (max, sum of exp) over its strided
// share of the row, the pairs are merged in workgroup memory, and
// lse = max + log(sum). The row's loss lse - logit[target] goes to
// loss_rows; with gradients the logits are overwritten in place by
// dlogits = (softmax - onehot) / count. With label smoothing e the row's
// loss is lse - (1 - e) logit[target] - e mean(logits) and dlogits =
// (softmax - (1 - e) onehot - e / vocab) / count (PyTorch's
// label_smoothing); the row's logit sum comes from the same pass as its
// (max, sum of exp). `mean_loss` then adds the per-row
// losses in a fixed order in one workgroup, so the loss is deterministic.
//
// Every logit is read and then overwritten by the same invocation (the one
// whose strided share holds its column), the target's too, so no invocation
// reads a value another one writes: a workgroupBarrier does not order
// storage memory.
//
// NaN and +inf logits are not added to the running sums (which would lose
// them in the merge): the invocation notes them, and a row with one gets a
// NaN loss and NaN gradients, as on the CPU. A -inf logit adds exp(-inf) = 0.
// Injected: WG. Prepended: common.wgsl, workgroup_reduce.wgsl.

struct Params {
    rows: u32,
    vocab: u32,
    // index of the chunk's first row in targets and loss_rows
    row0: u32,
    count: u32,
    with_grad: u32,
    // element offset of the chunk's first logit inside the bound logits
    logits_off: u32,
    // label smoothing in [0, 1]
    smoothing: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> loss_rows: array<f32>;
@group(0) @binding(4) var<storage, read> loss_in: array<f32>;
@group(0) @binding(5) var<storage, read_write> loss: array<f32>;

@compute @workgroup_size(WG)
fn rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid3: vec3<u32>) {
    let r = workgroup_index(wid, nwg);
    if (r >= p.rows) {
        return;
    }
    let lid = lid3.x;
    let base = p.logits_off + r * p.vocab;

    var acc = vec2<f32>(-3.0e38, 0.0);
    var poisoned = 0.0;
    var logit_sum = 0.0;
    for (var j = lid; j < p.vocab; j += WG) {
        let x = logits[base + j];
        if (is_nan(x) || bitcast<u32>(x) == 0x7f800000u) {
            // NaN or +inf
            poisoned = 1.0;
        } else {
            acc = add_exp(acc, x);
            logit_sum += x;
        }
    }
    let row_poisoned = workgroup_max(poisoned, lid) > 0.0;
    var lse = workgroup_logsumexp(acc, lid);
    if (row_poisoned) {
        lse = nan();
    }
    let smoothed = p.smoothing != 0.0;
    var mean_logit = 0.0;
    if (smoothed) {
        mean_logit = workgroup_sum(logit_sum, lid) / f32(p.vocab);
    }
    let target_weight = 1.0 - p.smoothing;
    let uniform_share = p.smoothing / f32(p.vocab);
    let target_id = targets[p.row0 + r];
    let inv_count = 1.0 / f32(p.count);
    for (var j = lid; j < p.vocab; j += WG) {
        let x = logits[base + j];
        if (j == target_id) {
            if (smoothed) {
                loss_rows[p.row0 + r] = lse - target_weight * x - p.smoothing * mean_logit;
            } else {
                loss_rows[p.row0 + r] = lse - x;
            }
        }
        if (p.with_grad != 0u) {
            let onehot = select(0.0, target_weight, j == target_id);
            // lse is NaN in a poisoned row: its gradient is all NaN.
            let g = (exp(x - lse) - onehot - uniform_share) * inv_count;
            logits[base + j] = select(g, lse, row_poisoned);
        }
    }
}

// loss[0] = sum(loss_in[0 .. count]) / count.
@compute @workgroup_size(WG)
fn mean_loss(@builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    var s = 0.0;
    for (var i = lid; i < p.count; i += WG) {
        s += loss_in[i];
    }
    let total = workgroup_sum(s, lid);
    if (lid == 0u) {
        loss[0] = total / f32(p.count);
    }
}
