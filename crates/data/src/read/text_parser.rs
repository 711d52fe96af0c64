//! The text parser: CSV, TSV, MovieLens `.dat` and RecBole `.inter`
//! ([`TextParser`]), which `text.rs` drives.
//!
//! It streams the file in 1 MiB chunks and parses the bytes itself: lines
//! and fields are found with `memchr`, ids are interned as they come,
//! numbers are parsed in place (`fields.rs`). A line with a quote character
//! hands the rest of the file to the csv crate, which handles quoting
//! (delimiters and newlines inside quotes). Big files are parsed in blocks
//! on all threads after their first chunk, with the sequential result
//! (`parallel.rs`). See `docs/data.md` for the measured speed.

use std::cell::Cell;
use std::io::{Cursor, Read};
use std::path::Path;
use std::rc::Rc;

use super::fields::{LastId, POW10, code_of_int, digits, looks_numeric, parse_rating};
use crate::ids::{cut, cut_bytes};
use crate::input::Resolved;
use crate::time::TimeParser;
use crate::{DataError, Format, InputSpec, Interactions, Place, Source};
use crate::{IdTable, TimeFormat, TimeUnit};

/// Bytes per block of the parallel path (a line more or less): big enough
/// that a block's own costs (its worker, its new ids' tables) are small
/// beside parsing it.
pub(super) const BLOCK: usize = 4 << 20;
/// The first piece of a file, parsed alone and sequentially: the header,
/// the columns and the time format are known after it.
const CHUNK: usize = 1 << 20;
/// Longest line accepted: a longer one is not a log line, and echoing or
/// buffering it without bound is what this limit prevents.
pub(crate) const MAX_LINE: usize = 1 << 20;
/// The columns of a headerless file (MovieLens `.dat`, `u.data`).
const HEADERLESS: [&str; 4] = ["userId", "movieId", "rating", "timestamp"];

/// How a text file is read: the size of the first chunk and of the
/// sequential path's reads, and whether the rest is parsed in parallel, in
/// batches of `batch` blocks of `block` bytes (see `read/parallel.rs`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Plan {
    pub(super) chunk: usize,
    pub(super) block: usize,
    pub(super) batch: usize,
    pub(super) parallel: bool,
}

impl Plan {
    /// Parallel blocks when rayon has more than one thread and the file is
    /// at least 4 times the text in flight (two batches, one parsed and one
    /// read, of 2 blocks per thread), so that the blocks add at most a
    /// quarter of the file to the peak memory; small files and streams stay
    /// sequential. Asking rayon for its thread count starts its global pool,
    /// so it is asked only for files big enough at 2 threads: reading small
    /// ones leaves the pool's size to the caller.
    pub(super) fn for_input(size_hint: Option<u64>) -> Plan {
        let big_enough =
            |threads: usize| size_hint.is_some_and(|size| size >= 4 * (4 * threads * BLOCK) as u64);
        let threads = if big_enough(2) {
            rayon::current_num_threads()
        } else {
            1
        };
        Plan {
            chunk: CHUNK,
            block: BLOCK,
            batch: 2 * threads,
            parallel: threads > 1 && big_enough(threads),
        }
    }
}

/// What [`TextParser::stream`] did.
pub(super) enum Streamed {
    /// Everything was parsed.
    End,
    /// Paused after the first chunk; the bytes read but not parsed (the
    /// start of a line).
    Paused(Vec<u8>),
}

pub(super) fn read_some<R: Read>(
    reader: &mut R,
    buf: &mut [u8],
    path: &Path,
) -> Result<usize, DataError> {
    loop {
        match reader.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DataError::io(path, e)),
        }
    }
}

/// What [`TextParser::lines`] did with the bytes.
pub(super) enum Progress {
    /// Parsed whole lines of this many bytes; the rest is a partial line.
    Parsed(usize),
    /// Parsed this many bytes, then met a line with a quote character.
    Quoted(usize),
}

/// How the first line is treated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Header {
    /// It names the columns.
    Yes,
    /// There is none: columns are MovieLens' `user item rating timestamp`.
    No,
    /// A header when any of its fields is not a number (TSV).
    Detect,
}

/// Parses lines, keeping the line number and the column layout. Its fields
/// are open to the parallel path (`parallel.rs`), which builds a parser per
/// block and merges their rows.
pub(super) struct TextParser<'p> {
    pub(super) path: &'p Path,
    pub(super) spec: &'p InputSpec,
    pub(super) format: Format,
    pub(super) delimiter: Vec<u8>,
    pub(super) header: Header,
    /// The columns, once the header is read.
    pub(super) cols: Option<Resolved>,
    /// Fields a data line must have: the last needed column + 1.
    pub(super) needed: usize,
    /// Ids must be non-negative integers: MovieLens layouts (their columns
    /// `userId`/`movieId`, or no header), where anything else is a typo.
    pub(super) strict_ids: bool,
    pub(super) time: TimeParser,
    /// The last user and item id read, to skip the hash lookup when an id
    /// repeats on the next line (logs are often grouped by user or session).
    pub(super) last_user: LastId,
    pub(super) last_item: LastId,
    /// The last event type read (a block's worker interns into a copy of
    /// the file's table of event types, merged by name).
    pub(super) last_event: LastId,
    /// A block's worker only: the file's id tables as they were when its
    /// batch began (see [`code_of_int`] and `read/parallel.rs`).
    pub(super) known_users: Option<&'p IdTable>,
    pub(super) known_items: Option<&'p IdTable>,
    pub(super) line_no: u64,
    /// The first of a run of blank lines, an error unless the file ends.
    pub(super) blank_since: Option<u64>,
    /// Byte ranges of the fields of the current line (reused).
    pub(super) fields: Vec<(usize, usize)>,
    pub(super) out: Interactions,
}

impl<'p> TextParser<'p> {
    pub(super) fn new(
        path: &'p Path,
        format: Format,
        spec: &'p InputSpec,
    ) -> Result<Self, DataError> {
        let header = match format {
            Format::Csv | Format::Inter => Header::Yes,
            Format::Tsv => Header::Detect,
            Format::Dat | Format::Parquet => Header::No,
        };
        Ok(TextParser {
            path,
            spec,
            format,
            delimiter: spec.delimiter_for(format)?,
            header,
            cols: None,
            needed: 0,
            strict_ids: false,
            time: TimeParser::new(spec.time_unit),
            last_user: LastId::default(),
            last_item: LastId::default(),
            last_event: LastId::default(),
            known_users: None,
            known_items: None,
            line_no: 0,
            blank_since: None,
            fields: Vec::with_capacity(8),
            out: Interactions::default(),
        })
    }

    /// Parses `pending` (bytes read but not parsed, from a line start), then
    /// what `reader` gives, in reads of `chunk` bytes; with `pause`, stops
    /// after parsing `pending` and hands back what is left of it.
    pub(super) fn stream<R: Read>(
        &mut self,
        mut buf: Vec<u8>,
        reader: &mut R,
        chunk: usize,
        pause: bool,
    ) -> Result<Streamed, DataError> {
        // buf[start..filled] holds bytes read but not yet parsed (a partial line).
        let mut filled = buf.len();
        buf.resize(filled.max(chunk + MAX_LINE), 0);
        let mut start = 0;
        let mut at_end = false;
        loop {
            match self.lines(&buf[start..filled])? {
                Progress::Parsed(used) => start += used,
                Progress::Quoted(used) => {
                    // The rest goes to the csv crate: what is buffered, then the reader.
                    let rest = Cursor::new(buf[start + used..filled].to_vec()).chain(reader);
                    self.quoted(rest)?;
                    return Ok(Streamed::End);
                }
            }
            if filled - start > MAX_LINE {
                return Err(DataError::LineTooLong {
                    path: self.path.to_path_buf(),
                    line: self.line_no + 1,
                    limit: MAX_LINE,
                });
            }
            if pause {
                buf.truncate(filled);
                return Ok(Streamed::Paused(buf.split_off(start)));
            }
            if at_end {
                if start < filled {
                    self.last_line(&buf[start..filled])?;
                }
                return Ok(Streamed::End);
            }
            buf.copy_within(start..filled, 0);
            filled -= start;
            start = 0;
            let end = (filled + chunk).min(buf.len());
            match read_some(reader, &mut buf[filled..end], self.path)? {
                0 => at_end = true,
                n => filled += n,
            }
        }
    }

    /// Parses every whole line in `bytes`.
    pub(super) fn lines(&mut self, bytes: &[u8]) -> Result<Progress, DataError> {
        let mut pos = 0;
        // Known from the second chunk on (the first row fixes the time format).
        let movielens = self.movielens_shape();
        loop {
            if movielens && self.blank_since.is_none() {
                match self.fast_row(&bytes[pos..]) {
                    Fast::Row(used) => {
                        self.line_no += 1;
                        pos += used;
                        continue;
                    }
                    Fast::NeedMore => return Ok(Progress::Parsed(pos)),
                    Fast::Slow => {}
                }
            }
            if self.cols.is_none() {
                // The header, or the first line of a file that may have none.
                let Some(len) = memchr::memchr(b'\n', &bytes[pos..]) else {
                    return Ok(Progress::Parsed(pos));
                };
                self.line(&bytes[pos..pos + len])?;
                pos += len + 1;
                continue;
            }
            let Some((end, quote)) =
                scan_line(bytes, pos, &self.delimiter, self.needed, &mut self.fields)
            else {
                return Ok(Progress::Parsed(pos));
            };
            if quote && self.format != Format::Dat {
                return Ok(Progress::Quoted(pos));
            }
            let line = &bytes[pos..end];
            if line.is_empty() || line == b"\r" || self.fields.len() < self.needed {
                // Blank lines and short lines: the careful path says what is wrong.
                self.line(line)?;
            } else {
                self.line_no += 1;
                self.check_no_blank_before()?;
                let fields = std::mem::take(&mut self.fields);
                let result = self.row(
                    |i| &bytes[fields[i].0..fields[i].1],
                    Place::Line(self.line_no),
                );
                self.fields = fields;
                result?;
            }
            pos = end + 1;
        }
    }

    /// Whether the rows so far are MovieLens' shape (`user item rating
    /// timestamp` in this order, integer ids, integer seconds), which
    /// [`TextParser::fast_row`] reads in one pass.
    fn movielens_shape(&self) -> bool {
        let standard = self.cols.as_ref().is_some_and(|c| {
            (c.user, c.item, c.rating, c.time) == (0, 1, Some(2), 3) && c.event.is_none()
        });
        let seconds = TimeFormat::Number {
            unit: TimeUnit::S,
            decimals: false,
        };
        standard && self.strict_ids && self.time.format() == Some(&seconds)
    }

    /// MovieLens' row in one pass over its bytes: `user,item,rating,time`
    /// with plain digits, a rating of at most 7 digits and a `\n` or `\r\n`
    /// end. Anything else is left to the general path, which also says what
    /// is wrong. (The general path finds the fields first, then parses them:
    /// this one is about 1.5x faster on MovieLens files.)
    #[inline]
    fn fast_row(&mut self, b: &[u8]) -> Fast {
        let mut i = 0;
        let (user, n) = digits(b, &mut i);
        if i == b.len() {
            return Fast::NeedMore;
        }
        if n == 0 || n > 18 || !skip_delimiter(b, &mut i, &self.delimiter) {
            return Fast::Slow;
        }
        let (item, n) = digits(b, &mut i);
        if i == b.len() {
            return Fast::NeedMore;
        }
        if n == 0 || n > 18 || !skip_delimiter(b, &mut i, &self.delimiter) {
            return Fast::Slow;
        }
        let (whole, n_whole) = digits(b, &mut i);
        let (mut frac, mut n_frac) = (0, 0);
        if b.get(i) == Some(&b'.') {
            i += 1;
            (frac, n_frac) = digits(b, &mut i);
        }
        if i == b.len() {
            return Fast::NeedMore;
        }
        if n_whole == 0 || n_whole + n_frac > 7 || !skip_delimiter(b, &mut i, &self.delimiter) {
            return Fast::Slow;
        }
        let (time, n) = digits(b, &mut i);
        if i < b.len() && b[i] == b'\r' {
            i += 1;
        }
        if i == b.len() {
            return Fast::NeedMore;
        }
        // At most 12 digits of seconds: microseconds fit in i64.
        if n == 0 || n > 12 || b[i] != b'\n' {
            return Fast::Slow;
        }
        // At most 7 digits: the same value as `parse_rating`'s fast path.
        let rating = (whole * 10u64.pow(n_frac as u32) + frac) as f32 / POW10[n_frac];
        let out = &mut self.out;
        out.user
            .push(code_of_int(&mut out.users, self.known_users, user as i64));
        out.item
            .push(code_of_int(&mut out.items, self.known_items, item as i64));
        out.time.push(time as i64 * 1_000_000);
        if let Some(r) = &mut out.rating {
            r.push(rating);
        }
        Fast::Row(i + 1)
    }

    /// The last line of the file, which has no newline.
    fn last_line(&mut self, line: &[u8]) -> Result<(), DataError> {
        if self.cols.is_some() && self.format != Format::Dat && memchr::memchr(b'"', line).is_some()
        {
            return self.quoted(Cursor::new(line.to_vec()));
        }
        self.line(line)
    }

    fn line(&mut self, line: &[u8]) -> Result<(), DataError> {
        self.line_no += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.blank_since.get_or_insert(self.line_no);
            return Ok(());
        }
        self.check_no_blank_before()?;
        if self.cols.is_none() {
            let names = self.header_names(line);
            let is_header = match self.header {
                Header::Yes => true,
                Header::No => false,
                Header::Detect => names.iter().any(|n| !looks_numeric(n.as_bytes())),
            };
            self.set_columns(is_header.then_some(names))?;
            if is_header {
                return Ok(());
            }
        }
        split(line, &self.delimiter, self.needed, &mut self.fields);
        if self.fields.len() < self.needed {
            return Err(self.too_few_fields(self.fields.len()));
        }
        let fields = std::mem::take(&mut self.fields);
        let result = self.row(
            |i| &line[fields[i].0..fields[i].1],
            Place::Line(self.line_no),
        );
        self.fields = fields;
        result
    }

    fn check_no_blank_before(&self) -> Result<(), DataError> {
        match self.blank_since {
            Some(line) => Err(DataError::BlankLine {
                path: self.path.to_path_buf(),
                line,
            }),
            None => Ok(()),
        }
    }

    /// The column names of a header line (the csv crate handles quoting): a
    /// UTF-8 BOM dropped, names trimmed, `.inter` `:type` suffixes dropped.
    fn header_names(&self, line: &[u8]) -> Vec<String> {
        let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        if self.delimiter.len() > 1 {
            return vec![String::from_utf8_lossy(line).into_owned()];
        }
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .delimiter(self.delimiter[0])
            .from_reader(line);
        let mut record = csv::ByteRecord::new();
        // A header the csv crate cannot split has no usable columns.
        if reader.read_byte_record(&mut record).is_err() {
            record.clear();
        }
        record
            .iter()
            .map(|name| {
                let name = String::from_utf8_lossy(name);
                let name = name.trim();
                let name = match self.format {
                    Format::Inter => name.rsplit_once(':').map_or(name, |(n, _)| n),
                    _ => name,
                };
                name.to_string()
            })
            .collect()
    }

    /// Finds the columns among `names` (a header), or takes MovieLens'
    /// order (no header).
    fn set_columns(&mut self, names: Option<Vec<String>>) -> Result<(), DataError> {
        let place = Place::Line(self.line_no);
        let cols = match names {
            Some(names) => {
                let cols = self.spec.resolve(&names, self.path, place)?;
                self.strict_ids = !self.spec.names_columns()
                    && cols.names.user == "userId"
                    && cols.names.item == "movieId";
                cols
            }
            None => {
                if self.spec.names_columns() {
                    return Err(DataError::InvalidOption(format!(
                        "{}: the file has no header line, so its columns cannot be chosen by name; its columns are {}",
                        self.path.display(),
                        HEADERLESS.join(", ")
                    )));
                }
                self.strict_ids = true;
                let names = HEADERLESS.map(String::from);
                self.spec.resolve(&names, self.path, place)?
            }
        };
        self.needed = 1 + [cols.user, cols.item, cols.time]
            .into_iter()
            .chain(cols.rating)
            .chain(cols.event)
            .max()
            .expect("three columns at least");
        if cols.rating.is_some() {
            self.out.rating = Some(Vec::new());
        }
        if cols.event.is_some() {
            self.out.event = Some(Vec::new());
        }
        self.cols = Some(cols);
        Ok(())
    }

    /// One row from its fields (`field(i)` is column i's bytes).
    #[inline]
    fn row<'a>(
        &mut self,
        field: impl Fn(usize) -> &'a [u8],
        place: Place,
    ) -> Result<(), DataError> {
        let cols = self.cols.as_ref().expect("columns are known before rows");
        let out = &mut self.out;
        let bad = |name: &str, value: &[u8], problem: String| DataError::BadField {
            path: self.path.to_path_buf(),
            place,
            field: name.to_string(),
            value: cut_bytes(value, 80),
            problem,
        };
        let (u, i, t) = (field(cols.user), field(cols.item), field(cols.time));
        let user = self
            .last_user
            .code(&mut out.users, self.known_users, u, self.strict_ids)
            .map_err(|p| bad(&cols.names.user, u, p.to_string()))?;
        let item = self
            .last_item
            .code(&mut out.items, self.known_items, i, self.strict_ids)
            .map_err(|p| bad(&cols.names.item, i, p.to_string()))?;
        let time = self
            .time
            .parse(t)
            .map_err(|p| bad(&cols.names.time, t, p))?;
        if let (Some(r), Some(ratings)) = (cols.rating, &mut out.rating) {
            let text = field(r);
            let rating = parse_rating(text).map_err(|p| {
                bad(
                    cols.names.rating.as_deref().unwrap_or("rating"),
                    text,
                    p.to_string(),
                )
            })?;
            ratings.push(rating);
        }
        if let (Some(e), Some(events)) = (cols.event, &mut out.event) {
            let text = field(e);
            let event = self
                .last_event
                .code(&mut out.events, None, text, false)
                .map_err(|p| {
                    bad(
                        cols.names.event.as_deref().unwrap_or("event"),
                        text,
                        p.replace("an id", "an event type"),
                    )
                })?;
            events.push(event);
        }
        out.user.push(user);
        out.item.push(item);
        out.time.push(time);
        Ok(())
    }

    fn too_few_fields(&self, found: usize) -> DataError {
        let cols = self.cols.as_ref().expect("columns are known");
        let mut by_position = vec![
            (cols.user, &cols.names.user),
            (cols.item, &cols.names.item),
            (cols.time, &cols.names.time),
        ];
        if let (Some(r), Some(name)) = (cols.rating, &cols.names.rating) {
            by_position.push((r, name));
        }
        if let (Some(e), Some(name)) = (cols.event, &cols.names.event) {
            by_position.push((e, name));
        }
        let field = by_position
            .into_iter()
            .filter(|&(p, _)| p >= found)
            .min_by_key(|&(p, _)| p)
            .map_or_else(String::new, |(_, name)| name.clone());
        DataError::TooFewFields {
            path: self.path.to_path_buf(),
            line: self.line_no,
            field,
            expected: self.needed,
            found,
            delimiter: String::from_utf8_lossy(&self.delimiter).into_owned(),
        }
    }

    /// The rest of the file through the csv crate (quoted fields). Lines
    /// over [`MAX_LINE`] are refused before the csv crate buffers them.
    fn quoted<R: Read>(&mut self, rest: R) -> Result<(), DataError> {
        let capped = CappedReader::new(rest);
        let allowed = capped.allowed();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(self.delimiter[0])
            .from_reader(capped);
        let mut record = csv::ByteRecord::new();
        let first_line = self.line_no;
        let mut next_line = self.line_no + 1;
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => return Err(self.csv_error(e, first_line)),
            }
            let position = record.position().expect("the csv crate tracks positions");
            self.line_no = first_line + position.line();
            // The csv crate skips blank lines: find them from the line numbers.
            if self.line_no > next_line {
                self.blank_since.get_or_insert(next_line);
            }
            self.check_no_blank_before()?;
            if record.len() < self.needed {
                return Err(self.too_few_fields(record.len()));
            }
            let newlines = memchr::memchr_iter(b'\n', record.as_slice()).count() as u64;
            next_line = self.line_no + newlines + 1;
            self.row(|i| &record[i], Place::Line(self.line_no))?;
            allowed
                .set(position.byte() + record.as_slice().len() as u64 + MAX_LINE as u64 + 65_536);
        }
    }

    fn csv_error(&self, e: csv::Error, first_line: u64) -> DataError {
        let line = first_line + e.position().map_or(1, |p| p.line());
        match e.into_kind() {
            csv::ErrorKind::Io(err) if err.kind() == std::io::ErrorKind::FileTooLarge => {
                DataError::LineTooLong {
                    path: self.path.to_path_buf(),
                    line: self.line_no + 1,
                    limit: MAX_LINE,
                }
            }
            csv::ErrorKind::Io(err) => DataError::io(self.path, err),
            other => DataError::Csv {
                path: self.path.to_path_buf(),
                line,
                field: None,
                message: cut(&format!("{other:?}"), 200),
            },
        }
    }

    pub(super) fn finish(self) -> Result<Interactions, DataError> {
        if self.out.is_empty() {
            return Err(DataError::Empty {
                path: self.path.to_path_buf(),
                line: Some(self.blank_since.unwrap_or(self.line_no + 1)),
                what: if self.line_no == 0 {
                    "the file is empty"
                } else {
                    "the file ends here"
                },
            });
        }
        let mut out = self.out;
        out.source = Source {
            format: Some(self.format),
            files: 1,
            columns: self.cols.map(|c| c.names).unwrap_or_default(),
            time_format: self.time.format().cloned(),
        };
        Ok(out)
    }
}

/// What [`TextParser::fast_row`] made of the bytes.
enum Fast {
    /// A row was parsed from this many bytes.
    Row(usize),
    /// The bytes end before the line does.
    NeedMore,
    /// Not MovieLens' shape: parse the line the general way.
    Slow,
}

/// Moves `*i` past `delimiter` if it is at `b[*i..]`.
#[inline]
fn skip_delimiter(b: &[u8], i: &mut usize, delimiter: &[u8]) -> bool {
    let found = b[*i..].starts_with(delimiter);
    if found {
        *i += delimiter.len();
    }
    found
}

/// A reader that fails (with `FileTooLarge`) once more bytes have been read
/// than [`CappedReader::allowed`] says, so the csv crate never buffers an
/// endless record: after each record, allow its end + [`MAX_LINE`].
pub(crate) struct CappedReader<R> {
    inner: R,
    read: u64,
    allowed: Rc<Cell<u64>>,
}

impl<R: Read> CappedReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        CappedReader {
            inner,
            read: 0,
            // The csv crate reads ahead in small buffers: leave room for one.
            allowed: Rc::new(Cell::new(MAX_LINE as u64 + 65_536)),
        }
    }

    /// The byte offset up to which reading is allowed.
    pub(crate) fn allowed(&self) -> Rc<Cell<u64>> {
        self.allowed.clone()
    }
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read > self.allowed.get() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                "record too long",
            ));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// One pass over the line that starts at `bytes[start]`: the byte ranges of
/// its first `needed` fields (the last ends at the next delimiter, a `\r\n`
/// or `\n`), whether it holds a quote character, and where its `\n` is
/// (`None`: the line continues past `bytes`). One loop over the bytes beats
/// a `memchr` call per field on lines of a few dozen bytes.
#[inline]
fn scan_line(
    bytes: &[u8],
    start: usize,
    delimiter: &[u8],
    needed: usize,
    fields: &mut Vec<(usize, usize)>,
) -> Option<(usize, bool)> {
    fields.clear();
    let d0 = delimiter[0];
    let mut begin = start;
    let mut quote = false;
    let mut i = start;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\n' {
            if fields.len() < needed {
                let end = if i > begin && bytes[i - 1] == b'\r' {
                    i - 1
                } else {
                    i
                };
                fields.push((begin, end));
            }
            return Some((i, quote));
        }
        if b == d0
            && fields.len() < needed
            && (delimiter.len() == 1 || bytes.get(i + 1) == Some(&delimiter[1]))
        {
            fields.push((begin, i));
            i += delimiter.len();
            begin = i;
            continue;
        }
        quote |= b == b'"';
        i += 1;
    }
    None
}

/// Splits `line` into at most `needed` fields by a one- or two-byte
/// delimiter (`,`, tab, `::`); any rest is ignored.
#[inline]
fn split(line: &[u8], delimiter: &[u8], needed: usize, fields: &mut Vec<(usize, usize)>) {
    fields.clear();
    let mut begin = 0;
    while fields.len() + 1 < needed {
        let Some(at) = find_delimiter(line, begin, delimiter) else {
            break;
        };
        fields.push((begin, at));
        begin = at + delimiter.len();
    }
    // The last field ends at the next delimiter, if any.
    let end = find_delimiter(line, begin, delimiter).unwrap_or(line.len());
    fields.push((begin, end));
}

/// The position of the next `delimiter` in `line` at or after `from`.
#[inline]
fn find_delimiter(line: &[u8], mut from: usize, delimiter: &[u8]) -> Option<usize> {
    loop {
        let at = from + memchr::memchr(delimiter[0], &line[from..])?;
        if delimiter.len() == 1 || line[at + 1..].starts_with(&delimiter[1..]) {
            return Some(at);
        }
        from = at + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_finds_one_and_two_byte_delimiters() {
        let mut f = Vec::new();
        split(b"a,bb,,c,rest,more", b",", 4, &mut f);
        assert_eq!(f, vec![(0, 1), (2, 4), (5, 5), (6, 7)]);
        split(b"1::2:3::4", b"::", 3, &mut f);
        assert_eq!(f, vec![(0, 1), (3, 6), (8, 9)]);
        split(b"1,2", b",", 4, &mut f);
        assert_eq!(f.len(), 2);
        split(b"", b",", 2, &mut f);
        assert_eq!(f, vec![(0, 0)]);
        split(b"1::2::3::a:b::c", b"::", 4, &mut f);
        assert_eq!(f[3], (9, 12));
    }
}
