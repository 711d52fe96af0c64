// Functions every shader uses. This file holds functions only (no bindings
// or entry points); the host prepends it to every shader, after the
// constants it injects (see `src/gpu/kernel.rs`).

// The flat index of a workgroup. Grids larger than the per-dimension limit
// (65535) spill into the y dimension: the host launches rows of nwg.x
// workgroups, and a kernel skips the indices past its work.
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}
