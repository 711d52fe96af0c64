//! What data a run trains on, enough to rebuild its splits: the log, how to
//! read it, which interactions are kept and how users are split
//! ([`DataSpec`], config.json's `data` part), and loading it all.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{
    DataError, Dataset, FilterConfig, FilterReport, InputSpec, InvalidSetting, Split, SplitKind,
    TemporalTargets, TimeCut, build_dataset_with_report, parse_time, read_interactions, split,
};

/// How a run splits its users; written as `leave-one-out` / `random-users`
/// / `temporal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SplitMethod {
    /// Per user: train on all but the last two items, validate on the
    /// second-to-last, test on the last.
    LeaveOneOut,
    /// Hold out a fraction of the users whole for validation (the notebook's).
    RandomUsers,
    /// A global timeline: train before the validation cut, validate on each
    /// user's first interaction between the cuts, test on the first after
    /// the test cut.
    Temporal,
}

impl std::fmt::Display for SplitMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SplitMethod::LeaveOneOut => "leave-one-out",
            SplitMethod::RandomUsers => "random-users",
            SplitMethod::Temporal => "temporal",
        })
    }
}

/// Which data a run was trained on, enough to rebuild its splits.
///
/// config.json keeps the input description and the filter at this level
/// (`"format"`, `"user_col"`, ..., `"min_rating"`, ...); fields added since
/// a config.json was written take their defaults when it is read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataSpec {
    /// The interaction log: a file, or a folder of Parquet parts.
    pub ratings: PathBuf,
    /// How to read it: format, delimiter, columns, time unit.
    #[serde(flatten)]
    pub input: InputSpec,
    /// Which interactions are kept.
    #[serde(flatten)]
    pub filter: FilterConfig,
    /// How users are split.
    pub split: SplitMethod,
    /// Share of users held out by `random-users`.
    pub valid_fraction: f64,
    /// Seed of the `random-users` split.
    pub split_seed: u64,
    /// Start of the `temporal` split's validation window: an ISO 8601
    /// date-time or a number in the log's time unit.
    #[serde(default)]
    pub valid_time: Option<String>,
    /// Start of the `temporal` split's test window, like `valid_time`.
    #[serde(default)]
    pub test_time: Option<String>,
    /// Start of the `temporal` validation window as a fraction of the
    /// data's time range (instead of `valid_time`).
    #[serde(default)]
    pub valid_time_fraction: Option<f64>,
    /// Start of the `temporal` test window as a fraction of the data's time
    /// range (instead of `test_time`).
    #[serde(default)]
    pub test_time_fraction: Option<f64>,
    /// Which interactions of a `temporal` window are scored: the first of
    /// each user, or all.
    #[serde(default)]
    pub temporal_targets: TemporalTargets,
}

impl DataSpec {
    /// The data crate's split; fails on a temporal cut that is not a time.
    pub fn split_kind(&self) -> Result<SplitKind, InvalidSetting> {
        Ok(match self.split {
            SplitMethod::LeaveOneOut => SplitKind::LeaveOneOut,
            SplitMethod::RandomUsers => SplitKind::RandomUsers {
                valid_fraction: self.valid_fraction,
                seed: self.split_seed,
            },
            SplitMethod::Temporal => SplitKind::Temporal {
                valid: self.time_cut("valid", &self.valid_time, self.valid_time_fraction)?,
                test: self.time_cut("test", &self.test_time, self.test_time_fraction)?,
                targets: self.temporal_targets,
            },
        })
    }

    /// One cut of the temporal split: a time or a fraction, exactly one.
    fn time_cut(
        &self,
        window: &'static str,
        time: &Option<String>,
        fraction: Option<f64>,
    ) -> Result<TimeCut, InvalidSetting> {
        let (time_field, fraction_field) = match window {
            "valid" => ("valid_time", "valid_time_fraction"),
            _ => ("test_time", "test_time_fraction"),
        };
        match (time, fraction) {
            (Some(text), None) => parse_time(text, self.input.time_unit.unwrap_or_default())
                .map(TimeCut::At)
                .map_err(|e| {
                    let problem = match e {
                        DataError::InvalidOption(problem) => problem,
                        other => other.to_string(),
                    };
                    InvalidSetting::new(time_field, problem)
                }),
            (None, Some(f)) if f > 0.0 && f < 1.0 => Ok(TimeCut::Fraction(f)),
            (None, Some(f)) => Err(InvalidSetting::new(
                fraction_field,
                format!("must be in (0, 1), got {f}"),
            )),
            (Some(_), Some(_)) => Err(InvalidSetting::new(
                time_field,
                format!(
                    "and --{} both start the {window} window; give one",
                    fraction_field.replace('_', "-")
                ),
            )),
            (None, None) => Err(InvalidSetting::new(
                time_field,
                format!(
                    "is needed by the temporal split (or --{})",
                    fraction_field.replace('_', "-")
                ),
            )),
        }
    }

    /// Whether the split is leave-one-out.
    pub fn leave_one_out(&self) -> bool {
        self.split == SplitMethod::LeaveOneOut
    }

    /// Whether validation and test sequences end with one held-out target
    /// each (leave-one-out and temporal): the split then has test users,
    /// and is evaluated by ranking. Random-users validates by loss only.
    pub fn held_out_last(&self) -> bool {
        self.split != SplitMethod::RandomUsers
    }

    /// Reads the interactions, filters them and splits them, as at training time.
    pub fn load(&self) -> Result<(Dataset, Split), DataError> {
        self.load_with_report()
            .map(|(dataset, split, _)| (dataset, split))
    }

    /// [`DataSpec::load`], also saying what each filter removed.
    pub fn load_with_report(&self) -> Result<(Dataset, Split, FilterReport), DataError> {
        let kind = self.split_kind()?;
        let interactions = read_interactions(&self.ratings, &self.input)?;
        let (dataset, report) =
            build_dataset_with_report(&interactions, &self.filter).map_err(|error| {
                DataError::Building {
                    path: self.ratings.clone(),
                    error: Box::new(error),
                }
            })?;
        let split = split(&dataset, kind)?;
        Ok((dataset, split, report))
    }
}
