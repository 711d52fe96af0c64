//! Named parameters: what an optimiser updates and a checkpoint stores.

use sasrec_kernels::Backend;

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
}
