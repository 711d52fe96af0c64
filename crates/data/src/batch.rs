//! Fixed-length windows and batches of them.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::UserSequence;

/// The notebook's training example: the last `max_len + 1` items, left-padded
/// with 0 to that length; input = window[..max_len], target = window[1..].
///
/// Target slot `t` is the item that follows input slot `t`; a target of 0 is
/// padding and carries no loss.
pub fn window(items: &[u32], max_len: usize) -> (Vec<u32>, Vec<u32>) {
    let mut input = vec![0; max_len];
    let mut target = vec![0; max_len];
    write_window(items, None, max_len, &mut input, &mut target);
    (input, target)
}

/// [`window`] into caller-provided rows of length `max_len`; an item whose
/// `is_target` flag is false is input only (its target slot stays 0).
fn write_window(
    items: &[u32],
    is_target: Option<&[bool]>,
    max_len: usize,
    input: &mut [u32],
    target: &mut [u32],
) {
    let start = items.len().saturating_sub(max_len + 1);
    let recent = &items[start..];
    // The window is `pad` zeros followed by `recent`.
    let pad = max_len + 1 - recent.len();
    input.fill(0);
    target.fill(0);
    for (k, &item) in recent.iter().enumerate() {
        let slot = pad + k;
        if slot < max_len {
            input[slot] = item;
        }
        if slot >= 1 && is_target.is_none_or(|t| t[start + k]) {
            target[slot - 1] = item;
        }
    }
}

/// A batch of windows, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Input item indices, `[batch_size * max_len]`; row `b` is `inputs[b * max_len..][..max_len]`.
    pub inputs: Vec<u32>,
    /// Target item indices, same layout; 0 means "no target here".
    pub targets: Vec<u32>,
    /// User index of each row ([`crate::UserSequence::user`]).
    pub users: Vec<u32>,
    /// Rows in this batch (the last batch may be smaller than asked).
    pub batch_size: usize,
    /// Slots per row.
    pub max_len: usize,
}

/// The order in which sequences are visited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// As given.
    Sequential,
    /// A random permutation that depends only on `(seed, epoch)`, so a resumed
    /// run sees the same batches.
    Shuffled {
        /// Seed of the run.
        seed: u64,
        /// Epoch number; each epoch gets its own permutation.
        epoch: u64,
    },
}

/// The permutation of `0..n` that [`Order::Shuffled`] uses: ChaCha8 seeded
/// with `seed`, on stream `epoch`.
pub fn permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

/// Iterator over batches of windows; see [`batches`].
#[derive(Clone, Debug)]
pub struct Batches<'a> {
    seqs: &'a [UserSequence],
    order: Vec<usize>,
    next: usize,
    max_len: usize,
    batch_size: usize,
    last_target_only: bool,
}

/// Batches of `batch_size` windows ([`window`]) over `seqs`, in `order`; the
/// final batch keeps the remainder (as PyTorch's DataLoader by default).
///
/// With `last_target_only`, every target but the last slot of a row is set to
/// 0, so only the final item counts: pass history + [held-out item] to
/// evaluate a leave-one-out target. Otherwise the items a sequence marks as
/// no target ([`UserSequence::is_target`]) get target 0.
///
/// # Panics
/// If `max_len` or `batch_size` is 0.
pub fn batches(
    seqs: &[UserSequence],
    max_len: usize,
    batch_size: usize,
    order: Order,
    last_target_only: bool,
) -> Batches<'_> {
    assert!(max_len > 0, "max_len must be at least 1");
    assert!(batch_size > 0, "batch_size must be at least 1");
    let order = match order {
        Order::Sequential => (0..seqs.len()).collect(),
        Order::Shuffled { seed, epoch } => permutation(seqs.len(), seed, epoch),
    };
    Batches {
        seqs,
        order,
        next: 0,
        max_len,
        batch_size,
        last_target_only,
    }
}

impl Iterator for Batches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let rows = &self.order[self.next..];
        let rows = &rows[..rows.len().min(self.batch_size)];
        if rows.is_empty() {
            return None;
        }
        self.next += rows.len();
        let t = self.max_len;
        let mut batch = Batch {
            inputs: vec![0; rows.len() * t],
            targets: vec![0; rows.len() * t],
            users: Vec::with_capacity(rows.len()),
            batch_size: rows.len(),
            max_len: t,
        };
        for (b, &s) in rows.iter().enumerate() {
            let seq = &self.seqs[s];
            let input = &mut batch.inputs[b * t..(b + 1) * t];
            let target = &mut batch.targets[b * t..(b + 1) * t];
            if self.last_target_only {
                write_window(&seq.items, None, t, input, target);
                target[..t - 1].fill(0);
            } else {
                write_window(&seq.items, seq.is_target.as_deref(), t, input, target);
            }
            batch.users.push(seq.user);
        }
        Some(batch)
    }

    /// Skips `n` batches without building them (a resumed epoch starts mid-way).
    fn nth(&mut self, n: usize) -> Option<Batch> {
        let skip = n.saturating_mul(self.batch_size);
        self.next = self.order.len().min(self.next.saturating_add(skip));
        self.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.order.len() - self.next).div_ceil(self.batch_size);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches<'_> {}
