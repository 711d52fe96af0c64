// Elementwise maps over flat f32 arrays: one invocation per element.
//
// Arrays larger than one storage binding are split by the host into chunks;
// `base` is the chunk's first element in the whole tensor, which the dropout
// hash needs (the mask is a function of the element's index in the tensor).
// Injected: WG. Prepended: common.wgsl, dropout.wgsl.

struct Params {
    n: u32,
    base: u32,
    drop_key: u32,
    drop_threshold: u32,
    drop_scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn element_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return workgroup_index(wid, nwg) * WG + lid.x;
}

// out = a + b
@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element_index(wid, nwg, lid);
    if (i < p.n) {
        out[i] = a[i] + b[i];
    }
}

// out = a - b
@compute @workgroup_size(WG)
fn sub(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element_index(wid, nwg, lid);
    if (i < p.n) {
        out[i] = a[i] - b[i];
    }
}

// out = a * b
@compute @workgroup_size(WG)
fn mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element_index(wid, nwg, lid);
    if (i < p.n) {
        out[i] = a[i] * b[i];
    }
}

// out += b (gradient accumulation in place)
@compute @workgroup_size(WG)
fn add_assign(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element_index(wid, nwg, lid);
    if (i < p.n) {
        out[i] = out[i] + b[i];
    }
}

// out = a * b[0]: the scalar stays on the device.
@compute @workgroup_size(WG)
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element_index(wid, nwg, lid);
    if (i < p.n) {
        out[i] = a[i] * b[0];
    }
}

// out = b[0] everywhere.
@compute @workgroup_size(WG)
fn broadcast(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element_index(wid, nwg, lid);
    if (i < p.n) {
        out[i] = b[0];
    }
}

// out = max(a, 0), NaN kept (max's result for a NaN operand is undefined).
@compute @workgroup_size(WG)
fn relu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element_index(wid, nwg, lid);
    if (i < p.n) {
        out[i] = select(a[i], 0.0, a[i] <= 0.0);
    }
}

// out = 0 where a <= 0, else b (PyTorch's threshold_backward), with a the
// forward output and b the incoming gradient.
@compute @workgroup_size(WG)
fn relu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element_index(wid, nwg, lid);
    if (i < p.n) {
        out[i] = select(b[i], 0.0, a[i] <= 0.0);
    }
}

// out = 1 / (1 + exp(-a))
@compute @workgroup_size(WG)
fn sigmoid(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element_index(wid, nwg, lid);
    if (i < p.n) {
        out[i] = 1.0 / (1.0 + exp(-a[i]));
    }
}

// out = b * a * (1 - a), with a the forward output and b the incoming gradient.
@compute @workgroup_size(WG)
fn sigmoid_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element_index(wid, nwg, lid);
    if (i < p.n) {
        out[i] = b[i] * a[i] * (1.0 - a[i]);
    }
}

// out = a * factor(base + i): inverted dropout, forward and backward alike.
@compute @workgroup_size(WG)
fn dropout(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element_index(wid, nwg, lid);
    if (i < p.n) {
        out[i] = a[i] * dropout_factor(p.drop_key, p.drop_threshold, p.drop_scale, p.base + i);
    }
}
