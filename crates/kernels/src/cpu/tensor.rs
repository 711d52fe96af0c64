//! The CPU backend's tensor and index types.

use std::fmt;
use std::sync::Arc;

use ndarray::{ArrayViewD, IxDyn};

/// A dense, row-major `f32` tensor in host memory.
///
/// Cloning shares the buffer (reference counted); [`CpuTensor::data_mut`]
/// copies it first only when it is shared, so in-place ops never change a
/// value another handle still sees.
#[derive(Clone, PartialEq)]
pub struct CpuTensor {
    shape: Vec<usize>,
    data: Arc<Vec<f32>>,
}

impl CpuTensor {
    /// Wraps `data` (row-major) as a tensor of `shape`.
    ///
    /// # Panics
    /// If `data.len()` is not the product of `shape`.
    pub fn new(data: Vec<f32>, shape: &[usize]) -> Self {
        let n: usize = shape.iter().product();
        assert_eq!(
            data.len(),
            n,
            "tensor: {} values do not fill shape {shape:?}",
            data.len()
        );
        CpuTensor {
            shape: shape.to_vec(),
            data: Arc::new(data),
        }
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        let n = shape.iter().product();
        CpuTensor::new(vec![0.0; n], shape)
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The values, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The values for writing; copies the buffer first if it is shared.
    pub fn data_mut(&mut self) -> &mut [f32] {
        Arc::make_mut(&mut self.data).as_mut_slice()
    }

    /// The values as an owned vector (no copy when the buffer is not shared).
    pub fn into_vec(self) -> Vec<f32> {
        Arc::unwrap_or_clone(self.data)
    }

    /// An ndarray view with this tensor's shape.
    pub fn view(&self) -> ArrayViewD<'_, f32> {
        ArrayViewD::from_shape(IxDyn(&self.shape), &self.data)
            .expect("shape and length agree by construction")
    }

    /// `(rows, cols)` of a 2-D tensor.
    ///
    /// # Panics
    /// With a message naming `op` if the tensor is not 2-D.
    pub fn dims2(&self, op: &str) -> (usize, usize) {
        match self.shape[..] {
            [r, c] => (r, c),
            _ => panic!("{op}: expected a 2-D tensor, got shape {:?}", self.shape),
        }
    }
}

impl fmt::Debug for CpuTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Tensors hold up to millions of values: show the head only.
        const SHOWN: usize = 8;
        write!(
            f,
            "CpuTensor{:?} {:?}",
            self.shape,
            &self.data[..self.len().min(SHOWN)]
        )?;
        if self.len() > SHOWN {
            write!(f, " ..")?;
        }
        Ok(())
    }
}

/// A vector of `u32` indices (item ids, targets) in host memory; cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct CpuIds {
    data: Arc<Vec<u32>>,
}

impl CpuIds {
    /// Wraps `ids`.
    pub fn new(ids: Vec<u32>) -> Self {
        CpuIds {
            data: Arc::new(ids),
        }
    }

    /// The indices.
    pub fn as_slice(&self) -> &[u32] {
        &self.data
    }

    /// Number of indices.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether there are no indices.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl fmt::Debug for CpuIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 16;
        write!(
            f,
            "CpuIds[{}] {:?}",
            self.len(),
            &self.data[..self.len().min(SHOWN)]
        )?;
        if self.len() > SHOWN {
            write!(f, " ..")?;
        }
        Ok(())
    }
}
