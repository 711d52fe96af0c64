// One Adam step in place, elementwise, in torch.optim.Adam's order of
// operations (see `AdamStep`). The host passes the bias corrections, computed
// in f64 like PyTorch's Python scalars; arrays larger than one storage
// binding are stepped in chunks.
// Injected: WG. Prepended: common.wgsl.

struct Params {
    n: u32,
    // 1 - beta1 and 1 - beta2 rounded from f64, as PyTorch passes them
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    eps: f32,
    // lr / (1 - beta1^step)
    step_size: f32,
    // sqrt(1 - beta2^step)
    bias_correction2_sqrt: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

// PyTorch's lerp(start, end, w): the form it picks is exact at w = 0 and 1.
fn lerp(start: f32, end: f32, w: f32) -> f32 {
    if (w < 0.5) {
        return start + w * (end - start);
    }
    return end - (end - start) * (1.0 - w);
}

@compute @workgroup_size(WG)
fn step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = workgroup_index(wid, nwg) * WG + lid.x;
    if (i >= p.n) {
        return;
    }
    let g = grad[i];
    let m_new = lerp(m[i], g, p.one_minus_beta1);
    let v_new = p.beta2 * v[i] + p.one_minus_beta2 * g * g;
    let denom = sqrt(v_new) / p.bias_correction2_sqrt + p.eps;
    param[i] = param[i] - p.step_size * (m_new / denom);
    m[i] = m_new;
    v[i] = v_new;
}
