//! Validation and test: loss and ranking metrics over all items.
//!
//! Users are scored in chunks whose `[users, items]` score matrix stays
//! within [`SCORE_BUDGET_BYTES`], so memory does not grow with users x
//! items; with leave-one-out, the held-out item's loss and its rank come
//! from the same scores (one product per chunk), and the ranks of a chunk
//! are counted in parallel.

use rayon::prelude::*;
use sasrec_autograd::Tape;
use sasrec_data::{Order, UserSequence, batches};
use sasrec_kernels::Backend;
use serde::{Deserialize, Serialize};

use crate::metrics::{RankingAccumulator, RankingMetrics, rank_of_target};
use crate::sasrec::{DeviceBatch, SasRec};

/// The most bytes of scores held at once: `[users, items]` f32 for one
/// chunk of users (on the device and on the host).
pub const SCORE_BUDGET_BYTES: usize = 64 << 20;

/// The result of evaluating a set of sequences.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Target-weighted mean cross-entropy.
    pub loss: f64,
    /// Number of targets the loss averages over.
    pub targets: usize,
    /// HR@K, NDCG@K and MRR (leave-one-out only).
    pub ranking: Option<RankingMetrics>,
}

/// Evaluates `model` on `seqs`.
///
/// With `held_out_last`, the last item of each sequence is the held-out
/// target: the loss is the loss of predicting it from the rest, and it is
/// ranked against all items the user has not seen (cut-offs `ks`).
/// Otherwise the loss averages over every next-item target of the sequences
/// (the notebook's validation on held-out users) and nothing is ranked.
/// Sequences go `batch_size` at a time, fewer when their scores would exceed
/// [`SCORE_BUDGET_BYTES`].
pub fn evaluate<B: Backend>(
    backend: &B,
    model: &SasRec<B>,
    seqs: &[UserSequence],
    held_out_last: bool,
    ks: &[usize],
    batch_size: usize,
) -> Evaluation {
    evaluate_with_progress(
        backend,
        model,
        seqs,
        held_out_last,
        ks,
        batch_size,
        &mut |_| {},
    )
}

/// [`evaluate`], calling `progress` with the number of sequences done after
/// every batch (to draw a progress bar).
pub fn evaluate_with_progress<B: Backend>(
    backend: &B,
    model: &SasRec<B>,
    seqs: &[UserSequence],
    held_out_last: bool,
    ks: &[usize],
    batch_size: usize,
    progress: &mut dyn FnMut(usize),
) -> Evaluation {
    let max_len = model.config.max_len;
    let vocab = model.config.vocab();
    let chunk_users = batch_size
        .min(SCORE_BUDGET_BYTES / (size_of::<f32>() * vocab))
        .max(1);
    let mut loss_sum = 0.0f64;
    let mut targets = 0usize;
    let mut ranks = RankingAccumulator::new(ks);
    let all = batches(seqs, max_len, chunk_users, Order::Sequential, held_out_last);
    for (batch, chunk) in all.zip(seqs.chunks(chunk_users)) {
        let device = DeviceBatch::upload(
            backend,
            &batch.inputs,
            &batch.targets,
            batch.batch_size,
            max_len,
        );
        if held_out_last {
            let (loss, chunk_ranks) = loss_and_ranks(backend, model, &device, chunk);
            loss_sum += loss as f64 * chunk.len() as f64;
            targets += chunk.len();
            chunk_ranks.into_iter().for_each(|r| ranks.add(r));
        } else {
            let out = model.infer(backend, &device, false);
            loss_sum += out.loss as f64 * out.targets as f64;
            targets += out.targets;
        }
        progress(chunk.len());
    }
    Evaluation {
        loss: if targets == 0 {
            0.0
        } else {
            loss_sum / targets as f64
        },
        targets,
        ranking: held_out_last.then(|| ranks.finish()),
    }
}

/// The mean loss of the held-out last items of `chunk` and their ranks,
/// both from one `[users, items]` product of the last positions' hidden
/// states ([`SasRec::last_hidden`]) with the item table: the loss is its
/// softmax cross-entropy (the same row kernel as the fused loss), the ranks
/// are counted on the host.
fn loss_and_ranks<B: Backend>(
    backend: &B,
    model: &SasRec<B>,
    device: &DeviceBatch<B>,
    chunk: &[UserSequence],
) -> (f32, Vec<usize>) {
    let vocab = model.config.vocab();
    let mut tape = Tape::new(backend, false);
    let vars = tape.params(&model.params);
    let h = model.last_hidden(&mut tape, &vars, device);
    let scores = model.scores(backend, tape.value(h));
    let held_out: Vec<u32> = chunk
        .iter()
        .map(|s| *s.items.last().expect("evaluation sequences are not empty"))
        .collect();
    let loss = backend.softmax_cross_entropy(&scores, &backend.ids(&held_out), None, false);
    let scores = backend.to_vec(&scores);
    let ranks = scores
        .par_chunks(vocab)
        .zip(chunk)
        .map(|(row, seq)| {
            let (&target, history) = seq.items.split_last().expect("not empty");
            // A non-finite score ranks last: a broken model must not look good.
            rank_of_target(row, target, history).unwrap_or(vocab)
        })
        .collect();
    (backend.to_vec(&loss.loss)[0], ranks)
}

/// The most-popular baseline: every user gets the same scores, the number of
/// times each item occurs in `train` as a target (every occurrence without
/// target event types); ranked like the model (seen items removed, all
/// items). The last item of each `cases` sequence is the target.
pub fn popularity_baseline(
    train: &[UserSequence],
    cases: &[UserSequence],
    vocab: usize,
    ks: &[usize],
) -> RankingMetrics {
    let counts: Vec<f32> = sasrec_data::popularity(train, vocab - 1)
        .into_iter()
        .map(|c| c as f32)
        .collect();
    let mut ranks = RankingAccumulator::new(ks);
    let ranked: Vec<usize> = cases
        .par_iter()
        .map(|seq| {
            let (&target, history) = seq
                .items
                .split_last()
                .expect("evaluation sequences are not empty");
            rank_of_target(&counts, target, history).expect("counts are finite")
        })
        .collect();
    ranked.into_iter().for_each(|r| ranks.add(r));
    ranks.finish()
}
