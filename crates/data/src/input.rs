//! The description of an input log: its format, delimiter, which columns
//! hold the user, item, time and rating, and the unit of numeric times.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::cut;
use crate::{DataError, Place, TimeUnit};

/// The layout of an interaction file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-separated text with a header line (MovieLens `ratings.csv` of
    /// latest, 20M, 25M, 32M; most exported logs). Fields may be quoted.
    Csv,
    /// Tab-separated text. The first line is a header when any of its fields
    /// is not a number; otherwise (MovieLens 100K `u.data`) there is none and
    /// the columns are `user item rating timestamp`.
    Tsv,
    /// MovieLens 1M / 10M `ratings.dat`: `user::movie::rating::timestamp`,
    /// no header.
    Dat,
    /// A RecBole atomic `.inter` file: tab-separated with a header such as
    /// `user_id:token item_id:token rating:float timestamp:float` (the
    /// `:type` suffixes are dropped from the column names).
    Inter,
    /// Apache Parquet: one file, or a folder of `*.parquet` parts as Spark,
    /// DuckDB or Polars write them.
    Parquet,
}

impl Format {
    /// The format a path's name says: a folder is Parquet parts; `.csv`,
    /// `.tsv`/`.data` (as in `u.data`), `.dat`, `.inter`, `.parquet`/`.pq`.
    pub fn from_path(path: &Path) -> Option<Format> {
        if path.is_dir() {
            return Some(Format::Parquet);
        }
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Format::Csv),
            "tsv" | "data" => Some(Format::Tsv),
            "dat" => Some(Format::Dat),
            "inter" => Some(Format::Inter),
            "parquet" | "pq" => Some(Format::Parquet),
            _ => None,
        }
    }

    /// The field separator of a text format (`None` for Parquet).
    pub fn default_delimiter(self) -> Option<&'static str> {
        match self {
            Format::Csv => Some(","),
            Format::Tsv | Format::Inter => Some("\t"),
            Format::Dat => Some("::"),
            Format::Parquet => None,
        }
    }
}

impl FromStr for Format {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Format, DataError> {
        match s {
            "csv" => Ok(Format::Csv),
            "tsv" => Ok(Format::Tsv),
            "dat" => Ok(Format::Dat),
            "inter" => Ok(Format::Inter),
            "parquet" => Ok(Format::Parquet),
            _ => Err(DataError::UnknownFormatName(cut(s, 20))),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Csv => "csv",
            Format::Tsv => "tsv",
            Format::Dat => "dat",
            Format::Inter => "inter",
            Format::Parquet => "parquet",
        })
    }
}

/// How to read an interaction log. `Default` reads MovieLens files and most
/// logs as they are: the format from the file name, columns found by their
/// usual names.
///
/// A column left `None` is looked up by its usual names, the first present
/// winning: user `userId`, `user_id`, `user`, `uid`, `customer_id`,
/// `visitor_id`, `session_id`; item `movieId`, `itemId`, `item_id`, `item`,
/// `iid`, `product_id`, `productId`, `asin`; time `timestamp`, `time`, `ts`,
/// `datetime`, `event_time`, `date`; rating `rating` (optional: implicit
/// feedback has none); event type `event_type`, `event`, `action_type`,
/// `behavior_type`, `interaction_type` (optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InputSpec {
    /// The format; `None`: from the file name, else from its first bytes.
    pub format: Option<Format>,
    /// Field separator of a text format: one byte (`,`, `;`, `|`, a tab
    /// written `\t` or `tab`); `None`: the format's own.
    pub delimiter: Option<String>,
    /// The user column.
    pub user_col: Option<String>,
    /// The item column.
    pub item_col: Option<String>,
    /// The time column.
    pub time_col: Option<String>,
    /// The rating column (optional).
    pub rating_col: Option<String>,
    /// Unit of numeric times (seconds when `None`).
    pub time_unit: Option<TimeUnit>,
    /// The event type column (`view`, `cart`, `purchase`, ...; optional).
    pub event_col: Option<String>,
}

/// The usual names of each column, tried in order when none is given.
const USER_NAMES: &[&str] = &[
    "userId",
    "user_id",
    "user",
    "uid",
    "customer_id",
    "visitor_id",
    "session_id",
];
pub(crate) const ITEM_NAMES: &[&str] = &[
    "movieId",
    "itemId",
    "item_id",
    "item",
    "iid",
    "product_id",
    "productId",
    "asin",
];
const TIME_NAMES: &[&str] = &["timestamp", "time", "ts", "datetime", "event_time", "date"];
const RATING_NAMES: &[&str] = &["rating"];
const EVENT_NAMES: &[&str] = &[
    "event_type",
    "event",
    "action_type",
    "behavior_type",
    "interaction_type",
];

/// The columns of a file that hold the user, item, time and rating.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Columns {
    /// The user column's name.
    pub user: String,
    /// The item column's name.
    pub item: String,
    /// The time column's name.
    pub time: String,
    /// The rating column's name, if there is one.
    pub rating: Option<String>,
    /// The event type column's name, if there is one.
    pub event: Option<String>,
}

/// Column positions within a file's columns, with their names.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub names: Columns,
    /// Positions of user, item, time.
    pub user: usize,
    pub item: usize,
    pub time: usize,
    pub rating: Option<usize>,
    pub event: Option<usize>,
}

impl InputSpec {
    /// The delimiter of a text format as bytes: the given one (one byte) or
    /// the format's own.
    pub(crate) fn delimiter_for(&self, format: Format) -> Result<Vec<u8>, DataError> {
        let Some(given) = &self.delimiter else {
            return Ok(format
                .default_delimiter()
                .unwrap_or_default()
                .as_bytes()
                .to_vec());
        };
        let d = match given.as_str() {
            "tab" | "\\t" => "\t",
            other => other,
        };
        match format {
            Format::Parquet => Err(DataError::InvalidOption(
                "a delimiter was given, but Parquet files have none".to_string(),
            )),
            Format::Dat if d != "::" => Err(DataError::InvalidOption(format!(
                "dat files are separated by \"::\"; got the delimiter {:?}",
                cut(d, 10)
            ))),
            _ if d.len() == 1 && !matches!(d, "\"" | "\n" | "\r") || d == "::" => {
                Ok(d.as_bytes().to_vec())
            }
            _ => Err(DataError::InvalidOption(format!(
                "a delimiter is one ASCII character (or `tab`); got {:?}",
                cut(d, 10)
            ))),
        }
    }

    /// Finds the user, item, time and rating columns among `found`, which
    /// must not name a column twice.
    pub(crate) fn resolve(
        &self,
        found: &[String],
        path: &Path,
        place: Place,
    ) -> Result<Resolved, DataError> {
        check_unique_names(path, place, found)?;
        let missing = |role, wanted: &[&str], flag: &str| {
            missing_column(path, place, role, wanted, found, flag)
        };
        let find = |given: &Option<String>,
                    usual: &[&str],
                    role: &'static str,
                    flag: &'static str|
         -> Result<Option<usize>, DataError> {
            match given {
                Some(name) => found
                    .iter()
                    .position(|c| c == name)
                    .map(Some)
                    .ok_or_else(|| missing(role, &[name], flag)),
                None => Ok(usual
                    .iter()
                    .find_map(|name| found.iter().position(|c| c == name))),
            }
        };
        let required = |given, usual: &[&str], role, flag| {
            find(given, usual, role, flag)?.ok_or_else(|| missing(role, usual, flag))
        };
        let user = required(&self.user_col, USER_NAMES, "user", "--user-col")?;
        let item = required(&self.item_col, ITEM_NAMES, "item", "--item-col")?;
        let time = required(&self.time_col, TIME_NAMES, "time", "--time-col")?;
        let rating = find(&self.rating_col, RATING_NAMES, "rating", "--rating-col")?;
        let event = find(&self.event_col, EVENT_NAMES, "event", "--event-col")?;
        Ok(Resolved {
            names: Columns {
                user: found[user].clone(),
                item: found[item].clone(),
                time: found[time].clone(),
                rating: rating.map(|r| found[r].clone()),
                event: event.map(|e| found[e].clone()),
            },
            user,
            item,
            time,
            rating,
            event,
        })
    }

    /// Whether any column was named.
    pub(crate) fn names_columns(&self) -> bool {
        self.user_col.is_some()
            || self.item_col.is_some()
            || self.time_col.is_some()
            || self.rating_col.is_some()
            || self.event_col.is_some()
    }
}

/// Refuses a header (or schema) that names a column twice. Empty names
/// (a trailing delimiter) name nothing and may repeat.
pub(crate) fn check_unique_names(
    path: &Path,
    place: Place,
    found: &[String],
) -> Result<(), DataError> {
    let mut seen = std::collections::HashMap::with_capacity(found.len());
    for (i, name) in found.iter().enumerate().filter(|(_, n)| !n.is_empty()) {
        if let Some(first) = seen.insert(name.as_str(), i) {
            return Err(DataError::DuplicateColumn {
                path: path.to_path_buf(),
                header: match place {
                    Place::Line(line) => format!("line {line}: the header"),
                    Place::Row { .. } => "the schema".to_string(),
                },
                column: cut(name, 80),
                first: first + 1,
                second: i + 1,
            });
        }
    }
    Ok(())
}

/// The error for a column not among `found`: names the ones looked for
/// (`wanted`) and lists the file's columns (quoted, cut to 200 characters).
pub(crate) fn missing_column(
    path: &Path,
    place: Place,
    role: &'static str,
    wanted: &[&str],
    found: &[String],
    flag: &str,
) -> DataError {
    let wanted: Vec<String> = wanted.iter().map(|w| format!("`{}`", cut(w, 80))).collect();
    let found: Vec<String> = found.iter().map(|f| format!("{:?}", cut(f, 80))).collect();
    let in_what = match place {
        Place::Line(_) => "header",
        Place::Row { .. } => "schema",
    };
    DataError::MissingColumn {
        path: path.to_path_buf(),
        place,
        role,
        wanted: wanted.join(" or "),
        columns: format!(
            "the {in_what} has {}; name it with {flag}",
            cut(&found.join(", "), 200)
        ),
    }
}

/// What a file's first bytes say it is, when it is not text.
pub(crate) fn sniff_binary(head: &[u8]) -> Option<(&'static str, &'static str)> {
    const MAGIC: &[(&[u8], &str, &str)] = &[
        (
            b"PAR1",
            "a Parquet file",
            "; read it with --format parquet (or name it .parquet)",
        ),
        (
            b"\x1f\x8b",
            "a gzip-compressed file",
            "; decompress it first (gunzip)",
        ),
        (b"PK\x03\x04", "a zip archive", "; unpack it first (unzip)"),
        (
            b"\x28\xb5\x2f\xfd",
            "a zstd-compressed file",
            "; decompress it first (zstd -d)",
        ),
        (
            b"BZh",
            "a bzip2-compressed file",
            "; decompress it first (bunzip2)",
        ),
        (
            b"\xfd7zXZ\x00",
            "an xz-compressed file",
            "; decompress it first (unxz)",
        ),
        (
            b"ARROW1",
            "an Arrow IPC file",
            "; convert it to Parquet or CSV",
        ),
        (b"\xff\xfe", "UTF-16 text", "; convert it to UTF-8"),
        (b"\xfe\xff", "UTF-16 text", "; convert it to UTF-8"),
    ];
    for &(magic, what, hint) in MAGIC {
        if head.starts_with(magic) {
            return Some((what, hint));
        }
    }
    // Text never holds NUL bytes; binary formats nearly always do early on.
    if head.iter().take(4096).any(|&b| b == 0) {
        return Some((
            "a binary file",
            "; expected CSV, TSV, .dat, .inter or Parquet",
        ));
    }
    None
}
