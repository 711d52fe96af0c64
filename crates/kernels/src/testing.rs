//! Checking kernels the way this crate's own tests do: values compared with a
//! stated tolerance ([`Tol`], [`assert_close`]) and, with the `gpu` feature,
//! every GPU result compared with the CPU reference on the same inputs
//! ([`BackendPair`]).
//!
//! ```
//! use sasrec_kernels::testing::{Tol, assert_close};
//! // Three roundings of terms of size 1: well inside rel 1e-6.
//! assert_close("sum", &[0.1 + 0.2 + 0.3], &[0.6f64], Tol::new(1e-6, 0.0));
//! ```
//!
//! A GPU kernel of your own can run on this crate's buffers
//! ([`crate::WgpuBackend::record`], [`crate::gpu::GpuTensor::buffer`]) and be
//! checked against a CPU computation with [`BackendPair::check`]; see
//! `tests/user_kernel.rs`.

use approx::relative_eq;

/// A tolerance: a value passes when `|actual - expected| <= abs` or
/// `<= rel * max(|actual|, |expected|)` (approx's `relative_eq`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tol {
    /// Relative tolerance.
    pub rel: f64,
    /// Absolute tolerance.
    pub abs: f64,
}

impl Tol {
    /// Equality (one correctly rounded IEEE operation on both sides).
    pub const EXACT: Tol = Tol { rel: 0.0, abs: 0.0 };

    /// `rel` relative or `abs` absolute.
    pub const fn new(rel: f64, abs: f64) -> Self {
        Tol { rel, abs }
    }
}

/// Asserts that every `actual[i]` is finite and within `tol` of
/// `expected[i]` (an `f32` result of another backend, or an `f64`
/// reference). On failure, panics naming `what`, how many values failed and
/// the worst one.
#[track_caller]
pub fn assert_close<E: Copy + Into<f64>>(what: &str, actual: &[f32], expected: &[E], tol: Tol) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "{what}: {} values, expected {}",
        actual.len(),
        expected.len()
    );
    let mut worst: Option<(usize, f64)> = None;
    let mut failures = 0;
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let (a, e) = (f64::from(a), e.into());
        let ok = a.is_finite() && relative_eq!(a, e, epsilon = tol.abs, max_relative = tol.rel);
        if !ok {
            failures += 1;
            let err = if a.is_finite() {
                (a - e).abs()
            } else {
                f64::INFINITY
            };
            if worst.is_none_or(|(_, w)| err > w) {
                worst = Some((i, err));
            }
        }
    }
    if let Some((i, err)) = worst {
        panic!(
            "{what}: {failures} of {} values outside {tol:?}; worst at [{i}]: got {}, expected {} (|diff| {err:e})",
            actual.len(),
            actual[i],
            expected[i].into()
        );
    }
}

/// Asserts that `actual` has its NaN and infinite values exactly where
/// `expected` has them (NaN for NaN, `+inf` for `+inf`, `-inf` for `-inf`)
/// and that its finite values are within `tol` of `expected`'s: for checking
/// that non-finite inputs propagate the same way on two backends.
#[track_caller]
pub fn assert_close_with_non_finite(what: &str, actual: &[f32], expected: &[f32], tol: Tol) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "{what}: {} values, expected {}",
        actual.len(),
        expected.len()
    );
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let same_kind = if e.is_finite() {
            a.is_finite()
        } else {
            a.is_nan() == e.is_nan() && (e.is_nan() || a == e)
        };
        assert!(same_kind, "{what}[{i}]: got {a}, expected {e}");
    }
    let finite: Vec<usize> = (0..actual.len())
        .filter(|&i| expected[i].is_finite())
        .collect();
    let pick = |v: &[f32]| finite.iter().map(|&i| v[i]).collect::<Vec<f32>>();
    assert_close(what, &pick(actual), &pick(expected), tol);
}

#[cfg(feature = "gpu")]
pub use pair::BackendPair;

#[cfg(feature = "gpu")]
mod pair {
    use super::{Tol, assert_close, assert_close_with_non_finite};
    use crate::cpu::{CpuIds, CpuTensor};
    use crate::gpu::{self, GpuIds, GpuOptions, GpuTensor, WgpuBackend};
    use crate::{Backend, CpuBackend};

    /// The CPU reference and a GPU backend side by side: the same values
    /// uploaded to both, and results compared.
    #[derive(Clone, Debug)]
    pub struct BackendPair {
        /// The reference.
        pub cpu: CpuBackend,
        /// The backend under test.
        pub gpu: WgpuBackend,
    }

    impl BackendPair {
        /// The CPU and the shared test GPU backend ([`gpu::test_backend`]),
        /// or `None` (the test skips) when no adapter is available.
        pub fn new() -> Option<Self> {
            Some(BackendPair {
                cpu: CpuBackend,
                gpu: gpu::test_backend()?,
            })
        }

        /// The CPU and a new GPU backend opened with `options`
        /// ([`gpu::test_backend_with`]), e.g. with tiny storage bindings.
        pub fn with(options: GpuOptions) -> Option<Self> {
            Some(BackendPair {
                cpu: CpuBackend,
                gpu: gpu::test_backend_with(options)?,
            })
        }

        /// The CPU and a GPU backend whose storage bindings hold at most
        /// `bytes`, to make the ops chunk their operands.
        pub fn narrow(bytes: u64) -> Option<Self> {
            Self::with(GpuOptions {
                max_binding_bytes: Some(bytes),
                ..GpuOptions::default()
            })
        }

        /// `data` as a tensor of `shape` on both backends.
        pub fn tensor(&self, data: &[f32], shape: &[usize]) -> (CpuTensor, GpuTensor) {
            (self.cpu.tensor(data, shape), self.gpu.tensor(data, shape))
        }

        /// `ids` on both backends.
        pub fn ids(&self, ids: &[u32]) -> (CpuIds, GpuIds) {
            (self.cpu.ids(ids), self.gpu.ids(ids))
        }

        /// Asserts that the GPU result has the CPU result's shape and values
        /// within `tol` (see [`assert_close`]).
        #[track_caller]
        pub fn check(&self, what: &str, cpu: &CpuTensor, gpu: &GpuTensor, tol: Tol) {
            assert_eq!(
                self.gpu.shape(gpu),
                self.cpu.shape(cpu),
                "{what}: shapes differ"
            );
            assert_close(what, &self.gpu.to_vec(gpu), cpu.data(), tol);
        }

        /// Like [`BackendPair::check`], for results that may hold NaN or
        /// infinite values: they must be in the same places on both
        /// backends (see [`assert_close_with_non_finite`]).
        #[track_caller]
        pub fn check_with_non_finite(
            &self,
            what: &str,
            cpu: &CpuTensor,
            gpu: &GpuTensor,
            tol: Tol,
        ) {
            assert_eq!(
                self.gpu.shape(gpu),
                self.cpu.shape(cpu),
                "{what}: shapes differ"
            );
            assert_close_with_non_finite(what, &self.gpu.to_vec(gpu), cpu.data(), tol);
        }
    }
}
