//! Helpers shared by the kernel tests: seeded inputs, f64 arithmetic for
//! the plain references, and the finite-difference check of a backward.
//!
//! Tolerances (why):
//! - Forwards run in f32 and are compared with the f64 reference evaluated
//!   on the same f32 inputs. f32 rounding is ~6e-8 relative per operation
//!   and our sums have at most a few hundred terms, so `rel 1e-5` (plus an
//!   absolute floor of `1e-6` for values that cancel to ~0) leaves 10x margin.
//! - Backward checks (`testing::check_gradient`) differentiate the *f64
//!   reference* forward with central differences (`eps 1e-5`: truncation
//!   error ~eps^2 ~1e-10, rounding ~1e-16/eps ~1e-11, both far below f32
//!   noise), contracted with a random
//!   upstream gradient `dy` (the "mid-graph" form: `d/dx <dy, f(x)>`), so a
//!   backward that drops or mishandles its incoming gradient fails. The
//!   backend's backward runs in f32, hence `rel 1e-3, abs 1e-5`: f32 error
//!   in a sum of <= 1e3 terms stays below 1e-4 relative. The forward the
//!   differences come from is the one the backend matches (checked in the
//!   same file). Small inputs are checked coordinate by coordinate, large
//!   ones along random directions.
//! - GPU kernels are compared with the CPU backend; each comparison states
//!   its tolerance and docs/kernels.md explains it.
//! - `tests/cpu_chain.rs` checks the ops composed into a small SASRec-like
//!   graph with finite differences of the backend itself in f32.

#![allow(dead_code)] // each test file uses its own subset

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sasrec_kernels::cpu::CpuTensor;
use sasrec_kernels::testing::{Along, Tol, check_gradient};
use sasrec_kernels::{Backend, CpuBackend};

pub const BE: CpuBackend = CpuBackend;

/// Tolerance of an f32 forward against its f64 reference.
pub const FWD: Tol = Tol::new(1e-5, 1e-6);
const FD_EPS: f64 = 1e-5;
/// Tolerance of an f32 backward against central differences of the f64 reference.
pub const GRAD: Tol = Tol::new(1e-3, 1e-5);

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `n` values uniform in `[-scale, scale)`.
pub fn uniform(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

pub fn to64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

pub fn dot64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn t(data: &[f32], shape: &[usize]) -> CpuTensor {
    BE.tensor(data, shape)
}

/// Checks `grad` (from the backend, f32) against central differences of the
/// f64 scalar function `f` at `x` ([`check_gradient`]): per coordinate for
/// small inputs, along six random directions otherwise, where the absolute
/// tolerance grows as the rounding of a sum of `x.len()` terms (sqrt).
#[track_caller]
pub fn check_grad(what: &str, x: &[f32], grad: &[f32], f: impl Fn(&[f64]) -> f64) {
    if x.len() <= 96 {
        check_gradient(what, x, grad, Along::Coordinates, FD_EPS, GRAD, f);
    } else {
        let mut r = rng(x.len() as u64);
        let directions: Vec<Vec<f32>> = (0..6).map(|_| uniform(&mut r, x.len(), 1.0)).collect();
        let tol = Tol::new(GRAD.rel, GRAD.abs * (x.len() as f64).sqrt());
        check_gradient(
            what,
            x,
            grad,
            Along::Directions(&directions),
            FD_EPS,
            tol,
            f,
        );
    }
}

/// Random key ids for `batch` sequences of `len`: left padding of random
/// length (sometimes none, sometimes all), then non-zero ids.
pub fn padded_ids(rng: &mut ChaCha8Rng, batch: usize, len: usize) -> Vec<u32> {
    let mut ids = Vec::with_capacity(batch * len);
    for _ in 0..batch {
        let pad = rng.random_range(0..=len);
        ids.extend((0..len).map(|i| if i < pad { 0 } else { rng.random_range(1..50) }));
    }
    ids
}

/// `op(a) @ op(b)` with `op(a)` `[m, k]`, `op(b)` `[k, n]`.
#[allow(clippy::too_many_arguments)]
pub fn ref_matmul(
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

/// Random targets with `ignored` of them (about) set to 0.
pub fn targets(rng: &mut ChaCha8Rng, rows: usize, vocab: usize, ignored: f64) -> Vec<u32> {
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
