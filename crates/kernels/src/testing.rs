//! Checking kernels the way this crate's own tests do: values compared with a
//! stated tolerance ([`Tol`], [`assert_close`]), gradients compared with
//! central finite differences ([`check_gradient`]) and, with the `gpu`
//! feature, every GPU result compared with the CPU reference on the same
//! inputs ([`BackendPair`]). The autograd and model crates' tests use the
//! same helpers.
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

/// A tolerance: how far a value may be from the expected one, `rel`
/// relative and `abs` absolute, combined by `rule`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tol {
    /// Relative tolerance.
    pub rel: f64,
    /// Absolute tolerance.
    pub abs: f64,
    /// How `rel` and `abs` combine.
    pub rule: TolRule,
}

/// How a [`Tol`]'s relative and absolute bounds combine, for `actual` `a`
/// and `expected` `e`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TolRule {
    /// `|a - e| <= abs` or `|a - e| <= rel * max(|a|, |e|)` (approx's
    /// `relative_eq`): [`Tol::new`].
    AbsOrRel,
    /// `|a - e| <= abs + rel * |e|` (NumPy's `isclose`, PyTorch's
    /// `allclose`): [`Tol::allclose`].
    AbsPlusRelOfExpected,
    /// `|a - e| <= abs + rel * max(|a|, |e|)`: [`Tol::abs_plus_rel`].
    AbsPlusRel,
}

impl Tol {
    /// Equality (one correctly rounded IEEE operation on both sides).
    pub const EXACT: Tol = Tol::new(0.0, 0.0);

    /// `rel` relative or `abs` absolute ([`TolRule::AbsOrRel`]).
    pub const fn new(rel: f64, abs: f64) -> Self {
        Tol {
            rel,
            abs,
            rule: TolRule::AbsOrRel,
        }
    }

    /// `abs` plus `rel` relative to the expected value, as PyTorch's
    /// `allclose(actual, expected, rtol=rel, atol=abs)` ([`TolRule::AbsPlusRelOfExpected`]).
    pub const fn allclose(rel: f64, abs: f64) -> Self {
        Tol {
            rel,
            abs,
            rule: TolRule::AbsPlusRelOfExpected,
        }
    }

    /// `abs` plus `rel` relative to the larger value ([`TolRule::AbsPlusRel`]).
    pub const fn abs_plus_rel(rel: f64, abs: f64) -> Self {
        Tol {
            rel,
            abs,
            rule: TolRule::AbsPlusRel,
        }
    }

    /// Whether `actual` is within this tolerance of `expected`.
    pub fn admits(&self, actual: f64, expected: f64) -> bool {
        let diff = (actual - expected).abs();
        match self.rule {
            TolRule::AbsOrRel => {
                relative_eq!(
                    actual,
                    expected,
                    epsilon = self.abs,
                    max_relative = self.rel
                )
            }
            TolRule::AbsPlusRelOfExpected => diff <= self.abs + self.rel * expected.abs(),
            TolRule::AbsPlusRel => diff <= self.abs + self.rel * actual.abs().max(expected.abs()),
        }
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
        let ok = a.is_finite() && tol.admits(a, e);
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

/// Where [`check_gradient`] compares a gradient with finite differences.
#[derive(Clone, Copy, Debug)]
pub enum Along<'a> {
    /// Every coordinate: each value of the gradient against the central
    /// difference along its coordinate, as [`assert_close`] compares. Two
    /// evaluations per value: for small inputs.
    Coordinates,
    /// These directions `u`: `<grad, u>` against the central difference
    /// along `u`. A few random directions check a large input.
    Directions(&'a [Vec<f32>]),
}

/// Checks `grad`, the gradient at `x` of the scalar function `f` as the code
/// under test computed it (a backward op, a tape), against central
/// differences `(f(x + eps u) - f(x - eps u)) / (2 eps)` along each `u` of
/// `along`, within `tol`. Panics naming `what` (and the direction) on failure.
///
/// `f` takes the point in f64 (`x`'s values exactly, moved by `eps u`): an
/// f64 reference of the forward, or the f32 code itself, rounding the point
/// to f32. The step goes with the precision of `f`: about `1e-5` for an f64
/// `f` (truncation ~eps^2, rounding ~1e-16 / eps), `1e-2` for an f32 one
/// (rounding ~1e-7 / eps). Checking `d/dx <dy, y(x)>` with a random upstream
/// `dy`, or the op followed by more ops, rather than `y` itself ("mid-graph")
/// makes a backward that drops or mishandles its incoming gradient fail.
///
/// ```
/// use sasrec_kernels::testing::{Along, Tol, check_gradient};
/// // d/dx sum(x^3) = 3 x^2.
/// let x = [0.5f32, -1.0, 2.0];
/// let grad: Vec<f32> = x.iter().map(|v| 3.0 * v * v).collect();
/// let f = |x: &[f64]| x.iter().map(|v| v * v * v).sum::<f64>();
/// check_gradient("cube", &x, &grad, Along::Coordinates, 1e-5, Tol::new(1e-6, 1e-8), f);
/// ```
#[track_caller]
pub fn check_gradient(
    what: &str,
    x: &[f32],
    grad: &[f32],
    along: Along<'_>,
    eps: f64,
    tol: Tol,
    f: impl Fn(&[f64]) -> f64,
) {
    assert_eq!(x.len(), grad.len(), "{what}: gradient length");
    let x0: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let fd_along = |u: &[f64]| {
        let plus: Vec<f64> = x0.iter().zip(u).map(|(x, u)| x + eps * u).collect();
        let minus: Vec<f64> = x0.iter().zip(u).map(|(x, u)| x - eps * u).collect();
        (f(&plus) - f(&minus)) / (2.0 * eps)
    };
    match along {
        Along::Coordinates => {
            let mut fd = vec![0.0f64; x.len()];
            for (i, fd) in fd.iter_mut().enumerate() {
                let mut e = vec![0.0; x.len()];
                e[i] = 1.0;
                *fd = fd_along(&e);
            }
            assert_close(what, grad, &fd, tol);
        }
        Along::Directions(directions) => {
            for (k, u) in directions.iter().enumerate() {
                assert_eq!(u.len(), x.len(), "{what}: direction {k} length");
                let u: Vec<f64> = u.iter().map(|&v| f64::from(v)).collect();
                let fd = fd_along(&u);
                let analytic: f64 = grad.iter().zip(&u).map(|(&g, u)| f64::from(g) * u).sum();
                assert!(
                    tol.admits(analytic, fd),
                    "{what} direction {k}: backward gives {analytic}, finite differences {fd} (outside {tol:?})"
                );
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_bounds_as_documented() {
        // Expected 100, rel 1e-2, abs 0.5: the rules differ between 1.0 and 1.52.
        let (rel, abs) = (1e-2, 0.5);
        assert!(Tol::new(rel, abs).admits(101.0, 100.0));
        assert!(!Tol::new(rel, abs).admits(101.4, 100.0));
        assert!(Tol::allclose(rel, abs).admits(101.4, 100.0));
        assert!(!Tol::allclose(rel, abs).admits(101.51, 100.0));
        assert!(Tol::abs_plus_rel(rel, abs).admits(101.51, 100.0));
        assert!(!Tol::abs_plus_rel(rel, abs).admits(101.53, 100.0));
        assert!(!Tol::EXACT.admits(1.0 + f64::EPSILON, 1.0));
    }

    /// `sum(x^3)` at three points and its gradient `3 x^2`, times `scale`.
    fn cube(scale: f32) -> ([f32; 3], Vec<f32>, impl Fn(&[f64]) -> f64) {
        let x = [0.5f32, -1.0, 2.0];
        let grad = x.iter().map(|v| scale * 3.0 * v * v).collect();
        (x, grad, |x: &[f64]| {
            x.iter().map(|v| v * v * v).sum::<f64>()
        })
    }

    #[test]
    fn a_right_gradient_passes_both_ways() {
        let (x, grad, f) = cube(1.0);
        let tol = Tol::new(1e-6, 1e-8);
        check_gradient("cube", &x, &grad, Along::Coordinates, 1e-5, tol, &f);
        let directions = [vec![0.3, -0.7, 0.1], vec![-1.0, 0.2, 0.9]];
        let along = Along::Directions(&directions);
        check_gradient("cube", &x, &grad, along, 1e-5, tol, &f);
    }

    #[test]
    #[should_panic(expected = "cube: 3 of 3 values outside")]
    fn a_wrong_gradient_fails_per_coordinate() {
        let (x, grad, f) = cube(1.01);
        check_gradient(
            "cube",
            &x,
            &grad,
            Along::Coordinates,
            1e-5,
            Tol::new(1e-3, 0.0),
            f,
        );
    }

    #[test]
    #[should_panic(expected = "cube direction 0: backward gives")]
    fn a_wrong_gradient_fails_along_a_direction() {
        let (x, grad, f) = cube(1.01);
        let directions = [vec![0.3, -0.7, 0.1]];
        let along = Along::Directions(&directions);
        check_gradient("cube", &x, &grad, along, 1e-5, Tol::new(1e-3, 0.0), f);
    }
}
