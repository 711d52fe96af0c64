//! A small reverse-mode autodiff tape over any
//! [`Backend`](sasrec_kernels::Backend), with the
//! optimisers and initialisers to train what is written on it.
//!
//! Each forward op runs immediately on the backend and appends a node
//! holding its inputs and what its backward needs. [`Tape::backward`] walks
//! the nodes in reverse order (the order of recording is a topological
//! order) and calls the backend's backward ops from one `match`.
//!
//! - Ops: `add`, `sub`, `mul`, `scale`, `sum`, `mean`, `relu`, `sigmoid`,
//!   `dropout`, `embedding`, `layer_norm`, `rms_norm`, `swiglu`, `matmul`,
//!   `linear`, `attention`;
//!   losses `softmax_cross_entropy` (over a logits matrix), `cross_entropy`
//!   (fused with an output table, label smoothing optional), `sampled_loss`
//!   (sampled softmax, BCE and gBCE over sampled negatives), `mse_loss`; and ops of your
//!   own with [`CustomOp`].
//! - [`ParamStore`]: named parameters, and which of them (or of their
//!   gradients) first holds a NaN or infinite value
//!   ([`ParamStore::first_non_finite_grad`]); [`init`]: PyTorch's
//!   initialisers, seeded; [`optim`]: Adam and AdamW with PyTorch's
//!   semantics.
//!
//! ```
//! use sasrec_autograd::Tape;
//! use sasrec_kernels::{Backend, CpuBackend};
//!
//! let backend = CpuBackend;
//! let mut tape = Tape::new(&backend, true);
//! let x = tape.leaf(backend.tensor(&[1.0, -2.0], &[1, 2]), true);
//! let w = tape.leaf(backend.tensor(&[0.5, 0.25, 1.0, 2.0], &[2, 2]), true);
//! let y = tape.linear(x, w, None);
//! let r = tape.relu(y);
//! let loss = tape.sum(r);
//! let grads = tape.backward(loss);
//! let dw = grads.get(w).expect("w requires grad");
//! assert_eq!(backend.shape(dw), [2, 2]);
//! ```
//!
//! `examples/mlp.rs` (a classifier) and `examples/matrix_factorization.rs`
//! train small models end to end; their tests check the loss they reach.

pub mod init;
pub mod optim;
mod params;
mod tape;
mod var;

pub use optim::{Adam, AdamW, clip_grad_norm};
pub use params::{NonFinite, ParamId, ParamStore};
pub use tape::{CustomOp, Tape};
pub use var::{Gradients, Var};
