//! Batch recommendations: many histories at once give what the model's own
//! scoring (`SasRec::infer`) ranks, in several passes; the exported user and
//! item vectors give the same logits; the GPU agrees with the CPU.

use sasrec_kernels::{Backend, CpuBackend};
use sasrec_model::{
    DeviceBatch, ModelConfig, Query, SasRec, item_vectors, recommend, recommend_many, user_vectors,
    users_per_pass,
};

const ITEMS: usize = 300;

fn model<B: Backend>(backend: &B) -> SasRec<B> {
    let config = ModelConfig {
        num_items: ITEMS,
        max_len: 12,
        dim: 16,
        heads: 2,
        layers: 2,
        ff_dim: 32,
        dropout: 0.1,
        options: Default::default(),
    };
    SasRec::new(backend, config, 3)
}

/// Histories of 1 to 40 items (longer than max_len too), with repeats.
fn histories(n: usize) -> Vec<Vec<u32>> {
    (0..n)
        .map(|u| {
            let len = 1 + (u * 7) % 40;
            (0..len)
                .map(|i| ((u * 13 + i * i * 5) % ITEMS) as u32 + 1)
                .collect()
        })
        .collect()
}

/// The reference: every item's score at the last position from
/// `SasRec::infer` (one history at a time), sorted by score then index,
/// padding and (when asked) the history removed, cut to `k`.
fn reference<B: Backend>(
    backend: &B,
    model: &SasRec<B>,
    history: &[u32],
    k: usize,
    exclude_seen: bool,
) -> Vec<(u32, f32)> {
    let max_len = model.config.max_len;
    let tail = &history[history.len().saturating_sub(max_len)..];
    let mut input = vec![0u32; max_len - tail.len()];
    input.extend_from_slice(tail);
    let batch = DeviceBatch::upload(backend, &input, &vec![0; max_len], 1, max_len);
    let scores = model.infer(backend, &batch, true).scores.unwrap();
    let mut all: Vec<(u32, f32)> = (1..scores.len() as u32)
        .filter(|i| !(exclude_seen && history.contains(i)))
        .map(|i| (i, scores[i as usize]))
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

/// Same items in the same order and logits within `tol`, except that
/// items whose logits are within `tol` of each other may swap places.
fn assert_same_top(got: &[(u32, f32)], want: &[(u32, f32)], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (rank, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g.1 - w.1).abs() <= tol,
            "{what}: rank {}: logit {} vs {}",
            rank + 1,
            g.1,
            w.1
        );
        if g.0 != w.0 {
            let tied = want.iter().any(|o| o.0 == g.0 && (o.1 - g.1).abs() <= tol);
            assert!(tied, "{what}: rank {}: item {} vs {}", rank + 1, g.0, w.0);
        }
    }
}

#[test]
fn many_histories_in_several_passes_rank_as_the_model_scores() {
    let b = CpuBackend;
    let model = model(&b);
    let per_pass = users_per_pass(&model);
    // More histories than one pass holds.
    let histories = histories(per_pass + 45);
    let queries: Vec<Query> = histories
        .iter()
        .enumerate()
        .map(|(u, h)| Query {
            history: h,
            k: [1, 10, 100, ITEMS + 5][u % 4],
            exclude_seen: u % 3 != 0,
        })
        .collect();
    let got = recommend_many(&b, &model, &queries).unwrap();
    assert_eq!(got.len(), queries.len());
    for (u, (top, q)) in got.iter().zip(&queries).enumerate() {
        let want = reference(&b, &model, q.history, q.k, q.exclude_seen);
        assert_same_top(top, &want, 1e-5, &format!("history {u}"));
        if q.k > ITEMS {
            // Everything that may be recommended, each once.
            let seen = |i: &u32| q.exclude_seen && q.history.contains(i);
            let allowed = (1..=ITEMS as u32).filter(|i| !seen(i)).count();
            assert_eq!(top.len(), allowed, "history {u}");
        }
    }
    // The one-history function is the same thing.
    let h = &histories[5];
    let one = recommend(&b, &model, h, 20).unwrap();
    let query = Query {
        history: h,
        k: 20,
        exclude_seen: true,
    };
    assert_eq!(one, recommend_many(&b, &model, &[query]).unwrap()[0]);
    // Kept items are the seen ones when asked.
    let kept = recommend_many(
        &b,
        &model,
        &[Query {
            exclude_seen: false,
            k: ITEMS,
            ..query
        }],
    )
    .unwrap();
    assert_eq!(kept[0].len(), ITEMS, "every real item, padding never");
    assert!(kept[0].iter().all(|&(i, _)| i != 0));
}

#[test]
fn bad_indices_name_the_history() {
    let b = CpuBackend;
    let model = model(&b);
    let good = [1u32, 2];
    let bad = [3u32, ITEMS as u32 + 1];
    let queries = [&good[..], &bad[..]].map(|history| Query {
        history,
        k: 3,
        exclude_seen: true,
    });
    let err = recommend_many(&b, &model, &queries)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("item index {} in history 1", ITEMS + 1)),
        "{err}"
    );
    let err = user_vectors(&b, &model, &[&[0]]).unwrap_err().to_string();
    assert!(err.contains("item index 0 in the history"), "{err}");
}

#[test]
fn user_vectors_dot_item_vectors_are_the_logits() {
    let b = CpuBackend;
    let model = model(&b);
    let dim = model.config.dim;
    let histories = histories(30);
    let refs: Vec<&[u32]> = histories.iter().map(Vec::as_slice).collect();
    let users = user_vectors(&b, &model, &refs).unwrap();
    let items = item_vectors(&b, &model);
    assert_eq!(users.len(), histories.len() * dim);
    assert_eq!(items.len(), ITEMS * dim);
    for (u, history) in histories.iter().enumerate() {
        let user = &users[u * dim..(u + 1) * dim];
        let top = recommend(&b, &model, history, 15).unwrap();
        for (item, logit) in top {
            let row = &items[(item as usize - 1) * dim..item as usize * dim];
            let dot: f32 = user.iter().zip(row).map(|(a, b)| a * b).sum();
            assert!(
                (dot - logit).abs() <= 1e-5 * (1.0 + logit.abs()),
                "history {u}, item {item}: {dot} vs {logit}"
            );
        }
    }
}

/// The same recommendations from the wgpu backend (llvmpipe in CI): logits
/// within 1e-4 (the backends sum in different orders), the same items up
/// to near-ties.
#[test]
fn gpu_recommends_as_the_cpu() {
    let Some(gpu) = sasrec_kernels::gpu::test_backend() else {
        return;
    };
    let cpu_model = model(&CpuBackend);
    let gpu_model = model(&gpu);
    let histories = histories(40);
    let queries: Vec<Query> = histories
        .iter()
        .map(|h| Query {
            history: h,
            k: 25,
            exclude_seen: true,
        })
        .collect();
    let cpu = recommend_many(&CpuBackend, &cpu_model, &queries).unwrap();
    let on_gpu = recommend_many(&gpu, &gpu_model, &queries).unwrap();
    for (u, (g, c)) in on_gpu.iter().zip(&cpu).enumerate() {
        assert_same_top(g, c, 1e-4, &format!("history {u}"));
    }
}
