//! Top-k next items for a history, never an item already in it, never padding.

use anyhow::{Result, bail};
use sasrec_kernels::Backend;

use crate::sasrec::{DeviceBatch, SasRec};

/// The `k` best next items (index, score) after `history` (item indices
/// 1..=N, oldest first), best first; ties go to the lower index. Items in
/// `history` and the padding index 0 are never returned. An index outside
/// 1..=N in `history` is an error.
pub fn recommend<B: Backend>(
    backend: &B,
    model: &SasRec<B>,
    history: &[u32],
    k: usize,
) -> Result<Vec<(u32, f32)>> {
    let num_items = model.config.num_items;
    if let Some(&bad) = history.iter().find(|&&i| i == 0 || i as usize > num_items) {
        bail!(
            "item index {bad} in the history is not a real item (the model has items 1..={num_items})"
        );
    }
    let max_len = model.config.max_len;
    let tail = &history[history.len().saturating_sub(max_len)..];
    let mut input = vec![0u32; max_len - tail.len()];
    input.extend_from_slice(tail);
    let batch = DeviceBatch::upload(backend, &input, &vec![0; max_len], 1, max_len);
    let scores = model
        .infer(backend, &batch, true)
        .scores
        .expect("scores were asked for");

    let mut seen = vec![false; scores.len()];
    seen[0] = true;
    for &item in history {
        seen[item as usize] = true;
    }
    let mut candidates: Vec<(u32, f32)> = (0..scores.len())
        .filter(|&i| !seen[i])
        .map(|i| (i as u32, scores[i]))
        .collect();
    let by_score = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let k = k.min(candidates.len());
    if k > 0 && k < candidates.len() {
        candidates.select_nth_unstable_by(k - 1, by_score);
    }
    candidates.truncate(k);
    candidates.sort_by(by_score);
    Ok(candidates)
}
