// Sum and max over the WG invocations of a workgroup, through workgroup
// memory in a fixed tree order (so the result is the same on every run).
// This file holds functions only; the host prepends it to the shaders that
// reduce (attention, layer_norm, cross_entropy, sampled_loss, non_finite),
// whose injected WG is their workgroup size. Every invocation must call them (they hold
// barriers) and every invocation gets the result. workgroup_max's values
// must not be NaN: WGSL's max of a NaN is undefined.

var<workgroup> reduce_scratch: array<f32, WG>;

fn workgroup_sum(v: f32, lid: u32) -> f32 {
    reduce_scratch[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            reduce_scratch[lid] += reduce_scratch[lid + s];
        }
        workgroupBarrier();
    }
    let total = reduce_scratch[0];
    workgroupBarrier();
    return total;
}

fn workgroup_max(v: f32, lid: u32) -> f32 {
    reduce_scratch[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            reduce_scratch[lid] = max(reduce_scratch[lid], reduce_scratch[lid + s]);
        }
        workgroupBarrier();
    }
    let largest = reduce_scratch[0];
    workgroupBarrier();
    return largest;
}

var<workgroup> lse_max: array<f32, WG>;
var<workgroup> lse_sum: array<f32, WG>;

// sum_a * exp(max_a - m) + sum_b * exp(max_b - m), m = max(max_a, max_b); an
// empty side (sum 0) contributes nothing even when its max is the sentinel.
fn merge_exp_sums(max_a: f32, sum_a: f32, max_b: f32, sum_b: f32) -> vec2<f32> {
    let m = max(max_a, max_b);
    var s = 0.0;
    if (sum_a > 0.0) {
        s += sum_a * exp(max_a - m);
    }
    if (sum_b > 0.0) {
        s += sum_b * exp(max_b - m);
    }
    return vec2<f32>(m, s);
}

// Adds exp(x) to a running pair (max m, sum of exp(value - m)); start from
// (-3e38, 0). x must not be NaN or +inf.
fn add_exp(acc: vec2<f32>, x: f32) -> vec2<f32> {
    if (x > acc.x) {
        return vec2<f32>(x, acc.y * exp(acc.x - x) + 1.0);
    }
    return vec2<f32>(acc.x, acc.y + exp(x - acc.x));
}

// log(sum of exp(x)) over the values the invocations have seen, given each
// invocation's running pair from add_exp: the pairs are merged in a fixed
// tree order. No NaN or +inf may be among the values (callers note those
// themselves).
fn workgroup_logsumexp(acc: vec2<f32>, lid: u32) -> f32 {
    lse_max[lid] = acc.x;
    lse_sum[lid] = acc.y;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half >>= 1u) {
        if (lid < half) {
            let merged = merge_exp_sums(lse_max[lid], lse_sum[lid], lse_max[lid + half], lse_sum[lid + half]);
            lse_max[lid] = merged.x;
            lse_sum[lid] = merged.y;
        }
        workgroupBarrier();
    }
    let lse = lse_max[0] + log(lse_sum[0]);
    workgroupBarrier();
    return lse;
}
