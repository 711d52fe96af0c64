//! Negatives for the sampled losses: drawn on the host, counter-based from
//! `(seed, step, draw index)`, shared by every row of a step's batch.
//!
//! A draw is a pure function of the run's seed, the optimiser step and its
//! index, through the hash of the dropout masks
//! ([`sasrec_kernels::dropout::stream_key`]) on a site of its own: the CPU and
//! the GPU train on the same negatives, and a resumed run draws exactly what
//! the uninterrupted one did. Items are drawn with replacement, uniformly
//! over `1..=num_items` or in proportion to their counts in the training
//! split (by inverse CDF on 64 random bits, in integers: no rounding).

use sasrec_data::UserSequence;
use sasrec_kernels::dropout::{stream_bits, stream_key};
use sasrec_kernels::{Backend, LogQ, SampledLoss};

use crate::config::{Loss, Sampler, TrainConfig};

/// The random stream of the negatives. Dropout sites are small numbers
/// (`1 + 4 * layers` at most), so the negatives never share one.
pub const NEGATIVES_SITE: u32 = u32::MAX;

/// Which distribution the negatives come from.
#[derive(Clone, Debug, PartialEq)]
enum Distribution {
    /// Items `1..=num_items` alike.
    Uniform { num_items: u64 },
    /// `cumulative[i]` is the total count of items `1..=i + 1`.
    Popularity { cumulative: Vec<u64> },
}

/// What the loss does with a row's positive and negative logits.
#[derive(Clone, Copy, Debug, PartialEq)]
enum RowLoss {
    /// Sampled softmax, with the log-Q correction when the sampler is not
    /// uniform.
    Softmax { log_q: bool },
    /// BCE (weight 1) or gBCE (weight beta).
    Binary { positive_weight: f32 },
}

/// Draws each step's negatives and knows the loss over them.
#[derive(Clone, Debug, PartialEq)]
pub struct NegativeSampler {
    seed: u64,
    negatives: usize,
    distribution: Distribution,
    row_loss: RowLoss,
}

/// gBCE's weight of the positive term (Petrov & Macdonald, 2023): with the
/// sampling rate `alpha = negatives / (num_items - 1)`,
/// `beta = alpha (t (1 - 1/alpha) + 1/alpha)`, written `1 + t (alpha - 1)`
/// so that `t = 0` gives exactly 1 (BCE) and `t = 1` gives `alpha`.
pub fn gbce_beta(negatives: usize, num_items: usize, t: f64) -> f64 {
    let alpha = negatives as f64 / (num_items as f64 - 1.0);
    1.0 + t * (alpha - 1.0)
}

/// How often each item index occurs in `train` (index 0, padding, is 0).
pub fn item_counts(train: &[UserSequence], num_items: usize) -> Vec<u64> {
    let mut counts = vec![0u64; num_items + 1];
    for seq in train {
        for &item in &seq.items {
            counts[item as usize] += 1;
        }
    }
    counts
}

impl NegativeSampler {
    /// The sampler of `config`'s loss over `num_items` items, the popularity
    /// counted in `train`; `None` for the full softmax.
    ///
    /// # Panics
    /// If the settings were not checked ([`TrainConfig::validate`],
    /// [`TrainConfig::check_catalogue`]), or the popularity sampler is asked
    /// for with no training items.
    pub fn new(config: &TrainConfig, num_items: usize, train: &[UserSequence]) -> Option<Self> {
        let row_loss = match config.loss {
            Loss::Full => return None,
            Loss::SampledSoftmax => RowLoss::Softmax {
                log_q: config.sampler == Sampler::Popularity,
            },
            Loss::Bce => RowLoss::Binary {
                positive_weight: 1.0,
            },
            Loss::Gbce => RowLoss::Binary {
                positive_weight: gbce_beta(config.negatives, num_items, config.gbce_t) as f32,
            },
        };
        let distribution = match config.sampler {
            Sampler::Uniform => Distribution::Uniform {
                num_items: num_items as u64,
            },
            Sampler::Popularity => {
                let counts = item_counts(train, num_items);
                let cumulative: Vec<u64> = counts[1..]
                    .iter()
                    .scan(0u64, |total, &c| {
                        *total += c;
                        Some(*total)
                    })
                    .collect();
                assert!(
                    cumulative.last().is_some_and(|&t| t > 0),
                    "the popularity sampler needs training items"
                );
                Distribution::Popularity { cumulative }
            }
        };
        Some(NegativeSampler {
            seed: config.seed,
            negatives: config.negatives,
            distribution,
            row_loss,
        })
    }

    /// Negatives per step.
    pub fn negatives(&self) -> usize {
        self.negatives
    }

    /// The weight of the positive's term of the binary losses (1 for BCE,
    /// gBCE's beta), `None` for the sampled softmax.
    pub fn positive_weight(&self) -> Option<f32> {
        match self.row_loss {
            RowLoss::Binary { positive_weight } => Some(positive_weight),
            RowLoss::Softmax { .. } => None,
        }
    }

    /// The negatives of optimiser step `step` (1-based, as dropout's).
    pub fn draw(&self, step: u64) -> Vec<u32> {
        let key = stream_key(self.seed, step, NEGATIVES_SITE);
        (0..self.negatives as u32)
            .map(|i| {
                let bits = (u64::from(stream_bits(key, 2 * i)) << 32)
                    | u64::from(stream_bits(key, 2 * i + 1));
                self.item_at(bits)
            })
            .collect()
    }

    /// The item that 64 uniform random bits select.
    fn item_at(&self, bits: u64) -> u32 {
        // A uniform integer below `total`: the high half of bits * total.
        let below = |total: u64| ((u128::from(bits) * u128::from(total)) >> 64) as u64;
        let index = match &self.distribution {
            Distribution::Uniform { num_items } => below(*num_items) as usize,
            Distribution::Popularity { cumulative } => {
                let r = below(*cumulative.last().expect("checked in new"));
                cumulative.partition_point(|&c| c <= r)
            }
        };
        index as u32 + 1
    }

    /// The probability that one draw gives `item` (1-based).
    pub fn probability(&self, item: u32) -> f64 {
        match &self.distribution {
            Distribution::Uniform { num_items } => 1.0 / *num_items as f64,
            Distribution::Popularity { cumulative } => {
                let i = item as usize - 1;
                let below = if i == 0 { 0 } else { cumulative[i - 1] };
                (cumulative[i] - below) as f64 / *cumulative.last().expect("checked in new") as f64
            }
        }
    }

    /// The negatives of step `step` on `backend`, with the log-Q vectors of
    /// the sampled softmax for `targets` (the batch's, 0 = ignored) when the
    /// sampler is not uniform.
    pub fn step<B: Backend>(&self, backend: &B, step: u64, targets: &[u32]) -> StepNegatives<B> {
        self.with_ids(backend, self.draw(step), targets)
    }

    /// Like [`NegativeSampler::step`] with negatives chosen by the caller
    /// (e.g. a test's fixed ones).
    pub fn with_ids<B: Backend>(
        &self,
        backend: &B,
        ids: Vec<u32>,
        targets: &[u32],
    ) -> StepNegatives<B> {
        let log_q = (self.row_loss == RowLoss::Softmax { log_q: true }).then(|| {
            let lq = |item: u32| self.probability(item).ln() as f32;
            let of_targets: Vec<f32> = targets
                .iter()
                .map(|&t| if t == 0 { 0.0 } else { lq(t) })
                .collect();
            let of_negatives: Vec<f32> = ids.iter().map(|&i| lq(i)).collect();
            (
                backend.tensor(&of_targets, &[targets.len()]),
                backend.tensor(&of_negatives, &[ids.len()]),
            )
        });
        StepNegatives {
            ids: backend.ids(&ids),
            row_loss: self.row_loss,
            log_q,
        }
    }
}

/// One step's negatives on a backend, and the loss over them.
pub struct StepNegatives<B: Backend> {
    /// The negative item ids, `[negatives]`.
    pub ids: B::Ids,
    row_loss: RowLoss,
    /// `log Q` of the batch's targets `[rows]` and of the negatives.
    log_q: Option<(B::Tensor, B::Tensor)>,
}

impl<B: Backend> StepNegatives<B> {
    /// The loss for [`Backend::sampled_loss`].
    pub fn loss(&self) -> SampledLoss<'_, B::Tensor> {
        match self.row_loss {
            RowLoss::Softmax { .. } => SampledLoss::Softmax {
                log_q: self
                    .log_q
                    .as_ref()
                    .map(|(targets, negatives)| LogQ { targets, negatives }),
            },
            RowLoss::Binary { positive_weight } => SampledLoss::Binary { positive_weight },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(loss: Loss, sampler: Sampler, negatives: usize) -> TrainConfig {
        TrainConfig {
            loss,
            sampler,
            negatives,
            seed: 7,
            ..TrainConfig::default()
        }
    }

    fn seqs(items: &[&[u32]]) -> Vec<UserSequence> {
        items
            .iter()
            .enumerate()
            .map(|(u, items)| UserSequence::new(u as u32, items.to_vec()))
            .collect()
    }

    #[test]
    fn draws_are_a_function_of_seed_and_step() {
        let s = NegativeSampler::new(&config(Loss::SampledSoftmax, Sampler::Uniform, 64), 50, &[])
            .unwrap();
        assert_eq!(s.draw(3), s.draw(3));
        assert_ne!(s.draw(3), s.draw(4));
        let other_seed = NegativeSampler {
            seed: 8,
            ..s.clone()
        };
        assert_ne!(s.draw(3), other_seed.draw(3));
        assert!(s.draw(1).iter().all(|&i| (1..=50).contains(&i)));
    }

    #[test]
    fn draws_do_not_follow_the_dropout_masks() {
        // Dropout site 0 at the same seed and step: its keep bits and the
        // negatives' low bits agree about half the time.
        let s = NegativeSampler::new(&config(Loss::Bce, Sampler::Uniform, 4000), 2, &[]).unwrap();
        let mask = sasrec_kernels::Dropout::new(0.5, 7, 9, 0);
        let same = s
            .draw(9)
            .iter()
            .enumerate()
            .filter(|&(i, &item)| mask.keep(i as u32) == (item == 1))
            .count();
        assert!((1800..2200).contains(&same), "{same} of 4000 agree");
    }

    #[test]
    fn popularity_follows_the_training_counts() {
        // Item 2 three times as often as 1, item 3 never.
        let train = seqs(&[&[1, 2, 2], &[2, 2, 2, 1, 2]]);
        let s = NegativeSampler::new(
            &config(Loss::SampledSoftmax, Sampler::Popularity, 1),
            3,
            &train,
        )
        .unwrap();
        assert_eq!(s.probability(1), 0.25);
        assert_eq!(s.probability(2), 0.75);
        assert_eq!(s.probability(3), 0.0);
        assert_eq!(item_counts(&train, 3), [0, 2, 6, 0]);
    }

    /// Pearson's statistic of `draws` against the expected counts over
    /// items `1..=k`.
    fn chi_square(draws: &[u32], expected: impl Fn(u32) -> f64, k: u32) -> f64 {
        let mut observed = vec![0.0f64; k as usize + 1];
        for &d in draws {
            observed[d as usize] += 1.0;
        }
        (1..=k)
            .filter(|&i| expected(i) > 0.0)
            .map(|i| (observed[i as usize] - expected(i)).powi(2) / expected(i))
            .sum()
    }

    #[test]
    fn uniform_draws_match_their_distribution() {
        // 100 items, 200,000 draws over 20 steps: chi-square with 99 degrees
        // of freedom, whose 99.9th percentile is 148.2 (a fixed seed: the
        // test either always passes or always fails).
        let s =
            NegativeSampler::new(&config(Loss::Bce, Sampler::Uniform, 10_000), 100, &[]).unwrap();
        let draws: Vec<u32> = (1..=20).flat_map(|step| s.draw(step)).collect();
        let stat = chi_square(&draws, |_| draws.len() as f64 / 100.0, 100);
        assert!(stat < 148.2, "chi-square {stat}");
    }

    #[test]
    fn popularity_draws_match_their_distribution() {
        // Zipf-like counts over 60 items (item i seen 600 / i times, some
        // never), 200,000 draws.
        let train: Vec<UserSequence> = (1..=60u32)
            .filter(|i| i % 7 != 0)
            .map(|i| UserSequence::new(i, vec![i; 600 / i as usize]))
            .collect();
        let s = NegativeSampler::new(
            &config(Loss::SampledSoftmax, Sampler::Popularity, 10_000),
            60,
            &train,
        )
        .unwrap();
        let draws: Vec<u32> = (1..=20).flat_map(|step| s.draw(step)).collect();
        assert!(
            draws.iter().all(|&i| i % 7 != 0),
            "an item never seen was drawn"
        );
        let n = draws.len() as f64;
        // 52 items with a count: 51 degrees of freedom, 99.9th percentile 90.6.
        let stat = chi_square(&draws, |i| n * s.probability(i), 60);
        assert!(stat < 90.6, "chi-square {stat}");
    }

    #[test]
    fn gbce_beta_is_one_at_t_zero_and_alpha_at_t_one() {
        assert_eq!(gbce_beta(256, 9725, 0.0), 1.0);
        let alpha = 256.0 / 9724.0;
        assert!((gbce_beta(256, 9725, 1.0) - alpha).abs() < 1e-15);
        // gSASRec's form.
        let t = 0.75;
        let paper = alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha);
        assert!((gbce_beta(256, 9725, t) - paper).abs() < 1e-12);
    }

    #[test]
    fn log_q_only_for_the_corrected_softmax() {
        let train = seqs(&[&[1, 2, 2, 3]]);
        let b = sasrec_kernels::CpuBackend;
        let with = |loss, sampler| {
            NegativeSampler::new(&config(loss, sampler, 2), 3, &train)
                .unwrap()
                .step(&b, 1, &[0, 2, 3])
                .log_q
                .map(|(t, n)| (t.data().to_vec(), n.data().len()))
        };
        let (targets, n) = with(Loss::SampledSoftmax, Sampler::Popularity).unwrap();
        assert_eq!(targets, [0.0, 0.5f64.ln() as f32, 0.25f64.ln() as f32]);
        assert_eq!(n, 2);
        assert!(with(Loss::SampledSoftmax, Sampler::Uniform).is_none());
        assert!(with(Loss::Bce, Sampler::Popularity).is_none());
    }
}
