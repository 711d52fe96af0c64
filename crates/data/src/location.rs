//! Where datasets live on disk.

use std::path::PathBuf;
use std::str::FromStr;

use crate::DataError;

/// The folder that holds the datasets: `$SASREC_DATASETS`, else `datasets/`
/// relative to the current directory.
pub fn datasets_dir() -> PathBuf {
    match std::env::var_os("SASREC_DATASETS") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from("datasets"),
    }
}

/// The MovieLens releases this project knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KnownDataset {
    /// `latest-small`: 100,836 ratings, 610 users (a development set).
    LatestSmall,
    /// `100k`: MovieLens 100K.
    Ml100k,
    /// `1m`: MovieLens 1M.
    Ml1m,
    /// `10m`: MovieLens 10M.
    Ml10m,
    /// `20m`: MovieLens 20M.
    Ml20m,
    /// `25m`: MovieLens 25M.
    Ml25m,
    /// `32m`: MovieLens 32M.
    Ml32m,
}

impl KnownDataset {
    /// Every known dataset.
    pub const ALL: [KnownDataset; 7] = [
        KnownDataset::LatestSmall,
        KnownDataset::Ml100k,
        KnownDataset::Ml1m,
        KnownDataset::Ml10m,
        KnownDataset::Ml20m,
        KnownDataset::Ml25m,
        KnownDataset::Ml32m,
    ];

    /// The short name used on the command line, e.g. `latest-small`, `1m`.
    /// GroupLens serves each as `ml-<name>.zip`.
    pub fn name(self) -> &'static str {
        match self {
            KnownDataset::LatestSmall => "latest-small",
            KnownDataset::Ml100k => "100k",
            KnownDataset::Ml1m => "1m",
            KnownDataset::Ml10m => "10m",
            KnownDataset::Ml20m => "20m",
            KnownDataset::Ml25m => "25m",
            KnownDataset::Ml32m => "32m",
        }
    }

    /// The folder the archive unpacks to, inside [`datasets_dir`].
    pub fn dir_name(self) -> &'static str {
        match self {
            KnownDataset::LatestSmall => "ml-latest-small",
            KnownDataset::Ml100k => "ml-100k",
            KnownDataset::Ml1m => "ml-1m",
            KnownDataset::Ml10m => "ml-10M100K",
            KnownDataset::Ml20m => "ml-20m",
            KnownDataset::Ml25m => "ml-25m",
            KnownDataset::Ml32m => "ml-32m",
        }
    }

    /// The ratings file inside [`KnownDataset::dir_name`].
    pub fn ratings_file(self) -> &'static str {
        match self {
            KnownDataset::Ml100k => "u.data",
            KnownDataset::Ml1m | KnownDataset::Ml10m => "ratings.dat",
            _ => "ratings.csv",
        }
    }

    /// `<dir>/<dir_name>/<ratings_file>`, whether it exists or not.
    pub fn ratings_path_in(self, dir: &std::path::Path) -> PathBuf {
        dir.join(self.dir_name()).join(self.ratings_file())
    }
}

impl FromStr for KnownDataset {
    type Err = DataError;

    /// Accepts the short name, with or without `ml-`, in any case.
    fn from_str(s: &str) -> Result<KnownDataset, DataError> {
        let short = s.strip_prefix("ml-").unwrap_or(s).to_ascii_lowercase();
        KnownDataset::ALL
            .into_iter()
            .find(|d| d.name() == short)
            .ok_or_else(|| DataError::UnknownDataset(s.to_string()))
    }
}

/// The ratings file of a named dataset (`latest-small`, `100k`, `1m`, `10m`,
/// `20m`, `25m`, `32m`) under [`datasets_dir`]. When it is absent the error
/// says how to get it.
pub fn dataset_ratings_path(name: &str) -> Result<PathBuf, DataError> {
    let dataset: KnownDataset = name.parse()?;
    let path = dataset.ratings_path_in(&datasets_dir());
    if path.is_file() {
        Ok(path)
    } else {
        Err(DataError::DatasetMissing {
            name: dataset.name(),
            dir: dataset.dir_name(),
            path,
        })
    }
}

/// For tests that need real data: the ratings file of `dataset` under
/// `$SASREC_DATASETS`, else under this source tree's `datasets/` (where
/// `cargo xtask data fetch` puts it). When it is absent, prints why and
/// returns `None` (the test skips), unless `SASREC_REQUIRE_DATA=1`, which
/// turns a missing dataset into a panic (the test fails).
pub fn test_dataset(dataset: KnownDataset) -> Option<PathBuf> {
    let dir = match std::env::var_os("SASREC_DATASETS") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets"),
    };
    let path = dataset.ratings_path_in(&dir);
    if path.is_file() {
        return Some(path);
    }
    let why = format!("{} does not exist", path.display());
    if std::env::var("SASREC_REQUIRE_DATA").is_ok_and(|v| v == "1") {
        panic!("SASREC_REQUIRE_DATA=1 but {why}");
    }
    eprintln!(
        "skipped: {why} (get it with `cargo xtask data fetch {}`)",
        dataset.name()
    );
    None
}
