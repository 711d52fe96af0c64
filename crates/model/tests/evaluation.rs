//! Evaluation as a user relies on it: the chunked evaluation (one product
//! per chunk of users for both the loss and the ranks, from the encoder run
//! at the last positions only) gives the numbers of the plain per-batch
//! inference over every position, whatever the chunk size.

use sasrec_autograd::Tape;
use sasrec_data::{Order, UserSequence, batches};
use sasrec_kernels::{Backend, CpuBackend};
use sasrec_model::{DeviceBatch, ModelConfig, SasRec, evaluate, rank_of_target};

const ITEMS: usize = 300;
const MAX_LEN: usize = 12;
const KS: [usize; 2] = [5, 20];

/// Users with histories of different lengths (some shorter than
/// `MAX_LEN`, some longer), the last item held out.
fn users(count: usize) -> Vec<UserSequence> {
    (0..count)
        .map(|u| {
            let len = 3 + (u * 5) % 20;
            let items = (0..len)
                .map(|i| ((u * 31 + i * 17) % ITEMS) as u32 + 1)
                .collect();
            UserSequence::new(u as u32 + 1, items)
        })
        .collect()
}

fn model<B: Backend>(b: &B) -> SasRec<B> {
    let config = ModelConfig {
        num_items: ITEMS,
        max_len: MAX_LEN,
        dim: 16,
        heads: 2,
        layers: 2,
        ff_dim: 32,
        dropout: 0.1,
        options: Default::default(),
    };
    SasRec::new(b, config, 5)
}

/// The evaluation as it was before chunking: `SasRec::infer` per batch
/// (the fused cross-entropy for the loss, a separate product for the
/// scores), ranks counted row by row. Returns (mean loss, ranks).
fn per_batch_reference(
    b: &CpuBackend,
    model: &SasRec<CpuBackend>,
    seqs: &[UserSequence],
    batch_size: usize,
) -> (f64, Vec<usize>) {
    let vocab = model.config.vocab();
    let (mut loss_sum, mut targets, mut ranks) = (0.0f64, 0usize, Vec::new());
    let all = batches(seqs, MAX_LEN, batch_size, Order::Sequential, true);
    for (batch, chunk) in all.zip(seqs.chunks(batch_size)) {
        let device =
            DeviceBatch::upload(b, &batch.inputs, &batch.targets, batch.batch_size, MAX_LEN);
        let out = model.infer(b, &device, true);
        loss_sum += out.loss as f64 * out.targets as f64;
        targets += out.targets;
        for (row, seq) in out.scores.unwrap().chunks(vocab).zip(chunk) {
            let (&target, history) = seq.items.split_last().unwrap();
            ranks.push(rank_of_target(row, target, history).unwrap());
        }
    }
    (loss_sum / targets as f64, ranks)
}

/// Mean HR@k and NDCG@k of `ranks` (0-based), as the metrics define them.
fn hr_ndcg(ranks: &[usize], k: usize) -> (f64, f64) {
    let hits = ranks.iter().filter(|&&r| r < k);
    let hr = hits.clone().count() as f64 / ranks.len() as f64;
    let ndcg = hits.map(|&r| 1.0 / (r as f64 + 2.0).log2()).sum::<f64>() / ranks.len() as f64;
    (hr, ndcg)
}

#[test]
fn chunked_evaluation_matches_per_batch_inference() {
    let b = CpuBackend::new();
    let model = model(&b);
    let seqs = users(157);
    let (ref_loss, ref_ranks) = per_batch_reference(&b, &model, &seqs, 32);
    // Users one at a time, in odd chunks, and all in one chunk.
    for batch_size in [1, 7, 32, 500] {
        let eval = evaluate(&b, &model, &seqs, true, &KS, batch_size);
        // The loss now comes from the scores' softmax instead of the fused
        // kernel: the same sums in another order, so f32 rounding apart.
        assert!(
            (eval.loss as f64 - ref_loss).abs() <= 1e-5 * ref_loss.abs(),
            "batch {batch_size}: loss {} against {ref_loss}",
            eval.loss
        );
        let ranking = eval.ranking.expect("leave-one-out ranks");
        assert_eq!(ranking.users, seqs.len());
        for k in KS {
            let (hr, ndcg) = hr_ndcg(&ref_ranks, k);
            assert!(
                (ranking.hr(k).unwrap() - hr).abs() < 1e-12,
                "batch {batch_size}: HR@{k}"
            );
            assert!(
                (ranking.ndcg(k).unwrap() - ndcg).abs() < 1e-12,
                "batch {batch_size}: NDCG@{k}"
            );
        }
    }
}

#[test]
fn evaluation_without_held_out_items_averages_every_target() {
    let b = CpuBackend::new();
    let model = model(&b);
    let seqs = users(40);
    let whole = evaluate(&b, &model, &seqs, false, &KS, 64);
    let small = evaluate(&b, &model, &seqs, false, &KS, 3);
    assert!(whole.ranking.is_none() && small.ranking.is_none());
    assert!(whole.loss.is_finite() && whole.loss > 0.0);
    assert!((whole.loss - small.loss).abs() <= 1e-5 * whole.loss);
}

/// `last_hidden` against the rows of `hidden` at the last positions:
/// (max abs difference, max abs value).
fn last_hidden_against_hidden<B: Backend>(b: &B) -> (f32, f32) {
    let model = model(b);
    let seqs = users(23);
    let batch = batches(&seqs, MAX_LEN, seqs.len(), Order::Sequential, true)
        .next()
        .expect("one batch");
    let device = DeviceBatch::upload(b, &batch.inputs, &batch.targets, batch.batch_size, MAX_LEN);
    let mut tape = Tape::new(b, false);
    let vars = tape.params(&model.params);
    let every = model.hidden(&mut tape, &vars, &device, None);
    let last = model.last_hidden(&mut tape, &vars, &device);
    let (every, last) = (b.to_vec(tape.value(every)), b.to_vec(tape.value(last)));
    let dim = model.config.dim;
    assert_eq!(last.len(), seqs.len() * dim);
    let mut worst = (0.0f32, 0.0f32);
    for (user, row) in last.chunks(dim).enumerate() {
        let at = ((user + 1) * MAX_LEN - 1) * dim;
        for (x, y) in row.iter().zip(&every[at..at + dim]) {
            worst = (worst.0.max((x - y).abs()), worst.1.max(y.abs()));
        }
    }
    worst
}

/// The last layer run on the last positions only gives the same hidden
/// states as the whole encoder, on both backends. Tolerance: 1e-6 of the
/// largest value, a few f32 ulps; the two paths do the same sums in the
/// same order except where a product's tiling depends on its row count.
#[test]
fn last_hidden_is_hidden_at_the_last_positions() {
    let (diff, scale) = last_hidden_against_hidden(&CpuBackend);
    assert!(diff <= 1e-6 * scale, "cpu: {diff} of {scale}");
    if let Some(gpu) = sasrec_kernels::gpu::test_backend() {
        let (diff, scale) = last_hidden_against_hidden(&gpu);
        assert!(diff <= 1e-6 * scale, "gpu: {diff} of {scale}");
    }
}
