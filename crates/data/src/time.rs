//! Times: numbers in a unit, or ISO 8601 / RFC 3339 date-times, all stored
//! as i64 microseconds since the Unix epoch (UTC).
//!
//! A column's format is detected from its first value and every later value
//! must have the same one: a column mixing numbers and date-times, or
//! date-times with and without a zone, is an error, never a guess.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveTime};
use serde::{Deserialize, Serialize};

use crate::DataError;

/// The unit of numeric times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeUnit {
    /// Seconds (MovieLens, RecBole).
    #[default]
    S,
    /// Milliseconds (JavaScript, Java, many event logs).
    Ms,
    /// Microseconds.
    Us,
    /// Nanoseconds (kept to the microsecond).
    Ns,
}

impl TimeUnit {
    /// Microseconds per unit, as a ratio `(mul, div)`.
    fn ratio(self) -> (i64, i64) {
        match self {
            TimeUnit::S => (1_000_000, 1),
            TimeUnit::Ms => (1_000, 1),
            TimeUnit::Us => (1, 1),
            TimeUnit::Ns => (1, 1_000),
        }
    }

    /// `value` units in microseconds, if it fits.
    #[inline]
    pub fn to_micros(self, value: i64) -> Option<i64> {
        // Constant factors per arm: no integer division on the hot path.
        match self {
            TimeUnit::S => value.checked_mul(1_000_000),
            TimeUnit::Ms => value.checked_mul(1_000),
            TimeUnit::Us => Some(value),
            TimeUnit::Ns => Some(value.div_euclid(1_000)),
        }
    }

    /// `value` units (a float) in microseconds, rounded, if finite and in range.
    pub fn float_to_micros(self, value: f64) -> Option<i64> {
        let (mul, div) = self.ratio();
        let micros = (value * mul as f64 / div as f64).round();
        // i64::MAX as f64 rounds up to 2^63, which does not fit: use <.
        (micros.is_finite() && micros >= i64::MIN as f64 && micros < i64::MAX as f64)
            .then_some(micros as i64)
    }
}

impl FromStr for TimeUnit {
    type Err = DataError;

    fn from_str(s: &str) -> Result<TimeUnit, DataError> {
        match s {
            "s" => Ok(TimeUnit::S),
            "ms" => Ok(TimeUnit::Ms),
            "us" => Ok(TimeUnit::Us),
            "ns" => Ok(TimeUnit::Ns),
            _ => Err(DataError::InvalidOption(format!(
                "unknown time unit {:?}; expected s, ms, us or ns",
                crate::ids::cut(s, 20)
            ))),
        }
    }
}

impl fmt::Display for TimeUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeUnit::S => "s",
            TimeUnit::Ms => "ms",
            TimeUnit::Us => "us",
            TimeUnit::Ns => "ns",
        })
    }
}

/// How a time column is written, as detected from the data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimeFormat {
    /// Numbers in `unit` since the Unix epoch; `decimals` when any had a
    /// fractional part.
    Number {
        /// The unit (`--time-unit`, seconds by default).
        unit: TimeUnit,
        /// Whether some value had a fractional part.
        decimals: bool,
    },
    /// ISO 8601 / RFC 3339 date-times, e.g. `2023-05-01T12:30:00Z`,
    /// `2023-05-01 12:30:00.250+02:00`, `2023-05-01`; `zone`: whether they
    /// carry a zone offset (without one they are read as UTC).
    DateTime {
        /// Whether the values carry `Z` or an offset.
        zone: bool,
    },
    /// A typed timestamp column (Parquet / Arrow), e.g. `timestamp[ms, UTC]`.
    Typed(String),
}

impl fmt::Display for TimeFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeFormat::Number { unit, decimals } => write!(
                f,
                "{} {} since 1970",
                if *decimals { "decimal" } else { "integer" },
                unit.words()
            ),
            TimeFormat::DateTime { zone: true } => f.write_str("ISO 8601 date-times with zone"),
            TimeFormat::DateTime { zone: false } => {
                f.write_str("ISO 8601 date-times without zone (read as UTC)")
            }
            TimeFormat::Typed(t) => write!(f, "{t}"),
        }
    }
}

/// The span of times that real logs of absolute times fall in:
/// 1990-01-01 to 2200-01-01, in microseconds since the epoch.
pub(crate) const PLAUSIBLE: std::ops::Range<f64> = 631_152_000e6..7_258_118_400e6;

impl TimeUnit {
    const ALL: [TimeUnit; 4] = [TimeUnit::S, TimeUnit::Ms, TimeUnit::Us, TimeUnit::Ns];

    /// Microseconds per unit.
    pub(crate) fn micros(self) -> f64 {
        let (mul, div) = self.ratio();
        mul as f64 / div as f64
    }

    /// The name in words ("milliseconds").
    pub(crate) fn words(self) -> &'static str {
        match self {
            TimeUnit::S => "seconds",
            TimeUnit::Ms => "milliseconds",
            TimeUnit::Us => "microseconds",
            TimeUnit::Ns => "nanoseconds",
        }
    }
}

/// The unit in which the number `value` is a time between 1990 and 2200.
pub(crate) fn unit_of_magnitude(value: f64) -> Option<TimeUnit> {
    TimeUnit::ALL
        .into_iter()
        .find(|u| PLAUSIBLE.contains(&(value * u.micros())))
}

/// Microseconds since the epoch as an RFC 3339 UTC date-time (for reports).
pub fn format_micros(micros: i64) -> String {
    match DateTime::from_timestamp_micros(micros) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => format!("{micros} µs since 1970"),
    }
}

/// Parses one time given by a person (e.g. a split's cut): an ISO 8601
/// date-time (`2018-01-01`, `2018-01-01T12:00:00Z`; without a zone, UTC)
/// or a number of `unit`s since the Unix epoch, as a time column's values
/// are read. Returns microseconds since the epoch.
pub fn parse_time(text: &str, unit: TimeUnit) -> Result<i64, DataError> {
    let text = text.trim();
    let bytes = text.as_bytes();
    let looks_like_date = bytes.len() >= 10 && bytes[4] == b'-' && bytes[7] == b'-';
    let parsed = if looks_like_date {
        parse_datetime(bytes).map(|(micros, _)| micros)
    } else {
        parse_number(bytes, unit).map(|(micros, _)| micros)
    };
    parsed.map_err(|why| {
        DataError::InvalidOption(format!(
            "{:?} is not a time: {why}",
            crate::ids::cut(text, 40)
        ))
    })
}

/// Parses the values of one text time column, enforcing one format.
#[derive(Clone, Debug)]
pub(crate) struct TimeParser {
    unit: Option<TimeUnit>,
    format: Option<TimeFormat>,
}

impl TimeParser {
    /// A parser for numbers in `unit` (seconds when `None`) or date-times.
    pub(crate) fn new(unit: Option<TimeUnit>) -> Self {
        TimeParser { unit, format: None }
    }

    /// The format seen so far (`None` before the first value).
    pub(crate) fn format(&self) -> Option<&TimeFormat> {
        self.format.as_ref()
    }

    /// Microseconds since the epoch of `text`; the error says what is wrong
    /// (the caller adds where, and the value).
    #[inline]
    pub(crate) fn parse(&mut self, text: &[u8]) -> Result<i64, String> {
        let looks_like_date = text.len() >= 10 && text[4] == b'-' && text[7] == b'-';
        match (&mut self.format, looks_like_date) {
            (Some(TimeFormat::Number { unit, decimals }), false) => {
                let (micros, has_decimals) = parse_number(text, *unit)?;
                *decimals |= has_decimals;
                Ok(micros)
            }
            (Some(TimeFormat::DateTime { zone }), true) => {
                let (micros, has_zone) = parse_datetime(text)?;
                if has_zone != *zone {
                    return Err(format!(
                        "mixed time formats: a date-time {} a zone, earlier ones {}",
                        if has_zone { "with" } else { "without" },
                        if *zone { "had one" } else { "had none" }
                    ));
                }
                Ok(micros)
            }
            (Some(format), looks_like_date) => {
                // A value of the other kind is a mix; anything else is just
                // not a time, said in the terms of the column's format.
                let other_kind = if looks_like_date {
                    parse_datetime(text).is_ok()
                } else {
                    parse_number(text, TimeUnit::S).is_ok()
                };
                match format {
                    _ if other_kind => Err(format!(
                        "mixed time formats: expected {format} like the earlier values"
                    )),
                    TimeFormat::DateTime { .. } => parse_datetime(text).map(|(m, _)| m),
                    _ => parse_number(text, TimeUnit::S).map(|(m, _)| m),
                }
            }
            (None, false) => {
                let unit = self.unit.unwrap_or_default();
                let (micros, decimals) = parse_number(text, unit)?;
                self.format = Some(TimeFormat::Number { unit, decimals });
                Ok(micros)
            }
            (None, true) => {
                if let Some(unit) = self.unit {
                    return Err(format!(
                        "a date-time, but a time unit ({unit}) was given for numeric times"
                    ));
                }
                let (micros, zone) = parse_datetime(text)?;
                self.format = Some(TimeFormat::DateTime { zone });
                Ok(micros)
            }
        }
    }
}

/// A number of `unit`s: integer digits fast, else a decimal. Returns the
/// microseconds and whether it had a fractional part.
#[inline]
fn parse_number(text: &[u8], unit: TimeUnit) -> Result<(i64, bool), String> {
    const EXPECTED: &str = "expected a time (a number, or an ISO 8601 date-time)";
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
        let value = digits.iter().try_fold(0i64, |v, &d| {
            v.checked_mul(10)?.checked_add((d - b'0') as i64)
        });
        return value
            .map(|v| if negative { -v } else { v })
            .and_then(|v| unit.to_micros(v))
            .map(|m| (m, false))
            .ok_or_else(|| {
                let magnitude = digits
                    .iter()
                    .fold(0f64, |v, &d| v * 10.0 + (d - b'0') as f64);
                match unit_of_magnitude(magnitude).filter(|&u| u != unit) {
                    Some(likely) => format!(
                        "time out of range in {} (more than 292,000 years from 1970); it looks like {} since 1970: read the times with --time-unit {likely}",
                        unit.words(),
                        likely.words()
                    ),
                    None => "time out of range (more than 292,000 years from 1970)".to_string(),
                }
            });
    }
    let s = std::str::from_utf8(text).map_err(|_| EXPECTED.to_string())?;
    // Only plain decimals: no "inf", "NaN" or hex.
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || b".-+eE".contains(&b))
    {
        return Err(EXPECTED.to_string());
    }
    let value: f64 = s.parse().map_err(|_| EXPECTED.to_string())?;
    unit.float_to_micros(value)
        .map(|m| (m, value.fract() != 0.0))
        .ok_or_else(|| "time out of range".to_string())
}

/// An ISO 8601 / RFC 3339 date-time: `YYYY-MM-DD`, optionally followed by
/// `T` or a space and `HH:MM[:SS[.fraction]]`, optionally followed by `Z` or
/// an offset `±HH[:MM]` / `±HHMM`. Returns microseconds since the epoch
/// (UTC) and whether a zone was given. chrono checks the calendar (days in
/// month, leap years) and does the epoch arithmetic.
#[inline]
fn parse_datetime(text: &[u8]) -> Result<(i64, bool), String> {
    let bad = || "expected an ISO 8601 date-time such as 2023-05-01T12:30:00Z".to_string();
    let mut p = Cursor { b: text, i: 0 };
    let year = p.digits(4).ok_or_else(bad)?;
    p.expect(b'-').ok_or_else(bad)?;
    let month = p.digits(2).ok_or_else(bad)?;
    p.expect(b'-').ok_or_else(bad)?;
    let day = p.digits(2).ok_or_else(bad)?;
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)
        .ok_or_else(|| "not a date in the calendar".to_string())?;
    let (mut hour, mut minute, mut second, mut nanos) = (0, 0, 0, 0);
    if matches!(p.peek(), Some(b'T' | b't' | b' ')) {
        p.i += 1;
        hour = p.digits(2).ok_or_else(bad)?;
        p.expect(b':').ok_or_else(bad)?;
        minute = p.digits(2).ok_or_else(bad)?;
        if p.peek() == Some(b':') {
            p.i += 1;
            second = p.digits(2).ok_or_else(bad)?;
            if matches!(p.peek(), Some(b'.' | b',')) {
                p.i += 1;
                let start = p.i;
                while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                    // Digits past nanoseconds are dropped, as chrono does.
                    if p.i - start < 9 {
                        nanos = nanos * 10 + (text[p.i] - b'0') as u32;
                    }
                    p.i += 1;
                }
                let n = p.i - start;
                if n == 0 {
                    return Err(bad());
                }
                nanos *= 10u32.pow(9usize.saturating_sub(n) as u32);
            }
        }
    }
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)
        .ok_or_else(|| "not a time of day".to_string())?;
    let offset_seconds = match p.peek() {
        None => None,
        Some(b'Z' | b'z') => {
            p.i += 1;
            Some(0)
        }
        Some(sign @ (b'+' | b'-')) => {
            p.i += 1;
            let h = p.digits(2).ok_or_else(bad)? as i64;
            let m = match p.peek() {
                Some(b':') => {
                    p.i += 1;
                    p.digits(2).ok_or_else(bad)?
                }
                Some(_) => p.digits(2).ok_or_else(bad)?,
                None => 0,
            } as i64;
            if h > 23 || m > 59 {
                return Err("zone offset out of range".to_string());
            }
            let s = h * 3600 + m * 60;
            Some(if sign == b'-' { -s } else { s })
        }
        Some(_) => return Err(bad()),
    };
    if p.i != text.len() {
        return Err(bad());
    }
    let micros =
        date.and_time(time).and_utc().timestamp_micros() - offset_seconds.unwrap_or(0) * 1_000_000;
    Ok((micros, offset_seconds.is_some()))
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.peek() == Some(c)).then(|| self.i += 1)
    }

    /// Exactly `n` decimal digits.
    fn digits(&mut self, n: usize) -> Option<u32> {
        let d = self.b.get(self.i..self.i + n)?;
        if !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.i += n;
        Some(d.iter().fold(0, |v, &c| v * 10 + (c - b'0') as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(s: &str) -> Result<(i64, bool), String> {
        parse_datetime(s.as_bytes())
    }

    #[test]
    fn date_times_agree_with_chrono_rfc3339() {
        let cases = [
            "2023-05-01T12:30:00Z",
            "2023-05-01t12:30:00z",
            "2023-05-01 12:30:00+02:00",
            "1969-12-31T23:59:59.999999-05:30",
            "2000-02-29T00:00:00.5Z",
            "2024-12-31T23:59:59.123456789+00:00",
            "1970-01-01T00:00:00.0000001Z",
        ];
        for case in cases {
            let want = DateTime::parse_from_rfc3339(case)
                .unwrap()
                .timestamp_micros();
            assert_eq!(micros(case), Ok((want, true)), "{case}");
        }
    }

    #[test]
    fn date_times_without_zone_are_utc() {
        let utc = micros("2023-05-01T12:30:00Z").unwrap().0;
        assert_eq!(micros("2023-05-01T12:30:00"), Ok((utc, false)));
        assert_eq!(micros("2023-05-01 12:30"), Ok((utc, false)));
        assert_eq!(
            micros("2023-05-01").unwrap().0,
            utc - (12 * 3600 + 30 * 60) * 1_000_000
        );
        assert_eq!(micros("2023-05-01T14:30:00+0200").unwrap().0, utc);
        assert_eq!(micros("2023-05-01T14:30:00+02").unwrap().0, utc);
        for bad in [
            "2023-02-30",
            "2023-13-01",
            "2023-05-01T25:00:00",
            "2023-05-01T12:30:00.",
            "2023-05-01T12:30:00 UTC",
            "2023-05-01X12:30",
            "2023-5-1",
            "2023-05-01T12:30:00+24:00",
        ] {
            assert!(micros(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_take_the_unit() {
        let mut p = TimeParser::new(None);
        assert_eq!(p.parse(b"1260759144"), Ok(1_260_759_144_000_000));
        assert_eq!(p.parse(b"-5"), Ok(-5_000_000));
        assert_eq!(p.parse(b"1.25"), Ok(1_250_000));
        assert_eq!(
            p.format(),
            Some(&TimeFormat::Number {
                unit: TimeUnit::S,
                decimals: true
            })
        );
        let mut ms = TimeParser::new(Some(TimeUnit::Ms));
        assert_eq!(ms.parse(b"1700000000123"), Ok(1_700_000_000_123_000));
        let mut ns = TimeParser::new(Some(TimeUnit::Ns));
        assert_eq!(ns.parse(b"1700000000123456789"), Ok(1_700_000_000_123_456));
        assert!(
            TimeParser::new(None).parse(b"99999999999999").is_err(),
            "overflow"
        );
        for bad in [&b"NaN"[..], b"inf", b"", b"12:00", b"0x10", b"1e400"] {
            assert!(TimeParser::new(None).parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn one_format_per_column() {
        let mut p = TimeParser::new(None);
        p.parse(b"100").unwrap();
        let err = p.parse(b"2023-05-01").unwrap_err();
        assert!(err.contains("mixed time formats"), "{err}");

        let mut p = TimeParser::new(None);
        p.parse(b"2023-05-01T00:00:00").unwrap();
        assert!(
            p.parse(b"2023-05-01T00:00:00Z")
                .unwrap_err()
                .contains("mixed")
        );
        assert!(p.parse(b"1700000000").unwrap_err().contains("mixed"));

        let mut p = TimeParser::new(Some(TimeUnit::Ms));
        assert!(p.parse(b"2023-05-01").unwrap_err().contains("time unit"));

        // Not a time at all is said as such, not as a mix.
        let mut p = TimeParser::new(None);
        p.parse(b"2023-05-01").unwrap();
        assert!(
            p.parse(b"yesterday at noon")
                .unwrap_err()
                .contains("ISO 8601")
        );
    }
}
