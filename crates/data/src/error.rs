//! The one error type of this crate.

use std::fmt;
use std::path::PathBuf;

/// Where in a file: a text line, or a Parquet row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// A 1-based line of a text file.
    Line(u64),
    /// A row of a Parquet file: its row group and the 0-based row within
    /// the file.
    Row {
        /// The row group (0-based).
        row_group: usize,
        /// The row within the file (0-based).
        row: u64,
    },
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Line(line) => write!(f, "line {line}"),
            Place::Row { row_group, row } => write!(f, "row group {row_group}, row {row}"),
        }
    }
}

/// Everything that can go wrong while reading, filtering or saving data.
///
/// Errors about file contents name the file, the place (line, or Parquet row
/// group and row) and the field, so a user can open the file at the right
/// place. No message holds more than a few hundred characters of file
/// content: values are cut to 80 characters, headers to 200.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened, read or written.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said (part of the message, so not
        /// repeated as a source).
        error: std::io::Error,
    },

    /// The file holds no interactions at all.
    #[error("{}: {}no interactions: {what}", path.display(), line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    Empty {
        /// The file.
        path: PathBuf,
        /// The line where a row was expected (text files).
        line: Option<u64>,
        /// What was found instead, e.g. "the file is empty".
        what: &'static str,
    },

    /// A needed column is not in the file.
    #[error("{}: {place}: no {role} column {wanted} ({columns})", path.display())]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// Where the column names are (the header line).
        place: Place,
        /// What the column is for: `user`, `item`, `time`, `rating`, `name`.
        role: &'static str,
        /// The name looked for, or the names tried, in backticks.
        wanted: String,
        /// The columns the file has (quoted, cut to 200 characters) and how
        /// to name the column, e.g. `the header has "a", "b"; name it with
        /// --user-col`.
        columns: String,
    },

    /// A header or Parquet schema that names a column twice: which of the
    /// two a name means would be a guess.
    #[error("{}: {header} names column `{column}` twice (columns {first} and {second}); rename one", path.display())]
    DuplicateColumn {
        /// The file.
        path: PathBuf,
        /// Where the names are: `line 1: the header` or `the schema`.
        header: String,
        /// The name (cut to 80 characters).
        column: String,
        /// The 1-based positions of its first two uses.
        first: usize,
        /// See `first`.
        second: usize,
    },

    /// A data line has fewer fields than the format needs.
    #[error(
        "{}: line {line}: field `{field}` is missing: expected {expected} fields separated by {delimiter:?}, found {found}",
        path.display()
    )]
    TooFewFields {
        /// The file.
        path: PathBuf,
        /// The line.
        line: u64,
        /// The first missing field.
        field: String,
        /// How many fields the line needs.
        expected: usize,
        /// How many it has.
        found: usize,
        /// The delimiter.
        delimiter: String,
    },

    /// A field does not hold a value of the expected kind.
    #[error("{}: {place}: field `{field}`: {problem}, found {value:?}", path.display())]
    BadField {
        /// The file.
        path: PathBuf,
        /// The line or row.
        place: Place,
        /// The field (column) name.
        field: String,
        /// The text of the field (cut to 80 characters).
        value: String,
        /// What was expected, e.g. "expected an integer id".
        problem: String,
    },

    /// A null (missing) value where one is needed.
    #[error("{}: {place}: field `{field}` is null", path.display())]
    Null {
        /// The file.
        path: PathBuf,
        /// The row.
        place: Place,
        /// The column.
        field: String,
    },

    /// A blank line before the end of the file.
    #[error("{}: line {line}: blank line (only blank lines at the end of the file are allowed)", path.display())]
    BlankLine {
        /// The file.
        path: PathBuf,
        /// The line.
        line: u64,
    },

    /// A line longer than the reader accepts.
    #[error("{}: line {line}: longer than {limit} bytes; not a line-oriented text file?", path.display())]
    LineTooLong {
        /// The file.
        path: PathBuf,
        /// The line.
        line: u64,
        /// The limit in bytes.
        limit: usize,
    },

    /// A compressed or binary file where text was expected.
    #[error("{}: looks like {looks_like}, not a text file{hint}", path.display())]
    NotText {
        /// The file.
        path: PathBuf,
        /// What it looks like, e.g. "a gzip-compressed file".
        looks_like: &'static str,
        /// What to do, e.g. "; decompress it first".
        hint: &'static str,
    },

    /// A column of a Parquet file has a type the reader does not take.
    #[error("{}: column `{column}` has type {found}; expected {expected}", path.display())]
    ColumnType {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// Its type.
        found: String,
        /// What the reader takes.
        expected: &'static str,
    },

    /// A Parquet file the parquet crate cannot read.
    #[error("{}: not a readable Parquet file: {message}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What the parquet crate said (cut to 200 characters).
        message: String,
    },

    /// The format could not be told from the file name or contents.
    #[error(
        "{}: cannot tell the format from the file name; name it with --format (csv, tsv, dat, inter or parquet)",
        path.display()
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },

    /// A format name that [`crate::Format`] does not know.
    #[error("unknown input format {0:?}; expected csv, tsv, dat, inter or parquet")]
    UnknownFormatName(String),

    /// A dataset name that [`crate::KnownDataset`] does not know.
    #[error("unknown dataset {0:?}; expected one of latest-small, 100k, 1m, 10m, 20m, 25m, 32m")]
    UnknownDataset(String),

    /// A known dataset that is not on disk.
    #[error(
        "dataset {name} not found: {} does not exist. Get it with `cargo xtask data fetch {name}`, or set SASREC_DATASETS to the folder that holds {dir}/",
        path.display()
    )]
    DatasetMissing {
        /// The dataset's short name, e.g. `latest-small`.
        name: &'static str,
        /// The folder the dataset unpacks to, e.g. `ml-latest-small`.
        dir: &'static str,
        /// The ratings file that was looked for.
        path: PathBuf,
    },

    /// An input, filter or split option outside its range, or options that
    /// do not fit the input.
    #[error("invalid option: {0}")]
    InvalidOption(String),

    /// A setting of a run's data (config.json's `data` part) out of its
    /// range, naming the field.
    #[error(transparent)]
    Setting(#[from] InvalidSetting),

    /// Sequences could not be built from a log (the filter left nothing,
    /// or a filter option does not fit it).
    #[error("building sequences from {}: {error}", path.display())]
    Building {
        /// The log.
        path: PathBuf,
        /// What went wrong.
        error: Box<DataError>,
    },

    /// Filtering removed every interaction.
    #[error("no interactions left after filtering ({0})")]
    NothingLeft(String),

    /// A vocabulary file that is not valid JSON of the expected shape.
    #[error("{}: not a vocabulary file: {error}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What serde_json said.
        error: serde_json::Error,
    },

    /// A vocabulary that lists the same raw id twice, or mixes integer and
    /// string ids in one list.
    #[error("vocabulary: {what} id {id} is listed twice or is of the wrong kind")]
    BadVocabId {
        /// `item` or `user`.
        what: &'static str,
        /// The id (cut to 80 characters).
        id: String,
    },

    /// A CSV file that the csv crate rejects.
    #[error("{}: line {line}: {}{message}", path.display(), field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
    Csv {
        /// The file.
        path: PathBuf,
        /// The line.
        line: u64,
        /// The field, where the reader could tell.
        field: Option<String>,
        /// What the CSV reader said.
        message: String,
    },

    /// Numeric times whose size says another unit than the one they are
    /// read in (milliseconds read as seconds, or the reverse).
    #[error("{}: column `{column}`: {message}", path.display())]
    TimeUnit {
        /// The file.
        path: PathBuf,
        /// The time column.
        column: String,
        /// What the times look like, and the flag that reads them so.
        message: String,
    },
}

impl DataError {
    pub(crate) fn io(path: &std::path::Path, error: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}

/// A setting out of its range: `field` as in config.json (`lr`, `max_len`,
/// ...), and what is wrong with it.
#[derive(Clone, Debug, PartialEq)]
pub struct InvalidSetting {
    /// The field's name in config.json.
    pub field: &'static str,
    /// What is wrong, e.g. "must be positive, got -1".
    pub problem: String,
}

impl InvalidSetting {
    /// `field` `problem`.
    pub fn new(field: &'static str, problem: impl Into<String>) -> Self {
        InvalidSetting {
            field,
            problem: problem.into(),
        }
    }
}

impl std::fmt::Display for InvalidSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.field, self.problem)
    }
}

impl std::error::Error for InvalidSetting {}
