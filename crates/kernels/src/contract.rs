//! The contract of every op: which shapes and values it accepts, checked in
//! one place for all backends.
//!
//! Each backend calls the op's function here before doing anything else, so
//! the CPU and the GPU accept and reject exactly the same inputs (a test runs
//! the edge cases through both). A violation is a programming error: the
//! function panics with a message naming the op and the shapes. On success
//! it returns the sizes the op works with.
//!
//! Edge cases, decided once: empty tensors (a zero-sized dimension) are
//! accepted and give empty or zero results; a LayerNorm row must not be
//! empty (its mean would be 0/0); attention needs `heads >= 1` and
//! `head_dim >= 1`; every id must index a row of its table, padding ids
//! included; a target must index a column unless it is ignored.
//!
//! Beyond the contract a backend may have capacity limits of its own (the
//! GPU's attention keeps a score row in workgroup memory, so `len <= 1024`
//! and `head_dim <= 128` there); those panic with a message naming the limit.

use crate::AttentionShape;

/// `(rows, cols)` of a 2-D shape.
///
/// # Panics
/// With a message naming `op` and `what` if the shape is not 2-D.
pub fn matrix(op: &str, what: &str, shape: &[usize]) -> (usize, usize) {
    match *shape {
        [rows, cols] => (rows, cols),
        _ => panic!("{op}: {what} must be a matrix, got shape {shape:?}"),
    }
}

/// Two operands of an elementwise op must have the same shape; returns the
/// number of elements.
pub fn same_shape(op: &str, a: &[usize], b: &[usize]) -> usize {
    assert_eq!(a, b, "{op}: shapes {a:?} and {b:?} differ");
    a.iter().product()
}

/// A device scalar must have shape `[1]`.
pub fn scalar(op: &str, s: &[usize]) {
    assert_eq!(s, [1], "{op}: the scalar must have shape [1], got {s:?}");
}

/// Dropout indexes its mask with a `u32` element index; returns the number
/// of elements.
pub fn dropout(x: &[usize]) -> usize {
    let n: usize = x.iter().product();
    assert!(
        n as u64 <= 1 << 32,
        "dropout: {n} elements exceed the mask's u32 index"
    );
    n
}

/// Every id must be a row of a table of `rows` rows.
pub fn ids_below(op: &str, ids: &[u32], rows: usize) {
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= rows) {
        panic!("{op}: id {bad} is out of range for {rows} rows");
    }
}

/// Embedding lookup: table `[vocab, dim]`, ids below `vocab`; returns
/// `(vocab, dim)`.
pub fn embedding(table: &[usize], ids: &[u32]) -> (usize, usize) {
    let (vocab, dim) = matrix("embedding", "the table", table);
    ids_below("embedding", ids, vocab);
    (vocab, dim)
}

/// Embedding backward: dy `[ids.len(), dim]`, ids below `vocab`; returns `dim`.
pub fn embedding_backward(dy: &[usize], ids: &[u32], vocab: usize) -> usize {
    let (n, dim) = matrix("embedding_backward", "dy", dy);
    assert_eq!(
        n,
        ids.len(),
        "embedding_backward: dy has {n} rows but there are {} ids",
        ids.len()
    );
    ids_below("embedding_backward", ids, vocab);
    dim
}

/// LayerNorm: x `[n, d]` with `d >= 1`, gamma and beta `[d]`; returns `(n, d)`.
pub fn layer_norm(x: &[usize], gamma: &[usize], beta: &[usize]) -> (usize, usize) {
    let (n, d) = matrix("layer_norm", "x", x);
    assert!(d > 0, "layer_norm: rows of x {x:?} are empty");
    vector("layer_norm", "gamma", gamma, d);
    vector("layer_norm", "beta", beta, d);
    (n, d)
}

/// LayerNorm backward: dy and x `[n, d]`, gamma `[d]`, stats `[n, 2]`;
/// returns `(n, d)`.
pub fn layer_norm_backward(
    dy: &[usize],
    x: &[usize],
    gamma: &[usize],
    stats: &[usize],
) -> (usize, usize) {
    let (n, d) = matrix("layer_norm_backward", "x", x);
    assert!(d > 0, "layer_norm_backward: rows of x {x:?} are empty");
    assert_eq!(dy, x, "layer_norm_backward: dy {dy:?} and x {x:?} differ");
    vector("layer_norm_backward", "gamma", gamma, d);
    assert_eq!(
        stats,
        [n, 2],
        "layer_norm_backward: stats must have shape [{n}, 2], got {stats:?}"
    );
    (n, d)
}

/// RMSNorm: x `[n, d]` with `d >= 1`, gamma `[d]`; returns `(n, d)`.
pub fn rms_norm(x: &[usize], gamma: &[usize]) -> (usize, usize) {
    let (n, d) = matrix("rms_norm", "x", x);
    assert!(d > 0, "rms_norm: rows of x {x:?} are empty");
    vector("rms_norm", "gamma", gamma, d);
    (n, d)
}

/// RMSNorm backward: dy and x `[n, d]`, gamma `[d]`, rstd `[n]`; returns
/// `(n, d)`.
pub fn rms_norm_backward(
    dy: &[usize],
    x: &[usize],
    gamma: &[usize],
    rstd: &[usize],
) -> (usize, usize) {
    let (n, d) = matrix("rms_norm_backward", "x", x);
    assert!(d > 0, "rms_norm_backward: rows of x {x:?} are empty");
    assert_eq!(dy, x, "rms_norm_backward: dy {dy:?} and x {x:?} differ");
    vector("rms_norm_backward", "gamma", gamma, d);
    vector("rms_norm_backward", "rstd", rstd, n);
    (n, d)
}

/// SwiGLU: gate and up of one shape; returns the number of elements.
pub fn swiglu(gate: &[usize], up: &[usize]) -> usize {
    same_shape("swiglu", gate, up)
}

/// SwiGLU backward: dy, gate and up of one shape; returns the number of
/// elements.
pub fn swiglu_backward(dy: &[usize], gate: &[usize], up: &[usize]) -> usize {
    same_shape("swiglu_backward", gate, up);
    same_shape("swiglu_backward", dy, gate)
}

fn vector(op: &str, what: &str, shape: &[usize], d: usize) {
    assert_eq!(
        shape,
        [d],
        "{op}: {what} must have shape [{d}], got {shape:?}"
    );
}

/// Sizes of a matrix product `op(a)[m, k] @ op(b)[k, n]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulDims {
    /// Rows of the result.
    pub m: usize,
    /// The inner (summed) size.
    pub k: usize,
    /// Columns of the result.
    pub n: usize,
}

/// `op(a) @ op(b)`: matrices whose inner sizes agree.
pub fn matmul(a: &[usize], b: &[usize], trans_a: bool, trans_b: bool) -> MatmulDims {
    let (ar, ac) = matrix("matmul", "a", a);
    let (br, bc) = matrix("matmul", "b", b);
    let (m, k) = if trans_a { (ac, ar) } else { (ar, ac) };
    let (kb, n) = if trans_b { (bc, br) } else { (br, bc) };
    assert_eq!(
        k, kb,
        "matmul: inner sizes differ: a {a:?} (transposed: {trans_a}), b {b:?} (transposed: {trans_b})"
    );
    MatmulDims { m, k, n }
}

/// `x @ w^T + bias`: x `[n, in]`, w `[out, in]`, bias `[out]`.
pub fn linear(x: &[usize], w: &[usize], bias: Option<&[usize]>) -> MatmulDims {
    let (n, fan_in) = matrix("linear", "x", x);
    let (out, w_in) = matrix("linear", "the weight", w);
    assert_eq!(fan_in, w_in, "linear: x {x:?} does not match weight {w:?}");
    if let Some(bias) = bias {
        vector("linear", "bias", bias, out);
    }
    MatmulDims {
        m: n,
        k: fan_in,
        n: out,
    }
}

/// Column sums of a matrix; returns `(rows, cols)`.
pub fn sum_rows(x: &[usize]) -> (usize, usize) {
    matrix("sum_rows", "x", x)
}

/// Attention forward: qkv `[batch * len, 3 * dim]`, one key id per position,
/// `heads >= 1`, `head_dim >= 1`, probabilities indexable by the dropout
/// mask. Returns the number of probabilities, `batch * heads * len * len`.
pub fn attention(qkv: &[usize], key_ids: &[u32], s: AttentionShape) -> usize {
    let probs = attention_shapes("attention", qkv, s);
    assert_eq!(
        key_ids.len(),
        s.batch * s.len,
        "attention: {} key ids for batch * len = {} positions",
        key_ids.len(),
        s.batch * s.len
    );
    probs
}

/// Attention backward: dctx `[batch * len, dim]`, qkv as in the forward,
/// probs `[batch, heads, len, len]`. Returns the number of probabilities.
pub fn attention_backward(
    dctx: &[usize],
    qkv: &[usize],
    probs: &[usize],
    s: AttentionShape,
) -> usize {
    let n = attention_shapes("attention_backward", qkv, s);
    assert_eq!(
        dctx,
        [s.batch * s.len, s.dim()],
        "attention_backward: dctx must have shape [batch * len, dim] = [{}, {}] for {s:?}, got {dctx:?}",
        s.batch * s.len,
        s.dim()
    );
    assert_eq!(
        probs,
        [s.batch, s.heads, s.len, s.len],
        "attention_backward: probs must have shape [batch, heads, len, len] for {s:?}, got {probs:?}"
    );
    n
}

fn attention_shapes(op: &str, qkv: &[usize], s: AttentionShape) -> usize {
    check_qkv(op, qkv, s);
    let probs = s.batch * s.heads * s.len * s.len;
    assert!(
        probs as u64 <= 1 << 32,
        "{op}: {probs} probabilities exceed the dropout mask's u32 index"
    );
    probs
}

/// Rotary embedding, forward and backward: qkv (or its gradient) `[batch *
/// len, 3 * dim]` as attention's, an even `head_dim`, the table `[len,
/// head_dim]`. Returns the number of elements.
pub fn rotary(qkv: &[usize], table: &[usize], s: AttentionShape) -> usize {
    check_qkv("rotary", qkv, s);
    assert!(
        s.head_dim.is_multiple_of(2),
        "rotary: head_dim must be even to pair columns, got {s:?}"
    );
    assert_eq!(
        table,
        [s.len, s.head_dim],
        "rotary: the table must have shape [len, head_dim] = [{}, {}] for {s:?}, got {table:?}",
        s.len,
        s.head_dim
    );
    let n = s.batch * s.len * 3 * s.dim();
    assert!(
        n as u64 <= u32::MAX as u64,
        "rotary: {n} elements exceed the kernels' u32 index"
    );
    n
}

/// Attention's packed input: positive `heads` and `head_dim`, and qkv
/// `[batch * len, 3 * dim]`.
fn check_qkv(op: &str, qkv: &[usize], s: AttentionShape) {
    assert!(
        s.heads > 0 && s.head_dim > 0,
        "{op}: heads and head_dim must be positive, got {s:?}"
    );
    let rows = s.batch * s.len;
    assert_eq!(
        qkv,
        [rows, 3 * s.dim()],
        "{op}: qkv must have shape [batch * len, 3 * dim] = [{rows}, {}] for {s:?}, got {qkv:?}",
        3 * s.dim()
    );
}

/// Sizes of the fused cross-entropy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrossEntropyDims {
    /// Rows of `h` (one target each).
    pub rows: usize,
    /// Width of `h` and of the table.
    pub dim: usize,
    /// Rows of the table: the number of classes.
    pub vocab: usize,
}

/// The fused cross-entropy: h `[rows, dim]`, table `[vocab, dim]`, one target
/// per row, every target that is not 0 (ignored) below `vocab`.
pub fn cross_entropy(h: &[usize], table: &[usize], targets: &[u32]) -> CrossEntropyDims {
    cross_entropy_smoothed(h, table, targets, 0.0)
}

/// The fused cross-entropy with label smoothing `smoothing` in `[0, 1]`
/// (see [`cross_entropy`] for the shapes).
pub fn cross_entropy_smoothed(
    h: &[usize],
    table: &[usize],
    targets: &[u32],
    smoothing: f32,
) -> CrossEntropyDims {
    assert!(
        (0.0..=1.0).contains(&smoothing),
        "cross_entropy: label smoothing must be in [0, 1], got {smoothing}"
    );
    let (rows, dim) = matrix("cross_entropy", "h", h);
    let (vocab, table_dim) = matrix("cross_entropy", "the table", table);
    assert_eq!(
        dim, table_dim,
        "cross_entropy: h {h:?} and table {table:?} differ in width"
    );
    targets_below("cross_entropy", targets, rows, vocab, Some(0));
    CrossEntropyDims { rows, dim, vocab }
}

/// Sizes of the sampled loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampledLossDims {
    /// Rows of `h` (one target each).
    pub rows: usize,
    /// Width of `h` and of the table.
    pub dim: usize,
    /// Rows of the table.
    pub vocab: usize,
    /// Groups of rows that share their negatives.
    pub groups: usize,
    /// Negatives per group.
    pub n: usize,
}

impl SampledLossDims {
    /// Consecutive rows per group.
    pub fn rows_per_group(&self) -> usize {
        self.rows / self.groups
    }
}

/// The sampled loss: h `[rows, dim]`, the table `[vocab, dim]`, one target
/// per row below `vocab` (0 ignored), `per_group >= 1` negatives per group,
/// every id below `vocab`, the rows split evenly into the groups (a
/// batch with no rows has no groups); with the log-Q correction, its vector
/// `[vocab]`.
pub fn sampled_loss(
    h: &[usize],
    table: &[usize],
    targets: &[u32],
    ids: &[u32],
    per_group: usize,
    log_q: Option<&[usize]>,
) -> SampledLossDims {
    let (rows, dim) = matrix("sampled_loss", "h", h);
    let (vocab, table_dim) = matrix("sampled_loss", "the table", table);
    assert_eq!(
        dim, table_dim,
        "sampled_loss: h {h:?} and table {table:?} differ in width"
    );
    targets_below("sampled_loss", targets, rows, vocab, Some(0));
    assert!(per_group > 0, "sampled_loss: no negatives per group");
    assert_eq!(
        ids.len() % per_group,
        0,
        "sampled_loss: {} negative ids are not groups of {per_group}",
        ids.len()
    );
    let groups = ids.len() / per_group;
    assert!(
        (rows == 0 && groups == 0) || (groups > 0 && rows % groups == 0),
        "sampled_loss: {rows} rows do not split into {groups} groups of negatives"
    );
    ids_below("sampled_loss", ids, vocab);
    if let Some(lq) = log_q {
        vector("sampled_loss", "log Q", lq, vocab);
    }
    SampledLossDims {
        rows,
        dim,
        vocab,
        groups,
        n: per_group,
    }
}

/// Softmax cross-entropy over logits `[rows, classes]`: one target per row,
/// every target that is not `ignore_index` below `classes`. Returns
/// `(rows, classes)`.
pub fn softmax_cross_entropy(
    logits: &[usize],
    targets: &[u32],
    ignore_index: Option<u32>,
) -> (usize, usize) {
    let (rows, classes) = matrix("softmax_cross_entropy", "the logits", logits);
    targets_below(
        "softmax_cross_entropy",
        targets,
        rows,
        classes,
        ignore_index,
    );
    (rows, classes)
}

fn targets_below(op: &str, targets: &[u32], rows: usize, classes: usize, ignore: Option<u32>) {
    assert_eq!(
        targets.len(),
        rows,
        "{op}: {} targets for {rows} rows",
        targets.len()
    );
    if let Some(&bad) = targets
        .iter()
        .find(|&&t| Some(t) != ignore && t as usize >= classes)
    {
        panic!("{op}: target {bad} is out of range for {classes} classes");
    }
}

/// Adam: the gradient and both moments shaped like the parameter; returns
/// the number of elements.
pub fn adam(param: &[usize], grad: &[usize], m: &[usize], v: &[usize]) -> usize {
    for (what, shape) in [("grad", grad), ("m", m), ("v", v)] {
        assert_eq!(
            shape, param,
            "adam: {what} {shape:?} does not match param {param:?}"
        );
    }
    param.iter().product()
}
