//! Reading interaction logs. Each input format has its reader in a file of
//! this folder, behind one small trait, [`LogReader`]:
//!
//! - `text.rs`: CSV, TSV, MovieLens `.dat`, RecBole `.inter` (its fields
//!   parsed in `fields.rs`, big files in parallel in `parallel.rs`);
//! - `parquet.rs`: one Parquet file, or a folder of parts.
//!
//! This file resolves a path's [`Format`], picks its reader in [`reader`]
//! (the one place a format meets its reader) and checks what every reader
//! returns. A new input format is a [`Format`] variant (its name and file
//! extensions, in `input.rs`), a new file here with a type implementing
//! [`LogReader`], and one arm in [`reader`]; the compiler lists the few
//! other matches on [`Format`] to extend.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::{DataError, Format, InputSpec, Interactions};

mod fields;
mod parallel;
pub(crate) mod parquet;
mod reader;
mod text;
mod text_parser;

use reader::LogReader;
pub(crate) use text_parser::{CappedReader, MAX_LINE};

/// The reader of `format`.
fn reader(format: Format) -> Box<dyn LogReader> {
    match format {
        Format::Csv | Format::Tsv | Format::Dat | Format::Inter => {
            Box::new(text::TextReader { format })
        }
        Format::Parquet => Box::new(parquet::ParquetReader),
    }
}

/// Reads an interaction log: a text file, a Parquet file, or a folder of
/// Parquet parts, as `spec` describes (see [`InputSpec`] for the defaults).
///
/// Every row is kept; a malformed row is an error naming the file, the line
/// (or row group and row) and the field, never skipped. Numeric times whose
/// size says another unit are refused ([`crate::check_time_unit`]).
///
/// Text files of 128 MiB or more are parsed on rayon's global pool, which
/// this starts if nothing has yet: size it
/// (`ThreadPoolBuilder::build_global`) before such a read if you want
/// another size.
pub fn read_interactions(path: &Path, spec: &InputSpec) -> Result<Interactions, DataError> {
    let format = resolve_format(path, spec)?;
    let log = reader(format).read(path, spec)?;
    crate::check_time_unit(&log, path)?;
    Ok(log)
}

/// Parses a text log (any format but Parquet) from any reader; `path` is
/// used only in error messages.
pub fn parse_interactions<R: Read>(
    reader: R,
    path: &Path,
    format: Format,
    spec: &InputSpec,
) -> Result<Interactions, DataError> {
    if format == Format::Parquet {
        return Err(DataError::InvalidOption(
            "Parquet is read from a file (read_interactions), not a stream".to_string(),
        ));
    }
    let log = text::parse(reader, path, format, spec, None)?;
    crate::check_time_unit(&log, path)?;
    Ok(log)
}

/// The format `spec` names, else the file name's, else (for Parquet, which
/// starts with `PAR1`) the file's first bytes.
fn resolve_format(path: &Path, spec: &InputSpec) -> Result<Format, DataError> {
    if let Some(format) = spec.format.or_else(|| Format::from_path(path)) {
        return Ok(format);
    }
    let mut head = [0u8; 4];
    let is_parquet = File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == b"PAR1";
    if is_parquet {
        Ok(Format::Parquet)
    } else {
        Err(DataError::UnknownFormat {
            path: path.to_path_buf(),
        })
    }
}

/// The files [`read_interactions`] reads for `path`: the file itself, or the
/// Parquet parts of a folder in the order they are read.
pub fn input_files(path: &Path) -> Result<Vec<std::path::PathBuf>, DataError> {
    if path.is_dir() {
        parquet::parts(path)
    } else {
        Ok(vec![path.to_path_buf()])
    }
}
