// Functions every shader uses. This file holds functions only (no bindings
// or entry points); the host prepends it to every shader, after the
// constants it injects (see `src/gpu/kernel.rs`).

// The flat index of a workgroup. Grids larger than the per-dimension limit
// (65535) spill into the y dimension: the host launches rows of nwg.x
// workgroups, and a kernel skips the indices past its work.
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

// Whether x is NaN, from its bits: a compiler that assumes finite floats
// cannot fold this away, as it may `x != x`.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// Whether x is neither NaN nor infinite, from its bits.
fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// A quiet NaN, made at run time (a constant NaN is a WGSL error).
fn nan() -> f32 {
    var bits = 0x7fc00000u;
    return bitcast<f32>(bits);
}
