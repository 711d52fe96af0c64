//! Train / validation / test splits.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::{DataError, Dataset, UserSequence, format_micros};

/// Where a temporal split cuts the global timeline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TimeCut {
    /// At this time, in microseconds since the Unix epoch.
    At(i64),
    /// At this fraction of the dataset's time range, in (0, 1): 0 would be
    /// its first interaction, 1 its last.
    Fraction(f64),
}

impl TimeCut {
    /// The cut's time in microseconds, for interactions spanning `range`.
    fn resolve(self, (first, last): (i64, i64)) -> Result<i64, DataError> {
        match self {
            TimeCut::At(micros) => Ok(micros),
            TimeCut::Fraction(f) if f > 0.0 && f < 1.0 => {
                Ok(first + ((last - first) as f64 * f).round() as i64)
            }
            TimeCut::Fraction(f) => Err(DataError::InvalidOption(format!(
                "time fraction {f} is not in (0, 1)"
            ))),
        }
    }
}

/// How to split a dataset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SplitKind {
    /// The notebook's split: `ceil(users * valid_fraction)` users, drawn with
    /// `seed`, are held out whole for validation; the rest train. No test set.
    /// (`ceil` as sklearn's `train_test_split(test_size=0.1)`.)
    RandomUsers {
        /// Fraction of users held out, in [0, 1).
        valid_fraction: f64,
        /// Seed of the draw.
        seed: u64,
    },
    /// The field's standard: per user, train on all but the last two items,
    /// validate on the second-to-last, test on the last.
    LeaveOneOut,
    /// A global timeline (Sun 2023; Ji et al. 2023): interactions before
    /// `valid` train; each user's first interaction in [`valid`, `test`) is
    /// a validation target and their first at or after `test` a test
    /// target, each predicted from the user's interactions before that cut
    /// only. See `docs/data.md` for why these rules.
    Temporal {
        /// Start of the validation window.
        valid: TimeCut,
        /// Start of the test window (after `valid`).
        test: TimeCut,
        /// Which interactions of a window are targets.
        targets: TemporalTargets,
    },
}

/// Which of a user's interactions in a temporal split's window are scored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemporalTargets {
    /// The user's first (target-type) interaction in the window, predicted
    /// from everything before it (Ji et al.'s next interaction after the cut).
    #[default]
    First,
    /// Every (target-type) interaction in the window, each predicted from
    /// everything before it, the window's earlier interactions included
    /// (the model is not trained on them: it sees them as a deployed model
    /// sees a user's new events).
    All,
}

impl std::str::FromStr for TemporalTargets {
    type Err = DataError;

    fn from_str(s: &str) -> Result<TemporalTargets, DataError> {
        match s {
            "first" => Ok(TemporalTargets::First),
            "all" => Ok(TemporalTargets::All),
            _ => Err(DataError::InvalidOption(format!(
                "unknown temporal targets {:?}; expected first or all",
                crate::ids::cut(s, 20)
            ))),
        }
    }
}

impl std::fmt::Display for TemporalTargets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TemporalTargets::First => "first",
            TemporalTargets::All => "all",
        })
    }
}

/// Sequences for training, validation and test.
///
/// Every sequence kept has at least 2 items, so it has a target. Validation
/// and test sequences end with their target: for leave-one-out,
/// `valid[i].items` is the history followed by the held-out item. Every
/// sequence is a prefix of its user's sequence in the dataset.
///
/// With target event types (sequences with [`UserSequence::is_target`]),
/// targets are the target-type events only: a training sequence ends with
/// its last target (later events could only be input to targets it does
/// not hold), and the held-out items are target-type events, each after
/// every event before it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Split {
    /// Training sequences.
    pub train: Vec<UserSequence>,
    /// Validation sequences (random-users: whole held-out users; leave-one-out:
    /// `items[..n-1]`, target last).
    pub valid: Vec<UserSequence>,
    /// Test sequences (random-users: empty; leave-one-out: `items[..n]`, target last).
    pub test: Vec<UserSequence>,
    /// Users whose training sequence had fewer than 2 items and was left out
    /// of `train` (leave-one-out: users with 1 or 3 items; random-users:
    /// training users with 1 item; temporal: users with fewer than 2
    /// interactions before the validation cut).
    pub too_short_for_train: usize,
    /// Users left out of evaluation: leave-one-out needs 3 items (users with 2
    /// train on both instead, as in the SASRec paper's code); random-users
    /// drops held-out users with 1 item; temporal drops targets of users with
    /// no interaction before the cut (counted once per window).
    pub too_short_for_eval: usize,
    /// The temporal split's cuts, resolved: (validation, test) in
    /// microseconds since the epoch. `None` for the other splits.
    pub cuts: Option<(i64, i64)>,
}

/// Splits the users' sequences; the same `kind` (seed included) always gives
/// the same split. Users keep the dataset's order within each part.
///
/// A random-users `valid_fraction` outside [0, 1) is an error.
pub fn split(dataset: &Dataset, kind: SplitKind) -> Result<Split, DataError> {
    let users = &dataset.users;
    let mut out = Split::default();
    // A training sequence: `user` up to its last target before `end`, when
    // it has one that can be predicted (at position 1 or later).
    let train = |user: &UserSequence, end: usize, out: &mut Split| match (1..end)
        .rev()
        .find(|&j| user.is_target(j))
    {
        Some(last) => out.train.push(user.prefix(last + 1)),
        None => out.too_short_for_train += 1,
    };
    match kind {
        SplitKind::RandomUsers {
            valid_fraction,
            seed,
        } => {
            if !(0.0..1.0).contains(&valid_fraction) {
                return Err(DataError::InvalidOption(format!(
                    "validation fraction {valid_fraction} is not in [0, 1)"
                )));
            }
            let held_out = (users.len() as f64 * valid_fraction).ceil() as usize;
            let mut order: Vec<usize> = (0..users.len()).collect();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
            let mut is_valid = vec![false; users.len()];
            for &u in &order[..held_out] {
                is_valid[u] = true;
            }
            for (user, valid) in users.iter().zip(is_valid) {
                let n = user.items.len();
                if !valid {
                    train(user, n, &mut out);
                    continue;
                }
                match (1..n).rev().find(|&j| user.is_target(j)) {
                    Some(last) => out.valid.push(user.prefix(last + 1)),
                    None => out.too_short_for_eval += 1,
                }
            }
        }
        SplitKind::LeaveOneOut => {
            for user in users {
                // The positions that can be held out: targets with a history.
                let n = user.items.len();
                let mut targets = (1..n).rev().filter(|&j| user.is_target(j));
                let (Some(test), Some(valid)) = (targets.next(), targets.next()) else {
                    // Too short to evaluate: train on all it has (users with
                    // 2 items, as in the SASRec paper's code).
                    out.too_short_for_eval += 1;
                    train(user, n, &mut out);
                    continue;
                };
                train(user, valid, &mut out);
                out.valid.push(user.prefix(valid + 1));
                out.test.push(user.prefix(test + 1));
            }
        }
        SplitKind::Temporal {
            valid,
            test,
            targets,
        } => {
            // (No interaction at all: users with nothing to train on.)
            let range = dataset.time_range().unwrap_or((0, 0));
            let (valid_from, test_from) = (valid.resolve(range)?, test.resolve(range)?);
            if valid_from >= test_from {
                return Err(DataError::InvalidOption(format!(
                    "the validation cut ({}) is not before the test cut ({})",
                    format_micros(valid_from),
                    format_micros(test_from)
                )));
            }
            out.cuts = Some((valid_from, test_from));
            for (user, times) in users.iter().zip(&dataset.times) {
                // Times are sorted: the first index at or after a cut.
                let before = |cut: i64| times.partition_point(|&t| t < cut);
                let (in_train, before_test) = (before(valid_from), before(test_from));
                train(user, in_train, &mut out);
                // A window's targets: its first target-type interaction (or
                // all of them), each after everything before it; one with no
                // history (a new user's first) is not evaluated.
                let mut window = |from: usize, to: usize, part: &mut Vec<UserSequence>| {
                    let mut positions = (from..to).filter(|&j| user.is_target(j));
                    let chosen: Vec<usize> = match targets {
                        TemporalTargets::First => positions.next().into_iter().collect(),
                        TemporalTargets::All => positions.collect(),
                    };
                    for j in chosen {
                        if j == 0 {
                            out.too_short_for_eval += 1;
                        } else {
                            part.push(user.prefix(j + 1));
                        }
                    }
                };
                window(in_train, before_test, &mut out.valid);
                window(before_test, times.len(), &mut out.test);
            }
        }
    }
    Ok(out)
}
