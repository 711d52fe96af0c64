// Counter-based dropout mask, bit-identical to `sasrec_kernels::dropout`.
//
// This file holds functions only (no bindings or entry points); the host
// prepends it to the shader families that drop elements (elementwise.wgsl,
// attention.wgsl).

// One round of the "lowbias32" integer hash; u32 multiplication wraps in WGSL
// exactly like `wrapping_mul` in Rust.
fn mix32(x_in: u32) -> u32 {
    var x = x_in;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

// `Dropout::factor`: `scale` when element `index` is kept, else 0.
fn dropout_factor(key: u32, threshold: u32, scale: f32, index: u32) -> f32 {
    if ((mix32(key ^ mix32(index)) >> 8u) >= threshold) {
        return scale;
    }
    return 0.0;
}
