//! Launchers of `shaders/attention.wgsl`: causal multi-head self-attention
//! with key padding, forward (one workgroup per query row) and backward (a
//! query pass, then a key pass that owns dK and dV rows, so no atomics).

use bytemuck::{Pod, Zeroable};

use super::WgpuBackend;
use super::dispatch::u32_of;
use super::kernel::{
    DROPOUT_WGSL, Kernel, KernelDesc, Shader, WORKGROUP_REDUCE_WGSL, read, read_write,
};
use super::memory::{GpuIds, GpuTensor};
use crate::{AttentionShape, Backend, Dropout, contract};

/// Invocations per workgroup.
const WG: u32 = 128;
/// Longest sequence: a score row lives in workgroup memory.
const MAX_LEN: u32 = 1024;
/// Widest head: a query row lives in workgroup memory.
const MAX_HEAD_DIM: u32 = 128;

/// `attention.wgsl`'s `Params`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    batch: u32,
    len: u32,
    heads: u32,
    head_dim: u32,
    scale: f32,
    use_dropout: u32,
    drop_key: u32,
    drop_threshold: u32,
    drop_scale: f32,
}

static SHADER: Shader<Params> = Shader::new(
    "attention.wgsl",
    include_str!("../../shaders/attention.wgsl"),
    &[WORKGROUP_REDUCE_WGSL, DROPOUT_WGSL],
    &[
        ("WG", WG),
        ("MAX_LEN", MAX_LEN),
        ("MAX_HEAD_DIM", MAX_HEAD_DIM),
    ],
);

static FORWARD: Kernel<Params, 4> = Kernel::new(
    &SHADER,
    "forward",
    [
        read(1, "qkv"),
        read(2, "key_ids"),
        read_write(3, "probs"),
        read_write(4, "ctx"),
    ],
);
static BACKWARD_QUERY: Kernel<Params, 5> = Kernel::new(
    &SHADER,
    "backward_query",
    [
        read(1, "qkv"),
        read(5, "dctx"),
        read(6, "saved_probs"),
        read_write(7, "dscores"),
        read_write(9, "dqkv"),
    ],
);
static BACKWARD_KEY: Kernel<Params, 5> = Kernel::new(
    &SHADER,
    "backward_key",
    [
        read(1, "qkv"),
        read(5, "dctx"),
        read(6, "saved_probs"),
        read(8, "dscores_in"),
        read_write(9, "dqkv"),
    ],
);

/// Every kernel of the family.
pub(super) fn kernels() -> Vec<KernelDesc<'static>> {
    vec![FORWARD.desc(), BACKWARD_QUERY.desc(), BACKWARD_KEY.desc()]
}

/// The kernel's own limits, beyond the op's contract.
fn check_limits(shape: AttentionShape) {
    assert!(
        shape.len <= MAX_LEN as usize && shape.head_dim <= MAX_HEAD_DIM as usize,
        "attention: len {} (at most {MAX_LEN} on the GPU) or head_dim {} (at most {MAX_HEAD_DIM}) too large",
        shape.len,
        shape.head_dim
    );
}

fn params(shape: AttentionShape, dropout: Option<&Dropout>) -> Params {
    let (use_dropout, drop_key, drop_threshold, drop_scale) = match dropout {
        Some(d) => (1, d.key, d.threshold, d.scale),
        None => (0, 0, 0, 1.0),
    };
    Params {
        batch: u32_of(shape.batch),
        len: u32_of(shape.len),
        heads: u32_of(shape.heads),
        head_dim: u32_of(shape.head_dim),
        scale: (1.0 / (shape.head_dim as f64).sqrt()) as f32,
        use_dropout,
        drop_key,
        drop_threshold,
        drop_scale,
    }
}

pub(super) fn attention(
    b: &WgpuBackend,
    qkv: &GpuTensor,
    key_ids: &GpuIds,
    shape: AttentionShape,
    dropout: Option<&Dropout>,
) -> (GpuTensor, GpuTensor) {
    let scores = contract::attention(&qkv.shape, &key_ids.host, shape);
    check_limits(shape);
    let AttentionShape {
        batch, len, heads, ..
    } = shape;
    let (tokens, dim) = (batch * len, shape.dim());
    if scores == 0 {
        return (b.zeros(&[tokens, dim]), b.zeros(&[batch, heads, len, len]));
    }
    let probs = b.alloc(&[batch, heads, len, len]);
    let ctx = b.alloc(&[tokens, dim]);
    b.run(
        &FORWARD,
        &params(shape, dropout),
        [
            b.whole(qkv.buffer(), 3 * tokens * dim, "attention qkv"),
            b.whole(key_ids.buffer(), tokens, "attention key ids"),
            b.whole(probs.buffer(), scores, "attention probabilities"),
            b.whole(ctx.buffer(), tokens * dim, "attention context"),
        ],
        b.grid(batch * heads * len),
    );
    (ctx, probs)
}

pub(super) fn attention_backward(
    b: &WgpuBackend,
    dctx: &GpuTensor,
    qkv: &GpuTensor,
    probs: &GpuTensor,
    shape: AttentionShape,
    dropout: Option<&Dropout>,
) -> GpuTensor {
    let scores = contract::attention_backward(&dctx.shape, &qkv.shape, &probs.shape, shape);
    check_limits(shape);
    let AttentionShape {
        batch, len, heads, ..
    } = shape;
    let (tokens, dim) = (batch * len, shape.dim());
    if scores == 0 {
        return b.zeros(&qkv.shape);
    }
    let dqkv = b.alloc(&qkv.shape);
    let dscores = b.alloc(&[scores]);
    let params = params(shape, dropout);
    let qkv_range = b.whole(qkv.buffer(), 3 * tokens * dim, "attention qkv");
    let dctx_range = b.whole(dctx.buffer(), tokens * dim, "attention dctx");
    let probs_range = b.whole(probs.buffer(), scores, "attention probabilities");
    let dscores_range = b.whole(dscores.buffer(), scores, "attention dscores");
    let dqkv_range = b.whole(dqkv.buffer(), 3 * tokens * dim, "attention dqkv");
    let grid = b.grid(batch * heads * len);
    b.run(
        &BACKWARD_QUERY,
        &params,
        [
            qkv_range,
            dctx_range,
            probs_range,
            dscores_range,
            dqkv_range,
        ],
        grid,
    );
    b.run(
        &BACKWARD_KEY,
        &params,
        [
            qkv_range,
            dctx_range,
            probs_range,
            dscores_range,
            dqkv_range,
        ],
        grid,
    );
    dqkv
}
