//! The CPU backend op by op: every forward against a naive f64 reference
//! written plainly here, every backward against central finite differences.
//!
//! Tolerances (why):
//! - Forwards run in f32 and are compared with the f64 reference evaluated
//!   on the same f32 inputs. f32 rounding is ~6e-8 relative per operation
//!   and our sums have at most a few hundred terms, so `rel 1e-5` (plus an
//!   absolute floor of `1e-6` for values that cancel to ~0) leaves 10x margin.
//! - Backward checks differentiate the *f64 reference* forward with central
//!   differences (`eps 1e-5`: truncation error ~eps^2 ~1e-10, rounding
//!   ~1e-16/eps ~1e-11, both far below f32 noise), contracted with a random
//!   upstream gradient `dy` (the "mid-graph" form: `d/dx <dy, f(x)>`), so a
//!   backward that drops or mishandles its incoming gradient fails. The
//!   backend's backward runs in f32, hence `rel 1e-3, abs 1e-5`: f32 error
//!   in a sum of <= 1e3 terms stays below 1e-4 relative. The forward the
//!   differences come from is the one the backend matches (checked above).
//!   Small inputs are checked coordinate by coordinate, large ones along
//!   random directions.
//! - `tests/cpu_chain.rs` checks the ops composed into a small SASRec-like
//!   graph with finite differences of the backend itself in f32.

use approx::relative_eq;
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sasrec_kernels::cpu::{CE_BUFFER_BYTES, CpuTensor, ce_chunk_rows, cross_entropy_chunked};
use sasrec_kernels::{AdamStep, AttentionShape, Backend, CpuBackend, Dropout};

const BE: CpuBackend = CpuBackend;

// ----- helpers -----------------------------------------------------------

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `n` values uniform in `[-scale, scale)`.
fn uniform(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

fn to64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

fn dot64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn t(data: &[f32], shape: &[usize]) -> CpuTensor {
    BE.tensor(data, shape)
}

/// Elementwise `actual ~ expected` with approx's relative + absolute test.
#[track_caller]
fn assert_close(what: &str, actual: &[f32], expected: &[f64], rel: f64, abs: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            a.is_finite() && relative_eq!(a as f64, e, epsilon = abs, max_relative = rel),
            "{what}[{i}]: got {a}, expected {e} (rel {rel}, abs {abs})"
        );
    }
}

const FWD_REL: f64 = 1e-5;
const FWD_ABS: f64 = 1e-6;
const FD_EPS: f64 = 1e-5;
const GRAD_REL: f64 = 1e-3;
const GRAD_ABS: f64 = 1e-5;

/// Checks `grad` (from the backend, f32) against central differences of the
/// f64 scalar function `f` at `x`: per coordinate for small inputs, along six
/// random directions otherwise.
#[track_caller]
fn check_grad(what: &str, x: &[f32], grad: &[f32], f: impl Fn(&[f64]) -> f64) {
    assert_eq!(x.len(), grad.len(), "{what}: gradient length");
    let x0 = to64(x);
    let fd_along = |u: &[f64]| {
        let plus: Vec<f64> = x0.iter().zip(u).map(|(x, u)| x + FD_EPS * u).collect();
        let minus: Vec<f64> = x0.iter().zip(u).map(|(x, u)| x - FD_EPS * u).collect();
        (f(&plus) - f(&minus)) / (2.0 * FD_EPS)
    };
    if x.len() <= 96 {
        let mut fd = vec![0.0f64; x.len()];
        for (i, fd) in fd.iter_mut().enumerate() {
            let mut e = vec![0.0; x.len()];
            e[i] = 1.0;
            *fd = fd_along(&e);
        }
        assert_close(what, grad, &fd, GRAD_REL, GRAD_ABS);
    } else {
        let mut r = rng(x.len() as u64);
        for k in 0..6 {
            let u = to64(&uniform(&mut r, x.len(), 1.0));
            let fd = fd_along(&u);
            let analytic = dot64(&to64(grad), &u);
            let abs = GRAD_ABS * (x.len() as f64).sqrt();
            assert!(
                relative_eq!(analytic, fd, epsilon = abs, max_relative = GRAD_REL),
                "{what} direction {k}: backward gives {analytic}, finite differences {fd}"
            );
        }
    }
}

// ----- naive f64 references ------------------------------------------------

/// `op(a) @ op(b)` with `op(a)` `[m, k]`, `op(b)` `[k, n]`.
#[allow(clippy::too_many_arguments)]
fn ref_matmul(
    a: &[f64],
    b: &[f64],
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
) -> Vec<f64> {
    let at = |i: usize, p: usize| if trans_a { a[p * m + i] } else { a[i * k + p] };
    let bt = |p: usize, j: usize| if trans_b { b[j * k + p] } else { b[p * n + j] };
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            for p in 0..k {
                c[i * n + j] += at(i, p) * bt(p, j);
            }
        }
    }
    c
}

fn ref_layer_norm(x: &[f64], gamma: &[f64], beta: &[f64], d: usize, eps: f64) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for (xr, yr) in x.chunks(d).zip(y.chunks_mut(d)) {
        let mean = xr.iter().sum::<f64>() / d as f64;
        let var = xr.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
        for j in 0..d {
            yr[j] = (xr[j] - mean) / (var + eps).sqrt() * gamma[j] + beta[j];
        }
    }
    y
}

/// Returns (context, probabilities before dropout).
fn ref_attention(
    qkv: &[f64],
    ids: &[u32],
    s: AttentionShape,
    dropout: Option<&Dropout>,
) -> (Vec<f64>, Vec<f64>) {
    let (l, hd, d) = (s.len, s.head_dim, s.dim());
    let mut ctx = vec![0.0; s.batch * l * d];
    let mut probs = vec![0.0; s.batch * s.heads * l * l];
    for b in 0..s.batch {
        for h in 0..s.heads {
            for i in 0..l {
                let keys: Vec<usize> = (0..=i).filter(|&j| ids[b * l + j] != 0).collect();
                if keys.is_empty() {
                    continue;
                }
                let q = |c: usize| qkv[(b * l + i) * 3 * d + h * hd + c];
                let k = |j: usize, c: usize| qkv[(b * l + j) * 3 * d + d + h * hd + c];
                let v = |j: usize, c: usize| qkv[(b * l + j) * 3 * d + 2 * d + h * hd + c];
                let scores: Vec<f64> = keys
                    .iter()
                    .map(|&j| (0..hd).map(|c| q(c) * k(j, c)).sum::<f64>() / (hd as f64).sqrt())
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                for (&j, s_j) in keys.iter().zip(&scores) {
                    let idx = ((b * s.heads + h) * l + i) * l + j;
                    let p = (s_j - max).exp() / z;
                    probs[idx] = p;
                    let f = dropout.map_or(1.0, |m| m.factor(idx as u32) as f64);
                    for c in 0..hd {
                        ctx[(b * l + i) * d + h * hd + c] += p * f * v(j, c);
                    }
                }
            }
        }
    }
    (ctx, probs)
}

/// Mean cross-entropy over non-zero targets and its analytic gradients
/// `(loss, dh, dtable)`.
fn ref_cross_entropy(
    h: &[f64],
    table: &[f64],
    targets: &[u32],
    dim: usize,
) -> (f64, Vec<f64>, Vec<f64>) {
    let vocab = table.len() / dim;
    let count = targets.iter().filter(|&&t| t != 0).count();
    let mut loss = 0.0;
    let mut dh = vec![0.0; h.len()];
    let mut dtable = vec![0.0; table.len()];
    for (r, &t) in targets.iter().enumerate() {
        if t == 0 {
            continue;
        }
        let hr = &h[r * dim..(r + 1) * dim];
        let z: Vec<f64> = (0..vocab)
            .map(|j| dot64(hr, &table[j * dim..(j + 1) * dim]))
            .collect();
        let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        loss += lse - z[t as usize];
        for j in 0..vocab {
            let g = ((z[j] - lse).exp() - if j == t as usize { 1.0 } else { 0.0 }) / count as f64;
            for c in 0..dim {
                dh[r * dim + c] += g * table[j * dim + c];
                dtable[j * dim + c] += g * hr[c];
            }
        }
    }
    let loss = if count == 0 { 0.0 } else { loss / count as f64 };
    (loss, dh, dtable)
}

/// Random key ids for `batch` sequences of `len`: left padding of random
/// length (sometimes none, sometimes all), then non-zero ids.
fn padded_ids(rng: &mut ChaCha8Rng, batch: usize, len: usize) -> Vec<u32> {
    let mut ids = Vec::with_capacity(batch * len);
    for _ in 0..batch {
        let pad = rng.random_range(0..=len);
        ids.extend((0..len).map(|i| if i < pad { 0 } else { rng.random_range(1..50) }));
    }
    ids
}

// ----- tensors ------------------------------------------------------------------

#[test]
fn tensor_handles_share_until_written() {
    let a = CpuTensor::new((0..6).map(|v| v as f32).collect(), &[2, 3]);
    let mut b = a.clone();
    b.data_mut()[0] = 10.0;
    assert_eq!(a.data()[0], 0.0, "writing a clone changed the original");
    assert_eq!(b.data()[0], 10.0);
    assert_eq!(a.dims2("test"), (2, 3));
    assert_eq!(a.view()[[1, 2]], 5.0);
    assert_eq!(BE.to_vec(&a), a.clone().into_vec());
    assert_eq!(BE.zeros(&[0, 4]).len(), 0);
    // Debug shows the shape and the first values only.
    let big = CpuTensor::zeros(&[1000, 1000]);
    assert!(format!("{big:?}").len() < 100);
    assert!(BE.name().starts_with("cpu ("));
}

#[test]
#[should_panic(expected = "tensor: 5 values do not fill shape [2, 3]")]
fn tensor_rejects_wrong_length() {
    CpuTensor::new(vec![0.0; 5], &[2, 3]);
}

// ----- elementwise --------------------------------------------------------

#[test]
fn elementwise_forward_matches_reference() {
    let mut r = rng(1);
    // 37x53 runs on one thread, 300x129 on rayon's pool.
    for shape in [[37usize, 53], [300, 129], [1, 1]] {
        let n = shape[0] * shape[1];
        let (a, b) = (uniform(&mut r, n, 2.0), uniform(&mut r, n, 2.0));
        let (ta, tb) = (t(&a, &shape), t(&b, &shape));

        let sum: Vec<f64> = a
            .iter()
            .zip(&b)
            .map(|(x, y)| *x as f64 + *y as f64)
            .collect();
        assert_close("add", BE.add(&ta, &tb).data(), &sum, FWD_REL, FWD_ABS);

        let mut acc = ta.clone();
        BE.add_assign(&mut acc, &tb);
        assert_close("add_assign", acc.data(), &sum, FWD_REL, FWD_ABS);
        assert_eq!(ta.data(), &a[..], "add_assign changed a shared buffer");

        let scaled: Vec<f64> = a.iter().map(|&x| x as f64 * -0.75).collect();
        let s = t(&[-0.75], &[1]);
        assert_close("scale", BE.scale(&ta, &s).data(), &scaled, FWD_REL, FWD_ABS);

        let y = BE.relu(&ta);
        let relu: Vec<f64> = a.iter().map(|&x| (x as f64).max(0.0)).collect();
        assert_close("relu", y.data(), &relu, FWD_REL, FWD_ABS);

        let mask = Dropout::new(0.3, 5, 2, 1);
        let drop: Vec<f64> = a
            .iter()
            .enumerate()
            .map(|(i, &x)| x as f64 * mask.factor(i as u32) as f64)
            .collect();
        assert_close(
            "dropout",
            BE.dropout(&ta, &mask).data(),
            &drop,
            FWD_REL,
            FWD_ABS,
        );
        assert_eq!(BE.shape(&BE.dropout(&ta, &mask)), shape);
    }
}

#[test]
fn elementwise_backward_matches_finite_differences() {
    let mut r = rng(2);
    let shape = [7, 9];
    let n = 63;
    // Keep ReLU inputs away from the kink so differences do not straddle it.
    let x: Vec<f32> = uniform(&mut r, n, 1.0)
        .into_iter()
        .map(|v| if v.abs() < 1e-2 { v + 0.05 } else { v })
        .collect();
    let dy = uniform(&mut r, n, 1.0);
    let (tx, tdy) = (t(&x, &shape), t(&dy, &shape));
    let dy64 = to64(&dy);

    let y = BE.relu(&tx);
    let dx = BE.relu_backward(&y, &tdy);
    check_grad("relu dx", &x, dx.data(), |x| {
        dot64(&dy64, &x.iter().map(|v| v.max(0.0)).collect::<Vec<_>>())
    });

    let s = t(&[1.7], &[1]);
    let dx = BE.scale(&tdy, &s);
    check_grad("scale dx", &x, dx.data(), |x| {
        dot64(
            &dy64,
            &x.iter().map(|v| v * 1.7f32 as f64).collect::<Vec<_>>(),
        )
    });

    let mask = Dropout::new(0.4, 11, 3, 7);
    let dx = BE.dropout(&tdy, &mask);
    check_grad("dropout dx", &x, dx.data(), |x| {
        let y: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v * mask.factor(i as u32) as f64)
            .collect();
        dot64(&dy64, &y)
    });
}

// ----- embedding ------------------------------------------------------------

#[test]
fn embedding_forward_and_backward() {
    let mut r = rng(3);
    let (vocab, dim) = (11, 5);
    let table = uniform(&mut r, vocab * dim, 1.0);
    // Repeated ids, padding (0) and the last row.
    let ids = [3u32, 0, 3, 10, 1, 0, 7, 3, 10];
    let n = ids.len();
    let ttable = t(&table, &[vocab, dim]);
    let tids = BE.ids(&ids);
    assert_eq!(BE.ids_host(&tids), ids);

    let y = BE.embedding(&ttable, &tids);
    assert_eq!(BE.shape(&y), [n, dim]);
    let expected: Vec<f64> = ids
        .iter()
        .flat_map(|&id| to64(&table[id as usize * dim..(id as usize + 1) * dim]))
        .collect();
    assert_close("embedding", y.data(), &expected, 0.0, 0.0);

    let dy = uniform(&mut r, n * dim, 1.0);
    let dy64 = to64(&dy);
    let gather = |table: &[f64]| -> Vec<f64> {
        ids.iter()
            .flat_map(|&id| table[id as usize * dim..(id as usize + 1) * dim].to_vec())
            .collect()
    };
    let dtable = BE.embedding_backward(&t(&dy, &[n, dim]), &tids, vocab, None);
    assert_eq!(BE.shape(&dtable), [vocab, dim]);
    check_grad("embedding dtable", &table, dtable.data(), |tb| {
        dot64(&dy64, &gather(tb))
    });

    // With padding_idx the padding row gets no gradient; the rest is unchanged.
    let padded = BE.embedding_backward(&t(&dy, &[n, dim]), &tids, vocab, Some(0));
    assert!(padded.data()[..dim].iter().all(|&g| g == 0.0));
    assert_eq!(&padded.data()[dim..], &dtable.data()[dim..]);
    assert!(dtable.data()[..dim].iter().any(|&g| g != 0.0));
}

#[test]
#[should_panic(expected = "embedding: id 11 is out of range")]
fn embedding_rejects_out_of_range_ids() {
    BE.embedding(&BE.zeros(&[11, 2]), &BE.ids(&[1, 11]));
}

// ----- layer norm -------------------------------------------------------------

fn layer_norm_case(seed: u64, n: usize, d: usize, offset: f32) {
    let mut r = rng(seed);
    let x: Vec<f32> = uniform(&mut r, n * d, 1.0)
        .iter()
        .map(|v| v + offset)
        .collect();
    let gamma: Vec<f32> = uniform(&mut r, d, 0.5).iter().map(|v| v + 1.0).collect();
    let beta = uniform(&mut r, d, 0.5);
    let eps = 1e-5;
    let (tx, tg, tb) = (t(&x, &[n, d]), t(&gamma, &[d]), t(&beta, &[d]));
    let (y, stats) = BE.layer_norm(&tx, &tg, &tb, eps);
    assert_eq!(BE.shape(&stats), [n, 2]);
    let expected = ref_layer_norm(&to64(&x), &to64(&gamma), &to64(&beta), d, eps as f64);
    // Rows shifted by `offset` lose log2(offset) bits of x itself in f32.
    let rel = FWD_REL * (1.0 + offset as f64);
    assert_close(
        "layer_norm",
        y.data(),
        &expected,
        rel,
        1e-5 * (1.0 + offset as f64),
    );
    for row in 0..n {
        let xr = to64(&x[row * d..(row + 1) * d]);
        let mean = xr.iter().sum::<f64>() / d as f64;
        let var = xr.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
        let st = &stats.data()[2 * row..2 * row + 2];
        assert_close("layer_norm mean", &st[..1], &[mean], rel, 1e-6);
        assert_close(
            "layer_norm rstd",
            &st[1..],
            &[1.0 / (var + eps as f64).sqrt()],
            rel,
            0.0,
        );
    }
    if offset != 0.0 {
        return;
    }

    let dy = uniform(&mut r, n * d, 1.0);
    let dy64 = to64(&dy);
    let (dx, dgamma, dbeta) = BE.layer_norm_backward(&t(&dy, &[n, d]), &tx, &tg, &stats);
    let (x64, g64, b64) = (to64(&x), to64(&gamma), to64(&beta));
    let eps = eps as f64;
    check_grad("layer_norm dx", &x, dx.data(), |x| {
        dot64(&dy64, &ref_layer_norm(x, &g64, &b64, d, eps))
    });
    check_grad("layer_norm dgamma", &gamma, dgamma.data(), |g| {
        dot64(&dy64, &ref_layer_norm(&x64, g, &b64, d, eps))
    });
    check_grad("layer_norm dbeta", &beta, dbeta.data(), |b| {
        dot64(&dy64, &ref_layer_norm(&x64, &g64, b, d, eps))
    });
}

#[test]
fn layer_norm_small_odd_sizes() {
    layer_norm_case(10, 5, 7, 0.0);
    layer_norm_case(11, 1, 3, 0.0);
    layer_norm_case(12, 1, 1, 0.0);
}

#[test]
fn layer_norm_large_on_rayon_pool() {
    // > PAR_MIN_ELEMS and several reduction blocks of rows.
    layer_norm_case(13, 700, 64, 0.0);
}

#[test]
fn layer_norm_rows_with_large_mean() {
    // A two-pass variance does not cancel catastrophically.
    layer_norm_case(14, 9, 33, 1000.0);
}

// ----- matmul, linear, sum_rows ---------------------------------------------

/// Checks `op(a) @ op(b)` against the reference, then the backward that the
/// autograd builds from `matmul` itself (`dA`, `dB` for each transpose case).
fn matmul_case(seed: u64, m: usize, k: usize, n: usize, trans_a: bool, trans_b: bool) {
    let mut r = rng(seed);
    let a = uniform(&mut r, m * k, 1.0);
    let b = uniform(&mut r, k * n, 1.0);
    let a_shape = if trans_a { [k, m] } else { [m, k] };
    let b_shape = if trans_b { [n, k] } else { [k, n] };
    let (ta, tb) = (t(&a, &a_shape), t(&b, &b_shape));
    let c = BE.matmul(&ta, &tb, trans_a, trans_b);
    assert_eq!(BE.shape(&c), [m, n]);
    let (a64, b64) = (to64(&a), to64(&b));
    let expected = ref_matmul(&a64, &b64, m, k, n, trans_a, trans_b);
    let what = format!("matmul {m}x{k}x{n} ta={trans_a} tb={trans_b}");
    assert_close(&what, c.data(), &expected, FWD_REL, FWD_ABS);

    let dc = uniform(&mut r, m * n, 1.0);
    let tdc = t(&dc, &[m, n]);
    let dc64 = to64(&dc);
    // C = op(A) op(B): d op(A) = dC op(B)^T, d op(B) = op(A)^T dC.
    let da = if trans_a {
        BE.matmul(&tb, &tdc, trans_b, true)
    } else {
        BE.matmul(&tdc, &tb, false, !trans_b)
    };
    let db = if trans_b {
        BE.matmul(&tdc, &ta, true, trans_a)
    } else {
        BE.matmul(&ta, &tdc, !trans_a, false)
    };
    assert_eq!(BE.shape(&da), a_shape);
    assert_eq!(BE.shape(&db), b_shape);
    check_grad(&format!("{what} dA"), &a, da.data(), |a| {
        dot64(&dc64, &ref_matmul(a, &b64, m, k, n, trans_a, trans_b))
    });
    check_grad(&format!("{what} dB"), &b, db.data(), |b| {
        dot64(&dc64, &ref_matmul(&a64, b, m, k, n, trans_a, trans_b))
    });
}

#[test]
fn matmul_all_transposes_odd_sizes() {
    for (i, &(ta, tb)) in [(false, false), (true, false), (false, true), (true, true)]
        .iter()
        .enumerate()
    {
        matmul_case(20 + i as u64, 5, 7, 3, ta, tb);
        matmul_case(30 + i as u64, 1, 1, 1, ta, tb);
        matmul_case(40 + i as u64, 1, 9, 4, ta, tb);
    }
}

#[test]
fn matmul_large_multithreaded() {
    // Big enough for matrixmultiply to use its thread pool.
    let (m, k, n) = (131, 67, 193);
    let mut r = rng(50);
    let (a, b) = (uniform(&mut r, m * k, 1.0), uniform(&mut r, k * n, 1.0));
    let c = BE.matmul(&t(&a, &[m, k]), &t(&b, &[n, k]), false, true);
    let expected = ref_matmul(&to64(&a), &to64(&b), m, k, n, false, true);
    assert_close("matmul large", c.data(), &expected, FWD_REL, 1e-5);
}

#[test]
fn linear_and_sum_rows() {
    let mut r = rng(60);
    let (n, fan_in, out) = (6, 5, 4);
    let x = uniform(&mut r, n * fan_in, 1.0);
    let w = uniform(&mut r, out * fan_in, 1.0);
    let bias = uniform(&mut r, out, 1.0);
    let (tx, tw, tbias) = (t(&x, &[n, fan_in]), t(&w, &[out, fan_in]), t(&bias, &[out]));
    let (x64, w64, bias64) = (to64(&x), to64(&w), to64(&bias));
    let reference = |x: &[f64], w: &[f64], b: &[f64]| -> Vec<f64> {
        let mut y = ref_matmul(x, w, n, fan_in, out, false, true);
        for (i, v) in y.iter_mut().enumerate() {
            *v += b[i % out];
        }
        y
    };
    let y = BE.linear(&tx, &tw, Some(&tbias));
    assert_close(
        "linear",
        y.data(),
        &reference(&x64, &w64, &bias64),
        FWD_REL,
        FWD_ABS,
    );
    let y0 = BE.linear(&tx, &tw, None);
    let zero = vec![0.0; out];
    assert_close(
        "linear no bias",
        y0.data(),
        &reference(&x64, &w64, &zero),
        FWD_REL,
        FWD_ABS,
    );

    // Backward as the autograd composes it.
    let dy = uniform(&mut r, n * out, 1.0);
    let (tdy, dy64) = (t(&dy, &[n, out]), to64(&dy));
    let dx = BE.matmul(&tdy, &tw, false, false);
    let dw = BE.matmul(&tdy, &tx, true, false);
    let dbias = BE.sum_rows(&tdy);
    check_grad("linear dx", &x, dx.data(), |x| {
        dot64(&dy64, &reference(x, &w64, &bias64))
    });
    check_grad("linear dw", &w, dw.data(), |w| {
        dot64(&dy64, &reference(&x64, w, &bias64))
    });
    check_grad("linear dbias", &bias, dbias.data(), |b| {
        dot64(&dy64, &reference(&x64, &w64, b))
    });
}

#[test]
fn sum_rows_matches_reference() {
    let mut r = rng(61);
    // One block, several blocks with a ragged last one, a single row.
    for (n, d) in [(3, 5), (1000, 37), (1, 4)] {
        let x = uniform(&mut r, n * d, 1.0);
        let mut expected = vec![0.0f64; d];
        for row in x.chunks(d) {
            for (e, &v) in expected.iter_mut().zip(row) {
                *e += v as f64;
            }
        }
        let s = BE.sum_rows(&t(&x, &[n, d]));
        assert_eq!(BE.shape(&s), [d]);
        assert_close("sum_rows", s.data(), &expected, 1e-5, 1e-5);
    }
}

#[test]
#[should_panic(expected = "matmul: inner sizes differ")]
fn matmul_rejects_mismatched_shapes() {
    BE.matmul(&BE.zeros(&[2, 3]), &BE.zeros(&[4, 2]), false, false);
}

// ----- attention -------------------------------------------------------------

fn attention_forward_case(seed: u64, s: AttentionShape, ids: &[u32], dropout: Option<&Dropout>) {
    let mut r = rng(seed);
    let rows = s.batch * s.len;
    let qkv = uniform(&mut r, rows * 3 * s.dim(), 1.5);
    let (ctx, probs) = BE.attention(&t(&qkv, &[rows, 3 * s.dim()]), &BE.ids(ids), s, dropout);
    assert_eq!(BE.shape(&ctx), [rows, s.dim()]);
    assert_eq!(BE.shape(&probs), [s.batch, s.heads, s.len, s.len]);
    let (ref_ctx, ref_probs) = ref_attention(&to64(&qkv), ids, s, dropout);
    assert_close(
        "attention probs",
        probs.data(),
        &ref_probs,
        FWD_REL,
        FWD_ABS,
    );
    assert_close("attention ctx", ctx.data(), &ref_ctx, FWD_REL, FWD_ABS);
    // Every row sums to 1, or is all zeros when its query sees no key.
    for (row_idx, row) in probs.data().chunks(s.len).enumerate() {
        let (b, i) = (row_idx / (s.heads * s.len), row_idx % s.len);
        let sum: f32 = row.iter().sum();
        let visible = (0..=i).any(|j| ids[b * s.len + j] != 0);
        let expected = if visible { 1.0 } else { 0.0 };
        assert!(
            (sum - expected).abs() < 1e-5,
            "probability row {row_idx} sums to {sum}"
        );
    }
}

#[test]
fn attention_forward_masks_and_padding() {
    let s = AttentionShape {
        batch: 5,
        len: 7,
        heads: 2,
        head_dim: 5,
    };
    let ids: Vec<u32> = [
        [3, 1, 4, 1, 5, 9, 2], // no padding
        [0, 0, 0, 0, 0, 0, 0], // all padding: every row fully masked
        [0, 0, 0, 0, 0, 0, 8], // a single real item
        [0, 0, 6, 2, 7, 1, 8], // left padding
        [4, 0, 2, 0, 3, 0, 1], // interior padding
    ]
    .concat();
    attention_forward_case(70, s, &ids, None);
    attention_forward_case(71, s, &ids, Some(&Dropout::new(0.3, 1, 2, 3)));
}

#[test]
fn attention_forward_len_one_and_fully_masked_batch() {
    let s = AttentionShape {
        batch: 3,
        len: 1,
        heads: 3,
        head_dim: 1,
    };
    attention_forward_case(72, s, &[5, 0, 1], None);
    let s = AttentionShape {
        batch: 2,
        len: 4,
        heads: 1,
        head_dim: 3,
    };
    let rows = 8;
    let qkv = vec![f32::MAX; rows * 9];
    let (ctx, probs) = BE.attention(&t(&qkv, &[rows, 9]), &BE.ids(&[0; 8]), s, None);
    assert!(ctx.data().iter().all(|&v| v == 0.0));
    assert!(probs.data().iter().all(|&v| v == 0.0));
}

#[test]
fn attention_large_on_rayon_pool() {
    let s = AttentionShape {
        batch: 40,
        len: 23,
        heads: 2,
        head_dim: 8,
    };
    let ids = padded_ids(&mut rng(73), s.batch, s.len);
    attention_forward_case(74, s, &ids, Some(&Dropout::new(0.2, 9, 9, 9)));
}

fn attention_backward_case(seed: u64, s: AttentionShape, ids: &[u32], dropout: Option<&Dropout>) {
    let mut r = rng(seed);
    let rows = s.batch * s.len;
    let qkv = uniform(&mut r, rows * 3 * s.dim(), 1.5);
    let dctx = uniform(&mut r, rows * s.dim(), 1.0);
    let tqkv = t(&qkv, &[rows, 3 * s.dim()]);
    let (_, probs) = BE.attention(&tqkv, &BE.ids(ids), s, dropout);
    let dqkv = BE.attention_backward(&t(&dctx, &[rows, s.dim()]), &tqkv, &probs, s, dropout);
    assert_eq!(BE.shape(&dqkv), [rows, 3 * s.dim()]);
    let dctx64 = to64(&dctx);
    check_grad("attention dqkv", &qkv, dqkv.data(), |qkv| {
        dot64(&dctx64, &ref_attention(qkv, ids, s, dropout).0)
    });
    // Queries that see no key pass no gradient to their q.
    for b in 0..s.batch {
        for i in 0..s.len {
            if (0..=i).all(|j| ids[b * s.len + j] == 0) {
                let row = &dqkv.data()[(b * s.len + i) * 3 * s.dim()..][..s.dim()];
                assert!(
                    row.iter().all(|&g| g == 0.0),
                    "masked query {b},{i} got gradient"
                );
            }
        }
    }
}

#[test]
fn attention_backward_matches_finite_differences() {
    let s = AttentionShape {
        batch: 3,
        len: 5,
        heads: 2,
        head_dim: 3,
    };
    let ids: Vec<u32> = [[2, 7, 1, 8, 2], [0, 0, 0, 0, 0], [0, 0, 3, 0, 5]].concat();
    attention_backward_case(80, s, &ids, None);
    attention_backward_case(81, s, &ids, Some(&Dropout::new(0.25, 4, 5, 6)));
    let single = AttentionShape {
        batch: 1,
        len: 1,
        heads: 1,
        head_dim: 2,
    };
    attention_backward_case(82, single, &[4], None);
}

// ----- cross entropy ------------------------------------------------------------

/// Random targets with `ignored` of them (about) set to 0.
fn targets(rng: &mut ChaCha8Rng, rows: usize, vocab: usize, ignored: f64) -> Vec<u32> {
    (0..rows)
        .map(|_| {
            if rng.random_bool(ignored) {
                0
            } else {
                rng.random_range(1..vocab as u32)
            }
        })
        .collect()
}

/// Checks loss and both gradients against the analytic f64 reference, for
/// the backend's chunking and for `chunk_rows`.
#[allow(clippy::too_many_arguments)]
fn cross_entropy_case(
    h: &[f32],
    table: &[f32],
    tg: &[u32],
    dim: usize,
    chunk_rows: usize,
    loss_rel: f64,
    grad_abs: f64,
) {
    let (rows, vocab) = (tg.len(), table.len() / dim);
    let (th, ttable, tids) = (t(h, &[rows, dim]), t(table, &[vocab, dim]), BE.ids(tg));
    let (loss, dh, dtable) = ref_cross_entropy(&to64(h), &to64(table), tg, dim);
    let what = format!("cross_entropy rows {rows} vocab {vocab} dim {dim} chunk {chunk_rows}");
    for ce in [
        BE.cross_entropy(&th, &ttable, &tids, true),
        cross_entropy_chunked(&th, &ttable, &tids, true, chunk_rows),
    ] {
        assert_eq!(ce.count, tg.iter().filter(|&&t| t != 0).count());
        assert_eq!(BE.shape(&ce.loss), [1]);
        assert_close(
            &format!("{what} loss"),
            ce.loss.data(),
            &[loss],
            loss_rel,
            1e-6,
        );
        let (ce_dh, ce_dtable) = (ce.dh.unwrap(), ce.dtable.unwrap());
        assert_eq!(BE.shape(&ce_dh), [rows, dim]);
        assert_eq!(BE.shape(&ce_dtable), [vocab, dim]);
        assert_close(&format!("{what} dh"), ce_dh.data(), &dh, 1e-4, grad_abs);
        assert_close(
            &format!("{what} dtable"),
            ce_dtable.data(),
            &dtable,
            1e-4,
            grad_abs,
        );
    }
    let no_grad = cross_entropy_chunked(&th, &ttable, &tids, false, chunk_rows);
    assert!(no_grad.dh.is_none() && no_grad.dtable.is_none());
    assert_close(
        &format!("{what} loss (no grad)"),
        no_grad.loss.data(),
        &[loss],
        loss_rel,
        1e-6,
    );
}

#[test]
fn cross_entropy_matches_reference_across_chunkings() {
    let mut r = rng(90);
    // rows x vocab never a multiple of the chunk; chunk 1 and chunk > rows too.
    for (rows, vocab, dim, chunk) in [(13, 17, 5, 3), (29, 31, 7, 4), (8, 5, 3, 1), (6, 9, 4, 100)]
    {
        let h = uniform(&mut r, rows * dim, 1.0);
        let table = uniform(&mut r, vocab * dim, 1.0);
        let tg = targets(&mut r, rows, vocab, 0.3);
        cross_entropy_case(&h, &table, &tg, dim, chunk, FWD_REL, 1e-6);
    }
}

#[test]
fn cross_entropy_one_real_target() {
    let mut r = rng(91);
    let (rows, vocab, dim) = (5, 7, 3);
    let h = uniform(&mut r, rows * dim, 1.0);
    let table = uniform(&mut r, vocab * dim, 1.0);
    cross_entropy_case(&h, &table, &[0, 0, 0, 6, 0], dim, 2, FWD_REL, 1e-6);
}

#[test]
fn cross_entropy_large_logits_stay_finite() {
    let mut r = rng(92);
    let (rows, vocab, dim) = (11, 23, 12);
    let h = uniform(&mut r, rows * dim, 60.0);
    let table = uniform(&mut r, vocab * dim, 60.0);
    let logits = ref_matmul(&to64(&h), &to64(&table), rows, dim, vocab, false, true);
    let largest = logits.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    assert!(largest > 1e4, "test logits reach only {largest}");
    let tg = targets(&mut r, rows, vocab, 0.2);
    // f32 logits of size 1e4 carry absolute errors ~1e-3, so the loss (also
    // ~1e3..1e4) is compared at rel 1e-5; softmax is then almost one-hot.
    cross_entropy_case(&h, &table, &tg, dim, 4, 1e-5, 1e-4);
}

#[test]
fn cross_entropy_all_targets_ignored() {
    let (rows, vocab, dim) = (4, 6, 3);
    let h = vec![1.0; rows * dim];
    let table = vec![0.5; vocab * dim];
    let ce = BE.cross_entropy(
        &t(&h, &[rows, dim]),
        &t(&table, &[vocab, dim]),
        &BE.ids(&[0; 4]),
        true,
    );
    assert_eq!(ce.count, 0);
    assert_eq!(ce.loss.data(), [0.0]);
    assert!(ce.dh.unwrap().data().iter().all(|&g| g == 0.0));
    assert!(ce.dtable.unwrap().data().iter().all(|&g| g == 0.0));
}

#[test]
fn cross_entropy_backward_matches_finite_differences() {
    let mut r = rng(93);
    let (rows, vocab, dim) = (6, 9, 4);
    let h = uniform(&mut r, rows * dim, 1.0);
    let table = uniform(&mut r, vocab * dim, 1.0);
    let tg = [3, 0, 8, 1, 0, 5];
    let ce = cross_entropy_chunked(
        &t(&h, &[rows, dim]),
        &t(&table, &[vocab, dim]),
        &BE.ids(&tg),
        true,
        2,
    );
    let (h64, table64) = (to64(&h), to64(&table));
    check_grad("cross_entropy dh", &h, ce.dh.unwrap().data(), |h| {
        ref_cross_entropy(h, &table64, &tg, dim).0
    });
    check_grad(
        "cross_entropy dtable",
        &table,
        ce.dtable.unwrap().data(),
        |tb| ref_cross_entropy(&h64, tb, &tg, dim).0,
    );
}

#[test]
fn cross_entropy_chunk_rows_bounded_by_buffer() {
    for vocab in [1, 2, 17, 9725, 40_295, 1 << 20, 1 << 30] {
        let rows = ce_chunk_rows(vocab);
        assert!(rows >= 1);
        assert!(
            rows == 1 || rows * vocab * 4 <= CE_BUFFER_BYTES,
            "vocab {vocab}: {rows} rows"
        );
        assert!(rows < 128 || rows & 127 == 0, "vocab {vocab}: {rows} rows");
    }
    assert_eq!(ce_chunk_rows(9725), 128);
}

// ----- adam -----------------------------------------------------------------------

#[test]
fn adam_first_step_moves_by_lr_times_sign() {
    // Step 1 from zero moments: m = (1-b1) g, v = (1-b2) g^2, so
    // m_hat / (sqrt(v_hat) + eps) = g / (|g| + eps) ~ sign(g).
    let hp = AdamStep {
        lr: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        step: 1,
    };
    let mut p = t(&[1.0, 1.0, 1.0], &[3]);
    let (mut m, mut v) = (BE.zeros(&[3]), BE.zeros(&[3]));
    BE.adam(&mut p, &t(&[0.5, -2.0, 0.0], &[3]), &mut m, &mut v, &hp);
    assert_close("adam step 1", p.data(), &[0.99, 1.01, 1.0], 1e-6, 1e-7);
}

fn adam_case(seed: u64, hp0: AdamStep, n: usize, steps: u64) {
    let mut r = rng(seed);
    let p0 = uniform(&mut r, n, 1.0);
    let mut p = t(&p0, &[n]);
    let (mut m, mut v) = (BE.zeros(&[n]), BE.zeros(&[n]));
    let mut p64 = to64(&p0);
    let (mut m64, mut v64) = (vec![0.0f64; n], vec![0.0f64; n]);
    let (b1, b2, lr, eps) = (hp0.beta1, hp0.beta2, hp0.lr, hp0.eps);
    // Largest |g| seen per element: the lerp `m + w (g - m)` cancels, so
    // m's f32 error scales with |g|, not with |m|.
    let mut g_max = vec![0.0f64; n];
    for step in 1..=steps {
        // Gradients of mixed magnitude, some exactly 0.
        let g: Vec<f32> = uniform(&mut r, n, 1.0)
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                if i % 7 == 0 {
                    0.0
                } else {
                    x * 10f32.powi(i as i32 % 5 - 2)
                }
            })
            .collect();
        let hp = AdamStep { step, ..hp0 };
        BE.adam(&mut p, &t(&g, &[n]), &mut m, &mut v, &hp);
        let (bc1, bc2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
        for i in 0..n {
            let g = g[i] as f64;
            g_max[i] = g_max[i].max(g.abs());
            m64[i] += (1.0 - b1) * (g - m64[i]);
            v64[i] = b2 * v64[i] + (1.0 - b2) * g * g;
            let denom = v64[i].sqrt() / bc2.sqrt() + eps;
            p64[i] -= lr / bc1 * m64[i] / denom;
        }
        for i in 0..n {
            let (pm, mm, vm) = (p.data()[i] as f64, m.data()[i] as f64, v.data()[i] as f64);
            assert!(
                (mm - m64[i]).abs() <= 1e-5 * m64[i].abs() + 2e-6 * g_max[i],
                "adam step {step} m[{i}]: got {mm}, expected {}",
                m64[i]
            );
            assert!(
                relative_eq!(vm, v64[i], epsilon = 1e-12, max_relative = 1e-5),
                "adam step {step} v[{i}]: got {vm}, expected {}",
                v64[i]
            );
            assert!(
                relative_eq!(pm, p64[i], epsilon = 1e-7, max_relative = 1e-5),
                "adam step {step} param[{i}]: got {pm}, expected {}",
                p64[i]
            );
        }
    }
}

#[test]
fn adam_matches_f64_reference_over_steps() {
    let hp = AdamStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        step: 1,
    };
    adam_case(100, hp, 45, 6);
    // Large enough for the rayon path.
    adam_case(101, hp, 70_001, 3);
    // beta1 < 0.5 takes lerp's other branch.
    adam_case(
        102,
        AdamStep {
            beta1: 0.3,
            lr: 0.05,
            ..hp
        },
        45,
        4,
    );
}

// ----- determinism ---------------------------------------------------------------

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

// ----- properties over shapes ------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn prop_matmul(m in 1usize..12, k in 1usize..12, n in 1usize..12,
                   ta: bool, tb: bool, seed: u64) {
        matmul_case(seed, m, k, n, ta, tb);
    }

    #[test]
    fn prop_layer_norm(n in 1usize..9, d in 1usize..20, seed: u64) {
        layer_norm_case(seed, n, d, 0.0);
    }

    #[test]
    fn prop_attention(batch in 1usize..4, len in 1usize..7, heads in 1usize..3,
                      head_dim in 1usize..5, p in 0.0f32..0.5, seed: u64) {
        let s = AttentionShape { batch, len, heads, head_dim };
        let ids = padded_ids(&mut rng(seed), batch, len);
        let drop = Dropout::new(p, seed, 1, 2);
        attention_forward_case(seed, s, &ids, Some(&drop));
        attention_backward_case(seed, s, &ids, Some(&drop));
    }

    #[test]
    fn prop_cross_entropy(rows in 1usize..20, vocab in 2usize..30, dim in 1usize..9,
                          chunk in 1usize..8, ignored in 0.0f64..1.0, seed: u64) {
        let mut r = rng(seed);
        let h = uniform(&mut r, rows * dim, 2.0);
        let table = uniform(&mut r, vocab * dim, 2.0);
        let tg = targets(&mut r, rows, vocab, ignored);
        cross_entropy_case(&h, &table, &tg, dim, chunk, FWD_REL, 1e-6);
    }
}
