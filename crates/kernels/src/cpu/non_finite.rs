//! Counting NaN and infinite elements.

use super::par::{ELEM_BLOCK, PAR_MIN_ELEMS};
use super::tensor::CpuTensor;
use rayon::prelude::*;

/// The number of NaN or infinite elements of each tensor.
pub(super) fn count_non_finite(tensors: &[&CpuTensor]) -> Vec<usize> {
    tensors
        .iter()
        .map(|t| {
            let count = |x: &[f32]| x.iter().filter(|v| !v.is_finite()).count();
            if t.len() >= PAR_MIN_ELEMS {
                t.data().par_chunks(ELEM_BLOCK).map(count).sum()
            } else {
                count(t.data())
            }
        })
        .collect()
}
