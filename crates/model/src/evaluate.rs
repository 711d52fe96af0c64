//! Validation and test: loss and ranking metrics over all items.

use sasrec_data::{Order, UserSequence, batches};
use sasrec_kernels::Backend;
use serde::{Deserialize, Serialize};

use crate::metrics::{RankingAccumulator, RankingMetrics, rank_of_target};
use crate::sasrec::{DeviceBatch, SasRec};

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
    let mut loss_sum = 0.0f64;
    let mut targets = 0usize;
    let mut ranks = RankingAccumulator::new(ks);
    let all = batches(seqs, max_len, batch_size, Order::Sequential, held_out_last);
    for (batch, chunk) in all.zip(seqs.chunks(batch_size)) {
        let device = DeviceBatch::upload(
            backend,
            &batch.inputs,
            &batch.targets,
            batch.batch_size,
            max_len,
        );
        let out = model.infer(backend, &device, held_out_last);
        loss_sum += out.loss as f64 * out.targets as f64;
        targets += out.targets;
        if let Some(scores) = out.scores {
            for (row, seq) in scores.chunks(vocab).zip(chunk) {
                let (&target, history) = seq
                    .items
                    .split_last()
                    .expect("evaluation sequences are not empty");
                // A non-finite score ranks last: a broken model must not look good.
                ranks.add(rank_of_target(row, target, history).unwrap_or(vocab));
            }
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

/// The most-popular baseline: every user gets the same scores, the number of
/// times each item occurs in `train`; ranked like the model (seen items
/// removed, all items). The last item of each `cases` sequence is the target.
pub fn popularity_baseline(
    train: &[UserSequence],
    cases: &[UserSequence],
    vocab: usize,
    ks: &[usize],
) -> RankingMetrics {
    let mut counts = vec![0.0f32; vocab];
    for seq in train {
        for &item in &seq.items {
            counts[item as usize] += 1.0;
        }
    }
    let mut ranks = RankingAccumulator::new(ks);
    for seq in cases {
        let (&target, history) = seq
            .items
            .split_last()
            .expect("evaluation sequences are not empty");
        ranks.add(rank_of_target(&counts, target, history).expect("counts are finite"));
    }
    ranks.finish()
}
