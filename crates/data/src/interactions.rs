//! An interaction log as read: column vectors in file order, ids as codes.

use crate::time::{PLAUSIBLE, format_micros, unit_of_magnitude};
use crate::{Columns, DataError, Format, IdTable, RawId, TimeFormat};

/// Interactions as read, in file order, one entry per row in each column.
///
/// User and item columns hold codes 0.. numbered by first appearance in the
/// file; `users` and `items` map the codes back to the raw ids. Nothing is
/// filtered or re-indexed here. 16 bytes a row (20 with ratings, 4 more
/// with event types).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Interactions {
    /// User code of each row (into `users`).
    pub user: Vec<u32>,
    /// Item code of each row (into `items`).
    pub item: Vec<u32>,
    /// Time of each row: microseconds since the Unix epoch (UTC).
    pub time: Vec<i64>,
    /// Rating of each row, when the input has a rating column.
    pub rating: Option<Vec<f32>>,
    /// Event type of each row (a code into `events`), when the input has an
    /// event column.
    pub event: Option<Vec<u32>>,
    /// Raw user ids by code.
    pub users: IdTable,
    /// Raw item ids by code.
    pub items: IdTable,
    /// Event types by code (`view`, `purchase`, ...), as the column writes them.
    pub events: IdTable,
    /// What was read and what was detected.
    pub source: Source,
}

/// What the reader found: the format, the columns and how times are written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Source {
    /// The format read (`None` for interactions built in code).
    pub format: Option<Format>,
    /// Files read (more than one for a folder of Parquet parts).
    pub files: usize,
    /// The columns used.
    pub columns: Columns,
    /// How the time column is written (`None` when there were no rows).
    pub time_format: Option<TimeFormat>,
}

impl Interactions {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.user.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.user.is_empty()
    }

    /// Appends one row: raw ids (interned), time in microseconds since the
    /// epoch, and a rating (give one for every row or for none).
    ///
    /// An integer id going into a table of strings is stored as its decimal
    /// text; a string id turns an integer table into strings.
    pub fn push(&mut self, user: &RawId, item: &RawId, time_micros: i64, rating: Option<f32>) {
        let intern = |table: &mut IdTable, id: &RawId| match (id, table.kind()) {
            (RawId::Int(v), crate::IdKind::Int) => table.intern_int(*v),
            (RawId::Int(v), crate::IdKind::Str) => table.intern_str(&v.to_string()),
            (RawId::Str(s), _) => table.intern_str(s),
        };
        self.user.push(intern(&mut self.users, user));
        self.item.push(intern(&mut self.items, item));
        self.time.push(time_micros);
        if let Some(r) = rating {
            self.rating.get_or_insert_with(Vec::new).push(r);
        }
    }

    /// The earliest and latest time, if there are rows.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let min = self.time.iter().min()?;
        let max = self.time.iter().max()?;
        Some((*min, *max))
    }

    /// The event type of each code, as text (empty without an event column).
    pub fn event_names(&self) -> Vec<String> {
        (0..self.events.len() as u32)
            .filter_map(|c| self.events.get(c))
            .map(|id| id.to_string())
            .collect()
    }

    pub(crate) fn reserve(&mut self, rows: usize) {
        self.user.reserve(rows);
        self.item.reserve(rows);
        self.time.reserve(rows);
        if let Some(r) = &mut self.rating {
            r.reserve(rows);
        }
        if let Some(e) = &mut self.event {
            e.reserve(rows);
        }
    }
}

/// Refuses numeric times whose size says another unit than the one they
/// were read in: the latest time after the year 2200 while another unit
/// puts it between 1990 and 2200 (milliseconds read as seconds), or every
/// time within 1990 but between 1990 and 2200 in a coarser unit (seconds
/// read as milliseconds). Relative times (small numbers) pass. `path` names
/// the file in the error.
pub fn check_time_unit(log: &Interactions, path: &std::path::Path) -> Result<(), DataError> {
    let Some(TimeFormat::Number { unit, .. }) = &log.source.time_format else {
        return Ok(());
    };
    let Some((first, last)) = log.time_range() else {
        return Ok(());
    };
    // The numbers as written, in the unit they were read in.
    let (first_raw, last_raw) = (first as f64 / unit.micros(), last as f64 / unit.micros());
    let likely = if last as f64 >= PLAUSIBLE.end {
        unit_of_magnitude(last_raw)
    } else if (last as f64) < PLAUSIBLE.start {
        unit_of_magnitude(last_raw).filter(|u| PLAUSIBLE.contains(&(first_raw * u.micros())))
    } else {
        None
    };
    let Some(likely) = likely.filter(|u| u != unit) else {
        return Ok(());
    };
    Err(DataError::TimeUnit {
        path: path.to_path_buf(),
        column: log.source.columns.time.clone(),
        message: format!(
            "the times look like {} since 1970, not {}: the latest, {last_raw:.0}, is {} in {} and {} in {}; read them with --time-unit {likely}",
            likely.words(),
            unit.words(),
            format_micros(last),
            unit.words(),
            format_micros((last_raw * likely.micros()) as i64),
            likely.words(),
        ),
    })
}
