//! Row gather (embedding lookup) and its scatter-add backward.

use super::par::for_each_chunk;
use super::tensor::{CpuIds, CpuTensor};
use crate::contract;

/// `out[i] = table[ids[i]]`: table `[vocab, dim]`, ids `[n]` -> `[n, dim]`.
pub(super) fn embedding(table: &CpuTensor, ids: &CpuIds) -> CpuTensor {
    let ids = ids.as_slice();
    let (_, dim) = contract::embedding(table.shape(), ids);
    let table = table.data();
    let mut out = vec![0.0f32; ids.len() * dim];
    for_each_chunk(&mut out, dim, |i, row| {
        let id = ids[i] as usize;
        row.copy_from_slice(&table[id * dim..(id + 1) * dim]);
    });
    CpuTensor::new(out, &[ids.len(), dim])
}

/// `dtable[ids[i]] += dy[i]` for every `i` whose id is not `padding_idx`:
/// dy `[n, dim]` -> `[vocab, dim]`.
///
/// A sequential scatter in row order: deterministic, and at SASRec's sizes
/// (n*dim ~ 4e5 adds) far cheaper than anything that would need to merge
/// per-thread tables.
pub(super) fn embedding_backward(
    dy: &CpuTensor,
    ids: &CpuIds,
    vocab: usize,
    padding_idx: Option<u32>,
) -> CpuTensor {
    let ids = ids.as_slice();
    let dim = contract::embedding_backward(dy.shape(), ids, vocab);
    let dy = dy.data();
    let mut dtable = vec![0.0f32; vocab * dim];
    for (i, &id) in ids.iter().enumerate() {
        if Some(id) == padding_idx {
            continue;
        }
        let id = id as usize;
        let dst = &mut dtable[id * dim..(id + 1) * dim];
        for (d, &g) in dst.iter_mut().zip(&dy[i * dim..(i + 1) * dim]) {
            *d += g;
        }
    }
    CpuTensor::new(dtable, &[vocab, dim])
}
