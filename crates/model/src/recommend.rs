//! Top-k next items after histories, in batches: the user vectors (the final
//! hidden state at the last position), their logits against every item,
//! and a top-k selection per history that skips padding and, when asked,
//! the items already in the history.
//!
//! The logit of item `i` after a history is `h . e_i`: `h` the history's
//! user vector ([`user_vectors`]), `e_i` row `i` of the tied item table
//! ([`item_vectors`]). Exact inner-product search over those two exports
//! therefore ranks exactly as [`recommend_many`] does.
//!
//! Histories go through the model in passes of at most
//! [`users_per_pass`] (the logits of one pass are `[users, N + 1]`), and
//! each pass's top-k selections run in parallel on the CPU (rayon), so
//! memory stays flat however many histories are asked for.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use anyhow::{Result, bail};
use rayon::prelude::*;
use sasrec_autograd::Tape;
use sasrec_kernels::Backend;

use crate::sasrec::{DeviceBatch, SasRec};

/// The most logits one pass holds, in bytes (`users x (N + 1)` f32).
const LOGITS_BUDGET_BYTES: usize = 64 << 20;
/// The most histories in one pass whatever the catalog: the activations of
/// a pass grow with `users x max_len`.
const MAX_USERS_PER_PASS: usize = 256;

/// One history to recommend after.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    /// Item indices 1..=N, oldest first (only the last `max_len` go
    /// through the model; all of them count as seen).
    pub history: &'a [u32],
    /// How many items.
    pub k: usize,
    /// Never recommend an item of `history`.
    pub exclude_seen: bool,
}

/// How many histories go through the model in one pass: the logits of a
/// pass stay within 64 MiB, and at most 256 histories.
pub fn users_per_pass<B: Backend>(model: &SasRec<B>) -> usize {
    let row_bytes = model.config.vocab() * std::mem::size_of::<f32>();
    (LOGITS_BUDGET_BYTES / row_bytes).clamp(1, MAX_USERS_PER_PASS)
}

/// The `k` best next items (index, logit) after `history` (item indices
/// 1..=N, oldest first), best first; ties go to the lower index. Items in
/// `history` and the padding index 0 are never returned. An index outside
/// 1..=N in `history` is an error.
pub fn recommend<B: Backend>(
    backend: &B,
    model: &SasRec<B>,
    history: &[u32],
    k: usize,
) -> Result<Vec<(u32, f32)>> {
    let query = Query {
        history,
        k,
        exclude_seen: true,
    };
    Ok(recommend_many(backend, model, &[query])?.remove(0))
}

/// The top `k` (index, logit) of every query, in the order of `queries`,
/// each best first with ties to the lower index; never padding, and never
/// an item of the query's history when `exclude_seen`. Fewer than `k` when
/// fewer items are left. An index outside 1..=N in a history is an error
/// naming the query.
pub fn recommend_many<B: Backend>(
    backend: &B,
    model: &SasRec<B>,
    queries: &[Query<'_>],
) -> Result<Vec<Vec<(u32, f32)>>> {
    for (q, query) in queries.iter().enumerate() {
        check_history(model, query.history, q, queries.len())?;
    }
    let vocab = model.config.vocab();
    let mut out = Vec::with_capacity(queries.len());
    let mut tops = Vec::new();
    for pass in queries.chunks(users_per_pass(model)) {
        let histories: Vec<&[u32]> = pass.iter().map(|q| q.history).collect();
        let users = last_hidden(backend, model, &histories);
        let logits = backend.to_vec(&model.scores(backend, &users));
        logits
            .par_chunks(vocab)
            .zip(pass)
            .map(|(row, query)| {
                let mut skip: Vec<u32> = if query.exclude_seen {
                    query.history.to_vec()
                } else {
                    Vec::new()
                };
                skip.push(0);
                skip.sort_unstable();
                skip.dedup();
                top_k(row, &skip, query.k)
            })
            .collect_into_vec(&mut tops);
        out.append(&mut tops);
    }
    Ok(out)
}

/// The user vector of every history: the final hidden state at the last
/// position, `[histories.len() * dim]` row-major. The logits
/// [`recommend_many`] ranks are these rows dotted with [`item_vectors`].
pub fn user_vectors<B: Backend>(
    backend: &B,
    model: &SasRec<B>,
    histories: &[&[u32]],
) -> Result<Vec<f32>> {
    for (q, history) in histories.iter().enumerate() {
        check_history(model, history, q, histories.len())?;
    }
    let mut out = Vec::with_capacity(histories.len() * model.config.dim);
    for pass in histories.chunks(users_per_pass(model)) {
        out.extend(backend.to_vec(&last_hidden(backend, model, pass)));
    }
    Ok(out)
}

/// The item vectors: rows 1..=N of the output table (the tied item table,
/// or the untied output embedding; without the padding row 0), `[N * dim]`
/// row-major; row `i - 1` is item index `i`.
pub fn item_vectors<B: Backend>(backend: &B, model: &SasRec<B>) -> Vec<f32> {
    let mut table = backend.to_vec(model.output_table());
    table.drain(..model.config.dim);
    table
}

/// Refuses an index outside 1..=N in history `q` of `of`.
fn check_history<B: Backend>(
    model: &SasRec<B>,
    history: &[u32],
    q: usize,
    of: usize,
) -> Result<()> {
    let num_items = model.config.num_items;
    if let Some(&bad) = history.iter().find(|&&i| i == 0 || i as usize > num_items) {
        let which = if of == 1 {
            "the history".to_string()
        } else {
            format!("history {q} (from 0)")
        };
        bail!(
            "item index {bad} in {which} is not a real item (the model has items 1..={num_items})"
        );
    }
    Ok(())
}

/// The final hidden state at the last position of each history (its last
/// `max_len` items, left-padded), `[histories.len(), dim]`, in inference mode.
fn last_hidden<B: Backend>(backend: &B, model: &SasRec<B>, histories: &[&[u32]]) -> B::Tensor {
    let max_len = model.config.max_len;
    let mut inputs = vec![0u32; histories.len() * max_len];
    for (row, history) in inputs.chunks_mut(max_len).zip(histories) {
        let tail = &history[history.len().saturating_sub(max_len)..];
        row[max_len - tail.len()..].copy_from_slice(tail);
    }
    let no_targets = vec![0u32; inputs.len()];
    let batch = DeviceBatch::upload(backend, &inputs, &no_targets, histories.len(), max_len);
    let mut tape = Tape::new(backend, false);
    let vars = tape.params(&model.params);
    let last = model.last_hidden(&mut tape, &vars, &batch);
    tape.value(last).clone()
}

/// A candidate in ranking order: `a < b` when `a` ranks before `b` (a
/// higher logit, or the same logit and a lower index).
#[derive(Clone, Copy, Debug)]
struct Ranked {
    item: u32,
    logit: f32,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .logit
            .total_cmp(&self.logit)
            .then(self.item.cmp(&other.item))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

/// The `k` best of `logits` (index, logit), best first, skipping the
/// indices in `skip` (sorted, distinct). One pass with a heap of the `k`
/// best so far: most items lose to the heap's worst at one comparison.
fn top_k(logits: &[f32], skip: &[u32], k: usize) -> Vec<(u32, f32)> {
    if k == 0 {
        return Vec::new();
    }
    // Max-heap on ranking order: its top is the worst of the kept.
    let mut best: BinaryHeap<Ranked> = BinaryHeap::with_capacity(k + 1);
    let mut offer = |item: usize| {
        let candidate = Ranked {
            item: item as u32,
            logit: logits[item],
        };
        if best.len() < k {
            best.push(candidate);
        } else if let Some(mut worst) = best.peek_mut()
            && candidate < *worst
        {
            *worst = candidate;
        }
    };
    // The items between consecutive skipped indices, as contiguous runs.
    let mut start = 0;
    for &s in skip.iter().chain(std::iter::once(&(logits.len() as u32))) {
        let end = (s as usize).min(logits.len());
        (start..end).for_each(&mut offer);
        start = start.max(end + 1);
    }
    best.into_sorted_vec()
        .into_iter()
        .map(|r| (r.item, r.logit))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every unskipped index sorted by (logit desc, index asc): the
    /// definition `top_k` must match.
    fn by_sorting(logits: &[f32], skip: &[u32], k: usize) -> Vec<(u32, f32)> {
        let mut all: Vec<(u32, f32)> = (0..logits.len() as u32)
            .filter(|i| !skip.contains(i))
            .map(|i| (i, logits[i as usize]))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }

    #[test]
    fn top_k_matches_a_full_sort_with_ties_and_skips() {
        // Few distinct values, so that ties are everywhere.
        let logits: Vec<f32> = (0..200u32).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
        for skip in [vec![0], vec![0, 3, 4, 5, 199], vec![0, 1, 2, 150]] {
            for k in [1, 2, 7, 50, 190, 196, 500] {
                assert_eq!(
                    top_k(&logits, &skip, k),
                    by_sorting(&logits, &skip, k),
                    "k {k}, skip {skip:?}"
                );
            }
        }
        assert!(top_k(&logits, &[0], 0).is_empty());
        // Everything skipped.
        let all: Vec<u32> = (0..200).collect();
        assert!(top_k(&logits, &all, 5).is_empty());
    }
}
