//! Launchers of `shaders/attention.wgsl`: causal multi-head self-attention
//! with key padding, forward (one workgroup per query row) and backward (a
//! query pass, then a key pass that owns dK and dV rows, so no atomics).
//! A batch whose operands exceed one storage binding (the probabilities grow
//! with `len²`) runs in chunks of whole sequences.

use bytemuck::{Pod, Zeroable};

use super::device::WgpuBackend;
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
    batch0: u32,
    len: u32,
    heads: u32,
    head_dim: u32,
    scale: f32,
    use_dropout: u32,
    drop_key: u32,
    drop_threshold: u32,
    drop_scale: f32,
    qkv_off: u32,
    ids_off: u32,
    probs_off: u32,
    ctx_off: u32,
    dscores_off: u32,
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

/// The parameters shared by every chunk.
fn params(shape: AttentionShape, dropout: Option<&Dropout>) -> Params {
    let (use_dropout, drop_key, drop_threshold, drop_scale) = match dropout {
        Some(d) => (1, d.key, d.threshold, d.scale),
        None => (0, 0, 0, 1.0),
    };
    Params {
        batch: u32_of(shape.batch),
        batch0: 0,
        len: u32_of(shape.len),
        heads: u32_of(shape.heads),
        head_dim: u32_of(shape.head_dim),
        scale: (1.0 / (shape.head_dim as f64).sqrt()) as f32,
        use_dropout,
        drop_key,
        drop_threshold,
        drop_scale,
        qkv_off: 0,
        ids_off: 0,
        probs_off: 0,
        ctx_off: 0,
        dscores_off: 0,
    }
}

/// A chunk of whole sequences `b0 .. b0 + batch` and the element ranges its
/// operands span in each layout.
struct Chunk {
    b0: usize,
    batch: usize,
}

impl Chunk {
    /// Sequences per chunk: as many as every operand's share fits one
    /// storage binding.
    fn size(b: &WgpuBackend, shape: AttentionShape) -> usize {
        let AttentionShape { len, heads, .. } = shape;
        let per_sequence = (3 * len * shape.dim()).max(heads * len * len);
        b.rows_per_binding(per_sequence, "attention: one sequence")
    }

    fn all(b: &WgpuBackend, shape: AttentionShape) -> impl Iterator<Item = Chunk> + use<> {
        let size = Self::size(b, shape);
        let batch = shape.batch;
        (0..batch).step_by(size).map(move |b0| Chunk {
            b0,
            batch: size.min(batch - b0),
        })
    }

    /// `(first element, elements)` of the chunk in a layout of `per_sequence`
    /// elements per sequence.
    fn span(&self, per_sequence: usize) -> (usize, usize) {
        (self.b0 * per_sequence, self.batch * per_sequence)
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
    let (qkv_elems, scores_elems, ctx_elems) = (len * 3 * dim, heads * len * len, len * dim);
    for chunk in Chunk::all(b, shape) {
        let (first, n) = chunk.span(qkv_elems);
        let (qkv_range, qkv_off) = b.range(qkv.buffer(), first, n);
        let (first, n) = chunk.span(len);
        let (ids_range, ids_off) = b.range(key_ids.buffer(), first, n);
        let (first, n) = chunk.span(scores_elems);
        let (probs_range, probs_off) = b.range(probs.buffer(), first, n);
        let (first, n) = chunk.span(ctx_elems);
        let (ctx_range, ctx_off) = b.range(ctx.buffer(), first, n);
        b.run(
            &FORWARD,
            &Params {
                batch: u32_of(chunk.batch),
                batch0: u32_of(chunk.b0),
                qkv_off,
                ids_off,
                probs_off,
                ctx_off,
                ..params(shape, dropout)
            },
            [qkv_range, ids_range, probs_range, ctx_range],
            b.grid(chunk.batch * heads * len),
        );
    }
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
    let dim = shape.dim();
    if scores == 0 {
        return b.zeros(&qkv.shape);
    }
    let dqkv = b.alloc(&qkv.shape);
    let (qkv_elems, scores_elems, ctx_elems) = (len * 3 * dim, heads * len * len, len * dim);
    // The gradient of the scores of one chunk, from the query to the key pass.
    let dscores = b.alloc(&[Chunk::size(b, shape).min(batch) * scores_elems]);
    for chunk in Chunk::all(b, shape) {
        let (first, n) = chunk.span(qkv_elems);
        let (qkv_range, qkv_off) = b.range(qkv.buffer(), first, n);
        let (dqkv_range, _) = b.range(dqkv.buffer(), first, n);
        let (first, n) = chunk.span(scores_elems);
        let (probs_range, probs_off) = b.range(probs.buffer(), first, n);
        let (first, n) = chunk.span(ctx_elems);
        let (dctx_range, ctx_off) = b.range(dctx.buffer(), first, n);
        let dscores_range = b.whole(
            dscores.buffer(),
            chunk.batch * scores_elems,
            "attention dscores",
        );
        let params = Params {
            batch: u32_of(chunk.batch),
            batch0: u32_of(chunk.b0),
            qkv_off,
            probs_off,
            ctx_off,
            ..params(shape, dropout)
        };
        let grid = b.grid(chunk.batch * heads * len);
        let buffers = [
            qkv_range,
            dctx_range,
            probs_range,
            dscores_range,
            dqkv_range,
        ];
        b.run(&BACKWARD_QUERY, &params, buffers, grid);
        b.run(&BACKWARD_KEY, &params, buffers, grid);
    }
    dqkv
}
