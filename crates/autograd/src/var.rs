//! A value on the tape ([`Var`]) and the gradients of a backward pass
//! ([`Gradients`]): what the tape and the parameter store both speak of.

use sasrec_kernels::Backend;

/// A value recorded on a [`Tape`](crate::Tape): its index on the tape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var(pub(crate) usize);

/// Gradients computed by [`Tape::backward`], one per leaf that requires grad.
pub struct Gradients<B: Backend> {
    pub(crate) grads: Vec<Option<B::Tensor>>,
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

    /// The gradient of `v` to change in place (e.g. to clip it).
    pub fn get_mut(&mut self, v: Var) -> Option<&mut B::Tensor> {
        self.grads.get_mut(v.0).and_then(Option::as_mut)
    }
}
