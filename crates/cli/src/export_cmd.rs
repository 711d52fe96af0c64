//! `sasrec export`: the item embeddings and every user's vector, for
//! approximate-nearest-neighbour engines (FAISS, Qdrant, pgvector, ...).
//!
//! The logit `sasrec recommend` ranks by is `h_u . e_i`: `h_u` the user's
//! final hidden state after their whole history, `e_i` the item's row of
//! the tied item table. Exact inner-product search over the two exports
//! therefore gives `recommend`'s top-k (after removing the user's seen
//! items, as `recommend` does).
//!
//! ```text
//! OUT/
//!   items.parquet   item (raw id), vector (fixed_size_list<float32>[dim])
//!   items.npy       float32 [items, dim], C order
//!   items.ids.json  raw item ids in the rows' order
//!   users.parquet   user (raw id), vector
//!   users.npy       float32 [users, dim]
//!   users.ids.json  raw user ids in the rows' order
//!   export.json     what these are: run, dim, counts, the score
//! ```
//!
//! The folder is written whole in a temporary folder beside it, then put
//! in place of the earlier export in one step (see `output.rs`): a reader
//! never finds the files of two exports mixed, and a second `export` to the
//! same folder is refused while one runs.
//!
//! Parquet keeps a vector as one fixed-size-list column rather than a
//! column per dimension: the engines' clients take a vector per row (a list
//! of floats for Qdrant and pgvector, an array for FAISS), which this
//! column is in one call (`pyarrow`: `np.stack(column.to_numpy(False))`,
//! or zero-copy from its flat values), and DuckDB reads it as a `FLOAT[dim]`
//! array, castable to pgvector's `vector`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use arrow_array::{ArrayRef, FixedSizeListArray, Float32Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use clap::Args;
use parquet::arrow::ArrowWriter;
use sasrec_data::{IdKind, RawId};
use sasrec_kernels::Backend;
use sasrec_model::{item_vectors, user_vectors, users_per_pass};
use sasrec_run::durable::{AtomicFile, write_atomic};
use serde_json::json;

use crate::args::DeviceArgs;
use crate::device::Device;
use crate::output::Output;
use crate::progress::progress_bar;
use crate::recs_file::IdColumn;
use crate::run_loading::{LoadedRun, load_run};

/// The files of an export folder; a folder holding anything else is never
/// replaced.
const EXPORT_FILES: [&str; 7] = [
    "items.parquet",
    "items.npy",
    "items.ids.json",
    "users.parquet",
    "users.npy",
    "users.ids.json",
    "export.json",
];

/// `sasrec export` flags.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Run folder written by `sasrec train`.
    #[arg(long, value_name = "DIR")]
    run: PathBuf,
    /// Folder to write (replaced whole if it holds an earlier export; a
    /// folder holding other files is refused).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Read the users' histories from this log instead of the run folder's
    /// data.safetensors.
    #[arg(long, value_name = "PATH")]
    ratings: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Runs `sasrec export`.
pub fn run(args: ExportArgs) -> Result<()> {
    args.device.set_threads()?;
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let output = Output::lock(&args.out, "export")?;
    check_replaceable(&args.out)?;
    match args.device.open()? {
        Device::Cpu(b) => export_on(&b, &args, &output),
        Device::Gpu(b) => export_on(&b, &args, &output),
    }
}

/// Refuses an --out that is not an earlier export (or an empty folder).
fn check_replaceable(out: &Path) -> Result<()> {
    if out.is_file() {
        bail!("--out {} is a file; give a folder", out.display());
    }
    if !out.exists() {
        return Ok(());
    }
    let entries = std::fs::read_dir(out).with_context(|| format!("listing {}", out.display()))?;
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !EXPORT_FILES.contains(&name.as_str()) {
            bail!(
                "--out {} holds {:?}, which is not a file of an export; an export replaces the whole folder: choose another --out",
                out.display(),
                sasrec_model::bounded(&name, 60)
            );
        }
    }
    Ok(())
}

fn export_on<B: Backend>(backend: &B, args: &ExportArgs, output: &Output) -> Result<()> {
    let loaded = load_run(backend, &args.run, args.ratings.as_deref(), true)?;
    let LoadedRun { model, catalog, .. } = &loaded;
    let staging = output.staging_folder()?;
    let out = staging.path();
    let started = Instant::now();
    let dim = model.config.dim;

    // Items: row r is item index r + 1.
    let items = catalog.vocab.num_items();
    let mut writer = VectorWriter::create(out, "items", "item", catalog.item_kind(), items, dim)?;
    let ids: Vec<RawId> = (1..=items as u32).map(|i| catalog.raw_item(i)).collect();
    writer.push(&ids, &item_vectors(backend, model))?;
    writer.finish(&ids)?;

    // Users, in passes: memory stays flat however many there are.
    let users: Vec<u32> = catalog.user_indices().collect();
    let mut writer =
        VectorWriter::create(out, "users", "user", catalog.user_kind(), users.len(), dim)?;
    let bar = progress_bar(users.len() as u64, "export");
    let mut all_ids = Vec::with_capacity(users.len());
    for pass in users.chunks(users_per_pass(model)) {
        let histories: Vec<&[u32]> = pass.iter().map(|&u| catalog.history(u)).collect();
        let ids: Vec<RawId> = pass.iter().map(|&u| catalog.raw_user(u)).collect();
        writer.push(&ids, &user_vectors(backend, model, &histories)?)?;
        all_ids.extend(ids);
        bar.inc(pass.len() as u64);
    }
    bar.finish_and_clear();
    writer.finish(&all_ids)?;

    let manifest = json!({
        "run": args.run,
        "dim": dim,
        "score": "logit = users[u] . items[i] (inner product), the score `sasrec recommend` ranks by; remove the user's seen items as it does",
        "items": { "count": items, "parquet": "items.parquet", "npy": "items.npy", "ids": "items.ids.json" },
        "users": { "count": users.len(), "parquet": "users.parquet", "npy": "users.npy", "ids": "users.ids.json" },
    });
    write_atomic(
        &out.join("export.json"),
        &serde_json::to_vec_pretty(&manifest)?,
    )?;
    check_replaceable(&args.out)?;
    output.publish_folder(staging)?;
    eprintln!(
        "exported {items} item vectors and {} user vectors (dim {dim}) to {} in {:.1} s",
        users.len(),
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `NAME.parquet`, `NAME.npy` and `NAME.ids.json`, written block by block
/// and put in place together at the end.
struct VectorWriter {
    parquet: ArrowWriter<AtomicFile>,
    schema: SchemaRef,
    npy: AtomicFile,
    ids_path: PathBuf,
    kind: IdKind,
    dim: usize,
    rows_left: usize,
}

impl VectorWriter {
    fn create(
        dir: &Path,
        name: &str,
        id_col: &str,
        kind: IdKind,
        rows: usize,
        dim: usize,
    ) -> Result<VectorWriter> {
        let element = Arc::new(Field::new("item", DataType::Float32, false));
        let schema = Arc::new(Schema::new(vec![
            Field::new(id_col, IdColumn::data_type(kind), false),
            Field::new(
                "vector",
                DataType::FixedSizeList(element, dim as i32),
                false,
            ),
        ]));
        let file = AtomicFile::create(&dir.join(format!("{name}.parquet")))?;
        let parquet = ArrowWriter::try_new(file, schema.clone(), None)?;
        let mut npy = AtomicFile::create(&dir.join(format!("{name}.npy")))?;
        npy.write_all(&npy_header(rows, dim))?;
        Ok(VectorWriter {
            parquet,
            schema,
            npy,
            ids_path: dir.join(format!("{name}.ids.json")),
            kind,
            dim,
            rows_left: rows,
        })
    }

    /// The next rows: `ids[r]`'s vector is `vectors[r * dim..(r + 1) * dim]`.
    fn push(&mut self, ids: &[RawId], vectors: &[f32]) -> Result<()> {
        assert_eq!(vectors.len(), ids.len() * self.dim, "one vector per id");
        assert!(
            ids.len() <= self.rows_left,
            "more rows than the header says"
        );
        self.rows_left -= ids.len();
        let mut column = IdColumn::new(self.kind);
        for id in ids {
            column.push(id);
        }
        let element = Arc::new(Field::new("item", DataType::Float32, false));
        let values = Arc::new(Float32Array::from(vectors.to_vec()));
        let list = FixedSizeListArray::try_new(element, self.dim as i32, values, None)?;
        let batch = RecordBatch::try_new(
            self.schema.clone(),
            vec![column.finish(), Arc::new(list) as ArrayRef],
        )?;
        self.parquet.write(&batch)?;
        let bytes: Vec<u8> = vectors.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.npy.write_all(&bytes)?;
        Ok(())
    }

    /// Puts the three files in place; `ids` are every row's id in order.
    fn finish(self, ids: &[RawId]) -> Result<()> {
        assert_eq!(self.rows_left, 0, "fewer rows than the header says");
        self.parquet.into_inner()?.commit()?;
        self.npy.commit()?;
        write_atomic(&self.ids_path, &serde_json::to_vec(ids)?)
    }
}

/// The header of a NumPy `.npy` file (format 1.0) holding a C-order
/// little-endian float32 array of `rows` x `cols`, laid out byte for byte
/// as `numpy.save` writes it: the dictionary, room for the first dimension
/// to grow to 21 digits, spaces up to a multiple of 64 bytes, a newline.
fn npy_header(rows: usize, cols: usize) -> Vec<u8> {
    let mut dict =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    dict.push_str(&" ".repeat(21usize.saturating_sub(rows.to_string().len())));
    // Magic (6), version (2), length (2), dictionary, newline.
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    let mut header = b"\x93NUMPY\x01\x00".to_vec();
    header.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    header.extend_from_slice(dict.as_bytes());
    header
}

#[cfg(test)]
mod tests {
    use super::npy_header;

    /// What `numpy.save` (NumPy 2) writes for float32 arrays of these
    /// shapes: `np.save(f, np.zeros((3, 4), np.float32))`, and (200000, 64).
    #[test]
    fn npy_headers_are_numpys() {
        let numpy = |shape: &str| {
            let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
            let mut bytes = b"\x93NUMPY\x01\x00v\x00".to_vec();
            bytes.extend_from_slice(format!("{dict:<117}\n").as_bytes());
            bytes
        };
        assert_eq!(npy_header(3, 4), numpy("(3, 4)"));
        assert_eq!(npy_header(200_000, 64), numpy("(200000, 64)"));
        assert_eq!(npy_header(3, 4).len(), 128);
    }
}
