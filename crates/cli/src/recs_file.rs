//! The file `sasrec recommend --all-users --out PATH` writes: one row per
//! (user, recommended item) with columns `user`, `item`, `rank` (1-based)
//! and `logit` (and `name`, with `--item-names`), as Parquet, CSV or JSON
//! Lines. Ids keep their kind:
//! integer ids are Int64 columns (JSON numbers), string ids Utf8 columns
//! (JSON strings). The file appears whole or not at all (temporary file,
//! then rename), and has one writer at a time (see `output.rs`).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::builder::{Float32Builder, Int32Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sasrec_data::{IdKind, RawId};
use sasrec_run::durable::AtomicFile;
use serde::Serialize;

use crate::output::Output;

/// The formats, by the output's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecsFormat {
    /// `.parquet`.
    Parquet,
    /// `.csv`.
    Csv,
    /// `.jsonl` (one JSON object a line).
    Jsonl,
}

impl RecsFormat {
    /// The format of `path`, by its extension.
    pub fn from_path(path: &Path) -> Result<RecsFormat> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        Ok(match ext.as_deref() {
            Some("parquet") => RecsFormat::Parquet,
            Some("csv") => RecsFormat::Csv,
            Some("jsonl" | "ndjson") => RecsFormat::Jsonl,
            _ => bail!(
                "--out {}: write .parquet, .csv or .jsonl (the extension chooses the format)",
                path.display()
            ),
        })
    }
}

/// Writes recommendation rows into a file that appears when finished.
pub struct RecsWriter {
    path: std::path::PathBuf,
    inner: Inner,
    /// Held until the file is in place (and by the caller after that).
    output: Output,
}

enum Inner {
    // Boxed: the writers differ much in size.
    Parquet(Box<ParquetRows>),
    Csv(Box<csv::Writer<AtomicFile>>),
    Jsonl(AtomicFile),
}

struct ParquetRows {
    writer: ArrowWriter<AtomicFile>,
    schema: SchemaRef,
    columns: Columns,
}

/// The rows of a Parquet block not yet written.
struct Columns {
    users: IdColumn,
    items: IdColumn,
    ranks: Int32Builder,
    logits: Float32Builder,
    /// The items' names, when the file has a name column.
    names: Option<StringBuilder>,
}

/// A Parquet column of raw ids being built: Int64 or Utf8 by the ids' kind.
pub enum IdColumn {
    Int(Int64Builder),
    Str(StringBuilder),
}

impl IdColumn {
    /// An empty column for ids of `kind`.
    pub fn new(kind: IdKind) -> IdColumn {
        match kind {
            IdKind::Int => IdColumn::Int(Int64Builder::new()),
            IdKind::Str => IdColumn::Str(StringBuilder::new()),
        }
    }

    /// The Arrow type of ids of `kind`.
    pub fn data_type(kind: IdKind) -> DataType {
        match kind {
            IdKind::Int => DataType::Int64,
            IdKind::Str => DataType::Utf8,
        }
    }

    /// Appends an id (of the column's kind).
    pub fn push(&mut self, id: &RawId) {
        match (self, id) {
            (IdColumn::Int(b), RawId::Int(v)) => b.append_value(*v),
            (IdColumn::Str(b), RawId::Str(s)) => b.append_value(s),
            // One vocabulary holds ids of one kind.
            (IdColumn::Int(_), RawId::Str(_)) | (IdColumn::Str(_), RawId::Int(_)) => {
                unreachable!("an id of the other kind")
            }
        }
    }

    /// The ids appended so far as an array; the column starts empty again.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            IdColumn::Int(b) => Arc::new(b.finish()),
            IdColumn::Str(b) => Arc::new(b.finish()),
        }
    }
}

#[derive(Serialize)]
struct Row<'a> {
    user: &'a RawId,
    item: &'a RawId,
    rank: u32,
    logit: f32,
    /// Present only in files with a name column.
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

impl RecsWriter {
    /// Starts `path` (in a temporary file beside it) for users and items of
    /// these kinds, with a `name` column when `with_names`; refused while
    /// another process writes `path`.
    pub fn create(
        path: &Path,
        format: RecsFormat,
        users: IdKind,
        items: IdKind,
        with_names: bool,
    ) -> Result<RecsWriter> {
        let output = Output::lock(path, "recommend")?;
        let file = AtomicFile::create(path)?;
        let inner = match format {
            RecsFormat::Parquet => {
                let mut fields = vec![
                    Field::new("user", IdColumn::data_type(users), false),
                    Field::new("item", IdColumn::data_type(items), false),
                    Field::new("rank", DataType::Int32, false),
                    Field::new("logit", DataType::Float32, false),
                ];
                if with_names {
                    fields.push(Field::new("name", DataType::Utf8, false));
                }
                let schema = Arc::new(Schema::new(fields));
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
                let columns = Columns {
                    users: IdColumn::new(users),
                    items: IdColumn::new(items),
                    ranks: Int32Builder::new(),
                    logits: Float32Builder::new(),
                    names: with_names.then(StringBuilder::new),
                };
                Inner::Parquet(Box::new(ParquetRows {
                    writer,
                    schema,
                    columns,
                }))
            }
            // The header comes from `Row`'s fields.
            RecsFormat::Csv => Inner::Csv(Box::new(csv::Writer::from_writer(file))),
            RecsFormat::Jsonl => Inner::Jsonl(file),
        };
        Ok(RecsWriter {
            path: path.to_path_buf(),
            inner,
            output,
        })
    }

    /// One row: `item` is `user`'s recommendation at `rank`; `name` is the
    /// item's name in a file with a name column (`""` when it has none).
    pub fn push(
        &mut self,
        user: &RawId,
        item: &RawId,
        rank: u32,
        logit: f32,
        name: Option<&str>,
    ) -> Result<()> {
        let row = Row {
            user,
            item,
            rank,
            logit,
            name,
        };
        match &mut self.inner {
            Inner::Parquet(parquet) => {
                let columns = &mut parquet.columns;
                columns.users.push(user);
                columns.items.push(item);
                columns.ranks.append_value(rank as i32);
                columns.logits.append_value(logit);
                if let Some(names) = &mut columns.names {
                    names.append_value(name.unwrap_or(""));
                }
            }
            Inner::Csv(writer) => writer
                .serialize(row)
                .with_context(|| format!("writing {}", self.path.display()))?,
            Inner::Jsonl(file) => {
                let mut line = serde_json::to_vec(&row)?;
                line.push(b'\n');
                std::io::Write::write_all(file, &line)
                    .with_context(|| format!("writing {}", self.path.display()))?;
            }
        }
        Ok(())
    }

    /// Hands the rows pushed since the last block to the Parquet writer (a
    /// no-op for the text formats, which write as they go).
    pub fn end_block(&mut self) -> Result<()> {
        if let Inner::Parquet(parquet) = &mut self.inner {
            let ParquetRows {
                writer,
                schema,
                columns,
            } = parquet.as_mut();
            let mut arrays = vec![
                columns.users.finish(),
                columns.items.finish(),
                Arc::new(columns.ranks.finish()) as ArrayRef,
                Arc::new(columns.logits.finish()),
            ];
            if let Some(names) = &mut columns.names {
                arrays.push(Arc::new(names.finish()));
            }
            let batch = RecordBatch::try_new(schema.clone(), arrays)?;
            writer
                .write(&batch)
                .with_context(|| format!("writing {}", self.path.display()))?;
        }
        Ok(())
    }

    /// Writes what is left and puts the file in place; the lock on the
    /// output comes back, for the files written beside it.
    pub fn finish(mut self) -> Result<Output> {
        self.end_block()?;
        let context = || format!("writing {}", self.path.display());
        let file = match self.inner {
            Inner::Parquet(parquet) => parquet.writer.into_inner().with_context(context)?,
            Inner::Csv(writer) => writer
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(context)?,
            Inner::Jsonl(file) => file,
        };
        file.commit()?;
        Ok(self.output)
    }
}
