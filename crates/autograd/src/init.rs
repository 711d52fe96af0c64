//! Initialisers, as PyTorch's `torch.nn.init` defines them, drawn from a
//! seeded generator so that a seed gives the same weights on every run and
//! every backend.
//!
//! ```
//! use sasrec_autograd::init::{Init, seeded};
//! use sasrec_kernels::CpuBackend;
//!
//! let mut rng = seeded(7);
//! // nn.Linear(64, 10): weight [10, 64] and bias [10].
//! let w = Init::LINEAR_WEIGHT.tensor(&CpuBackend, &[10, 64], &mut rng);
//! let b = Init::linear_bias(64).tensor(&CpuBackend, &[10], &mut rng);
//! ```
//!
//! The generator is ChaCha8 ([`SeededRng`]); PyTorch's draws differ, so
//! the same seed gives the same distribution as PyTorch, not the same numbers.

use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Normal};
use sasrec_kernels::Backend;

/// The generator initialisers draw from.
pub type SeededRng = rand_chacha::ChaCha8Rng;

/// A generator seeded with `seed`.
pub fn seeded(seed: u64) -> SeededRng {
    SeededRng::seed_from_u64(seed)
}

/// `(fan_in, fan_out)` of a weight of `shape`, as PyTorch computes them:
/// `shape[1]` and `shape[0]`, times the product of any further dimensions.
///
/// # Panics
/// If the shape has fewer than two dimensions (PyTorch refuses too).
pub fn fans(shape: &[usize]) -> (usize, usize) {
    assert!(
        shape.len() >= 2,
        "fan in and fan out need a weight of at least 2 dimensions, got shape {shape:?}"
    );
    let receptive: usize = shape[2..].iter().product();
    (shape[1] * receptive, shape[0] * receptive)
}

/// How to fill a new tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// All 0 (draws nothing).
    Zeros,
    /// All 1 (draws nothing).
    Ones,
    /// All equal to the value (draws nothing).
    Constant(f32),
    /// Uniform in `[low, high]`.
    Uniform {
        /// Lower bound.
        low: f32,
        /// Upper bound.
        high: f32,
    },
    /// Normal with this mean and standard deviation.
    Normal {
        /// Mean.
        mean: f32,
        /// Standard deviation.
        std: f32,
    },
    /// `nn.init.xavier_uniform_`: U(±gain sqrt(6 / (fan_in + fan_out))).
    XavierUniform {
        /// Scale (1 for linear layers and embeddings).
        gain: f32,
    },
    /// `nn.init.kaiming_uniform_` in fan-in mode for a leaky ReLU of slope
    /// `a`: U(±sqrt(6 / ((1 + a²) fan_in))). `a = 0` is He's ReLU
    /// initialisation; `a = sqrt(5)` is `nn.Linear`'s default weight.
    KaimingUniform {
        /// Negative slope of the leaky ReLU that follows.
        a: f64,
    },
}

impl Init {
    /// `nn.Linear`'s default weight: kaiming-uniform with `a = sqrt(5)`,
    /// i.e. U(±1/sqrt(fan_in)).
    pub const LINEAR_WEIGHT: Init = Init::KaimingUniform {
        a: 2.236_067_977_499_79, // sqrt(5), the f64 nearest to it
    };

    /// `nn.Linear`'s default bias for a layer with `fan_in` inputs:
    /// U(±1/sqrt(fan_in)).
    pub fn linear_bias(fan_in: usize) -> Init {
        let bound = 1.0 / (fan_in as f32).sqrt();
        Init::Uniform {
            low: -bound,
            high: bound,
        }
    }

    /// `n` values for a tensor of `shape`, drawn from `rng` (the constant
    /// initialisers draw nothing).
    ///
    /// # Panics
    /// For the fan-based initialisers, if `shape` has fewer than two
    /// dimensions; for `Normal`, if `std` is negative or not finite.
    pub fn values(&self, shape: &[usize], rng: &mut SeededRng) -> Vec<f32> {
        let n: usize = shape.iter().product();
        let uniform = |bound: f32, rng: &mut SeededRng| -> Vec<f32> {
            (0..n).map(|_| rng.random_range(-bound..=bound)).collect()
        };
        match *self {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Constant(c) => vec![c; n],
            Init::Uniform { low, high } => (0..n).map(|_| rng.random_range(low..=high)).collect(),
            Init::Normal { mean, std } => {
                let normal = Normal::new(mean, std)
                    .unwrap_or_else(|e| panic!("Init::Normal with std {std}: {e}"));
                (0..n).map(|_| normal.sample(rng)).collect()
            }
            Init::XavierUniform { gain } => {
                let (fan_in, fan_out) = fans(shape);
                uniform(gain * (6.0 / (fan_in + fan_out) as f32).sqrt(), rng)
            }
            Init::KaimingUniform { a } => {
                // sqrt(6 / ((1 + a²) fan_in)) as 1 / sqrt(fan_in (1 + a²) / 6):
                // for a = sqrt(5) the effective fan rounds to fan_in exactly,
                // so the bound is the f32 1 / sqrt(fan_in).
                let (fan_in, _) = fans(shape);
                let effective_fan = (fan_in as f64 * (1.0 + a * a) / 6.0) as f32;
                uniform(1.0 / effective_fan.sqrt(), rng)
            }
        }
    }

    /// A tensor of `shape` on `backend` (see [`Init::values`]).
    pub fn tensor<B: Backend>(
        &self,
        backend: &B,
        shape: &[usize],
        rng: &mut SeededRng,
    ) -> B::Tensor {
        backend.tensor(&self.values(shape, rng), shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_weight_is_kaiming_with_sqrt_5() {
        assert_eq!(Init::LINEAR_WEIGHT, Init::KaimingUniform { a: 5f64.sqrt() });
    }

    #[test]
    fn fans_follow_pytorch() {
        assert_eq!(fans(&[10, 64]), (64, 10));
        // A conv weight [out, in, kh, kw].
        assert_eq!(fans(&[8, 3, 5, 5]), (75, 200));
    }

    #[test]
    #[should_panic(expected = "at least 2 dimensions")]
    fn fans_need_a_matrix() {
        fans(&[10]);
    }

    /// The bounds are PyTorch's formulas, evaluated in f64.
    #[test]
    fn bounds_match_pytorch() {
        let mut rng = seeded(1);
        let max_abs = |v: Vec<f32>| v.iter().fold(0.0f32, |m, x| m.max(x.abs())) as f64;
        let shape = [300, 200];
        let cases: [(Init, f64); 4] = [
            (Init::XavierUniform { gain: 1.0 }, (6.0f64 / 500.0).sqrt()),
            (
                Init::XavierUniform { gain: 2.0 },
                2.0 * (6.0f64 / 500.0).sqrt(),
            ),
            (Init::LINEAR_WEIGHT, 1.0 / 200f64.sqrt()),
            (Init::KaimingUniform { a: 0.0 }, (6.0f64 / 200.0).sqrt()),
        ];
        for (init, bound) in cases {
            let m = max_abs(init.values(&shape, &mut rng));
            // 60 000 draws come within 1e-3 of the bound and never past it.
            assert!(
                m <= bound * (1.0 + 1e-6) && m > bound * 0.999,
                "{init:?}: max {m}, bound {bound}"
            );
        }
        let m = max_abs(Init::linear_bias(200).values(&[300], &mut rng));
        assert!(m <= 1.0 / 200f64.sqrt() * (1.0 + 1e-6));
    }

    #[test]
    fn normal_has_its_moments_and_constants_draw_nothing() {
        let mut rng = seeded(2);
        let v = Init::Normal {
            mean: 1.5,
            std: 0.5,
        }
        .values(&[100_000], &mut rng);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!((mean - 1.5).abs() < 0.01 && (var.sqrt() - 0.5).abs() < 0.01);

        let (mut a, mut b) = (seeded(3), seeded(3));
        assert_eq!(Init::Zeros.values(&[4], &mut a), [0.0; 4]);
        assert_eq!(Init::Ones.values(&[2], &mut a), [1.0; 2]);
        assert_eq!(Init::Constant(0.5).values(&[1], &mut a), [0.5]);
        // The constants drew nothing: both generators are still in step.
        let u = Init::Uniform {
            low: -1.0,
            high: 1.0,
        };
        assert_eq!(u.values(&[8], &mut a), u.values(&[8], &mut b));
    }
}
