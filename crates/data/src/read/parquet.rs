//! Reading interaction logs from Apache Parquet through the `parquet`
//! crate's Arrow reader: one file, or a folder of parts (`part-*.parquet` as
//! Spark, DuckDB or Polars write them, flat or in Hive partition folders
//! `key=value/`). Only the needed columns are read.
//!
//! Ids: integer columns (signed or unsigned, any width) and string columns
//! (`string`, `large_string`, `string_view`, dictionary-encoded strings).
//! Times: integer or float columns (numbers in `--time-unit`, seconds by
//! default), Arrow `timestamp` columns of any unit and zone, `date32` /
//! `date64`, and string columns of ISO 8601 date-times.

use std::fs::File;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit as ArrowUnit};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::reader::LogReader;
use crate::ids::{NEGATIVE_ID, cut, cut_bytes, id_problem};
use crate::input::Resolved;
use crate::time::TimeParser;
use crate::{DataError, Format, IdKind, IdTable, InputSpec, Interactions, Place, TimeFormat};

/// Rows per decoded batch: large enough to amortise the per-batch work,
/// small enough to keep the decoded columns in cache-sized pieces.
const BATCH_ROWS: usize = 64 * 1024;

/// The Parquet reader: a Parquet file, or every `*.parquet` file of a
/// folder in name order, into one set of interactions.
pub(super) struct ParquetReader;

impl LogReader for ParquetReader {
    fn read(&self, path: &Path, spec: &InputSpec) -> Result<Interactions, DataError> {
        read_parquet(path, spec)
    }
}

fn read_parquet(path: &Path, spec: &InputSpec) -> Result<Interactions, DataError> {
    spec.delimiter_for(Format::Parquet)?;
    let files = if path.is_dir() {
        parts(path)?
    } else {
        vec![path.to_path_buf()]
    };
    let mut reader = PartsReader {
        spec,
        root: path,
        out: Interactions::default(),
        time_format: None,
    };
    for file in &files {
        no_panic(file, || reader.file(file))?;
    }
    let mut out = reader.out;
    if out.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            line: None,
            what: "no rows",
        });
    }
    out.source.format = Some(Format::Parquet);
    out.source.files = files.len();
    out.source.time_format = reader.time_format;
    Ok(out)
}

/// Runs `read` on Parquet file `path`. The parquet crate decodes untrusted
/// bytes and panics on some corrupt files (asserts in its decoders, found
/// by `tests/fuzz.rs`); such a panic becomes an error naming the file.
pub(crate) fn no_panic<T>(
    path: &Path,
    read: impl FnOnce() -> Result<T, DataError>,
) -> Result<T, DataError> {
    std::panic::catch_unwind(AssertUnwindSafe(read)).unwrap_or_else(|_| {
        Err(DataError::Parquet {
            path: path.to_path_buf(),
            message: "the parquet reader failed on this file (corrupt?)".to_string(),
        })
    })
}

/// The Parquet parts of a folder, in path order, with those of its Hive
/// partition folders (`key=value/`, as Spark's `partitionBy` and DuckDB's
/// `PARTITION_BY` write them). Files that are not `*.parquet` (`_SUCCESS`,
/// `.crc` checksums, hidden files) are ignored; other sub-folders are
/// refused.
pub(crate) fn parts(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut parts = Vec::new();
    let mut other = Vec::new();
    collect_parts(dir, &mut parts, &mut other)?;
    if parts.is_empty() {
        return Err(DataError::InvalidOption(format!(
            "{}: no *.parquet files in this folder{}",
            dir.display(),
            if other.is_empty() {
                String::new()
            } else {
                format!(" (it holds {})", cut(&other.join(", "), 200))
            }
        )));
    }
    parts.sort();
    Ok(parts)
}

/// Adds the parts in `dir` and its partition folders to `parts`, and the
/// names of files that are not parts to `other`.
fn collect_parts(
    dir: &Path,
    parts: &mut Vec<PathBuf>,
    other: &mut Vec<String>,
) -> Result<(), DataError> {
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with(['.', '_']) {
            continue;
        }
        if path.is_dir() {
            if partition_key(&name).is_none() {
                return Err(DataError::InvalidOption(format!(
                    "{}: holds the folder {:?}, which is not a Hive partition (key=value); write the parts in one folder or in key=value folders (e.g. DuckDB's COPY ... TO 'dir' (FORMAT parquet, PARTITION_BY (day)))",
                    dir.display(),
                    cut(&name, 80)
                )));
            }
            collect_parts(&path, parts, other)?;
        } else if name.ends_with(".parquet") || name.ends_with(".pq") {
            parts.push(path);
        } else if !name.ends_with(".crc") {
            other.push(name);
        }
    }
    Ok(())
}

/// The key of a Hive partition folder name `key=value`.
fn partition_key(folder: &str) -> Option<&str> {
    folder
        .split_once('=')
        .map(|(key, _)| key)
        .filter(|key| !key.is_empty())
}

/// The partition keys in the folders between `root` and the part `file`.
fn partition_keys<'p>(root: &Path, file: &'p Path) -> Vec<&'p str> {
    let within = file.strip_prefix(root).unwrap_or(file);
    within
        .parent()
        .into_iter()
        .flat_map(|folders| folders.iter())
        .filter_map(|folder| folder.to_str().and_then(partition_key))
        .collect()
}

struct PartsReader<'s> {
    spec: &'s InputSpec,
    /// The folder of the parts (the file itself when there is one).
    root: &'s Path,
    out: Interactions,
    time_format: Option<TimeFormat>,
}

/// Where the rows of the current file are: its path and the first row of
/// each row group.
struct Rows<'p> {
    path: &'p Path,
    group_starts: Vec<u64>,
}

impl Rows<'_> {
    fn place(&self, row: u64) -> Place {
        let row_group = self
            .group_starts
            .partition_point(|&s| s <= row)
            .saturating_sub(1);
        Place::Row { row_group, row }
    }
}

impl PartsReader<'_> {
    fn file(&mut self, path: &Path) -> Result<(), DataError> {
        let parquet_error = |e: &dyn std::fmt::Display| DataError::Parquet {
            path: path.to_path_buf(),
            message: cut(&e.to_string(), 200),
        };
        let (builder, names) = open(path)?;
        let mut group_starts = Vec::new();
        let mut rows_so_far = 0u64;
        for group in builder.metadata().row_groups() {
            group_starts.push(rows_so_far);
            rows_so_far += group.num_rows().max(0) as u64;
        }
        let place = Place::Row {
            row_group: 0,
            row: 0,
        };
        let cols = self.spec.resolve(&names, path, place).map_err(|e| {
            // A column named by a partition folder is not in the files.
            let keys = partition_keys(self.root, path);
            match e {
                DataError::MissingColumn {
                    path,
                    place,
                    role,
                    wanted,
                    mut columns,
                } if !keys.is_empty() => {
                    columns.push_str(&format!(
                        "; the partition keys of the folder names ({}) are not read as columns",
                        cut(&keys.join(", "), 200)
                    ));
                    DataError::MissingColumn {
                        path,
                        place,
                        role,
                        wanted,
                        columns,
                    }
                }
                e => e,
            }
        })?;
        for (col, role) in [
            (cols.user, "user"),
            (cols.item, "item"),
            (cols.time, "time"),
        ]
        .into_iter()
        .chain(cols.rating.map(|r| (r, "rating")))
        .chain(cols.event.map(|e| (e, "event")))
        {
            let data_type = builder.schema().field(col).data_type().clone();
            check_type(path, &names[col], &data_type, role)?;
        }
        // Root columns of a flat schema are its Arrow fields, in order.
        let wanted: Vec<usize> = [cols.user, cols.item, cols.time]
            .into_iter()
            .chain(cols.rating)
            .chain(cols.event)
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
        let batches = builder
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| parquet_error(&e))?;
        if self.out.is_empty() {
            self.out.source.columns = cols.names.clone();
            if cols.rating.is_some() {
                self.out.rating = Some(Vec::new());
            }
            if cols.event.is_some() {
                self.out.event = Some(Vec::new());
            }
        } else if cols.rating.is_some() != self.out.rating.is_some() {
            return Err(DataError::InvalidOption(format!(
                "{}: the parts differ: some have a rating column and some do not",
                path.display()
            )));
        } else if cols.event.is_some() != self.out.event.is_some() {
            return Err(DataError::InvalidOption(format!(
                "{}: the parts differ: some have an event column and some do not",
                path.display()
            )));
        }
        let rows = Rows { path, group_starts };
        let mut time = TimeColumn::new(self.spec, self.time_format.clone());
        let mut first_row = 0u64;
        for batch in batches {
            let batch = batch.map_err(|e| parquet_error(&e))?;
            self.batch(&batch, &cols, &rows, first_row, &mut time)?;
            first_row += batch.num_rows() as u64;
        }
        self.time_format = time.format();
        Ok(())
    }

    fn batch(
        &mut self,
        batch: &RecordBatch,
        cols: &Resolved,
        rows: &Rows,
        first_row: u64,
        time: &mut TimeColumn,
    ) -> Result<(), DataError> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .expect("projected columns are in the batch")
                .as_ref()
        };
        let names = &cols.names;
        for name in [&names.user, &names.item, &names.time]
            .into_iter()
            .chain(names.rating.as_ref())
            .chain(names.event.as_ref())
        {
            let array = column(name);
            if let Some(nulls) = array.logical_nulls().filter(|n| n.null_count() > 0) {
                let i = (0..array.len()).find(|&i| nulls.is_null(i)).unwrap_or(0);
                return Err(DataError::Null {
                    path: rows.path.to_path_buf(),
                    place: rows.place(first_row + i as u64),
                    field: name.clone(),
                });
            }
        }
        let out = &mut self.out;
        intern_ids(
            column(&names.user),
            &mut out.users,
            &mut out.user,
            rows,
            first_row,
            &names.user,
        )?;
        intern_ids(
            column(&names.item),
            &mut out.items,
            &mut out.item,
            rows,
            first_row,
            &names.item,
        )?;
        time.push(
            column(&names.time),
            &mut out.time,
            rows,
            first_row,
            &names.time,
        )?;
        if let (Some(name), Some(events)) = (&names.event, &mut out.event) {
            intern_ids(column(name), &mut out.events, events, rows, first_row, name)?;
        }
        if let (Some(name), Some(ratings)) = (&names.rating, &mut out.rating) {
            let array = column(name);
            let start = ratings.len();
            ratings.extend(
                floats(array)
                    .expect("checked type")
                    .into_iter()
                    .map(|v| v as f32),
            );
            if let Some(i) = ratings[start..].iter().position(|r| !r.is_finite()) {
                return Err(DataError::BadField {
                    path: rows.path.to_path_buf(),
                    place: rows.place(first_row + i as u64),
                    field: name.clone(),
                    value: ratings[start + i].to_string(),
                    problem: "expected a finite rating".to_string(),
                });
            }
        }
        Ok(())
    }
}

/// Opens a Parquet file for the Arrow reader: the reader's builder and the
/// file's top-level column names. A file that does not start with `PAR1`
/// says what it looks like instead.
pub(crate) fn open(
    path: &Path,
) -> Result<(ParquetRecordBatchReaderBuilder<File>, Vec<String>), DataError> {
    let mut file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut magic = [0u8; 4];
    if std::io::Read::read_exact(&mut file, &mut magic).is_err() || &magic != b"PAR1" {
        let mut head = Vec::new();
        let _ = std::io::Read::read_to_end(
            &mut std::io::Read::take(File::open(path).map_err(|e| DataError::io(path, e))?, 4096),
            &mut head,
        );
        let looks =
            crate::input::sniff_binary(&head).map_or("text or something else", |(what, _)| what);
        return Err(DataError::Parquet {
            path: path.to_path_buf(),
            message: format!(
                "it does not start with the Parquet magic bytes PAR1 (looks like {looks})"
            ),
        });
    }
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| DataError::Parquet {
            path: path.to_path_buf(),
            message: cut(&e.to_string(), 200),
        })?;
    let names = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    Ok((builder, names))
}

/// Refuses a column type the reader does not take, before reading rows.
fn check_type(path: &Path, name: &str, t: &DataType, role: &str) -> Result<(), DataError> {
    let base = match t {
        DataType::Dictionary(_, value) => value.as_ref(),
        t => t,
    };
    let (ok, expected) = match role {
        "user" | "item" => (
            base.is_integer() || is_string(base),
            "integer or string ids",
        ),
        "event" => (
            base.is_integer() || is_string(base),
            "integer or string event types",
        ),
        "time" => (
            base.is_integer()
                || base.is_floating()
                || is_string(base)
                || matches!(
                    base,
                    DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
                ),
            "a timestamp, date, number or ISO 8601 string column",
        ),
        _ => (
            (base.is_integer() || base.is_floating()) && !matches!(t, DataType::Dictionary(..)),
            "a numeric rating column",
        ),
    };
    if ok {
        Ok(())
    } else {
        Err(DataError::ColumnType {
            path: path.to_path_buf(),
            column: name.to_string(),
            found: cut(&t.to_string(), 80),
            expected,
        })
    }
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// An integer column's values as i64; `Err(i)` when value `i` does not fit
/// (a u64 above i64::MAX). `None` when the column is not of integers.
fn ints(a: &dyn Array) -> Option<Result<Vec<i64>, usize>> {
    macro_rules! widen {
        ($($t:ty),*) => {$(
            if let Some(p) = a.as_primitive_opt::<$t>() {
                return Some(Ok(p.values().iter().map(|&v| v as i64).collect()));
            }
        )*};
    }
    widen!(
        Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type
    );
    let p = a.as_primitive_opt::<UInt64Type>()?;
    Some(
        p.values()
            .iter()
            .enumerate()
            .map(|(i, &v)| i64::try_from(v).map_err(|_| i))
            .collect(),
    )
}

/// An integer column's values, `None` for nulls and for u64 values above
/// i64::MAX; `None` when the column is not of integers.
pub(crate) fn int_column(a: &dyn Array) -> Option<Vec<Option<i64>>> {
    let values: Vec<Option<i64>> = match ints(a)? {
        Ok(v) => v.into_iter().map(Some).collect(),
        Err(_) => a
            .as_primitive::<UInt64Type>()
            .values()
            .iter()
            .map(|&v| i64::try_from(v).ok())
            .collect(),
    };
    Some(
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| v.filter(|_| a.is_valid(i)))
            .collect(),
    )
}

/// A numeric column's values as f64 (`None`: not numeric).
fn floats(a: &dyn Array) -> Option<Vec<f64>> {
    if let Some(p) = a.as_primitive_opt::<Float64Type>() {
        return Some(p.values().to_vec());
    }
    if let Some(p) = a.as_primitive_opt::<Float32Type>() {
        return Some(p.values().iter().map(|&v| v as f64).collect());
    }
    match ints(a)? {
        Ok(v) => Some(v.into_iter().map(|v| v as f64).collect()),
        Err(_) => Some(
            a.as_primitive::<UInt64Type>()
                .values()
                .iter()
                .map(|&v| v as f64)
                .collect(),
        ),
    }
}

/// Calls `f(i, s)` for every value of a string column; `false` when the
/// column is not of strings.
fn for_each_str(a: &dyn Array, mut f: impl FnMut(usize, &str)) -> bool {
    if let Some(s) = a.as_string_opt::<i32>() {
        (0..s.len()).for_each(|i| f(i, s.value(i)));
    } else if let Some(s) = a.as_string_opt::<i64>() {
        (0..s.len()).for_each(|i| f(i, s.value(i)));
    } else if let Some(s) = a.as_string_view_opt() {
        (0..s.len()).for_each(|i| f(i, s.value(i)));
    } else {
        return false;
    }
    true
}

/// Appends the codes of an id column's values (no nulls) to `codes`.
/// Integer ids must be 0 or more, string ids at most
/// [`crate::MAX_ID_BYTES`] long without NUL bytes, as in text files.
fn intern_ids(
    a: &dyn Array,
    table: &mut IdTable,
    codes: &mut Vec<u32>,
    rows: &Rows,
    first_row: u64,
    name: &str,
) -> Result<(), DataError> {
    let bad = |i: usize, value: String, problem: &str| DataError::BadField {
        path: rows.path.to_path_buf(),
        place: rows.place(first_row + i as u64),
        field: name.to_string(),
        value,
        problem: problem.to_string(),
    };
    if let Some(dict) = a.as_any_dictionary_opt() {
        // Intern each dictionary value once, at its first use, so codes
        // still follow first appearance in the rows.
        let values = dict.values();
        if values.is_empty() {
            // No values: every key is null, which was refused before.
            return Ok(());
        }
        let mut value_codes = vec![u32::MAX; values.len()];
        for (row, key) in dict.normalized_keys().into_iter().enumerate() {
            if value_codes[key] == u32::MAX {
                value_codes[key] = intern_one(table, values.as_ref(), key)
                    .map_err(|(value, problem)| bad(row, value, problem))?;
            }
            codes.push(value_codes[key]);
        }
        return Ok(());
    }
    match ints(a) {
        Some(Ok(values)) => {
            if let Some(i) = values.iter().position(|&v| v < 0) {
                return Err(bad(i, values[i].to_string(), NEGATIVE_ID));
            }
            codes.extend(values.into_iter().map(|v| match table.kind() {
                IdKind::Int => table.intern_int(v),
                IdKind::Str => table.intern_str(&v.to_string()),
            }));
            Ok(())
        }
        Some(Err(i)) => Err(bad(
            i,
            a.as_primitive::<UInt64Type>().value(i).to_string(),
            "id too large (ids must fit in a 64-bit signed integer)",
        )),
        None => {
            let mut refused = None;
            let is_str = for_each_str(a, |i, s| {
                if refused.is_some() {
                    return;
                }
                match id_problem(s.as_bytes()) {
                    None => codes.push(table.intern_str(s)),
                    Some(problem) => refused = Some(bad(i, cut_bytes(s.as_bytes(), 80), problem)),
                }
            });
            assert!(is_str, "column types are checked before reading");
            refused.map_or(Ok(()), Err)
        }
    }
}

/// Interns value `i` of an id array (integers or strings); the value (as
/// text, cut) and the problem when it is not an id.
fn intern_one(
    table: &mut IdTable,
    values: &dyn Array,
    i: usize,
) -> Result<u32, (String, &'static str)> {
    let value = values.slice(i, 1);
    if let Some(v) = ints(&value) {
        let v = v.map_err(|_| {
            let big = value.as_primitive::<UInt64Type>().value(0);
            (
                big.to_string(),
                "id too large (ids must fit in a 64-bit signed integer)",
            )
        })?[0];
        if v < 0 {
            return Err((v.to_string(), NEGATIVE_ID));
        }
        return Ok(match table.kind() {
            IdKind::Int => table.intern_int(v),
            IdKind::Str => table.intern_str(&v.to_string()),
        });
    }
    let mut code = Err((String::new(), "not an id"));
    for_each_str(&value, |_, s| {
        code = match id_problem(s.as_bytes()) {
            None => Ok(table.intern_str(s)),
            Some(problem) => Err((cut_bytes(s.as_bytes(), 80), problem)),
        }
    });
    code
}

/// Converts a time column, keeping one format across batches and parts.
struct TimeColumn {
    unit: Option<crate::TimeUnit>,
    text: TimeParser,
    format: Option<TimeFormat>,
}

impl TimeColumn {
    fn new(spec: &InputSpec, format: Option<TimeFormat>) -> Self {
        TimeColumn {
            unit: spec.time_unit,
            text: TimeParser::new(spec.time_unit),
            format,
        }
    }

    fn format(&self) -> Option<TimeFormat> {
        self.format.clone().or_else(|| self.text.format().cloned())
    }

    /// Sets the column's format; a different one from an earlier batch or
    /// part is an error.
    fn set_format(
        &mut self,
        format: TimeFormat,
        rows: &Rows,
        row: u64,
        name: &str,
    ) -> Result<(), DataError> {
        match &self.format {
            Some(f) if *f != format => Err(DataError::BadField {
                path: rows.path.to_path_buf(),
                place: rows.place(row),
                field: name.to_string(),
                value: format.to_string(),
                problem: format!("mixed time formats: the parts read before hold {f}"),
            }),
            _ => {
                self.format = Some(format);
                Ok(())
            }
        }
    }

    fn push(
        &mut self,
        a: &dyn Array,
        out: &mut Vec<i64>,
        rows: &Rows,
        first_row: u64,
        name: &str,
    ) -> Result<(), DataError> {
        let range = |row: usize| DataError::BadField {
            path: rows.path.to_path_buf(),
            place: rows.place(first_row + row as u64),
            field: name.to_string(),
            value: String::new(),
            problem: "time out of range".to_string(),
        };
        let typed = |unit: &str| format!("Parquet {unit}");
        let unit_given = |what: &str| {
            DataError::InvalidOption(format!(
                "{}: column `{name}` holds {what}, which carry their own unit: drop the time unit (--time-unit)",
                rows.path.display()
            ))
        };
        match a.data_type() {
            DataType::Timestamp(unit, zone) => {
                if self.unit.is_some() {
                    return Err(unit_given("timestamps"));
                }
                let zone = zone
                    .as_deref()
                    .map_or("no zone".to_string(), |z| cut(z, 40));
                self.set_format(
                    TimeFormat::Typed(typed(&format!("timestamps ({unit:?}, {zone})"))),
                    rows,
                    first_row,
                    name,
                )?;
                let (mul, div) = match unit {
                    ArrowUnit::Second => (1_000_000, 1),
                    ArrowUnit::Millisecond => (1_000, 1),
                    ArrowUnit::Microsecond => (1, 1),
                    ArrowUnit::Nanosecond => (1, 1_000),
                };
                let values: &[i64] = match unit {
                    ArrowUnit::Second => a.as_primitive::<TimestampSecondType>().values(),
                    ArrowUnit::Millisecond => a.as_primitive::<TimestampMillisecondType>().values(),
                    ArrowUnit::Microsecond => a.as_primitive::<TimestampMicrosecondType>().values(),
                    ArrowUnit::Nanosecond => a.as_primitive::<TimestampNanosecondType>().values(),
                };
                for (i, &v) in values.iter().enumerate() {
                    out.push(v.checked_mul(mul).ok_or_else(|| range(i))?.div_euclid(div));
                }
            }
            DataType::Date32 | DataType::Date64 => {
                if self.unit.is_some() {
                    return Err(unit_given("dates"));
                }
                self.set_format(
                    TimeFormat::Typed(typed(&a.data_type().to_string())),
                    rows,
                    first_row,
                    name,
                )?;
                let (values, per_unit): (Vec<i64>, i64) = match a.as_primitive_opt::<Date32Type>() {
                    // Days, and milliseconds, since 1970.
                    Some(days) => (
                        days.values().iter().map(|&d| d as i64).collect(),
                        86_400_000_000,
                    ),
                    None => (a.as_primitive::<Date64Type>().values().to_vec(), 1_000),
                };
                for (i, v) in values.into_iter().enumerate() {
                    out.push(v.checked_mul(per_unit).ok_or_else(|| range(i))?);
                }
            }
            t if t.is_integer() => {
                let unit = self.unit.unwrap_or_default();
                let decimals = matches!(
                    &self.format,
                    Some(TimeFormat::Number { decimals: true, .. })
                );
                self.set_format(TimeFormat::Number { unit, decimals }, rows, first_row, name)?;
                match ints(a).expect("integer column") {
                    Ok(values) => {
                        for (i, v) in values.into_iter().enumerate() {
                            out.push(unit.to_micros(v).ok_or_else(|| range(i))?);
                        }
                    }
                    Err(i) => return Err(range(i)),
                }
            }
            t if t.is_floating() => {
                let unit = self.unit.unwrap_or_default();
                let decimals = !matches!(
                    &self.format,
                    Some(TimeFormat::Number {
                        decimals: false,
                        ..
                    })
                );
                self.set_format(TimeFormat::Number { unit, decimals }, rows, first_row, name)?;
                for (i, v) in floats(a).expect("float column").into_iter().enumerate() {
                    out.push(unit.float_to_micros(v).ok_or_else(|| range(i))?);
                }
            }
            _ => {
                let text = &mut self.text;
                let mut error = None;
                let string_values = a.as_any_dictionary_opt().map(|d| d.values().clone());
                let keys = a.as_any_dictionary_opt().map(|d| d.normalized_keys());
                let column: &dyn Array = string_values.as_deref().unwrap_or(a);
                let mut parsed = Vec::with_capacity(column.len());
                for_each_str(column, |i, s| {
                    if error.is_none() {
                        match text.parse(s.as_bytes()) {
                            Ok(v) => parsed.push(v),
                            Err(problem) => error = Some((i, s.to_string(), problem)),
                        }
                    }
                });
                if let Some((i, value, problem)) = error {
                    // For a dictionary, name the first row that uses the value.
                    let row = keys
                        .as_ref()
                        .and_then(|k| k.iter().position(|&k| k == i))
                        .unwrap_or(i);
                    return Err(DataError::BadField {
                        path: rows.path.to_path_buf(),
                        place: rows.place(first_row + row as u64),
                        field: name.to_string(),
                        value: cut_bytes(value.as_bytes(), 80),
                        problem,
                    });
                }
                match keys {
                    Some(keys) => out.extend(keys.into_iter().map(|k| parsed[k])),
                    None => out.extend(parsed),
                }
            }
        }
        Ok(())
    }
}
