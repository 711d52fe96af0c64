//! The CPU ops composed into a small SASRec-like graph (embeddings, dropout,
//! pre-LayerNorm attention block with residual, final LayerNorm, tied
//! cross-entropy), its backward written by hand from the backend's backward
//! ops the way the autograd tape chains them, and checked against central
//! finite differences of the backend's own f32 forward.
//!
//! Tolerance: `eps = 1e-2` on parameters of size ~0.1..1. The loss (~ln 13
//! ~ 2.6) carries f32 rounding ~1e-6, i.e. ~5e-5 after dividing by `2 eps`;
//! the truncation error is ~eps^2 |f'''| ~ 1e-4. Directional derivatives are
//! O(0.1..1), so `rel 2e-2` with an absolute floor of `5e-4` leaves margin,
//! while a dropped or mis-scaled gradient anywhere in the chain is off by
//! O(1).

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sasrec_kernels::cpu::{CpuIds, CpuTensor};
use sasrec_kernels::testing::{Along, Tol, check_gradient};
use sasrec_kernels::{AttentionShape, Backend, CpuBackend, Dropout};

const BE: CpuBackend = CpuBackend;
const SHAPE: AttentionShape = AttentionShape {
    batch: 3,
    len: 6,
    heads: 2,
    head_dim: 4,
};
const DIM: usize = 8;
const VOCAB: usize = 13;
const EPS: f64 = 1e-2;

/// Parameter names, in the order of `Params::all`.
const NAMES: [&str; 10] = [
    "item", "pos", "ln1_g", "ln1_b", "w_in", "b_in", "w_out", "b_out", "ln2_g", "ln2_b",
];

#[derive(Clone)]
struct Params {
    all: Vec<CpuTensor>,
}

struct Inputs {
    ids: CpuIds,
    positions: CpuIds,
    targets: CpuIds,
    masks: [Dropout; 3],
}

fn init(rng: &mut ChaCha8Rng) -> Params {
    let mut u = |shape: &[usize], scale: f32, offset: f32| {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| offset + rng.random_range(-scale..scale))
            .collect();
        BE.tensor(&v, shape)
    };
    Params {
        all: vec![
            u(&[VOCAB, DIM], 0.5, 0.0),
            u(&[SHAPE.len, DIM], 0.5, 0.0),
            u(&[DIM], 0.2, 1.0),
            u(&[DIM], 0.2, 0.0),
            u(&[3 * DIM, DIM], 0.4, 0.0),
            u(&[3 * DIM], 0.1, 0.0),
            u(&[DIM, DIM], 0.4, 0.0),
            u(&[DIM], 0.1, 0.0),
            u(&[DIM], 0.2, 1.0),
            u(&[DIM], 0.2, 0.0),
        ],
    }
}

fn inputs() -> Inputs {
    // Left padding, no padding, and a sequence with a single real item.
    let ids = [0, 0, 3, 5, 1, 7, 2, 4, 6, 8, 10, 12, 0, 0, 0, 0, 0, 9];
    // Next items; targets at the last positions are made up, one is ignored.
    let targets = [0, 3, 5, 1, 7, 11, 4, 6, 8, 10, 12, 0, 0, 0, 0, 0, 9, 2];
    let positions: Vec<u32> = (0..SHAPE.batch * SHAPE.len)
        .map(|i| (i % SHAPE.len) as u32)
        .collect();
    Inputs {
        ids: BE.ids(&ids),
        positions: BE.ids(&positions),
        targets: BE.ids(&targets),
        masks: [
            Dropout::new(0.2, 7, 1, 0),
            Dropout::new(0.2, 7, 1, 1),
            Dropout::new(0.2, 7, 1, 2),
        ],
    }
}

/// The forward pass's loss, and the gradient of every parameter.
fn loss_and_grads(p: &Params, inp: &Inputs) -> (f32, Vec<CpuTensor>) {
    let [item, pos, g1, b1, w_in, b_in, w_out, b_out, g2, b2] = &p.all[..] else {
        unreachable!()
    };
    let [m_emb, m_attn, m_res] = &inp.masks;

    // Forward.
    let e = BE.add(
        &BE.embedding(item, &inp.ids),
        &BE.embedding(pos, &inp.positions),
    );
    let x0 = BE.dropout(&e, m_emb);
    let (a, st1) = BE.layer_norm(&x0, g1, b1, 1e-5);
    let qkv = BE.linear(&a, w_in, Some(b_in));
    let (ctx, probs) = BE.attention(&qkv, &inp.ids, SHAPE, Some(m_attn));
    let o = BE.linear(&ctx, w_out, Some(b_out));
    let x1 = BE.add(&x0, &BE.dropout(&o, m_res));
    let (hf, st2) = BE.layer_norm(&x1, g2, b2, 1e-5);
    let ce = BE.cross_entropy(&hf, item, &inp.targets, true);
    let loss = BE.to_vec(&ce.loss)[0];

    // Backward, in reverse.
    let mut ditem = ce.dtable.unwrap();
    let (mut dx0, dg2, db2) = BE.layer_norm_backward(&ce.dh.unwrap(), &x1, g2, &st2);
    let d_o = BE.dropout(&dx0, m_res);
    let dctx = BE.matmul(&d_o, w_out, false, false);
    let dw_out = BE.matmul(&d_o, &ctx, true, false);
    let db_out = BE.sum_rows(&d_o);
    let dqkv = BE.attention_backward(&dctx, &qkv, &probs, SHAPE, Some(m_attn));
    let da = BE.matmul(&dqkv, w_in, false, false);
    let dw_in = BE.matmul(&dqkv, &a, true, false);
    let db_in = BE.sum_rows(&dqkv);
    let (dx0_ln, dg1, db1) = BE.layer_norm_backward(&da, &x0, g1, &st1);
    BE.add_assign(&mut dx0, &dx0_ln);
    let de = BE.dropout(&dx0, m_emb);
    // No padding_idx here: finite differences see the true gradient of row 0.
    BE.add_assign(
        &mut ditem,
        &BE.embedding_backward(&de, &inp.ids, VOCAB, None),
    );
    let dpos = BE.embedding_backward(&de, &inp.positions, SHAPE.len, None);

    (
        loss,
        vec![
            ditem, dpos, dg1, db1, dw_in, db_in, dw_out, db_out, dg2, db2,
        ],
    )
}

#[test]
fn sasrec_like_chain_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let params = init(&mut rng);
    let inp = inputs();
    let (loss, grads) = loss_and_grads(&params, &inp);
    assert!(loss.is_finite() && loss > 0.0, "loss {loss}");

    for (k, name) in NAMES.iter().enumerate() {
        let n = params.all[k].len();
        let directions: Vec<Vec<f32>> = (0..3)
            .map(|_| (0..n).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        let loss_at = |x: &[f64]| {
            let mut p = params.clone();
            let x: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            p.all[k] = BE.tensor(&x, p.all[k].shape());
            loss_and_grads(&p, &inp).0 as f64
        };
        let along = Along::Directions(&directions);
        let (x, grad) = (params.all[k].data(), grads[k].data());
        check_gradient(name, x, grad, along, EPS, Tol::new(2e-2, 5e-4), loss_at);
    }
}
