//! Readers for MovieLens rating files.
//!
//! The reader streams the file in 1 MiB chunks and parses the bytes itself,
//! one pass per row for the common shape (plain digits, a short decimal
//! rating); any other row goes through a careful line parser that also writes
//! the error message. Rows land in four column vectors ([`Ratings`]). See
//! `docs/data.md` for the measured speed.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use crate::DataError;

/// The layout of a ratings file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `ratings.csv` of MovieLens latest, 20M, 25M, 32M: a header
    /// `userId,movieId,rating,timestamp` (any column order, extra columns
    /// ignored), then comma-separated rows; LF or CRLF line endings.
    Csv,
    /// `ratings.dat` of MovieLens 1M and 10M: `user::movie::rating::timestamp`,
    /// no header.
    Dat,
    /// `u.data` of MovieLens 100K: tab-separated `user movie rating timestamp`,
    /// no header.
    Tsv,
}

impl Format {
    /// Guesses the format from the file name: `*.csv` is CSV, `*.dat` is
    /// `::`-separated, `*.tsv` and `*.data` (as in `u.data`) are tab-separated.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Format::Csv),
            "dat" => Some(Format::Dat),
            "tsv" | "data" => Some(Format::Tsv),
            _ => None,
        }
    }

    /// The field separator.
    pub fn delimiter(self) -> &'static str {
        match self {
            Format::Csv => ",",
            Format::Dat => "::",
            Format::Tsv => "\t",
        }
    }

    /// Whether the first line names the columns.
    pub fn has_header(self) -> bool {
        self == Format::Csv
    }
}

impl FromStr for Format {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Format, DataError> {
        match s {
            "csv" => Ok(Format::Csv),
            "dat" => Ok(Format::Dat),
            "tsv" => Ok(Format::Tsv),
            _ => Err(DataError::UnknownFormatName(s.to_string())),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Csv => "csv",
            Format::Dat => "dat",
            Format::Tsv => "tsv",
        })
    }
}

/// Ratings as read, in file order, one entry per row in each column.
///
/// Ids are the raw MovieLens ids; nothing is re-indexed here.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ratings {
    /// Raw user id of each row.
    pub user: Vec<u32>,
    /// Raw item (movie) id of each row.
    pub item: Vec<u32>,
    /// Rating of each row (MovieLens: 0.5 to 5 stars).
    pub rating: Vec<f32>,
    /// Unix time in seconds of each row.
    pub timestamp: Vec<i64>,
}

impl Ratings {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.user.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.user.is_empty()
    }

    /// Appends one row.
    #[inline]
    pub fn push(&mut self, user: u32, item: u32, rating: f32, timestamp: i64) {
        self.user.push(user);
        self.item.push(item);
        self.rating.push(rating);
        self.timestamp.push(timestamp);
    }

    fn reserve(&mut self, rows: usize) {
        self.user.reserve(rows);
        self.item.reserve(rows);
        self.rating.reserve(rows);
        self.timestamp.reserve(rows);
    }
}

/// Reads a ratings file. With `format` `None` the format comes from the file
/// name ([`Format::from_path`]).
///
/// Every row is kept; a malformed row is an error naming the file, the line
/// and the field, never skipped.
pub fn read_ratings(path: &Path, format: Option<Format>) -> Result<Ratings, DataError> {
    let format = match format.or_else(|| Format::from_path(path)) {
        Some(format) => format,
        None => {
            return Err(DataError::UnknownFormat {
                path: path.to_path_buf(),
            });
        }
    };
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let size = file.metadata().map(|m| m.len()).ok();
    parse(file, path, format, size)
}

/// Parses ratings from any reader; `path` is used only in error messages.
pub fn parse_ratings<R: Read>(
    reader: R,
    path: &Path,
    format: Format,
) -> Result<Ratings, DataError> {
    parse(reader, path, format, None)
}

const CHUNK: usize = 1 << 20;
const FIELD_NAMES: [&str; 4] = ["userId", "movieId", "rating", "timestamp"];

fn parse<R: Read>(
    mut reader: R,
    path: &Path,
    format: Format,
    size_hint: Option<u64>,
) -> Result<Ratings, DataError> {
    let mut parser = LineParser::new(path, format);
    let mut out = Ratings::default();
    let mut buf = vec![0u8; CHUNK];
    // buf[start..filled] holds bytes read but not yet parsed (a partial line).
    let mut start = 0;
    let mut filled = 0;
    let mut reserved = false;
    loop {
        if start > 0 {
            buf.copy_within(start..filled, 0);
            filled -= start;
            start = 0;
        }
        if filled == buf.len() {
            // One line longer than the buffer: grow it.
            buf.resize(buf.len() * 2, 0);
        }
        let n = match reader.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DataError::io(path, e)),
        };
        if n == 0 {
            if filled > 0 {
                parser.line(&buf[..filled], &mut out)?;
            }
            break;
        }
        filled += n;
        start = parser.lines(&buf[..filled], &mut out)?;
        if !reserved && !out.is_empty() {
            // Size the columns once from the first chunk's bytes per row, so
            // that 32M rows do not go through repeated reallocation.
            reserved = true;
            if let Some(size) = size_hint {
                let rows = (size as f64 / start as f64 * out.len() as f64 * 1.02) as usize;
                out.reserve(rows.saturating_sub(out.len()));
            }
        }
    }
    if out.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            line: parser.line_no + 1,
            what: if parser.line_no == 0 {
                "the file is empty"
            } else {
                "the file ends here"
            },
        });
    }
    Ok(out)
}

/// Parses one line at a time, keeping the line number and the column layout.
struct LineParser<'p> {
    path: &'p Path,
    format: Format,
    delimiter: &'static [u8],
    /// Column index of userId, movieId, rating, timestamp.
    columns: [usize; 4],
    /// Fields a data line must have: the last needed column + 1.
    needed: usize,
    header_pending: bool,
    /// Whether [`LineParser::fast_row`] applies: columns in the standard order.
    fast: bool,
    line_no: u64,
    /// Byte ranges of the fields of the current line (reused).
    fields: Vec<(usize, usize)>,
}

impl<'p> LineParser<'p> {
    fn new(path: &'p Path, format: Format) -> Self {
        LineParser {
            path,
            format,
            delimiter: format.delimiter().as_bytes(),
            columns: [0, 1, 2, 3],
            needed: 4,
            header_pending: format.has_header(),
            fast: true,
            line_no: 0,
            fields: Vec::with_capacity(8),
        }
    }

    /// Parses every whole line in `bytes`; returns how many bytes they took
    /// (the rest is the start of a line that continues in the next read).
    fn lines(&mut self, bytes: &[u8], out: &mut Ratings) -> Result<usize, DataError> {
        let mut pos = 0;
        loop {
            let rest = &bytes[pos..];
            if self.fast && !self.header_pending {
                match self.fast_row(rest, out) {
                    Fast::Row(used) => {
                        self.line_no += 1;
                        pos += used;
                        continue;
                    }
                    Fast::NeedMore => return Ok(pos),
                    Fast::Slow => {}
                }
            }
            match rest.iter().position(|&b| b == b'\n') {
                Some(len) => {
                    self.line(&rest[..len], out)?;
                    pos += len + 1;
                }
                None => return Ok(pos),
            }
        }
    }

    /// The common row in one pass over its bytes: `user,item,rating,timestamp`
    /// with plain digits, a rating of at most 7 digits and a `\n` or `\r\n`
    /// end. Anything else is left to [`LineParser::line`], which also says
    /// what is wrong.
    #[inline]
    fn fast_row(&self, b: &[u8], out: &mut Ratings) -> Fast {
        let mut i = 0;
        let (user, n) = digits(b, &mut i);
        if i == b.len() {
            return Fast::NeedMore;
        }
        if n == 0 || n > 10 || user > u32::MAX as u64 || !self.skip_delimiter(b, &mut i) {
            return Fast::Slow;
        }
        let (item, n) = digits(b, &mut i);
        if i == b.len() {
            return Fast::NeedMore;
        }
        if n == 0 || n > 10 || item > u32::MAX as u64 || !self.skip_delimiter(b, &mut i) {
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
        if n_whole == 0 || n_whole + n_frac > 7 || !self.skip_delimiter(b, &mut i) {
            return Fast::Slow;
        }
        let (time, n) = digits(b, &mut i);
        if i < b.len() && b[i] == b'\r' {
            i += 1;
        }
        if i == b.len() {
            return Fast::NeedMore;
        }
        if n == 0 || n > 18 || b[i] != b'\n' {
            return Fast::Slow;
        }
        // At most 7 digits: the mantissa is below 2^24 and the power of ten at
        // most 10^7, both exact in f32, so one division gives the correctly
        // rounded value, the same as `str::parse` (Clinger's fast path).
        let mantissa = whole * 10u64.pow(n_frac as u32) + frac;
        let rating = mantissa as f32 / POW10[n_frac];
        out.push(user as u32, item as u32, rating, time as i64);
        Fast::Row(i + 1)
    }

    fn skip_delimiter(&self, b: &[u8], i: &mut usize) -> bool {
        let d = self.delimiter;
        let found = b.get(*i) == Some(&d[0]) && (d.len() == 1 || b.get(*i + 1) == Some(&d[1]));
        if found {
            *i += d.len();
        }
        found
    }

    fn line(&mut self, line: &[u8], out: &mut Ratings) -> Result<(), DataError> {
        self.line_no += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if self.header_pending {
            self.header_pending = false;
            return self.header(line);
        }
        self.split(line);
        if self.fields.len() < self.needed {
            let missing = (0..4)
                .filter(|&f| self.columns[f] >= self.fields.len())
                .min_by_key(|&f| self.columns[f])
                .unwrap_or(0);
            return Err(DataError::TooFewFields {
                path: self.path.to_path_buf(),
                line: self.line_no,
                field: FIELD_NAMES[missing],
                expected: self.needed,
                found: self.fields.len(),
                delimiter: self.format.delimiter(),
            });
        }
        let field = |i: usize| {
            let (a, b) = self.fields[self.columns[i]];
            &line[a..b]
        };
        let user = parse_id(field(0)).map_err(|p| self.bad(0, field(0), p))?;
        let item = parse_id(field(1)).map_err(|p| self.bad(1, field(1), p))?;
        let rating = parse_rating(field(2)).map_err(|p| self.bad(2, field(2), p))?;
        let timestamp = parse_timestamp(field(3)).map_err(|p| self.bad(3, field(3), p))?;
        out.push(user, item, rating, timestamp);
        Ok(())
    }

    /// Finds the four columns by name; the csv crate handles quoting.
    fn header(&mut self, line: &[u8]) -> Result<(), DataError> {
        let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(line);
        let mut record = csv::ByteRecord::new();
        // A header the csv crate cannot split has no usable columns.
        if reader.read_byte_record(&mut record).is_err() {
            record.clear();
        }
        for (f, name) in FIELD_NAMES.iter().enumerate() {
            match record
                .iter()
                .position(|c| c.trim_ascii() == name.as_bytes())
            {
                Some(column) => self.columns[f] = column,
                None => {
                    return Err(DataError::MissingColumn {
                        path: self.path.to_path_buf(),
                        line: self.line_no,
                        field: name,
                        header: String::from_utf8_lossy(line).into_owned(),
                    });
                }
            }
        }
        self.needed = self.columns.iter().max().map_or(4, |&c| c + 1);
        self.fast = self.columns == [0, 1, 2, 3];
        Ok(())
    }

    /// Splits `line` into at most `needed` fields; any rest is ignored.
    /// Delimiters are one or two bytes long (`,`, tab, `::`).
    fn split(&mut self, line: &[u8]) {
        self.fields.clear();
        if line.is_empty() {
            return;
        }
        let (d0, d1) = (self.delimiter[0], self.delimiter.get(1).copied());
        let mut begin = 0;
        let mut i = 0;
        while i < line.len() {
            if line[i] == d0 && (d1.is_none() || line.get(i + 1).copied() == d1) {
                self.fields.push((begin, i));
                if self.fields.len() == self.needed {
                    return;
                }
                i += self.delimiter.len();
                begin = i;
            } else {
                i += 1;
            }
        }
        self.fields.push((begin, line.len()));
    }

    fn bad(&self, field: usize, value: &[u8], problem: &'static str) -> DataError {
        let value: String = String::from_utf8_lossy(value).chars().take(40).collect();
        DataError::BadField {
            path: self.path.to_path_buf(),
            line: self.line_no,
            field: FIELD_NAMES[field],
            value,
            problem,
        }
    }
}

/// What [`LineParser::fast_row`] made of the bytes.
enum Fast {
    /// A row was parsed from this many bytes.
    Row(usize),
    /// The bytes end before the line does.
    NeedMore,
    /// Not the common shape: parse the line carefully.
    Slow,
}

/// Reads the decimal digits at `b[*i..]`, moving `*i` past them; returns
/// their value (meaningless past 19 digits) and how many there were.
fn digits(b: &[u8], i: &mut usize) -> (u64, usize) {
    let start = *i;
    let mut value: u64 = 0;
    while let Some(&c) = b.get(*i) {
        let digit = c.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        value = value.wrapping_mul(10).wrapping_add(digit as u64);
        *i += 1;
    }
    (value, *i - start)
}

/// Parses a non-negative decimal id that fits in u32.
fn parse_id(s: &[u8]) -> Result<u32, &'static str> {
    if s.is_empty() {
        return Err("expected an id, the field is empty");
    }
    if s[0] == b'-' {
        return Err("expected a non-negative id");
    }
    let mut value: u64 = 0;
    for &b in s {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return Err("expected an integer id");
        }
        value = value * 10 + digit as u64;
        if value > u32::MAX as u64 {
            return Err("id too large (ids must be at most 4294967295)");
        }
    }
    Ok(value as u32)
}

/// Parses a decimal integer number of seconds, optionally negative.
fn parse_timestamp(s: &[u8]) -> Result<i64, &'static str> {
    let (negative, digits) = match s.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    if digits.is_empty() {
        return Err("expected an integer timestamp");
    }
    let mut value: i64 = 0;
    for &b in digits {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return Err("expected an integer timestamp (seconds)");
        }
        // 18 digits always fit; only longer numbers need the checked path.
        value = if digits.len() <= 18 {
            value * 10 + digit as i64
        } else {
            value
                .checked_mul(10)
                .and_then(|v| v.checked_add(digit as i64))
                .ok_or("timestamp out of range for a 64-bit integer")?
        };
    }
    Ok(if negative { -value } else { value })
}

/// Parses a finite decimal number.
fn parse_rating(s: &[u8]) -> Result<f32, &'static str> {
    const PROBLEM: &str = "expected a number";
    let text = std::str::from_utf8(s).map_err(|_| PROBLEM)?;
    match text.parse::<f32>() {
        Ok(r) if r.is_finite() => Ok(r),
        _ => Err(PROBLEM),
    }
}

/// Powers of ten that are exact in f32.
const POW10: [f32; 8] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7];

/// Reads `movies.csv` (`movieId,title,genres`) into raw movie id -> title.
///
/// Titles may be quoted and contain commas; the file must be UTF-8.
pub fn titles(movies_csv: &Path) -> Result<HashMap<u32, String>, DataError> {
    let path = movies_csv;
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = csv::ReaderBuilder::new().from_reader(std::io::BufReader::new(file));
    let header = reader
        .headers()
        .map_err(|e| csv_error(path, e, &[]))?
        .clone();
    let names: Vec<String> = header.iter().map(|c| c.trim().to_string()).collect();
    let column = |name: &'static str| {
        names
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| DataError::MissingColumn {
                path: path.to_path_buf(),
                line: 1,
                field: name,
                header: names.join(","),
            })
    };
    let (id_col, title_col) = (column("movieId")?, column("title")?);
    let mut titles = HashMap::new();
    let mut record = csv::StringRecord::new();
    while reader
        .read_record(&mut record)
        .map_err(|e| csv_error(path, e, &names))?
    {
        let line = record.position().map_or(0, |p| p.line());
        let id = &record[id_col];
        let id = parse_id(id.as_bytes()).map_err(|problem| DataError::BadField {
            path: path.to_path_buf(),
            line,
            field: "movieId",
            value: id.chars().take(40).collect(),
            problem,
        })?;
        titles.insert(id, record[title_col].to_string());
    }
    Ok(titles)
}

/// Turns a csv crate error into one that names the file, line and field.
fn csv_error(path: &Path, e: csv::Error, names: &[String]) -> DataError {
    let line = e.position().map_or(1, |p| p.line());
    let text = e.to_string();
    let (field, message) = match e.into_kind() {
        csv::ErrorKind::Io(err) => return DataError::io(path, err),
        csv::ErrorKind::Utf8 { err, .. } => (
            names.get(err.field()).cloned().unwrap_or_default(),
            "not valid UTF-8".to_string(),
        ),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => (
            names.get(len as usize).cloned().unwrap_or_default(),
            format!("expected {expected_len} fields, found {len}"),
        ),
        _ => (String::new(), text),
    };
    DataError::Csv {
        path: path.to_path_buf(),
        line,
        field,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_ratings_equal_the_standard_parser() {
        let mut cases: Vec<String> = vec!["0".into(), "5".into(), "4.".into(), "0.1".into()];
        for m in (0..10_000_000u32).step_by(9_973).chain([9_999_999]) {
            let digits = format!("{m:07}");
            for point in 0..=7 {
                cases.push(format!("{}.{}", &digits[..7 - point], &digits[7 - point..]));
            }
        }
        let rows: String = cases.iter().map(|c| format!("1,2,{c},3\n")).collect();
        let text = format!("userId,movieId,rating,timestamp\n{rows}");
        let ratings = parse_ratings(text.as_bytes(), Path::new("t.csv"), Format::Csv).unwrap();
        for (case, &got) in cases.iter().zip(&ratings.rating) {
            assert_eq!(got, case.parse::<f32>().unwrap(), "{case}");
        }
        assert_eq!(ratings.len(), cases.len());
    }
}
