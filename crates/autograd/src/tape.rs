//! The tape: forward ops that run at once and record what their backward
//! needs, and [`Tape::backward`], one `match` over the recorded ops.

use sasrec_kernels::{AttentionShape, Backend, Dropout, Negatives, SampledLoss};

use crate::params::ParamStore;
use crate::var::{Gradients, Var};

/// An op of your own on the tape: its forward and its backward, written
/// with backend ops (or your own kernels on the backend's buffers).
///
/// ```
/// use sasrec_autograd::{CustomOp, Tape};
/// use sasrec_kernels::{Backend, CpuBackend};
///
/// /// `x * x`.
/// struct Square;
///
/// impl<B: Backend> CustomOp<B> for Square {
///     fn name(&self) -> &str {
///         "square"
///     }
///     fn forward(&mut self, b: &B, inputs: &[&B::Tensor]) -> B::Tensor {
///         b.mul(inputs[0], inputs[0])
///     }
///     fn backward(
///         &self,
///         b: &B,
///         inputs: &[&B::Tensor],
///         _output: &B::Tensor,
///         dy: &B::Tensor,
///     ) -> Vec<Option<B::Tensor>> {
///         // d(x^2) = 2 x dy
///         let two = b.tensor(&[2.0], &[1]);
///         vec![Some(b.scale(&b.mul(inputs[0], dy), &two))]
///     }
/// }
///
/// let b = CpuBackend;
/// let mut tape = Tape::new(&b, true);
/// let x = tape.leaf(b.tensor(&[3.0], &[1]), true);
/// let y = tape.custom(&[x], Square);
/// let grads = tape.backward(y);
/// assert_eq!(b.to_vec(grads.get(x).unwrap()), [6.0]);
/// ```
pub trait CustomOp<B: Backend>: 'static {
    /// A name for messages.
    fn name(&self) -> &str;

    /// The output from the values of the inputs. It may keep what its
    /// backward needs in `self`.
    fn forward(&mut self, backend: &B, inputs: &[&B::Tensor]) -> B::Tensor;

    /// The gradient with respect to every input (`None` where the op does
    /// not differentiate it), given the values of the inputs, the output,
    /// and `dy`, the gradient with respect to the output. Each gradient has
    /// its input's shape.
    fn backward(
        &self,
        backend: &B,
        inputs: &[&B::Tensor],
        output: &B::Tensor,
        dy: &B::Tensor,
    ) -> Vec<Option<B::Tensor>>;
}

/// How a node was computed, with what its backward needs.
enum Op<B: Backend> {
    /// An input or a parameter.
    Leaf,
    Add(Var, Var),
    Sub(Var, Var),
    Mul(Var, Var),
    /// `x * s` for a constant `[1]` tensor `s`.
    Scale {
        x: Var,
        s: B::Tensor,
    },
    /// The sum of all elements.
    Sum(Var),
    Relu(Var),
    Sigmoid(Var),
    Dropout {
        x: Var,
        mask: Dropout,
    },
    Embedding {
        table: Var,
        ids: B::Ids,
        padding_idx: Option<u32>,
    },
    LayerNorm {
        x: Var,
        gamma: Var,
        beta: Var,
        stats: B::Tensor,
    },
    RmsNorm {
        x: Var,
        gamma: Var,
        rstd: B::Tensor,
    },
    Swiglu {
        gate: Var,
        up: Var,
    },
    Matmul(Var, Var),
    Linear {
        x: Var,
        w: Var,
        bias: Option<Var>,
    },
    Rotary {
        qkv: Var,
        table: B::Tensor,
        shape: AttentionShape,
    },
    Attention {
        qkv: Var,
        probs: B::Tensor,
        shape: AttentionShape,
        dropout: Option<Dropout>,
    },
    /// The fused losses compute the gradients of their inputs in the
    /// forward pass; backward only scales them by the incoming gradient.
    FusedLoss {
        grads: Vec<(Var, B::Tensor)>,
    },
    Custom {
        inputs: Vec<Var>,
        op: Box<dyn CustomOp<B>>,
    },
}

/// One recorded value.
struct Node<B: Backend> {
    value: B::Tensor,
    op: Op<B>,
    requires_grad: bool,
}

/// Records ops on a backend and differentiates them.
///
/// With `grad_enabled = false` (inference) nothing needed for backward is
/// kept and every result is a constant.
pub struct Tape<'b, B: Backend> {
    backend: &'b B,
    nodes: Vec<Node<B>>,
    grad_enabled: bool,
}

impl<'b, B: Backend> Tape<'b, B> {
    /// An empty tape. `grad_enabled = false` is inference mode.
    pub fn new(backend: &'b B, grad_enabled: bool) -> Self {
        Tape {
            backend,
            nodes: Vec::new(),
            grad_enabled,
        }
    }

    /// The backend this tape runs on.
    pub fn backend(&self) -> &'b B {
        self.backend
    }

    /// Whether ops record what backward needs.
    pub fn grad_enabled(&self) -> bool {
        self.grad_enabled
    }

    /// The value of `v`.
    pub fn value(&self, v: Var) -> &B::Tensor {
        &self.nodes[v.0].value
    }

    /// Adds an input or a parameter.
    pub fn leaf(&mut self, value: B::Tensor, requires_grad: bool) -> Var {
        let requires_grad = requires_grad && self.grad_enabled;
        self.push(value, Op::Leaf, requires_grad)
    }

    /// Adds every parameter of `store` as a leaf that requires grad, in
    /// store order: `vars[id.index()]` is the parameter `id`.
    pub fn params(&mut self, store: &ParamStore<B>) -> Vec<Var> {
        store
            .iter()
            .map(|(_, _, value)| self.leaf(value.clone(), true))
            .collect()
    }

    fn push(&mut self, value: B::Tensor, op: Op<B>, requires_grad: bool) -> Var {
        self.nodes.push(Node {
            value,
            op,
            requires_grad,
        });
        Var(self.nodes.len() - 1)
    }

    fn requires_grad(&self, v: Var) -> bool {
        self.nodes[v.0].requires_grad
    }

    /// Records `op` if any input requires grad, else a constant.
    fn record(&mut self, value: B::Tensor, inputs: &[Var], op: impl FnOnce() -> Op<B>) -> Var {
        let requires_grad = self.grad_enabled && inputs.iter().any(|&v| self.requires_grad(v));
        let op = if requires_grad { op() } else { Op::Leaf };
        self.push(value, op, requires_grad)
    }

    // ----- elementwise --------------------------------------------------

    /// `a + b`.
    pub fn add(&mut self, a: Var, b: Var) -> Var {
        let y = self.backend.add(self.value(a), self.value(b));
        self.record(y, &[a, b], || Op::Add(a, b))
    }

    /// `a - b`.
    pub fn sub(&mut self, a: Var, b: Var) -> Var {
        let y = self.backend.sub(self.value(a), self.value(b));
        self.record(y, &[a, b], || Op::Sub(a, b))
    }

    /// `a * b`, elementwise.
    pub fn mul(&mut self, a: Var, b: Var) -> Var {
        let y = self.backend.mul(self.value(a), self.value(b));
        self.record(y, &[a, b], || Op::Mul(a, b))
    }

    /// `x * s` for a constant `[1]` tensor `s`.
    pub fn scale(&mut self, x: Var, s: B::Tensor) -> Var {
        let y = self.backend.scale(self.value(x), &s);
        self.record(y, &[x], || Op::Scale { x, s })
    }

    /// `max(x, 0)`.
    pub fn relu(&mut self, x: Var) -> Var {
        let y = self.backend.relu(self.value(x));
        self.record(y, &[x], || Op::Relu(x))
    }

    /// `1 / (1 + exp(-x))`.
    pub fn sigmoid(&mut self, x: Var) -> Var {
        let y = self.backend.sigmoid(self.value(x));
        self.record(y, &[x], || Op::Sigmoid(x))
    }

    /// Inverted dropout with a counter-based mask; `None` is the identity.
    pub fn dropout(&mut self, x: Var, mask: Option<Dropout>) -> Var {
        match mask {
            Some(mask) if mask.p > 0.0 => {
                let y = self.backend.dropout(self.value(x), &mask);
                self.record(y, &[x], || Op::Dropout { x, mask })
            }
            _ => x,
        }
    }

    // ----- reductions ---------------------------------------------------

    /// The sum of all elements, `[1]`.
    pub fn sum(&mut self, x: Var) -> Var {
        let y = self.backend.sum(self.value(x));
        self.record(y, &[x], || Op::Sum(x))
    }

    /// The mean of all elements, `[1]`: the sum scaled by `1 / n`.
    pub fn mean(&mut self, x: Var) -> Var {
        let n: usize = self.backend.shape(self.value(x)).iter().product();
        let total = self.sum(x);
        let inv_n = self.backend.tensor(&[1.0 / n as f32], &[1]);
        self.scale(total, inv_n)
    }

    // ----- layers ---------------------------------------------------------

    /// Row gather `table[ids]`: `[vocab, dim]` -> `[ids.len(), dim]`. Rows
    /// looked up with `padding_idx` get no gradient.
    pub fn embedding(&mut self, table: Var, ids: &B::Ids, padding_idx: Option<u32>) -> Var {
        let y = self.backend.embedding(self.value(table), ids);
        let ids = ids.clone();
        self.record(y, &[table], || Op::Embedding {
            table,
            ids,
            padding_idx,
        })
    }

    /// LayerNorm over the last dimension of `[n, d]`.
    pub fn layer_norm(&mut self, x: Var, gamma: Var, beta: Var, eps: f32) -> Var {
        let (y, stats) =
            self.backend
                .layer_norm(self.value(x), self.value(gamma), self.value(beta), eps);
        self.record(y, &[x, gamma, beta], || Op::LayerNorm {
            x,
            gamma,
            beta,
            stats,
        })
    }

    /// RMSNorm over the last dimension of `[n, d]` (no centring, no bias).
    pub fn rms_norm(&mut self, x: Var, gamma: Var, eps: f32) -> Var {
        let (y, rstd) = self.backend.rms_norm(self.value(x), self.value(gamma), eps);
        self.record(y, &[x, gamma], || Op::RmsNorm { x, gamma, rstd })
    }

    /// SwiGLU's gating `silu(gate) * up`, elementwise.
    pub fn swiglu(&mut self, gate: Var, up: Var) -> Var {
        let y = self.backend.swiglu(self.value(gate), self.value(up));
        self.record(y, &[gate, up], || Op::Swiglu { gate, up })
    }

    /// The matrix product `a @ b`: `[m, k]` x `[k, n]` -> `[m, n]`.
    pub fn matmul(&mut self, a: Var, b: Var) -> Var {
        let y = self
            .backend
            .matmul(self.value(a), self.value(b), false, false);
        self.record(y, &[a, b], || Op::Matmul(a, b))
    }

    /// `x @ w^T + bias` (PyTorch's `nn.Linear`, `w` is `[out, in]`).
    pub fn linear(&mut self, x: Var, w: Var, bias: Option<Var>) -> Var {
        let y = self
            .backend
            .linear(self.value(x), self.value(w), bias.map(|b| self.value(b)));
        let mut inputs = vec![x, w];
        inputs.extend(bias);
        self.record(y, &inputs, || Op::Linear { x, w, bias })
    }

    /// Causal multi-head self-attention with key padding over a fused
    /// `[batch * len, 3 * dim]` projection; returns the context `[batch * len, dim]`.
    pub fn attention(
        &mut self,
        qkv: Var,
        key_ids: &B::Ids,
        shape: AttentionShape,
        dropout: Option<Dropout>,
    ) -> Var {
        let dropout = dropout.filter(|d| d.p > 0.0);
        let (ctx, probs) =
            self.backend
                .attention(self.value(qkv), key_ids, shape, dropout.as_ref());
        self.record(ctx, &[qkv], || Op::Attention {
            qkv,
            probs,
            shape,
            dropout,
        })
    }

    /// Rotary position embedding of the queries and keys in `qkv` (see
    /// [`Backend::rotary`]); `table` from
    /// [`sasrec_kernels::rotary::rotary_table`].
    pub fn rotary(&mut self, qkv: Var, table: &B::Tensor, shape: AttentionShape) -> Var {
        let y = self.backend.rotary(self.value(qkv), table, shape);
        self.record(y, &[qkv], || Op::Rotary {
            qkv,
            table: table.clone(),
            shape,
        })
    }

    // ----- losses ---------------------------------------------------------

    /// Mean softmax cross-entropy of `h @ table^T` against `targets`
    /// (0 = ignored); a `[1]` tensor. The logits are never held whole.
    pub fn cross_entropy(&mut self, h: Var, table: Var, targets: &B::Ids) -> Var {
        self.cross_entropy_smoothed(h, table, targets, 0.0)
    }

    /// [`Tape::cross_entropy`] with label smoothing in `[0, 1]` (PyTorch's
    /// `label_smoothing`; see [`Backend::cross_entropy_smoothed`]).
    pub fn cross_entropy_smoothed(
        &mut self,
        h: Var,
        table: Var,
        targets: &B::Ids,
        smoothing: f32,
    ) -> Var {
        let with_grad = self.grad_enabled && (self.requires_grad(h) || self.requires_grad(table));
        let out = self.backend.cross_entropy_smoothed(
            self.value(h),
            self.value(table),
            targets,
            smoothing,
            with_grad,
        );
        let grads = [(h, out.dh), (table, out.dtable)];
        self.record_fused_loss(out.loss, grads)
    }

    /// Records a fused loss whose forward gave the gradients of its inputs.
    fn record_fused_loss<const N: usize>(
        &mut self,
        loss: B::Tensor,
        grads: [(Var, Option<B::Tensor>); N],
    ) -> Var {
        let inputs = grads.each_ref().map(|(v, _)| *v);
        self.record(loss, &inputs, || Op::FusedLoss {
            grads: grads
                .into_iter()
                .filter_map(|(v, g)| g.map(|g| (v, g)))
                .collect(),
        })
    }

    /// Mean softmax cross-entropy of `logits` `[rows, classes]` against one
    /// class per row, leaving out the rows whose target is `ignore_index`
    /// (PyTorch's `F.cross_entropy`); a `[1]` tensor.
    pub fn softmax_cross_entropy(
        &mut self,
        logits: Var,
        targets: &B::Ids,
        ignore_index: Option<u32>,
    ) -> Var {
        let with_grad = self.grad_enabled && self.requires_grad(logits);
        let out = self.backend.softmax_cross_entropy(
            self.value(logits),
            targets,
            ignore_index,
            with_grad,
        );
        self.record_fused_loss(out.loss, [(logits, out.dlogits)])
    }

    /// Mean loss over sampled negatives ([`Backend::sampled_loss`]): `h`
    /// `[rows, dim]` scored against `table` `[vocab, dim]`, row `r`'s
    /// positive being `table[targets[r]]` and its negatives its group's
    /// rows of `negatives`; targets 0 are ignored, and a negative equal to
    /// a row's target is masked out of that row. Gradients flow to `h` and
    /// to the table's rows it used. A `[1]` tensor.
    pub fn sampled_loss(
        &mut self,
        h: Var,
        table: Var,
        targets: &B::Ids,
        negatives: Negatives<'_, B::Ids>,
        loss: SampledLoss<'_, B::Tensor>,
    ) -> Var {
        let with_grad = self.grad_enabled && [h, table].iter().any(|&v| self.requires_grad(v));
        let out = self.backend.sampled_loss(
            self.value(h),
            self.value(table),
            targets,
            negatives,
            loss,
            with_grad,
        );
        self.record_fused_loss(out.loss, [(h, out.dh), (table, out.dtable)])
    }

    /// Mean squared error `mean((prediction - target)^2)`, `[1]`.
    pub fn mse_loss(&mut self, prediction: Var, target: Var) -> Var {
        let diff = self.sub(prediction, target);
        let squares = self.mul(diff, diff);
        self.mean(squares)
    }

    // ----- your own ops ------------------------------------------------------

    /// Runs `op` on the values of `inputs` and records it, so that backward
    /// calls its [`CustomOp::backward`].
    pub fn custom(&mut self, inputs: &[Var], mut op: impl CustomOp<B>) -> Var {
        let values: Vec<&B::Tensor> = inputs.iter().map(|&v| self.value(v)).collect();
        let y = op.forward(self.backend, &values);
        let inputs = inputs.to_vec();
        self.record(y, &inputs.clone(), || Op::Custom {
            inputs,
            op: Box::new(op),
        })
    }

    // ----- backward -----------------------------------------------------------

    /// Gradients of the `[1]`-shaped `loss` with respect to every leaf that
    /// requires grad.
    ///
    /// # Panics
    /// If `loss` is not a single number, or a custom op returns gradients
    /// that do not match its inputs.
    pub fn backward(&self, loss: Var) -> Gradients<B> {
        let b = self.backend;
        assert_eq!(
            b.shape(self.value(loss)),
            [1],
            "backward needs a scalar ([1]) loss"
        );
        let mut grads: Vec<Option<B::Tensor>> = vec![None; self.nodes.len()];
        if self.requires_grad(loss) {
            grads[loss.0] = Some(b.tensor(&[1.0], &[1]));
        }
        for id in (0..=loss.0).rev() {
            let node = &self.nodes[id];
            if matches!(node.op, Op::Leaf) {
                continue;
            }
            // Intermediate gradients are dropped as soon as they are used.
            let Some(dy) = grads[id].take() else { continue };
            // Accumulates in place: a Var used twice (the tied item table)
            // sums its gradients.
            let mut send = |v: Var, g: B::Tensor| {
                if self.requires_grad(v) {
                    grads[v.0] = Some(match grads[v.0].take() {
                        Some(mut acc) => {
                            b.add_assign(&mut acc, &g);
                            acc
                        }
                        None => g,
                    });
                }
            };
            match &node.op {
                Op::Leaf => unreachable!("leaves are skipped above"),
                Op::Add(x, y) => {
                    send(*x, dy.clone());
                    send(*y, dy);
                }
                Op::Sub(x, y) => {
                    if self.requires_grad(*y) {
                        send(*y, b.scale(&dy, &b.tensor(&[-1.0], &[1])));
                    }
                    send(*x, dy);
                }
                Op::Mul(x, y) => {
                    if self.requires_grad(*x) {
                        send(*x, b.mul(&dy, self.value(*y)));
                    }
                    if self.requires_grad(*y) {
                        send(*y, b.mul(&dy, self.value(*x)));
                    }
                }
                Op::Scale { x, s } => send(*x, b.scale(&dy, s)),
                Op::Sum(x) => send(*x, b.broadcast(&dy, &b.shape(self.value(*x)))),
                Op::Relu(x) => send(*x, b.relu_backward(&node.value, &dy)),
                Op::Sigmoid(x) => send(*x, b.sigmoid_backward(&node.value, &dy)),
                Op::Dropout { x, mask } => send(*x, b.dropout(&dy, mask)),
                Op::Embedding {
                    table,
                    ids,
                    padding_idx,
                } => {
                    let vocab = b.shape(self.value(*table))[0];
                    send(*table, b.embedding_backward(&dy, ids, vocab, *padding_idx));
                }
                Op::LayerNorm {
                    x,
                    gamma,
                    beta,
                    stats,
                } => {
                    let (dx, dgamma, dbeta) =
                        b.layer_norm_backward(&dy, self.value(*x), self.value(*gamma), stats);
                    send(*x, dx);
                    send(*gamma, dgamma);
                    send(*beta, dbeta);
                }
                Op::RmsNorm { x, gamma, rstd } => {
                    let (dx, dgamma) =
                        b.rms_norm_backward(&dy, self.value(*x), self.value(*gamma), rstd);
                    send(*x, dx);
                    send(*gamma, dgamma);
                }
                Op::Swiglu { gate, up } => {
                    let (dgate, dup) = b.swiglu_backward(&dy, self.value(*gate), self.value(*up));
                    send(*gate, dgate);
                    send(*up, dup);
                }
                Op::Matmul(x, y) => {
                    // d(x @ y) = dy @ y^T for x, x^T @ dy for y.
                    if self.requires_grad(*x) {
                        send(*x, b.matmul(&dy, self.value(*y), false, true));
                    }
                    if self.requires_grad(*y) {
                        send(*y, b.matmul(self.value(*x), &dy, true, false));
                    }
                }
                Op::Linear { x, w, bias } => {
                    if self.requires_grad(*x) {
                        send(*x, b.matmul(&dy, self.value(*w), false, false));
                    }
                    if self.requires_grad(*w) {
                        send(*w, b.matmul(&dy, self.value(*x), true, false));
                    }
                    if let Some(bias) = bias
                        && self.requires_grad(*bias)
                    {
                        send(*bias, b.sum_rows(&dy));
                    }
                }
                Op::Rotary { qkv, table, shape } => {
                    send(*qkv, b.rotary_backward(&dy, table, *shape));
                }
                Op::Attention {
                    qkv,
                    probs,
                    shape,
                    dropout,
                } => {
                    let dqkv = b.attention_backward(
                        &dy,
                        self.value(*qkv),
                        probs,
                        *shape,
                        dropout.as_ref(),
                    );
                    send(*qkv, dqkv);
                }
                Op::FusedLoss { grads } => {
                    for (v, g) in grads {
                        // At the root the incoming gradient is exactly 1.
                        send(
                            *v,
                            if id == loss.0 {
                                g.clone()
                            } else {
                                b.scale(g, &dy)
                            },
                        );
                    }
                }
                Op::Custom { inputs, op } => {
                    let values: Vec<&B::Tensor> = inputs.iter().map(|&v| self.value(v)).collect();
                    let input_grads = op.backward(b, &values, &node.value, &dy);
                    assert_eq!(
                        input_grads.len(),
                        inputs.len(),
                        "custom op {}: backward returned {} gradients for {} inputs",
                        op.name(),
                        input_grads.len(),
                        inputs.len()
                    );
                    for (k, (&v, g)) in inputs.iter().zip(input_grads).enumerate() {
                        let Some(g) = g else { continue };
                        assert_eq!(
                            b.shape(&g),
                            b.shape(self.value(v)),
                            "custom op {}: the gradient of input {k} has the wrong shape",
                            op.name()
                        );
                        send(v, g);
                    }
                }
            }
        }
        Gradients { grads }
    }
}
