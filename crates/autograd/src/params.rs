//! Named parameters: what an optimiser updates and a checkpoint stores.

use sasrec_kernels::Backend;

use crate::var::{Gradients, Var};

/// A parameter (or its gradient) holding NaN or infinite values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonFinite {
    /// The parameter's name.
    pub name: String,
    /// How many of its values are NaN or infinite.
    pub count: usize,
    /// How many values it has.
    pub len: usize,
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} has {} NaN or infinite values of {}",
            self.name, self.count, self.len
        )
    }
}

/// Index of a parameter in its [`ParamStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(usize);

impl ParamId {
    /// Position in the store (and in the `Vec<Var>` of [`crate::Tape::params`]).
    pub fn index(self) -> usize {
        self.0
    }
}

/// An ordered set of named tensors.
pub struct ParamStore<B: Backend> {
    names: Vec<String>,
    values: Vec<B::Tensor>,
}

impl<B: Backend> Default for ParamStore<B> {
    fn default() -> Self {
        ParamStore {
            names: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl<B: Backend> ParamStore<B> {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a parameter.
    ///
    /// # Panics
    /// If `name` is already taken.
    pub fn add(&mut self, name: impl Into<String>, value: B::Tensor) -> ParamId {
        let name = name.into();
        assert!(self.find(&name).is_none(), "parameter {name} added twice");
        self.names.push(name);
        self.values.push(value);
        ParamId(self.values.len() - 1)
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The parameter called `name`.
    pub fn find(&self, name: &str) -> Option<ParamId> {
        self.names.iter().position(|n| n == name).map(ParamId)
    }

    /// The name of `id`.
    pub fn name(&self, id: ParamId) -> &str {
        &self.names[id.0]
    }

    /// The value of `id`.
    pub fn get(&self, id: ParamId) -> &B::Tensor {
        &self.values[id.0]
    }

    /// The value of `id`, for in-place updates.
    pub fn get_mut(&mut self, id: ParamId) -> &mut B::Tensor {
        &mut self.values[id.0]
    }

    /// Replaces the value of `id`.
    pub fn set(&mut self, id: ParamId, value: B::Tensor) {
        self.values[id.0] = value;
    }

    /// `(id, name, value)` in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (ParamId, &str, &B::Tensor)> {
        self.names
            .iter()
            .zip(&self.values)
            .enumerate()
            .map(|(i, (n, v))| (ParamId(i), n.as_str(), v))
    }

    /// Ids in insertion order.
    pub fn ids(&self) -> impl Iterator<Item = ParamId> + use<B> {
        (0..self.values.len()).map(ParamId)
    }

    /// The first parameter, in store order, with a NaN or infinite value
    /// (one host synchronisation for all of them).
    pub fn first_non_finite(&self, backend: &B) -> Option<NonFinite> {
        let named: Vec<(&str, &B::Tensor)> = self
            .names
            .iter()
            .map(String::as_str)
            .zip(&self.values)
            .collect();
        first_non_finite(backend, &named)
    }

    /// The first parameter, in store order, whose gradient has a NaN or
    /// infinite value; `vars[i]` is parameter `i` on the tape `grads` came
    /// from ([`crate::Tape::params`]). One host synchronisation for all.
    pub fn first_non_finite_grad(
        &self,
        backend: &B,
        grads: &Gradients<B>,
        vars: &[Var],
    ) -> Option<NonFinite> {
        let named: Vec<(&str, &B::Tensor)> = self
            .iter()
            .filter_map(|(id, name, _)| Some((name, grads.get(vars[id.index()])?)))
            .collect();
        first_non_finite(backend, &named)
    }
}

/// The first of `named` with a NaN or infinite value.
fn first_non_finite<B: Backend>(backend: &B, named: &[(&str, &B::Tensor)]) -> Option<NonFinite> {
    let tensors: Vec<&B::Tensor> = named.iter().map(|&(_, t)| t).collect();
    let counts = backend.count_non_finite(&tensors);
    named
        .iter()
        .zip(counts)
        .find(|&(_, count)| count > 0)
        .map(|(&(name, t), count)| NonFinite {
            name: name.to_string(),
            count,
            len: backend.shape(t).iter().product(),
        })
}
