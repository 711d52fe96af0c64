//! Item names for recommendations: any CSV/TSV or Parquet table with an id
//! column and a name column (MovieLens `movies.csv`: `movieId`, `title`).

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use parquet::arrow::ProjectionMask;

use crate::ids::{cut, cut_bytes};
use crate::input::{ITEM_NAMES, check_unique_names, missing_column, sniff_binary};
use crate::read::{CappedReader, MAX_LINE};
use crate::{DataError, Format, IdKind, Place, RawId};

/// The name columns tried, in order, when none is given.
const NAME_COLUMNS: &[&str] = &["title", "name"];

/// Reads item id -> name from a CSV/TSV (by extension; CSV otherwise) or
/// Parquet table. `id_col` holds ids of `kind` (the vocabulary's; `None`:
/// the usual item column names, as for logs: `movieId`, `itemId`,
/// `item_id`, ...), `name_col` the names (`None`: `title`, else `name`).
/// Errors name this file's columns.
pub fn read_item_names(
    path: &Path,
    id_col: Option<&str>,
    name_col: Option<&str>,
    kind: IdKind,
) -> Result<HashMap<RawId, String>, DataError> {
    if Format::from_path(path) == Some(Format::Parquet) {
        return crate::read::parquet::no_panic(path, || {
            read_parquet_names(path, id_col, name_col, kind)
        });
    }
    let delimiter = match Format::from_path(path) {
        Some(Format::Tsv | Format::Inter) => b'\t',
        _ => b',',
    };
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut head = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(&file, 4096), &mut head)
        .map_err(|e| DataError::io(path, e))?;
    if let Some((looks_like, hint)) = sniff_binary(&head) {
        return Err(DataError::NotText {
            path: path.to_path_buf(),
            looks_like,
            hint,
        });
    }
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let capped = CappedReader::new(std::io::BufReader::new(file));
    let allowed = capped.allowed();
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_reader(capped);
    let header = reader
        .byte_headers()
        .map_err(|e| csv_error(path, e, &[]))?
        .clone();
    let names: Vec<String> = header
        .iter()
        .map(|c| {
            let c = c.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(c);
            String::from_utf8_lossy(c).trim().to_string()
        })
        .collect();
    let (id, name) = find_columns(path, &names, id_col, name_col, Place::Line(1))?;
    let mut out = HashMap::new();
    let mut record = csv::ByteRecord::new();
    while reader
        .read_byte_record(&mut record)
        .map_err(|e| csv_error(path, e, &names))?
    {
        let position = record.position().expect("the csv crate tracks positions");
        allowed.set(position.byte() + record.as_slice().len() as u64 + MAX_LINE as u64 + 65_536);
        let place = Place::Line(position.line());
        let bad = |field: &str, value: &[u8], problem: String| DataError::BadField {
            path: path.to_path_buf(),
            place,
            field: field.to_string(),
            value: cut_bytes(value, 80),
            problem,
        };
        let raw = std::str::from_utf8(&record[id])
            .map_err(|_| bad(&names[id], &record[id], "not valid UTF-8".to_string()))
            .and_then(|text| {
                RawId::parse(text, kind).map_err(|p| bad(&names[id], &record[id], p))
            })?;
        let title = std::str::from_utf8(&record[name])
            .map_err(|_| bad(&names[name], &record[name], "not valid UTF-8".to_string()))?;
        out.insert(raw, title.to_string());
    }
    Ok(out)
}

/// The positions of the id and name columns among `names`.
fn find_columns(
    path: &Path,
    names: &[String],
    id_col: Option<&str>,
    name_col: Option<&str>,
    place: Place,
) -> Result<(usize, usize), DataError> {
    check_unique_names(path, place, names)?;
    // The given column, else the first of the usual ones present.
    let find = |given: Option<&str>, usual: &[&str], role, flag| {
        let wanted: Vec<&str> = given.map_or_else(|| usual.to_vec(), |g| vec![g]);
        wanted
            .iter()
            .find_map(|w| names.iter().position(|c| c == w))
            .ok_or_else(|| missing_column(path, place, role, &wanted, names, flag))
    };
    let id = find(id_col, ITEM_NAMES, "item id", "--item-names-id-col")?;
    let name = find(name_col, NAME_COLUMNS, "name", "--item-name-col")?;
    Ok((id, name))
}

fn read_parquet_names(
    path: &Path,
    id_col: Option<&str>,
    name_col: Option<&str>,
    kind: IdKind,
) -> Result<HashMap<RawId, String>, DataError> {
    let (builder, names) = crate::read::parquet::open(path)?;
    let parquet_error = |e: &dyn std::fmt::Display| DataError::Parquet {
        path: path.to_path_buf(),
        message: cut(&e.to_string(), 200),
    };
    let place = Place::Row {
        row_group: 0,
        row: 0,
    };
    let (id, name) = find_columns(path, &names, id_col, name_col, place)?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [id, name]);
    let batches = builder
        .with_projection(mask)
        .build()
        .map_err(|e| parquet_error(&e))?;
    let mut out = HashMap::new();
    let mut first_row = 0u64;
    for batch in batches {
        let batch = batch.map_err(|e| parquet_error(&e))?;
        let rows = batch.num_rows() as u64;
        let ids = batch.column_by_name(&names[id]).expect("projected");
        let titles = batch.column_by_name(&names[name]).expect("projected");
        let titles = arrow_cast_strings(titles.as_ref()).ok_or_else(|| DataError::ColumnType {
            path: path.to_path_buf(),
            column: names[name].clone(),
            found: cut(&titles.data_type().to_string(), 80),
            expected: "a string column",
        })?;
        let ids: Vec<Option<RawId>> = match kind {
            IdKind::Int => match crate::read::parquet::int_column(ids.as_ref()) {
                Some(values) => values.into_iter().map(|v| v.map(RawId::Int)).collect(),
                None => arrow_cast_strings(ids.as_ref())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|s| s.and_then(|s| s.parse().ok().map(RawId::Int)))
                    .collect(),
            },
            IdKind::Str => match arrow_cast_strings(ids.as_ref()) {
                Some(values) => values.into_iter().map(|s| s.map(RawId::Str)).collect(),
                None => crate::read::parquet::int_column(ids.as_ref())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| v.map(|v| RawId::Str(v.to_string())))
                    .collect(),
            },
        };
        for (row, (id, title)) in ids.into_iter().zip(titles).enumerate() {
            if let (Some(id), Some(title)) = (id, title) {
                // As long as a text line may be.
                if title.len() > MAX_LINE {
                    return Err(DataError::BadField {
                        path: path.to_path_buf(),
                        place: Place::Row {
                            row_group: 0,
                            row: first_row + row as u64,
                        },
                        field: names[name].clone(),
                        value: cut(&title, 80),
                        problem: format!("a name longer than {MAX_LINE} bytes"),
                    });
                }
                out.insert(id, title);
            }
        }
        first_row += rows;
    }
    Ok(out)
}

/// A string (or dictionary-of-string) column's values; `None` when the
/// column is not of strings. Nulls stay `None`.
fn arrow_cast_strings(a: &dyn Array) -> Option<Vec<Option<String>>> {
    if let Some(dict) = a.as_any_dictionary_opt() {
        let values = arrow_cast_strings(dict.values().as_ref())?;
        return Some(
            dict.normalized_keys()
                .into_iter()
                .enumerate()
                .map(|(i, k)| {
                    if a.is_null(i) {
                        None
                    } else {
                        values[k].clone()
                    }
                })
                .collect(),
        );
    }
    let collect = |iter: &mut dyn Iterator<Item = Option<&str>>| {
        iter.map(|v| v.map(str::to_string)).collect::<Vec<_>>()
    };
    if let Some(s) = a.as_string_opt::<i32>() {
        return Some(collect(&mut s.iter()));
    }
    if let Some(s) = a.as_string_opt::<i64>() {
        return Some(collect(&mut s.iter()));
    }
    a.as_string_view_opt().map(|s| collect(&mut s.iter()))
}

/// Turns a csv crate error into one that names the file, line and field
/// (the field only where the csv crate can tell).
fn csv_error(path: &Path, e: csv::Error, names: &[String]) -> DataError {
    let line = e.position().map_or(1, |p| p.line());
    let (field, message) = match e.into_kind() {
        csv::ErrorKind::Io(err) if err.kind() == std::io::ErrorKind::FileTooLarge => {
            return DataError::LineTooLong {
                path: path.to_path_buf(),
                line,
                limit: MAX_LINE,
            };
        }
        csv::ErrorKind::Io(err) => return DataError::io(path, err),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => (
            names.get(len as usize).cloned(),
            format!("expected {expected_len} fields, found {len}"),
        ),
        other => (None, cut(&format!("{other:?}"), 200)),
    };
    DataError::Csv {
        path: path.to_path_buf(),
        line,
        field,
        message,
    }
}
