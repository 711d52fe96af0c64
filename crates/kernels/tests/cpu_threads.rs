//! The CPU backend's row-parallel ops give the same bits whatever the number
//! of threads: work is split by sizes alone (see `cpu/par.rs`).

mod common;

use common::{BE, padded_ids, rng, t, targets, uniform};
use sasrec_kernels::cpu::cross_entropy_chunked;
use sasrec_kernels::{AttentionShape, Backend, Dropout};

/// Runs the row-parallel ops on a fixed input and returns all their outputs.
fn parallel_ops_outputs() -> Vec<Vec<f32>> {
    let mut r = rng(110);
    let s = AttentionShape {
        batch: 64,
        len: 20,
        heads: 2,
        head_dim: 8,
    };
    let rows = s.batch * s.len;
    let qkv = t(
        &uniform(&mut r, rows * 3 * s.dim(), 1.0),
        &[rows, 3 * s.dim()],
    );
    let ids = BE.ids(&padded_ids(&mut r, s.batch, s.len));
    let drop = Dropout::new(0.1, 1, 1, 1);
    let (ctx, probs) = BE.attention(&qkv, &ids, s, Some(&drop));
    let dctx = t(&uniform(&mut r, rows * s.dim(), 1.0), &[rows, s.dim()]);
    let dqkv = BE.attention_backward(&dctx, &qkv, &probs, s, Some(&drop));

    let x = t(&uniform(&mut r, rows * 16, 1.0), &[rows, 16]);
    let (g, b) = (t(&[1.0; 16], &[16]), t(&[0.0; 16], &[16]));
    let (y, stats) = BE.layer_norm(&x, &g, &b, 1e-5);
    let (dx, dg, db) = BE.layer_norm_backward(&dctx, &x, &g, &stats);
    let sums = BE.sum_rows(&qkv);

    let table = t(&uniform(&mut r, 500 * 16, 1.0), &[500, 16]);
    let tg = BE.ids(&targets(&mut r, rows, 500, 0.3));
    let ce = BE.cross_entropy(&y, &table, &tg, true);
    // A vocabulary of several sgemm column blocks and k blocks, in several
    // chunks of rows: the fused logits/softmax and the split-k backward.
    let big_table = t(&uniform(&mut r, 3000 * 16, 1.0), &[3000, 16]);
    let big_tg = BE.ids(&targets(&mut r, rows, 3000, 0.3));
    let big = cross_entropy_chunked(&y, &big_table, &big_tg, true, 100);
    [
        ctx,
        dqkv,
        dx,
        dg,
        db,
        sums,
        ce.loss,
        ce.dh.unwrap(),
        ce.dtable.unwrap(),
        big.loss,
        big.dh.unwrap(),
        big.dtable.unwrap(),
    ]
    .into_iter()
    .map(|t| t.into_vec())
    .collect()
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let run = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(parallel_ops_outputs)
    };
    let one = run(1);
    for out in [run(2), run(3), parallel_ops_outputs()] {
        for (i, (a, b)) in one.iter().zip(&out).enumerate() {
            let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "output {i} differs between thread counts");
        }
    }
}
