// Sum and max over the WG invocations of a workgroup, through workgroup
// memory in a fixed tree order (so the result is the same on every run).
// This file holds functions only; the host prepends it to the shaders that
// reduce (attention, layer_norm, cross_entropy, non_finite), whose injected WG is
// their workgroup size. Every invocation must call them (they hold
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
