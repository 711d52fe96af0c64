//! Column sums (`sum_rows`: the bias gradient, LayerNorm's dgamma and dbeta)
//! and the sum of all elements, in a fixed order of float additions.

use super::par::{PAR_MIN_ELEMS, map_blocks};
use super::tensor::CpuTensor;
use crate::contract;

/// Rows per partial sum: fixed, so the order of float additions is fixed
/// whatever the thread count.
pub(super) const SUM_ROWS_BLOCK: usize = 256;

/// Column sums `[n, d]` -> `[d]`.
pub(super) fn sum_rows(x: &CpuTensor) -> CpuTensor {
    let (n, d) = contract::sum_rows(x.shape());
    CpuTensor::new(sum_rows_of_data(x.data(), n, d), &[d])
}

/// The sum of every element -> `[1]`: the column sum of the elements seen
/// as one column, so it is added in the same blocks as [`sum_rows`].
pub(super) fn sum(x: &CpuTensor) -> CpuTensor {
    CpuTensor::new(sum_rows_of_data(x.data(), x.len(), 1), &[1])
}

/// Column sums of the `rows x cols` row-major `x`.
fn sum_rows_of_data(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    sum_rows_of(rows, cols, |r, acc| {
        for (a, &v) in acc.iter_mut().zip(&x[r * cols..(r + 1) * cols]) {
            *a += v;
        }
    })
}

/// Column sums of rows produced on the fly: `add_row(r, acc)` adds row `r`'s
/// contribution into `acc` (`width` wide). Rows are summed in blocks of
/// [`SUM_ROWS_BLOCK`] whose partial sums are then added in block order.
pub(super) fn sum_rows_of<F>(rows: usize, width: usize, add_row: F) -> Vec<f32>
where
    F: Fn(usize, &mut [f32]) + Send + Sync,
{
    let blocks = rows.div_ceil(SUM_ROWS_BLOCK);
    let partials = map_blocks(blocks, rows * width >= PAR_MIN_ELEMS, |b| {
        let mut acc = vec![0.0f32; width];
        for r in b * SUM_ROWS_BLOCK..((b + 1) * SUM_ROWS_BLOCK).min(rows) {
            add_row(r, &mut acc);
        }
        acc
    });
    let mut total = vec![0.0f32; width];
    for p in &partials {
        for (t, &v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total
}
