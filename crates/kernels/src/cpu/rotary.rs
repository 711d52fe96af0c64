//! Rotary position embedding of attention's queries and keys, forward and
//! backward (one function: the backward turns by the opposite angles).

use super::par::for_each_chunk;
use super::tensor::CpuTensor;
use crate::AttentionShape;
use crate::contract;
use crate::rotary::Turn;

/// Rows per task.
const ROW_BLOCK: usize = 64;

/// `qkv` with the pairs of every head of its query and key turned by the
/// row's position angles from `table` (`turn` says which way), the values
/// copied.
pub(super) fn rotary(
    qkv: &CpuTensor,
    table: &CpuTensor,
    s: AttentionShape,
    turn: Turn,
) -> CpuTensor {
    contract::rotary(qkv.shape(), table.shape(), s);
    let (dim, head_dim) = (s.dim(), s.head_dim);
    let half = head_dim / 2;
    let width = 3 * dim;
    let sign = turn.sin_sign();
    let angles = table.data();
    let mut out = qkv.data().to_vec();
    for_each_chunk(&mut out, ROW_BLOCK * width, |block, rows| {
        for (r, row) in rows.chunks_exact_mut(width).enumerate() {
            let position = (block * ROW_BLOCK + r) % s.len;
            let (cos, sin) = angles[position * head_dim..(position + 1) * head_dim].split_at(half);
            // The query's and the key's heads: the first 2 * heads of the row's.
            for head in row[..2 * dim].chunks_exact_mut(head_dim) {
                let (x1, x2) = head.split_at_mut(half);
                for i in 0..half {
                    let (a, b) = (x1[i], x2[i]);
                    let (c, sn) = (cos[i], sign * sin[i]);
                    x1[i] = a * c - b * sn;
                    x2[i] = a * sn + b * c;
                }
            }
        }
    });
    CpuTensor::new(out, qkv.shape())
}
