//! The text formats' reader: CSV, TSV, MovieLens `.dat` and RecBole
//! `.inter`. It reads the first chunk and sniffs it, then parses the rest
//! sequentially ([`TextParser`], `text_parser.rs`) or, for big files, in
//! blocks on all threads (`parallel.rs`).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::parallel::BlockReport;
use super::reader::LogReader;
use super::text_parser::{Plan, Streamed, TextParser, read_some};
use crate::input::sniff_binary;
use crate::{DataError, Format, InputSpec, Interactions};

/// The reader of one text format: one file, streamed (see [`parse`]).
pub(super) struct TextReader {
    pub(super) format: Format,
}

impl LogReader for TextReader {
    fn read(&self, path: &Path, spec: &InputSpec) -> Result<Interactions, DataError> {
        if path.is_dir() {
            return Err(DataError::InvalidOption(format!(
                "{} is a folder; only Parquet parts can be read from a folder",
                path.display()
            )));
        }
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let size = file.metadata().map(|m| m.len()).ok();
        parse(file, path, self.format, spec, size)
    }
}

/// Parses a text log in `format` from `reader`; `size_hint` (the file's
/// size, `None` for a stream) sizes the columns and picks the parallel path.
pub(super) fn parse<R: Read>(
    reader: R,
    path: &Path,
    format: Format,
    spec: &InputSpec,
    size_hint: Option<u64>,
) -> Result<Interactions, DataError> {
    let plan = Plan::for_input(size_hint);
    parse_with(
        reader,
        path,
        format,
        spec,
        size_hint,
        plan,
        &mut BlockReport::default(),
    )
}

/// [`parse`] with the chunk and block sizes of `plan`; `report` says what
/// the parallel path did.
pub(super) fn parse_with<R: Read>(
    mut reader: R,
    path: &Path,
    format: Format,
    spec: &InputSpec,
    size_hint: Option<u64>,
    plan: Plan,
    report: &mut BlockReport,
) -> Result<Interactions, DataError> {
    let mut parser = TextParser::new(path, format, spec)?;
    // Read the first chunk whole (short reads happen) to sniff it.
    let mut first = vec![0u8; plan.chunk];
    let mut filled = 0;
    while filled < plan.chunk {
        match read_some(&mut reader, &mut first[filled..], path)? {
            0 => break,
            n => filled += n,
        }
    }
    first.truncate(filled);
    if let Some((looks_like, hint)) = sniff_binary(&first) {
        return Err(DataError::NotText {
            path: path.to_path_buf(),
            looks_like,
            hint,
        });
    }
    let rest = match parser.stream(first, &mut reader, plan.chunk, true)? {
        Streamed::End => return parser.finish(),
        Streamed::Paused(rest) => rest,
    };
    if let Some(size) = size_hint.filter(|_| !parser.out.is_empty()) {
        // Size the columns once from the first chunk's bytes per row, so
        // that 32M rows do not go through repeated reallocation.
        let parsed = (filled - rest.len()).max(1);
        let rows = (size as f64 / parsed as f64 * parser.out.len() as f64 * 1.02) as usize;
        parser.out.reserve(rows.saturating_sub(parser.out.len()));
    }
    if plan.parallel && parser.ready_for_blocks() {
        parser.blocks(rest, &mut reader, plan, report)?;
    } else {
        parser.stream(rest, &mut reader, plan.chunk, false)?;
    }
    parser.finish()
}
