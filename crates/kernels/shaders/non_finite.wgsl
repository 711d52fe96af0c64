// Counts the NaN and infinite elements of a tensor: one invocation per
// element, the workgroup's count added with workgroup_sum (exact: at most WG
// ones), then one atomic add per workgroup into counts[slot]. Integer
// additions commute, so the count is the same whatever the order. Tensors
// larger than one binding are counted in chunks into the same slot.
// Injected: WG. Prepended: common.wgsl, workgroup_reduce.wgsl.

struct Params {
    n: u32,
    // which tensor of the call this is
    slot: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> counts: array<atomic<u32>>;

@compute @workgroup_size(WG)
fn count(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid3: vec3<u32>) {
    let g = workgroup_index(wid, nwg);
    // The whole workgroup reduces, so only the excess of the grid returns.
    if (g * WG >= p.n) {
        return;
    }
    let lid = lid3.x;
    let i = g * WG + lid;
    var bad = 0.0;
    if (i < p.n && !is_finite(x[i])) {
        bad = 1.0;
    }
    let total = u32(workgroup_sum(bad, lid));
    if (lid == 0u && total > 0u) {
        atomicAdd(&counts[p.slot], total);
    }
}
