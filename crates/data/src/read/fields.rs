//! Parsing the fields of a text log in place: ids (interned as they come,
//! with the last one cached), ratings and decimal digits.

use crate::ids::{NEGATIVE_ID, canonical_int, id_problem};
use crate::{IdKind, IdTable};

/// Reads the decimal digits at `b[*i..]`, moving `*i` past them; returns
/// their value (meaningless past 19 digits) and how many there were.
#[inline]
pub(super) fn digits(b: &[u8], i: &mut usize) -> (u64, usize) {
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

/// Whether `b` could be a number (so a first line of such fields is data).
pub(super) fn looks_numeric(b: &[u8]) -> bool {
    !b.is_empty() && b.iter().all(|c| c.is_ascii_digit() || b".-+eE".contains(c))
}

/// The last id of a column and its code.
#[derive(Default)]
pub(super) struct LastId {
    bytes: Vec<u8>,
    code: Option<u32>,
}

impl LastId {
    /// [`intern_id`], with the lookup skipped when `text` repeats the last id
    /// (codes survive a table turning into strings, so the cache stays valid).
    #[inline]
    pub(super) fn code(
        &mut self,
        table: &mut IdTable,
        known: Option<&IdTable>,
        text: &[u8],
        strict: bool,
    ) -> Result<u32, &'static str> {
        if let Some(code) = self.code.filter(|_| self.bytes == text) {
            return Ok(code);
        }
        let code = intern_id(table, known, text, strict)?;
        self.bytes.clear();
        self.bytes.extend_from_slice(text);
        self.code = Some(code);
        Ok(code)
    }
}

/// The code of the id in `text`, interned into `table` (see [`code_of_int`]
/// for `known`).
///
/// `strict`: a MovieLens layout, whose ids are non-negative integers.
/// Otherwise ids are integers while every id so far is a canonical integer
/// (negative ones are refused), and strings from the first one that is not
/// (the integers read before become their decimal text, keeping their
/// codes), at most [`crate::MAX_ID_BYTES`] long, without NUL bytes.
#[inline]
fn intern_id(
    table: &mut IdTable,
    known: Option<&IdTable>,
    text: &[u8],
    strict: bool,
) -> Result<u32, &'static str> {
    if strict {
        return strict_id(text).map(|v| code_of_int(table, known, v));
    }
    if table.kind() == IdKind::Int
        && let Some(v) = canonical_int(text)
    {
        if v < 0 {
            return Err(NEGATIVE_ID);
        }
        return Ok(code_of_int(table, known, v));
    }
    if let Some(problem) = id_problem(text) {
        return Err(problem);
    }
    let s = std::str::from_utf8(text).map_err(|_| "an id that is not valid UTF-8")?;
    Ok(match known {
        None => table.intern_str(s),
        Some(known) => known
            .find_str(s)
            .unwrap_or_else(|| known.len() as u32 + table.intern_str(s)),
    })
}

/// The code of integer id `v`. A block's worker has the file's table as
/// `known`: an id there keeps its code, a new one is interned into `table`
/// and numbered after `known`'s ids (the merge renumbers it).
#[inline]
pub(super) fn code_of_int(table: &mut IdTable, known: Option<&IdTable>, v: i64) -> u32 {
    match known {
        None => table.intern_int(v),
        Some(known) => known
            .find_int(v)
            .unwrap_or_else(|| known.len() as u32 + table.intern_int(v)),
    }
}

/// A non-negative decimal id (leading zeros allowed, as MovieLens readers
/// have always taken them).
fn strict_id(s: &[u8]) -> Result<i64, &'static str> {
    if s.is_empty() {
        return Err("expected an id, the field is empty");
    }
    if s[0] == b'-' {
        return Err(NEGATIVE_ID);
    }
    let mut value: i64 = 0;
    for &b in s {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return Err(
                "expected an integer id (MovieLens layout: userId and movieId are integers; name the columns with --user-col/--item-col to read other ids)",
            );
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(digit as i64))
            .ok_or("id too large (ids must fit in a 64-bit integer)")?;
    }
    Ok(value)
}

/// Parses a finite decimal number. A plain decimal of at most 7 digits (all
/// MovieLens ratings) is an exact integer over an exact power of ten, so one
/// f32 division gives the correctly rounded value, the same as `str::parse`
/// (Clinger's fast path); anything else goes through `str::parse`.
#[inline]
pub(super) fn parse_rating(s: &[u8]) -> Result<f32, &'static str> {
    const PROBLEM: &str = "expected a number";
    let point = s.iter().position(|&b| b == b'.');
    let (whole, frac) = match point {
        Some(p) => (&s[..p], &s[p + 1..]),
        None => (s, &s[..0]),
    };
    if !whole.is_empty()
        && whole.len() + frac.len() <= 7
        && whole.iter().chain(frac).all(u8::is_ascii_digit)
    {
        let mantissa = whole
            .iter()
            .chain(frac)
            .fold(0u32, |v, &d| v * 10 + (d - b'0') as u32);
        return Ok(mantissa as f32 / POW10[frac.len()]);
    }
    let text = std::str::from_utf8(s).map_err(|_| PROBLEM)?;
    match text.parse::<f32>() {
        Ok(r) if r.is_finite() => Ok(r),
        _ => Err(PROBLEM),
    }
}

/// Powers of ten that are exact in f32.
pub(super) const POW10: [f32; 8] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7];

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
        for case in &cases {
            assert_eq!(
                parse_rating(case.as_bytes()),
                Ok(case.parse::<f32>().unwrap()),
                "{case}"
            );
        }
    }
}
