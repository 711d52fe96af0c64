//! `sasrec._sasrec`: the native half of the `sasrec` Python package. The
//! Python half (`python/sasrec/__init__.py`) turns DataFrames into Arrow
//! streams and the results into pandas, numpy and PyTorch.
//!
//! Training is `sasrec train` itself (`sasrec_cli::train_cmd`): the keyword
//! arguments become its flags as a `--config` file's keys do, so a
//! run trained from Python and one trained by the CLI with the same
//! settings are the same run, and errors carry the CLI's messages. Scoring
//! goes through the library crates on a run loaded once.
//!
//! Arrow data comes in and goes out through the Arrow C stream interface
//! (PyCapsules), so no interaction or recommendation passes through Python
//! objects. The GIL is released while Rust reads, trains and scores.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow_array::ffi_stream::{ArrowArrayStreamReader, FFI_ArrowArrayStream};
use arrow_array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int32Array, RecordBatch, RecordBatchIterator,
    RecordBatchReader,
};
use arrow_schema::{DataType, Field, Schema};
use clap::FromArgMatches;
use parquet::arrow::ArrowWriter;
use pyo3::exceptions::{PyException, PyKeyboardInterrupt};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyCapsule, PyDict, PyList, PyString};
use sasrec_cli::args::DeviceArgs;
use sasrec_cli::catalog::Catalog;
use sasrec_cli::config_file::{self, Setting, clap_message};
use sasrec_cli::device::Device;
use sasrec_cli::recs_file::IdColumn;
use sasrec_cli::run_loading::{LoadedRun, load_run};
use sasrec_cli::train_cmd::{self, TrainArgs};
use sasrec_data::{IdKind, RawId};
use sasrec_kernels::gpu::WgpuBackend;
use sasrec_kernels::{Backend, CpuBackend};
use sasrec_model::{
    Query, evaluate_with_progress, item_vectors, popularity_baseline, recommend_many, user_vectors,
};
use sasrec_run::durable::AtomicFile;
use sasrec_run::writer::INPUT_FILE;
use sasrec_run::{RunDir, RunWriter};
use serde_json::Value;

pyo3::create_exception!(
    sasrec,
    SasrecError,
    PyException,
    "A bad setting, file, id or run folder; the message is the sasrec CLI's."
);

/// The longest error message raised (as the CLI prints them).
const MAX_ERROR_CHARS: usize = 1000;

/// An error of the library as a Python exception.
fn error(err: anyhow::Error) -> PyErr {
    SasrecError::new_err(sasrec_model::bounded(&format!("{err:#}"), MAX_ERROR_CHARS))
}

/// An object of the Arrow PyCapsule protocol (`__arrow_c_stream__`: a
/// pyarrow Table or RecordBatchReader, a Polars DataFrame, ...) read into
/// its schema and record batches. The batches share the producer's memory.
fn arrow_batches(data: &Bound<'_, PyAny>) -> PyResult<(Arc<Schema>, Vec<RecordBatch>)> {
    let capsule = data.call_method0("__arrow_c_stream__")?;
    let capsule = capsule.cast::<PyCapsule>()?;
    let pointer = capsule.pointer_checked(Some(c"arrow_array_stream"))?;
    // SAFETY: the capsule holds an ArrowArrayStream (its name says so);
    // from_raw moves it out and marks the capsule's copy released.
    let stream = unsafe { FFI_ArrowArrayStream::from_raw(pointer.as_ptr().cast()) };
    let reader = ArrowArrayStreamReader::try_new(stream)
        .map_err(|e| SasrecError::new_err(format!("reading the Arrow data: {e}")))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SasrecError::new_err(format!("reading the Arrow data: {e}")))?;
    Ok((schema, batches))
}

/// Writes the interactions given in memory to `path` as Parquet, in one
/// step (a file that is there is whole).
fn write_parquet(path: &Path, schema: Arc<Schema>, batches: &[RecordBatch]) -> anyhow::Result<()> {
    let file = AtomicFile::create(path)?;
    let mut writer = ArrowWriter::try_new(file, schema, None)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.into_inner()?.commit()
}

/// Python keyword arguments as the settings' JSON values.
fn settings_of(settings: &Bound<'_, PyDict>) -> PyResult<Vec<Setting>> {
    settings
        .iter()
        .map(|(key, value)| {
            let key: String = key.extract()?;
            let value = json_value(&value)
                .map_err(|what| SasrecError::new_err(format!("`{key}`: cannot take {what}")))?;
            Ok((key, value))
        })
        .collect()
}

/// A Python value as JSON: None, bool, int, float, str, or a list of them.
fn json_value(value: &Bound<'_, PyAny>) -> Result<Value, String> {
    if value.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(Value::String(s.to_string()));
    }
    if let Ok(i) = value.extract::<i64>() {
        return Ok(Value::from(i));
    }
    if let Ok(f) = value.extract::<f64>() {
        return Ok(Value::from(f));
    }
    if let Ok(items) = value.extract::<Vec<Bound<'_, PyAny>>>() {
        return items.iter().map(json_value).collect();
    }
    let kind = value
        .get_type()
        .name()
        .map_or("?".to_string(), |n| n.to_string());
    Err(format!("a value of type {kind}"))
}

/// `sasrec train`'s arguments for the settings of a `config` file (as
/// `--config` reads it, less its log when `ratings` or `settings` give
/// one) followed by
/// `settings` (which override the file's; unlike a file's, one the run
/// would not use is refused), with `--resume` and the log's path when
/// given. Each value is checked by its flag's parser.
fn train_args(
    config: &[Setting],
    config_path: &Path,
    settings: &[Setting],
    resume: bool,
    ratings: Option<&Path>,
) -> anyhow::Result<(TrainArgs, clap::ArgMatches)> {
    let command = train_cmd::train_command();
    let mut argv = vec!["train".into()];
    let is_log = |key: &str| matches!(key, "ratings" | "dataset");
    let log_given = ratings.is_some() || settings.iter().any(|(key, _)| is_log(key));
    let file: Vec<Setting> = config
        .iter()
        .filter(|(key, _)| !(log_given && is_log(key)))
        .cloned()
        .collect();
    let origin = config_path.display().to_string();
    argv.extend(config_file::to_args(&file, &command, &origin)?);
    argv.extend(config_file::to_flags(settings, &command, "sasrec.train()")?);
    if resume {
        argv.push("--resume".into());
    }
    if let Some(path) = ratings {
        argv.extend(["--ratings".into(), path.as_os_str().to_owned()]);
    }
    let matches = command
        .try_get_matches_from(argv)
        .map_err(|e| anyhow::anyhow!("sasrec.train(): {}", clap_message(&e)))?;
    if !resume && !matches.contains_id("ratings") && !matches.contains_id("dataset") {
        anyhow::bail!(
            "no interactions: give data (a DataFrame, a pyarrow Table or a path) or the `dataset` setting"
        );
    }
    let args = TrainArgs::from_arg_matches(&matches)?;
    Ok((args, matches))
}

/// Trains (or with `resume`, continues) the run `settings["out"]` on
/// `data` (an Arrow stream; None: the log of `settings["ratings"]` or
/// `["dataset"]`), in a thread of its own while this one waits for Ctrl-C:
/// KeyboardInterrupt stops training after the current step with the run
/// saved, and is raised once it is. `config` is a settings file that
/// `settings` override. Returns the run folder.
#[pyfunction]
#[pyo3(signature = (data, settings, resume=false, config=None))]
fn train(
    py: Python<'_>,
    data: Option<Bound<'_, PyAny>>,
    settings: Bound<'_, PyDict>,
    resume: bool,
    config: Option<PathBuf>,
) -> PyResult<String> {
    let settings = settings_of(&settings)?;
    let config_path = config.unwrap_or_default();
    let file = if config_path.as_os_str().is_empty() {
        Vec::new()
    } else {
        config_file::read(&config_path).map_err(error)?
    };
    let out = settings
        .iter()
        .chain(&file)
        .find(|(key, _)| key == "out")
        .and_then(|(_, value)| value.as_str())
        .map(PathBuf::from)
        .ok_or_else(|| SasrecError::new_err("`out`: the run folder is required"))?;
    let input = out.join(INPUT_FILE);
    // The settings are checked before the data is written.
    let given = data.is_some().then_some(input.as_path());
    let (args, matches) =
        train_args(&file, &config_path, &settings, resume, given).map_err(error)?;
    if let Some(data) = &data {
        let (schema, batches) = arrow_batches(data)?;
        py.detach(|| -> anyhow::Result<()> {
            RunWriter::check_new(&out, matches.get_flag("force"))?;
            std::fs::create_dir_all(&out)?;
            write_parquet(&input, schema, &batches)
        })
        .map_err(error)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut interrupt = None;
    let result = std::thread::scope(|scope| {
        let flag = stop.clone();
        let training = scope.spawn(|| train_cmd::run_until(args, &matches, move || Ok(flag)));
        while !training.is_finished() {
            py.detach(|| std::thread::sleep(Duration::from_millis(50)));
            if let Err(err) = py.check_signals() {
                if interrupt.is_none() {
                    eprintln!("\ninterrupted: saving the progress after this step");
                }
                stop.store(true, Ordering::SeqCst);
                interrupt.get_or_insert(err);
            }
        }
        training.join()
    });
    let result = result.map_err(|_| SasrecError::new_err("training stopped on a panic"))?;
    result.map_err(error)?;
    if let Some(err) = interrupt {
        eprintln!(
            "saved; continue with: sasrec.resume({:?})",
            out.display().to_string()
        );
        return Err(if err.is_instance_of::<PyKeyboardInterrupt>(py) {
            err
        } else {
            PyKeyboardInterrupt::new_err("training stopped")
        });
    }
    Ok(out.display().to_string())
}

/// A record batch handed to Python through the Arrow C stream interface
/// (`pyarrow.table(it)`, `polars.from_arrow(...)`).
#[pyclass(frozen, module = "sasrec._sasrec")]
struct ArrowTable {
    batch: RecordBatch,
}

#[pymethods]
impl ArrowTable {
    /// The Arrow PyCapsule protocol: a stream of the one batch.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        // The schema is the one we have; pyarrow casts if it asked for another.
        let _ = requested_schema;
        let schema = self.batch.schema();
        let reader = RecordBatchIterator::new([Ok(self.batch.clone())], schema);
        let stream = FFI_ArrowArrayStream::new(Box::new(reader));
        PyCapsule::new_with_value(py, stream, c"arrow_array_stream")
    }
}

/// A record batch of `columns`.
fn table(columns: Vec<(&str, ArrayRef)>) -> PyResult<ArrowTable> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
        .collect();
    let arrays = columns.into_iter().map(|(_, array)| array).collect();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| SasrecError::new_err(e.to_string()))?;
    Ok(ArrowTable { batch })
}

fn id_array(ids: &[RawId], kind: IdKind) -> ArrayRef {
    let mut column = IdColumn::new(kind);
    for id in ids {
        column.push(id);
    }
    column.finish()
}

/// Rows of `dim` floats as a fixed-size-list column.
fn vector_array(values: Vec<f32>, dim: usize) -> PyResult<ArrayRef> {
    let element = Arc::new(Field::new("item", DataType::Float32, false));
    let list = FixedSizeListArray::try_new(
        element,
        dim as i32,
        Arc::new(Float32Array::from(values)),
        None,
    )
    .map_err(|e| SasrecError::new_err(e.to_string()))?;
    Ok(Arc::new(list))
}

fn raw_to_py(py: Python<'_>, id: &RawId) -> PyResult<Py<PyAny>> {
    Ok(match id {
        RawId::Int(v) => v.into_pyobject(py)?.into_any().unbind(),
        RawId::Str(s) => s.into_pyobject(py)?.into_any().unbind(),
    })
}

/// A run loaded on one backend.
enum Loaded {
    Cpu(CpuBackend, LoadedRun<CpuBackend>),
    Gpu(WgpuBackend, LoadedRun<WgpuBackend>),
}

/// Runs `$body` with `$backend` and `$run` bound to the loaded run's.
macro_rules! on_backend {
    ($loaded:expr, |$backend:ident, $run:ident| $body:expr) => {
        match $loaded {
            Loaded::Cpu($backend, $run) => $body,
            Loaded::Gpu($backend, $run) => $body,
        }
    };
}

/// A trained run folder loaded to recommend from: its best model, its ids
/// and its users' histories.
#[pyclass(frozen, module = "sasrec._sasrec")]
struct Run {
    path: PathBuf,
    device: String,
    loaded: Loaded,
}

/// The users (raw ids as text) as indices, every user when `None`; unknown
/// ones are an error, or left out when not `strict`.
fn user_indices(catalog: &Catalog, users: Option<&[String]>, strict: bool) -> PyResult<Vec<u32>> {
    let Some(users) = users else {
        return Ok(catalog.user_indices().collect());
    };
    let mut indices = Vec::with_capacity(users.len());
    for user in users {
        match catalog.user(user) {
            Ok(u) => indices.push(u),
            Err(e) if strict => return Err(SasrecError::new_err(e)),
            Err(_) => {}
        }
    }
    Ok(indices)
}

fn check_k(k: usize) -> PyResult<()> {
    if k == 0 {
        return Err(SasrecError::new_err("k must be at least 1"));
    }
    Ok(())
}

#[pymethods]
impl Run {
    /// Loads the run folder `path` on `device` (`cpu`, `gpu` or `auto`).
    #[new]
    #[pyo3(signature = (path, device="auto", adapter=None))]
    fn new(py: Python<'_>, path: PathBuf, device: &str, adapter: Option<String>) -> PyResult<Run> {
        let device = DeviceArgs {
            device: clap::ValueEnum::from_str(device, false).map_err(|_| {
                SasrecError::new_err(format!("device is cpu, gpu or auto, not {device:?}"))
            })?,
            adapter,
            threads: None,
            profile_kernels: false,
            profile_ops: false,
        };
        py.detach(|| -> anyhow::Result<Run> {
            let opened = device.open()?;
            let name = opened.name();
            let loaded = match opened {
                Device::Cpu(b) => {
                    let run = load_run(&b, &path, None, true)?;
                    Loaded::Cpu(b, run)
                }
                Device::Gpu(b) => {
                    let run = load_run(&b, &path, None, true)?;
                    Loaded::Gpu(b, run)
                }
            };
            Ok(Run {
                path,
                device: name,
                loaded,
            })
        })
        .map_err(error)
    }

    /// The run folder.
    #[getter]
    fn path(&self) -> String {
        self.path.display().to_string()
    }

    /// The backend the model runs on.
    #[getter]
    fn device(&self) -> String {
        self.device.clone()
    }

    /// config.json, as JSON text.
    fn config_json(&self) -> String {
        on_backend!(&self.loaded, |_b, run| serde_json::to_string(&run.config)
            .expect("configs are JSON"))
    }

    /// The raw item ids by index: `[i - 1]` is item index `i`.
    fn item_ids(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        on_backend!(&self.loaded, |_b, run| {
            let catalog = &run.catalog;
            let ids = (1..=catalog.vocab.num_items() as u32)
                .map(|i| raw_to_py(py, &catalog.raw_item(i)))
                .collect::<PyResult<Vec<_>>>()?;
            Ok(PyList::new(py, ids)?.unbind())
        })
    }

    /// Top-k items of users (raw ids as text; all users when None):
    /// columns user, item, rank, logit.
    #[pyo3(signature = (users, k, exclude_seen, strict))]
    fn recommend_users(
        &self,
        py: Python<'_>,
        users: Option<Vec<String>>,
        k: usize,
        exclude_seen: bool,
        strict: bool,
    ) -> PyResult<ArrowTable> {
        check_k(k)?;
        on_backend!(&self.loaded, |backend, run| {
            let catalog = &run.catalog;
            let indices = user_indices(catalog, users.as_deref(), strict)?;
            let tops = py
                .detach(|| {
                    let queries: Vec<Query> = indices
                        .iter()
                        .map(|&u| Query {
                            history: catalog.history(u),
                            k,
                            exclude_seen,
                        })
                        .collect();
                    recommend_many(backend, &run.model, &queries)
                })
                .map_err(error)?;
            let (mut who, mut items, mut ranks, mut logits) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (&user, top) in indices.iter().zip(&tops) {
                for (rank, &(item, logit)) in top.iter().enumerate() {
                    who.push(catalog.raw_user(user));
                    items.push(catalog.raw_item(item));
                    ranks.push(rank as i32 + 1);
                    logits.push(logit);
                }
            }
            table(vec![
                ("user", id_array(&who, catalog.user_kind())),
                ("item", id_array(&items, catalog.item_kind())),
                ("rank", Arc::new(Int32Array::from(ranks))),
                ("logit", Arc::new(Float32Array::from(logits))),
            ])
        })
    }

    /// Top-k items after a history of items (raw ids as text, oldest
    /// first): columns item, rank, logit. Unknown items are an error, or
    /// left out when not `strict`; with none known, the most popular items
    /// (logit null).
    #[pyo3(signature = (items, k, exclude_seen, strict))]
    fn recommend_items(
        &self,
        py: Python<'_>,
        items: Vec<String>,
        k: usize,
        exclude_seen: bool,
        strict: bool,
    ) -> PyResult<ArrowTable> {
        check_k(k)?;
        on_backend!(&self.loaded, |backend, run| {
            let catalog = &run.catalog;
            let (history, unknown) = catalog.items(&items);
            if strict && !unknown.is_empty() {
                return Err(SasrecError::new_err(format!(
                    "item ids not known to the model: {}",
                    unknown.join(", ")
                )));
            }
            let top: Vec<(u32, Option<f32>)> = if history.is_empty() {
                let popular = catalog.most_popular(k).map_err(SasrecError::new_err)?;
                popular.iter().map(|&(item, _)| (item, None)).collect()
            } else {
                let query = Query {
                    history: &history,
                    k,
                    exclude_seen,
                };
                let top = py
                    .detach(|| recommend_many(backend, &run.model, &[query]))
                    .map_err(error)?;
                top[0]
                    .iter()
                    .map(|&(item, logit)| (item, Some(logit)))
                    .collect()
            };
            let ids: Vec<RawId> = top
                .iter()
                .map(|&(item, _)| catalog.raw_item(item))
                .collect();
            table(vec![
                ("item", id_array(&ids, catalog.item_kind())),
                (
                    "rank",
                    Arc::new(Int32Array::from_iter_values(1..=top.len() as i32)),
                ),
                (
                    "logit",
                    Arc::new(
                        top.iter()
                            .map(|&(_, logit)| logit)
                            .collect::<Float32Array>(),
                    ),
                ),
            ])
        })
    }

    /// Each user's vector after their whole history (the logit of item i is
    /// its dot product with item i's vector): columns user, vector.
    #[pyo3(signature = (users, strict))]
    fn user_vectors(
        &self,
        py: Python<'_>,
        users: Option<Vec<String>>,
        strict: bool,
    ) -> PyResult<ArrowTable> {
        on_backend!(&self.loaded, |backend, run| {
            let catalog = &run.catalog;
            let indices = user_indices(catalog, users.as_deref(), strict)?;
            let vectors = py
                .detach(|| {
                    let histories: Vec<&[u32]> =
                        indices.iter().map(|&u| catalog.history(u)).collect();
                    user_vectors(backend, &run.model, &histories)
                })
                .map_err(error)?;
            let ids: Vec<RawId> = indices.iter().map(|&u| catalog.raw_user(u)).collect();
            table(vec![
                ("user", id_array(&ids, catalog.user_kind())),
                ("vector", vector_array(vectors, run.model.config.dim)?),
            ])
        })
    }

    /// The item vectors (the rows of the output layer's table): columns
    /// item, vector.
    fn item_vectors(&self, py: Python<'_>) -> PyResult<ArrowTable> {
        on_backend!(&self.loaded, |backend, run| {
            let catalog = &run.catalog;
            let ids: Vec<RawId> = (1..=catalog.vocab.num_items() as u32)
                .map(|i| catalog.raw_item(i))
                .collect();
            let vectors = py.detach(|| item_vectors(backend, &run.model));
            table(vec![
                ("item", id_array(&ids, catalog.item_kind())),
                ("vector", vector_array(vectors, run.model.config.dim)?),
            ])
        })
    }

    /// The best checkpoint on a part of the split (`valid`, `test`) with
    /// cut-offs `k`, as JSON text: what `sasrec eval --json` prints.
    #[pyo3(signature = (part, k))]
    fn evaluate(&self, py: Python<'_>, part: &str, k: Vec<usize>) -> PyResult<String> {
        if k.contains(&0) {
            return Err(SasrecError::new_err("k values must be at least 1"));
        }
        let dir = RunDir::new(&self.path);
        on_backend!(&self.loaded, |backend, run| py
            .detach(|| evaluate_part(backend, &dir, run, part, &k)))
        .map_err(error)
    }

    /// The model's weights: (name, shape, float32 bytes), PyTorch's names.
    fn weights<'py>(&self, py: Python<'py>) -> Vec<(String, Vec<usize>, Bound<'py, PyBytes>)> {
        on_backend!(&self.loaded, |backend, run| run
            .model
            .weights(backend)
            .into_iter()
            .map(|(name, shape, values)| {
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name, shape, PyBytes::new(py, &bytes))
            })
            .collect())
    }
}

/// `sasrec eval --json` on the split the run folder keeps: the model and
/// the most-popular baseline on the `valid` or `test` users.
fn evaluate_part<B: Backend>(
    backend: &B,
    dir: &RunDir,
    run: &LoadedRun<B>,
    part: &str,
    ks: &[usize],
) -> anyhow::Result<String> {
    let config = &run.config;
    let held_out_last = config.data.held_out_last();
    let data = dir.read_data(&run.catalog.vocab)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{} keeps no split (it predates data.safetensors): evaluate it with `sasrec eval`",
            dir.path().display()
        )
    })?;
    let users = match part {
        "valid" => &data.split.valid,
        "test" if !held_out_last => anyhow::bail!(
            "the run used --split random-users, which has no test users; use part=\"valid\""
        ),
        "test" => &data.split.test,
        other => anyhow::bail!("part is \"valid\" or \"test\", not {other:?}"),
    };
    if users.is_empty() {
        anyhow::bail!(
            "the split has no {part} users: all {} users are too short to evaluate",
            data.users.len()
        );
    }
    let model = evaluate_with_progress(
        backend,
        &run.model,
        users,
        held_out_last,
        ks,
        config.train.batch_size,
        &mut |_| {},
    );
    let popular = held_out_last
        .then(|| popularity_baseline(&data.split.train, users, config.model.vocab(), ks));
    let out = serde_json::json!({
        "run": dir.path(), "part": part, "users": users.len(), "model": model, "most_popular": popular,
    });
    Ok(out.to_string())
}

/// The native module.
#[pymodule]
fn _sasrec(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add_class::<Run>()?;
    m.add_class::<ArrowTable>()?;
    m.add("SasrecError", m.py().get_type::<SasrecError>())?;
    Ok(())
}
