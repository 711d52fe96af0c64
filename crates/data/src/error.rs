//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while reading, filtering or saving data.
///
/// Errors about file contents name the file, the 1-based line and the field,
/// so a user can open the file at the right place.
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

    /// The file holds no ratings at all.
    #[error("{}: line {line}: no ratings: {what}", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
        /// The line where a rating was expected.
        line: u64,
        /// What was found instead, e.g. "the file is empty".
        what: &'static str,
    },

    /// The CSV header lacks a required column.
    #[error(
        "{}: line {line}: header has no field `{field}` (header is {header:?}; expected the columns userId,movieId,rating,timestamp separated by ',')",
        path.display()
    )]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The header line (1 unless the file starts with blank lines).
        line: u64,
        /// The missing column.
        field: &'static str,
        /// The header as read.
        header: String,
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
        field: &'static str,
        /// How many fields the line needs.
        expected: usize,
        /// How many it has.
        found: usize,
        /// The delimiter the format uses.
        delimiter: &'static str,
    },

    /// A field does not hold a value of the expected kind.
    #[error("{}: line {line}: field `{field}`: {problem}, found {value:?}", path.display())]
    BadField {
        /// The file.
        path: PathBuf,
        /// The line.
        line: u64,
        /// The field name, e.g. `userId`.
        field: &'static str,
        /// The text of the field (cut to 40 characters).
        value: String,
        /// What was expected, e.g. "expected an id from 0 to 4294967295".
        problem: &'static str,
    },

    /// The format could not be told from the file name.
    #[error(
        "{}: cannot tell the format from the file name; name it (csv, dat or tsv)",
        path.display()
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },

    /// A format name other than csv, dat or tsv.
    #[error("unknown ratings format {0:?}; expected csv, dat or tsv")]
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

    /// A filter or split option outside its range.
    #[error("invalid option: {0}")]
    InvalidOption(String),

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

    /// A vocabulary that lists the same raw id twice.
    #[error("vocabulary lists movie id {0} more than once")]
    DuplicateItem(u32),

    /// A movies file that the CSV reader rejects.
    #[error("{}: line {line}: field `{field}`: {message}", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// The line.
        line: u64,
        /// The field (empty where the reader could not tell).
        field: String,
        /// What the CSV reader said.
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
