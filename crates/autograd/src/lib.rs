//! A small reverse-mode autodiff tape over any [`Backend`].
//!
//! Each forward op runs immediately on the backend and appends a [`Node`]
//! holding its inputs and what its backward needs. [`Tape::backward`] walks
//! the nodes in reverse order (the order of recording is a topological
//! order) and calls the backend's backward ops from one `match`.
//!
//! ```no_run
//! # use sasrec_autograd::Tape;
//! # use sasrec_kernels::{Backend, CpuBackend};
//! let backend = CpuBackend;
//! let mut tape = Tape::new(&backend, true);
//! let x = tape.leaf(backend.tensor(&[1.0, -2.0], &[1, 2]), true);
//! let w = tape.leaf(backend.tensor(&[0.5, 0.25, 1.0, 2.0], &[2, 2]), true);
//! let y = tape.linear(x, w, None);
//! let r = tape.relu(y);
//! // ... a loss, then:
//! # let loss = r;
//! let grads = tape.backward(loss);
//! let dw = grads.get(w);
//! ```

mod params;

pub use params::{ParamId, ParamStore};

use sasrec_kernels::{AttentionShape, Backend, Dropout};

/// A value recorded on a [`Tape`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var(usize);

/// How a node was computed, with what its backward needs.
enum Op<B: Backend> {
    /// An input or a parameter.
    Leaf,
    Add(Var, Var),
    /// `x * s` for a constant `[1]` tensor `s`.
    Scale {
        x: Var,
        s: B::Tensor,
    },
    Relu(Var),
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
    Linear {
        x: Var,
        w: Var,
        bias: Option<Var>,
    },
    Attention {
        qkv: Var,
        probs: B::Tensor,
        shape: AttentionShape,
        dropout: Option<Dropout>,
    },
    /// The fused loss computes its gradients in the forward pass; backward
    /// only scales them by the incoming gradient.
    CrossEntropy {
        h: Var,
        table: Var,
        dh: Option<B::Tensor>,
        dtable: Option<B::Tensor>,
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

/// Gradients computed by [`Tape::backward`], one per leaf that requires grad.
pub struct Gradients<B: Backend> {
    grads: Vec<Option<B::Tensor>>,
}

impl<B: Backend> Gradients<B> {
    /// The gradient of `v`, if `v` requires grad and the loss depends on it.
    pub fn get(&self, v: Var) -> Option<&B::Tensor> {
        self.grads.get(v.0).and_then(Option::as_ref)
    }

    /// Moves the gradient of `v` out.
    pub fn take(&mut self, v: Var) -> Option<B::Tensor> {
        self.grads.get_mut(v.0).and_then(Option::take)
    }
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

    /// Records `op` if any input requires grad, else a constant.
    fn record(&mut self, value: B::Tensor, inputs: &[Var], op: impl FnOnce() -> Op<B>) -> Var {
        let requires_grad =
            self.grad_enabled && inputs.iter().any(|v| self.nodes[v.0].requires_grad);
        let op = if requires_grad { op() } else { Op::Leaf };
        self.push(value, op, requires_grad)
    }

    /// `a + b`.
    pub fn add(&mut self, a: Var, b: Var) -> Var {
        let y = self.backend.add(self.value(a), self.value(b));
        self.record(y, &[a, b], || Op::Add(a, b))
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

    /// Mean softmax cross-entropy of `h @ table^T` against `targets`
    /// (0 = ignored); a `[1]` tensor.
    pub fn cross_entropy(&mut self, h: Var, table: Var, targets: &B::Ids) -> Var {
        let with_grad = self.grad_enabled
            && (self.nodes[h.0].requires_grad || self.nodes[table.0].requires_grad);
        let out = self
            .backend
            .cross_entropy(self.value(h), self.value(table), targets, with_grad);
        let (dh, dtable) = (out.dh, out.dtable);
        self.record(out.loss, &[h, table], || Op::CrossEntropy {
            h,
            table,
            dh,
            dtable,
        })
    }

    /// Gradients of the `[1]`-shaped `loss` with respect to every leaf that
    /// requires grad.
    ///
    /// # Panics
    /// If `loss` is not a single number.
    pub fn backward(&self, loss: Var) -> Gradients<B> {
        let b = self.backend;
        assert_eq!(
            b.shape(self.value(loss)),
            [1],
            "backward needs a scalar ([1]) loss"
        );
        let mut grads: Vec<Option<B::Tensor>> = vec![None; self.nodes.len()];
        if self.nodes[loss.0].requires_grad {
            grads[loss.0] = Some(b.tensor(&[1.0], &[1]));
        }
        for id in (0..=loss.0).rev() {
            let node = &self.nodes[id];
            if matches!(node.op, Op::Leaf) {
                continue;
            }
            // Intermediate gradients are dropped as soon as they are used.
            let Some(dy) = grads[id].take() else { continue };
            let mut send = |v: Var, g: B::Tensor| {
                if self.nodes[v.0].requires_grad {
                    grads[v.0] = Some(match grads[v.0].take() {
                        Some(acc) => b.add(&acc, &g),
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
                Op::Scale { x, s } => send(*x, b.scale(&dy, s)),
                Op::Relu(x) => send(*x, b.relu_backward(&node.value, &dy)),
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
                Op::Linear { x, w, bias } => {
                    if self.nodes[x.0].requires_grad {
                        send(*x, b.matmul(&dy, self.value(*w), false, false));
                    }
                    if self.nodes[w.0].requires_grad {
                        send(*w, b.matmul(&dy, self.value(*x), true, false));
                    }
                    if let Some(bias) = bias
                        && self.nodes[bias.0].requires_grad
                    {
                        send(*bias, b.sum_rows(&dy));
                    }
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
                Op::CrossEntropy {
                    h,
                    table,
                    dh,
                    dtable,
                } => {
                    // At the root the incoming gradient is exactly 1.
                    let scaled = |g: &B::Tensor| {
                        if id == loss.0 {
                            g.clone()
                        } else {
                            b.scale(g, &dy)
                        }
                    };
                    if let Some(dh) = dh {
                        send(*h, scaled(dh));
                    }
                    if let Some(dtable) = dtable {
                        send(*table, scaled(dtable));
                    }
                }
            }
        }
        Gradients { grads }
    }
}
