//! Launchers of `shaders/elementwise.wgsl`: add, sub, mul, add_assign,
//! scale, broadcast, ReLU, sigmoid, dropout. One invocation per element,
//! tensors larger than one binding in chunks.

use bytemuck::{Pod, Zeroable};

use super::device::WgpuBackend;
use super::dispatch::{Operand, u32_of};
use super::kernel::{Binding, DROPOUT_WGSL, Kernel, KernelDesc, Shader, read, read_write};
use super::memory::GpuTensor;
use crate::{Dropout, contract};

/// Invocations per workgroup.
const WG: u32 = 256;

/// `elementwise.wgsl`'s `Params`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    base: u32,
    drop_key: u32,
    drop_threshold: u32,
    drop_scale: f32,
}

static SHADER: Shader<Params> = Shader::new(
    "elementwise.wgsl",
    include_str!("../../shaders/elementwise.wgsl"),
    &[DROPOUT_WGSL],
    &[("WG", WG)],
);

const A: Binding = read(1, "a");
const B: Binding = read(2, "b");
const OUT: Binding = read_write(3, "out");

static ADD: Kernel<Params, 3> = Kernel::new(&SHADER, "add", [A, B, OUT]);
static SUB: Kernel<Params, 3> = Kernel::new(&SHADER, "sub", [A, B, OUT]);
static MUL: Kernel<Params, 3> = Kernel::new(&SHADER, "mul", [A, B, OUT]);
static ADD_ASSIGN: Kernel<Params, 2> = Kernel::new(&SHADER, "add_assign", [B, OUT]);
static SCALE: Kernel<Params, 3> = Kernel::new(&SHADER, "scale", [A, B, OUT]);
static BROADCAST: Kernel<Params, 2> = Kernel::new(&SHADER, "broadcast", [B, OUT]);
static RELU: Kernel<Params, 2> = Kernel::new(&SHADER, "relu", [A, OUT]);
static RELU_BACKWARD: Kernel<Params, 3> = Kernel::new(&SHADER, "relu_backward", [A, B, OUT]);
static SIGMOID: Kernel<Params, 2> = Kernel::new(&SHADER, "sigmoid", [A, OUT]);
static SIGMOID_BACKWARD: Kernel<Params, 3> = Kernel::new(&SHADER, "sigmoid_backward", [A, B, OUT]);
static DROPOUT: Kernel<Params, 2> = Kernel::new(&SHADER, "dropout", [A, OUT]);

/// Every kernel of the family.
pub(super) fn kernels() -> Vec<KernelDesc<'static>> {
    vec![
        ADD.desc(),
        SUB.desc(),
        MUL.desc(),
        ADD_ASSIGN.desc(),
        SCALE.desc(),
        BROADCAST.desc(),
        RELU.desc(),
        RELU_BACKWARD.desc(),
        SIGMOID.desc(),
        SIGMOID_BACKWARD.desc(),
        DROPOUT.desc(),
    ]
}

/// Parameters of a chunk without dropout.
fn plain(len: usize, first: usize) -> Params {
    Params {
        n: u32_of(len),
        base: u32_of(first),
        drop_key: 0,
        drop_threshold: 0,
        drop_scale: 1.0,
    }
}

/// `kernel(a, b)` into a new tensor shaped like `a`.
fn binary(
    b: &WgpuBackend,
    kernel: &'static Kernel<Params, 3>,
    x: &GpuTensor,
    y: &GpuTensor,
) -> GpuTensor {
    let out = b.alloc(&x.shape);
    b.elementwise(
        kernel,
        WG,
        x.numel(),
        [
            Operand::Elements(x.buffer()),
            Operand::Elements(y.buffer()),
            Operand::Elements(out.buffer()),
        ],
        plain,
    );
    out
}

/// `kernel(x)` into a new tensor shaped like `x`.
fn unary(b: &WgpuBackend, kernel: &'static Kernel<Params, 2>, x: &GpuTensor) -> GpuTensor {
    let out = b.alloc(&x.shape);
    b.elementwise(
        kernel,
        WG,
        x.numel(),
        [
            Operand::Elements(x.buffer()),
            Operand::Elements(out.buffer()),
        ],
        plain,
    );
    out
}

pub(super) fn add(b: &WgpuBackend, x: &GpuTensor, y: &GpuTensor) -> GpuTensor {
    contract::same_shape("add", &x.shape, &y.shape);
    binary(b, &ADD, x, y)
}

pub(super) fn sub(b: &WgpuBackend, x: &GpuTensor, y: &GpuTensor) -> GpuTensor {
    contract::same_shape("sub", &x.shape, &y.shape);
    binary(b, &SUB, x, y)
}

pub(super) fn mul(b: &WgpuBackend, x: &GpuTensor, y: &GpuTensor) -> GpuTensor {
    contract::same_shape("mul", &x.shape, &y.shape);
    binary(b, &MUL, x, y)
}

pub(super) fn add_assign(b: &WgpuBackend, acc: &mut GpuTensor, y: &GpuTensor) {
    let n = contract::same_shape("add_assign", &acc.shape, &y.shape);
    b.make_unique(acc);
    b.elementwise(
        &ADD_ASSIGN,
        WG,
        n,
        [
            Operand::Elements(y.buffer()),
            Operand::Elements(acc.buffer()),
        ],
        plain,
    );
}

pub(super) fn scale(b: &WgpuBackend, x: &GpuTensor, s: &GpuTensor) -> GpuTensor {
    contract::scalar("scale", &s.shape);
    let out = b.alloc(&x.shape);
    b.elementwise(
        &SCALE,
        WG,
        x.numel(),
        [
            Operand::Elements(x.buffer()),
            Operand::Whole(s.buffer(), 1),
            Operand::Elements(out.buffer()),
        ],
        plain,
    );
    out
}

pub(super) fn broadcast(b: &WgpuBackend, s: &GpuTensor, shape: &[usize]) -> GpuTensor {
    contract::scalar("broadcast", &s.shape);
    let out = b.alloc(shape);
    b.elementwise(
        &BROADCAST,
        WG,
        out.numel(),
        [
            Operand::Whole(s.buffer(), 1),
            Operand::Elements(out.buffer()),
        ],
        plain,
    );
    out
}

pub(super) fn relu(b: &WgpuBackend, x: &GpuTensor) -> GpuTensor {
    unary(b, &RELU, x)
}

pub(super) fn relu_backward(b: &WgpuBackend, y: &GpuTensor, dy: &GpuTensor) -> GpuTensor {
    contract::same_shape("relu_backward", &y.shape, &dy.shape);
    binary(b, &RELU_BACKWARD, y, dy)
}

pub(super) fn sigmoid(b: &WgpuBackend, x: &GpuTensor) -> GpuTensor {
    unary(b, &SIGMOID, x)
}

pub(super) fn sigmoid_backward(b: &WgpuBackend, y: &GpuTensor, dy: &GpuTensor) -> GpuTensor {
    contract::same_shape("sigmoid_backward", &y.shape, &dy.shape);
    binary(b, &SIGMOID_BACKWARD, y, dy)
}

pub(super) fn dropout(b: &WgpuBackend, x: &GpuTensor, mask: &Dropout) -> GpuTensor {
    let n = contract::dropout(&x.shape);
    let out = b.alloc(&x.shape);
    b.elementwise(
        &DROPOUT,
        WG,
        n,
        [
            Operand::Elements(x.buffer()),
            Operand::Elements(out.buffer()),
        ],
        |len, first| Params {
            n: u32_of(len),
            base: u32_of(first),
            drop_key: mask.key,
            drop_threshold: mask.threshold,
            drop_scale: mask.scale,
        },
    );
    out
}
