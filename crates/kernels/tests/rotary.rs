//! The rotary family: the CPU kernel against an f64 reference, its backward
//! against finite differences, the properties the model relies on (scores
//! depend on positions only through their difference; the backward undoes
//! the forward), then the WGSL kernel against the CPU.

mod common;

use common::{BE, FWD, check_grad, dot64, rng, t, to64, uniform};
use sasrec_kernels::rotary::{ROTARY_BASE, rotary_table};
use sasrec_kernels::testing::{BackendPair, Tol, assert_close};
use sasrec_kernels::{AttentionShape, Backend};

fn shape(batch: usize, len: usize, heads: usize, head_dim: usize) -> AttentionShape {
    AttentionShape {
        batch,
        len,
        heads,
        head_dim,
    }
}

fn table_of(s: AttentionShape) -> sasrec_kernels::cpu::CpuTensor {
    t(&rotary_table(s.len, s.head_dim), &[s.len, s.head_dim])
}

/// The forward from the definition, in f64 with its own angles.
fn ref_rotary(x: &[f64], s: AttentionShape) -> Vec<f64> {
    let (dim, hd) = (s.dim(), s.head_dim);
    let half = hd / 2;
    let mut y = x.to_vec();
    for row in 0..s.batch * s.len {
        let p = (row % s.len) as f64;
        for part in 0..2 {
            for h in 0..s.heads {
                let base = row * 3 * dim + part * dim + h * hd;
                for i in 0..half {
                    let angle = p / ROTARY_BASE.powf(2.0 * i as f64 / hd as f64);
                    let (a, b) = (x[base + i], x[base + i + half]);
                    y[base + i] = a * angle.cos() - b * angle.sin();
                    y[base + i + half] = a * angle.sin() + b * angle.cos();
                }
            }
        }
    }
    y
}

fn rotary_case(seed: u64, s: AttentionShape) {
    let mut r = rng(seed);
    let n = s.batch * s.len * 3 * s.dim();
    let x = uniform(&mut r, n, 2.0);
    let table = table_of(s);
    let qkv = t(&x, &[s.batch * s.len, 3 * s.dim()]);
    let y = BE.rotary(&qkv, &table, s);
    let x64 = to64(&x);
    assert_close("rotary", y.data(), &ref_rotary(&x64, s), FWD);

    let dy = uniform(&mut r, n, 1.0);
    let dy64 = to64(&dy);
    let dx = BE.rotary_backward(&t(&dy, qkv.shape()), &table, s);
    check_grad("rotary dqkv", &x, dx.data(), |x| {
        dot64(&dy64, &ref_rotary(x, s))
    });
    // A rotation's transpose is its inverse.
    let back = BE.rotary_backward(&y, &table, s);
    assert_close("rotary backward of forward", back.data(), &x, FWD);
}

#[test]
fn rotary_small_and_on_rayon_pool() {
    rotary_case(1, shape(1, 1, 1, 2));
    rotary_case(2, shape(3, 7, 2, 4));
    // > PAR_MIN_ELEMS elements and positions past 2 pi for every pair.
    rotary_case(3, shape(4, 200, 2, 32));
}

#[test]
fn scores_depend_on_positions_only_through_their_difference() {
    // Every row holds the same query and key; after the turn, the score of
    // the query at p and the key at s depends on p - s alone.
    let s = shape(1, 60, 2, 8);
    let dim = s.dim();
    let row = uniform(&mut rng(4), 3 * dim, 1.0);
    let x: Vec<f32> = (0..s.len).flat_map(|_| row.clone()).collect();
    let y = BE.rotary(&t(&x, &[s.len, 3 * dim]), &table_of(s), s);
    let y = y.data();
    let score = |p: usize, k: usize, head: usize| -> f64 {
        let cols = head * s.head_dim..(head + 1) * s.head_dim;
        let q = &y[p * 3 * dim..][cols.clone()];
        let key = &y[k * 3 * dim + dim..][cols];
        q.iter().zip(key).map(|(&a, &b)| a as f64 * b as f64).sum()
    };
    for head in 0..s.heads {
        for offset in [0, 1, 3, 17] {
            let first = score(offset, 0, head);
            for p in offset..s.len {
                let got = score(p, p - offset, head);
                assert!(
                    (got - first).abs() <= 1e-4 * (1.0 + first.abs()),
                    "head {head}, offset {offset}: score at position {p} is {got}, at {offset} {first}"
                );
            }
        }
    }
    // Position 0 is not turned, and the values never are.
    assert_eq!(&y[..2 * dim], &row[..2 * dim]);
    for p in 0..s.len {
        assert_eq!(
            &y[p * 3 * dim + 2 * dim..(p + 1) * 3 * dim],
            &row[2 * dim..]
        );
    }
}

#[test]
fn the_table_holds_cosines_then_sines() {
    let table = rotary_table(3, 4);
    // Position 0: cos 0 = 1, sin 0 = 0.
    assert_eq!(&table[..4], &[1.0, 1.0, 0.0, 0.0]);
    // Position 2, pair 1: theta = 10000^(-1/2) = 0.01.
    assert_close("cos", &[table[9]], &[(0.02f64).cos()], Tol::new(1e-7, 0.0));
    assert_close("sin", &[table[11]], &[(0.02f64).sin()], Tol::new(1e-7, 0.0));
}

#[test]
#[should_panic(expected = "head_dim must be even to pair columns")]
fn an_odd_head_width_is_refused() {
    let s = shape(1, 2, 1, 3);
    let table = t(&[0.0; 6], &[2, 3]);
    BE.rotary(&t(&[0.0; 18], &[2, 9]), &table, s);
}

#[test]
#[should_panic(expected = "the table must have shape [len, head_dim] = [4, 2]")]
fn a_table_of_another_length_is_refused() {
    let s = shape(1, 4, 1, 2);
    BE.rotary(&t(&[0.0; 24], &[4, 6]), &table_of(shape(1, 3, 1, 2)), s);
}

/// Forward and backward of random values of shape `s` on both backends.
fn gpu_matches_cpu_at(p: &BackendPair, r: &mut rand_chacha::ChaCha8Rng, s: AttentionShape) {
    let rows = s.batch * s.len;
    let qkv_shape = [rows, 3 * s.dim()];
    let n = rows * 3 * s.dim();
    let table = rotary_table(s.len, s.head_dim);
    let (ct, gt) = p.tensor(&table, &[s.len, s.head_dim]);
    let (cx, gx) = p.tensor(&uniform(r, n, 2.0), &qkv_shape);
    let (cdy, gdy) = p.tensor(&uniform(r, n, 1.0), &qkv_shape);
    let tol = Tol::new(1e-5, 1e-6);
    p.check(
        "rotary",
        &p.cpu.rotary(&cx, &ct, s),
        &p.gpu.rotary(&gx, &gt, s),
        tol,
    );
    p.check(
        "rotary backward",
        &p.cpu.rotary_backward(&cdy, &ct, s),
        &p.gpu.rotary_backward(&gdy, &gt, s),
        tol,
    );
}

#[test]
fn gpu_matches_cpu() {
    let Some(p) = BackendPair::new() else { return };
    let mut r = rng(5);
    // One element, past one 256-wide workgroup, the model's sizes.
    for s in [shape(1, 1, 1, 2), shape(3, 7, 2, 4), shape(8, 50, 2, 32)] {
        gpu_matches_cpu_at(&p, &mut r, s);
    }
}

#[test]
fn gpu_rotary_chunked_across_small_bindings() {
    // 4 KiB bindings hold at most 1024 floats, less the alignment slack:
    // rows of 3 * 16 floats go about 20 to a chunk, so chunks start inside
    // sequences of 9 and the positions must carry over.
    let Some(p) = BackendPair::narrow(4096) else {
        return;
    };
    gpu_matches_cpu_at(&p, &mut rng(6), shape(19, 9, 2, 8));
}
