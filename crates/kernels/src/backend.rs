//! The `Backend` trait: every numerical operation SASRec needs, each as a
//! forward/backward pair with explicit shapes.
//!
//! All tensors are dense, row-major `f32`. Shapes are given as `[rows, cols]`
//! in the docs below; a "matrix" argument is always 2-D. Shape mismatches are
//! programming errors and panic with a message naming the op and the shapes.
//! Every backend checks its inputs with the op's function in
//! [`crate::contract`] before anything else, so all backends accept and
//! reject exactly the same inputs.
//!
//! The CPU backend (`CpuBackend`) is the reference: every other backend is
//! tested against it.

use crate::dropout::Dropout;

/// The hyper-parameters of one Adam step, as `torch.optim.Adam` computes them.
///
/// The settings are f64 like PyTorch's Python floats; the methods give the
/// f32 constants the kernels use, derived in f64 first as PyTorch does (so
/// `1 - beta2` is 0.001 exactly rounded, not `1 - 0.999f32`). `step` counts
/// from 1. The update for each element, in PyTorch's order:
///
/// ```text
/// m = m + (1 - beta1) * (g - m)                  // lerp
/// v = beta2 * v + (1 - beta2) * g * g
/// denom = sqrt(v) / sqrt(1 - beta2^step) + eps
/// p = p - (lr / (1 - beta1^step)) * (m / denom)
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// 1-based step number (for bias correction).
    pub step: u64,
}

impl AdamStep {
    /// `1 - beta1`, the lerp weight of the first moment.
    pub fn one_minus_beta1(&self) -> f32 {
        (1.0 - self.beta1) as f32
    }

    /// `beta2`.
    pub fn beta2_f32(&self) -> f32 {
        self.beta2 as f32
    }

    /// `1 - beta2`.
    pub fn one_minus_beta2(&self) -> f32 {
        (1.0 - self.beta2) as f32
    }

    /// `eps`.
    pub fn eps_f32(&self) -> f32 {
        self.eps as f32
    }

    /// `lr / (1 - beta1^step)`.
    pub fn step_size(&self) -> f32 {
        (self.lr / (1.0 - self.beta1.powi(self.step as i32))) as f32
    }

    /// `sqrt(1 - beta2^step)`.
    pub fn bias_correction2_sqrt(&self) -> f32 {
        (1.0 - self.beta2.powi(self.step as i32)).sqrt() as f32
    }
}

/// Shape of a batched multi-head self-attention: `batch` sequences of `len`
/// positions, `heads` heads of `head_dim` each (`dim = heads * head_dim`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    /// Number of sequences.
    pub batch: usize,
    /// Positions per sequence.
    pub len: usize,
    /// Number of heads.
    pub heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl AttentionShape {
    /// Model width, `heads * head_dim`.
    pub fn dim(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// What the fused softmax cross-entropy returns.
#[derive(Clone, Debug)]
pub struct CrossEntropy<T> {
    /// Mean loss over the rows whose target is not 0, shape `[1]`
    /// (0 when every target is 0).
    pub loss: T,
    /// Number of rows whose target is not 0 (the mean's denominator).
    pub count: usize,
    /// Gradient of `loss` with respect to `h`, `[rows, dim]`, when asked for.
    pub dh: Option<T>,
    /// Gradient of `loss` with respect to `table`, `[vocab, dim]`, when asked for.
    pub dtable: Option<T>,
}

/// What [`Backend::softmax_cross_entropy`] returns.
#[derive(Clone, Debug)]
pub struct SoftmaxCrossEntropy<T> {
    /// Mean loss over the rows whose target is not ignored, shape `[1]`
    /// (0 when every target is ignored).
    pub loss: T,
    /// Number of rows whose target is not ignored (the mean's denominator).
    pub count: usize,
    /// Gradient of `loss` with respect to the logits, `[rows, classes]`
    /// (zero rows where the target is ignored), when asked for.
    pub dlogits: Option<T>,
}

/// Which loss [`Backend::sampled_loss`] computes from a row's positive logit
/// `s+` and its unmasked negative logits `s_j`.
#[derive(Debug)]
pub enum SampledLoss<'a, T> {
    /// Sampled softmax: `logsumexp(s+ - lq+, s_j - lq_j) - (s+ - lq+)`, where
    /// `lq` is the log-probability with which the sampler draws an item
    /// (the log-Q correction); without it no correction is applied (a
    /// uniform sampler's `lq` is a constant, which cancels).
    Softmax {
        /// `log Q(item)` of every item, `[vocab]` (padding's value is never
        /// read), for samplers that are not uniform.
        log_q: Option<&'a T>,
    },
    /// Binary cross-entropy of the positive against each negative:
    /// `positive_weight * softplus(-s+) + sum_j softplus(s_j)` (BCE with
    /// weight 1; gBCE's `beta` otherwise).
    Binary {
        /// Weight of the positive's term.
        positive_weight: f32,
    },
}

impl<T> Clone for SampledLoss<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SampledLoss<'_, T> {}

/// The negatives of [`Backend::sampled_loss`]: the rows are split into
/// `groups` equal runs of consecutive rows, and every row of group `g` is
/// scored against the same `per_group` negatives,
/// `ids[g * per_group..(g + 1) * per_group]`. One group shares the
/// negatives across the batch, one group per sequence gives each sequence
/// its own, one group per row each position its own.
#[derive(Debug)]
pub struct Negatives<'a, I> {
    /// `[groups * per_group]` item ids.
    pub ids: &'a I,
    /// Negatives per group (at least 1).
    pub per_group: usize,
}

impl<I> Clone for Negatives<'_, I> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<I> Copy for Negatives<'_, I> {}

/// What [`Backend::sampled_loss`] returns.
#[derive(Clone, Debug)]
pub struct SampledLossOutput<T> {
    /// Mean loss over the rows whose target is not 0, shape `[1]`
    /// (0 when every target is 0).
    pub loss: T,
    /// Number of rows whose target is not 0 (the mean's denominator).
    pub count: usize,
    /// Gradient with respect to `h`, `[rows, dim]`, when asked for.
    pub dh: Option<T>,
    /// Gradient with respect to `table`, `[vocab, dim]` (through the
    /// targets' and the negatives' rows), when asked for.
    pub dtable: Option<T>,
}

/// A compute backend: owns device memory and runs the ops.
///
/// Tensor handles are cheap to clone (reference counted); an op never changes
/// its inputs, except the explicitly in-place `add_assign` and `adam`.
///
/// NaN and infinite values propagate as in IEEE arithmetic (and PyTorch): an
/// output that depends on a NaN input is NaN; no op clamps, skips or drops
/// them. [`Backend::count_non_finite`] finds them.
pub trait Backend: Clone + Send + Sync + 'static {
    /// A dense f32 tensor living on this backend.
    type Tensor: Clone + std::fmt::Debug + Send + Sync;
    /// A vector of `u32` indices (item ids, targets) living on this backend,
    /// which also keeps a host copy.
    type Ids: Clone + std::fmt::Debug + Send + Sync;

    /// Human readable name, e.g. `cpu (2 threads)` or the adapter name.
    fn name(&self) -> String;

    // ----- memory -------------------------------------------------------

    /// Upload `data` as a tensor of `shape` (`data.len()` = product of shape).
    fn tensor(&self, data: &[f32], shape: &[usize]) -> Self::Tensor;
    /// A tensor of zeros.
    fn zeros(&self, shape: &[usize]) -> Self::Tensor;
    /// The shape of `t`.
    fn shape(&self, t: &Self::Tensor) -> Vec<usize>;
    /// Copy `t` back to the host (this waits for queued work).
    fn to_vec(&self, t: &Self::Tensor) -> Vec<f32>;
    /// Upload indices.
    fn ids(&self, ids: &[u32]) -> Self::Ids;
    /// The host copy of `ids`.
    fn ids_host<'a>(&self, ids: &'a Self::Ids) -> &'a [u32];

    // ----- elementwise --------------------------------------------------

    /// `a + b`, same shapes.
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Self::Tensor;
    /// `a - b`, same shapes.
    fn sub(&self, a: &Self::Tensor, b: &Self::Tensor) -> Self::Tensor;
    /// `a * b` elementwise, same shapes.
    fn mul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Self::Tensor;
    /// `acc += b` in place, same shapes (gradient accumulation).
    fn add_assign(&self, acc: &mut Self::Tensor, b: &Self::Tensor);
    /// `x * s` where `s` has shape `[1]` and stays on the device.
    fn scale(&self, x: &Self::Tensor, s: &Self::Tensor) -> Self::Tensor;
    /// A tensor of `shape` whose every element is `s[0]`, for `s` of shape
    /// `[1]` (the backward of [`Backend::sum`]).
    fn broadcast(&self, s: &Self::Tensor, shape: &[usize]) -> Self::Tensor;
    /// `max(x, 0)`; NaN stays NaN.
    fn relu(&self, x: &Self::Tensor) -> Self::Tensor;
    /// 0 where the forward output `y <= 0`, else `dy` (PyTorch's
    /// `threshold_backward`).
    fn relu_backward(&self, y: &Self::Tensor, dy: &Self::Tensor) -> Self::Tensor;
    /// `1 / (1 + exp(-x))`.
    fn sigmoid(&self, x: &Self::Tensor) -> Self::Tensor;
    /// `dy * y * (1 - y)`, given the forward output `y`.
    fn sigmoid_backward(&self, y: &Self::Tensor, dy: &Self::Tensor) -> Self::Tensor;
    /// Inverted dropout with the counter-based mask of `mask`: element `i`
    /// is kept and multiplied by `1 / (1 - p)` when `mask.keep(i)`, else 0.
    /// The backward of dropout is this same map applied to the gradient.
    fn dropout(&self, x: &Self::Tensor, mask: &Dropout) -> Self::Tensor;

    // ----- embedding ----------------------------------------------------

    /// Row gather: `out[i] = table[ids[i]]`; table `[vocab, dim]`, ids `[n]`
    /// -> `[n, dim]`. Also used to pick rows of an activation.
    fn embedding(&self, table: &Self::Tensor, ids: &Self::Ids) -> Self::Tensor;
    /// Scatter-add: `dtable[ids[i]] += dy[i]` for every `i` whose id is not
    /// `padding_idx`; dy `[n, dim]` -> `[vocab, dim]`. Deterministic.
    fn embedding_backward(
        &self,
        dy: &Self::Tensor,
        ids: &Self::Ids,
        vocab: usize,
        padding_idx: Option<u32>,
    ) -> Self::Tensor;

    // ----- layer norm ---------------------------------------------------

    /// `y = (x - mean) / sqrt(var + eps) * gamma + beta` over each row
    /// (biased variance). x `[n, d]`, gamma and beta `[d]`. Returns `y` and
    /// the saved statistics `[n, 2]` (mean, 1/sqrt(var + eps)) for backward.
    fn layer_norm(
        &self,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        eps: f32,
    ) -> (Self::Tensor, Self::Tensor);
    /// Returns `(dx, dgamma, dbeta)`.
    fn layer_norm_backward(
        &self,
        dy: &Self::Tensor,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        stats: &Self::Tensor,
    ) -> (Self::Tensor, Self::Tensor, Self::Tensor);

    // ----- rms norm -----------------------------------------------------

    /// RMSNorm: `y = x * rstd * gamma` over each row, `rstd = 1 /
    /// sqrt(mean(x^2) + eps)` (no centring, no bias). x `[n, d]`, gamma
    /// `[d]`. Returns `y` and the saved `rstd` `[n]` for backward.
    fn rms_norm(
        &self,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        eps: f32,
    ) -> (Self::Tensor, Self::Tensor);
    /// Returns `(dx, dgamma)`.
    fn rms_norm_backward(
        &self,
        dy: &Self::Tensor,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        rstd: &Self::Tensor,
    ) -> (Self::Tensor, Self::Tensor);

    // ----- swiglu -------------------------------------------------------

    /// SwiGLU's gating: `silu(gate) * up` elementwise, `silu(a) = a *
    /// sigmoid(a)`; gate and up of one shape.
    fn swiglu(&self, gate: &Self::Tensor, up: &Self::Tensor) -> Self::Tensor;
    /// Returns `(dgate, dup)` for upstream `dy`, from the forward's inputs.
    fn swiglu_backward(
        &self,
        dy: &Self::Tensor,
        gate: &Self::Tensor,
        up: &Self::Tensor,
    ) -> (Self::Tensor, Self::Tensor);

    // ----- matmul -------------------------------------------------------

    /// `op(a) @ op(b)` where `op` transposes when asked: `op(a)` is `[m, k]`,
    /// `op(b)` is `[k, n]`, the result `[m, n]`.
    fn matmul(
        &self,
        a: &Self::Tensor,
        b: &Self::Tensor,
        trans_a: bool,
        trans_b: bool,
    ) -> Self::Tensor;
    /// PyTorch's `nn.Linear`: `x @ w^T + bias`; x `[n, in]`, w `[out, in]`,
    /// bias `[out]`. Backward is `matmul` (dx = dy @ w, dw = dy^T @ x) and
    /// `sum_rows` (dbias).
    fn linear(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        bias: Option<&Self::Tensor>,
    ) -> Self::Tensor;

    // ----- sums ---------------------------------------------------------

    /// Column sums: `[n, d]` -> `[d]` (the bias gradient).
    fn sum_rows(&self, x: &Self::Tensor) -> Self::Tensor;
    /// The sum of every element, any shape -> `[1]`.
    fn sum(&self, x: &Self::Tensor) -> Self::Tensor;

    // ----- attention ----------------------------------------------------

    /// Causal multi-head self-attention with key padding.
    ///
    /// `qkv` is `[batch * len, 3 * dim]`: per row the query, key and value,
    /// each `dim` wide, head `h` in columns `h * head_dim .. (h + 1) * head_dim`
    /// of its part (PyTorch's fused in-projection layout). `key_ids` is
    /// `[batch * len]`; key `j` of a sequence is masked when its id is 0, and
    /// for query `i` every key `j > i` is masked. Scores are
    /// `q.k / sqrt(head_dim)`; probabilities are the softmax over the unmasked
    /// keys, or all zeros when a query has no unmasked key (never NaN).
    /// `dropout`, when given, is applied to the probabilities (element index
    /// = flat index into `[batch, heads, len, len]`).
    ///
    /// Returns the context `[batch * len, dim]` (heads side by side) and the
    /// probabilities before dropout `[batch, heads, len, len]`, saved for
    /// backward.
    fn attention(
        &self,
        qkv: &Self::Tensor,
        key_ids: &Self::Ids,
        shape: AttentionShape,
        dropout: Option<&Dropout>,
    ) -> (Self::Tensor, Self::Tensor);
    /// Gradient of the context with respect to `qkv`, `[batch * len, 3 * dim]`.
    fn attention_backward(
        &self,
        dctx: &Self::Tensor,
        qkv: &Self::Tensor,
        probs: &Self::Tensor,
        shape: AttentionShape,
        dropout: Option<&Dropout>,
    ) -> Self::Tensor;

    // ----- rotary -------------------------------------------------------

    /// Rotary position embedding of the queries and keys in `qkv` (layout
    /// as [`Backend::attention`]'s): the pair of columns `(i, i + head_dim /
    /// 2)` of each head of the query and the key in row `r` is turned by
    /// the angle of position `r % len` (see [`crate::rotary`]); the values
    /// are copied unchanged. `table` is `[len, head_dim]` from
    /// [`crate::rotary::rotary_table`]. Returns a tensor shaped as `qkv`.
    fn rotary(
        &self,
        qkv: &Self::Tensor,
        table: &Self::Tensor,
        shape: AttentionShape,
    ) -> Self::Tensor;
    /// The gradient with respect to the forward's `qkv` for upstream
    /// `dqkv`: the pairs turned by the opposite angles, the values' part
    /// copied.
    fn rotary_backward(
        &self,
        dqkv: &Self::Tensor,
        table: &Self::Tensor,
        shape: AttentionShape,
    ) -> Self::Tensor;

    // ----- loss ---------------------------------------------------------

    /// Fused softmax cross-entropy over tied output weights, with ignore
    /// index 0: `logits = h @ table^T` (`[rows, vocab]`, every column
    /// including 0 takes part in the softmax), loss = mean over the rows whose
    /// target is not 0 of `logsumexp(logits[r]) - logits[r, target[r]]`.
    ///
    /// Works through the rows in chunks and never holds the whole logits
    /// matrix. With `with_grad` it also returns the gradients of the mean
    /// loss with respect to `h` and `table`.
    fn cross_entropy(
        &self,
        h: &Self::Tensor,
        table: &Self::Tensor,
        targets: &Self::Ids,
        with_grad: bool,
    ) -> CrossEntropy<Self::Tensor> {
        self.cross_entropy_smoothed(h, table, targets, 0.0, with_grad)
    }
    /// [`Backend::cross_entropy`] with label smoothing `smoothing` in
    /// `[0, 1]`, as PyTorch's `F.cross_entropy(label_smoothing=...)`: the
    /// target's share `1 - smoothing` plus `smoothing / vocab` on every
    /// column, so a row's loss is `logsumexp(logits) - (1 - smoothing) *
    /// logits[target] - smoothing * mean(logits)` and its gradient
    /// `softmax - (1 - smoothing) * onehot - smoothing / vocab`. 0 is
    /// [`Backend::cross_entropy`].
    fn cross_entropy_smoothed(
        &self,
        h: &Self::Tensor,
        table: &Self::Tensor,
        targets: &Self::Ids,
        smoothing: f32,
        with_grad: bool,
    ) -> CrossEntropy<Self::Tensor>;
    /// Softmax cross-entropy over a logits matrix `[rows, classes]`: the
    /// mean over the rows whose target is not `ignore_index` of
    /// `logsumexp(logits[r]) - logits[r, targets[r]]`. With `with_grad` it
    /// also returns the gradient with respect to the logits.
    fn softmax_cross_entropy(
        &self,
        logits: &Self::Tensor,
        targets: &Self::Ids,
        ignore_index: Option<u32>,
        with_grad: bool,
    ) -> SoftmaxCrossEntropy<Self::Tensor>;

    /// A loss over sampled negatives, fused like [`Backend::cross_entropy`]:
    /// row `r`'s positive logit is `s+ = h[r] . table[targets[r]]`, its
    /// negative logits `s_j = h[r] . table[id_j]` over its group's
    /// [`Negatives`], and the loss of the row is `loss`'s formula. A
    /// negative whose id equals the row's target is masked out of that row
    /// (no loss, gradient exactly 0). The result is the mean over the rows
    /// whose target is not 0.
    ///
    /// h `[rows, dim]`, table `[vocab, dim]`, targets `[rows]` (0 =
    /// ignored), `rows` a multiple of the number of groups. Works through
    /// the rows in chunks and never holds more than a bounded block of
    /// logits and gathered negatives, whatever the batch (on a GPU one
    /// group's `[n, dim]` negatives must fit one storage binding). With
    /// `with_grad` it also returns the gradients with respect to `h` and
    /// `table`.
    fn sampled_loss(
        &self,
        h: &Self::Tensor,
        table: &Self::Tensor,
        targets: &Self::Ids,
        negatives: Negatives<'_, Self::Ids>,
        loss: SampledLoss<'_, Self::Tensor>,
        with_grad: bool,
    ) -> SampledLossOutput<Self::Tensor>;

    // ----- numerics -----------------------------------------------------

    /// The number of NaN or infinite elements of each tensor, with one host
    /// synchronisation for all of them (to find, after a step went wrong,
    /// which loss, gradient or weight it was).
    fn count_non_finite(&self, tensors: &[&Self::Tensor]) -> Vec<usize>;

    // ----- optimiser ----------------------------------------------------

    /// One Adam step on `param` in place, updating the moments `m` and `v`.
    fn adam(
        &self,
        param: &mut Self::Tensor,
        grad: &Self::Tensor,
        m: &mut Self::Tensor,
        v: &mut Self::Tensor,
        hp: &AdamStep,
    );
}
