// SwiGLU's gating over flat f32 arrays, one invocation per element:
// out = silu(gate) * up, silu(a) = a * sigmoid(a).
//
// Arrays larger than one storage binding are split by the host into chunks
// bound at their first element.
// Injected: WG. Prepended: common.wgsl.

struct Params {
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
// forward: silu(gate) * up; backward: dgate
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
// backward: dup
@group(0) @binding(5) var<storage, read_write> out_up: array<f32>;

fn element_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return workgroup_index(wid, nwg) * WG + lid.x;
}

// As elementwise.wgsl's sigmoid.
fn sigmoid_of(a: f32) -> f32 {
    return 1.0 / (1.0 + exp(-a));
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element_index(wid, nwg, lid);
    if (i < p.n) {
        let a = gate[i];
        out[i] = a * sigmoid_of(a) * up[i];
    }
}

// dgate = dy * up * s * (1 + gate * (1 - s)), dup = dy * gate * s, s = sigmoid(gate).
@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element_index(wid, nwg, lid);
    if (i < p.n) {
        let a = gate[i];
        let s = sigmoid_of(a);
        out[i] = dy[i] * up[i] * s * (1.0 + a * (1.0 - s));
        out_up[i] = dy[i] * a * s;
    }
}
