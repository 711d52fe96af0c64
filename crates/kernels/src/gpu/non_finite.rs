//! Launcher of `shaders/non_finite.wgsl`: counting the NaN and infinite
//! elements of several tensors into one small buffer, read back once.

use bytemuck::{Pod, Zeroable};

use super::device::WgpuBackend;
use super::dispatch::{Operand, u32_of};
use super::kernel::{Kernel, KernelDesc, Shader, WORKGROUP_REDUCE_WGSL, read, read_write};
use super::memory::GpuTensor;

/// Invocations per workgroup.
const WG: u32 = 256;

/// `non_finite.wgsl`'s `Params`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    slot: u32,
}

static SHADER: Shader<Params> = Shader::new(
    "non_finite.wgsl",
    include_str!("../../shaders/non_finite.wgsl"),
    &[WORKGROUP_REDUCE_WGSL],
    &[("WG", WG)],
);

static COUNT: Kernel<Params, 2> =
    Kernel::new(&SHADER, "count", [read(1, "x"), read_write(2, "counts")]);

/// Every kernel of the family.
pub(super) fn kernels() -> Vec<KernelDesc<'static>> {
    vec![COUNT.desc()]
}

pub(super) fn count_non_finite(b: &WgpuBackend, tensors: &[&GpuTensor]) -> Vec<usize> {
    if tensors.is_empty() {
        return Vec::new();
    }
    let counts = b.alloc(&[tensors.len()]);
    b.clear(counts.buffer(), tensors.len());
    for (slot, t) in tensors.iter().enumerate() {
        b.elementwise(
            &COUNT,
            WG,
            t.numel(),
            [
                Operand::Elements(t.buffer()),
                Operand::Whole(counts.buffer(), tensors.len()),
            ],
            |len, _| Params {
                n: u32_of(len),
                slot: u32_of(slot),
            },
        );
    }
    let bytes = b.read_bytes(counts.buffer(), 4 * tensors.len() as u64);
    bytemuck::cast_slice::<u8, u32>(&bytes)
        .iter()
        .map(|&c| c as usize)
        .collect()
}
