//! `sasrec._sasrec`: the native half of the `sasrec` Python package, over
//! `sasrec-api` (the code `sasrec train`, `eval`, `recommend` and `export`
//! run). The Python half (`python/sasrec/__init__.py`) turns DataFrames
//! into Arrow streams and the results into pandas, numpy and PyTorch.
//!
//! Arrow data comes in and goes out through the Arrow C stream interface
//! (PyCapsules), so no interaction or recommendation passes through Python
//! objects. The GIL is released while Rust reads, trains and scores; the
//! training loop takes it back after every step for a moment, to let
//! Ctrl-C (KeyboardInterrupt) stop it with its progress saved.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::ffi_stream::{ArrowArrayStreamReader, FFI_ArrowArrayStream};
use arrow_array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int32Array, RecordBatch, RecordBatchIterator,
    RecordBatchReader,
};
use arrow_schema::{DataType, Field, Schema};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyCapsule, PyDict, PyList, PyString};
use sasrec_api::catalog::{LoadedRun, load_run};
use sasrec_api::{Device, DeviceChoice, Part, TrainJob, Trained, evaluate_run, settings};
use sasrec_data::{IdColumn, IdKind, Interactions, RawId, read_record_batches};
use sasrec_kernels::gpu::WgpuBackend;
use sasrec_kernels::{Backend, CpuBackend};
use sasrec_model::{
    EpochHook, EpochRecord, Outcome, Query, RunDir, item_vectors, recommend_many, user_vectors,
};
use serde_json::Value;

pyo3::create_exception!(
    _sasrec,
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

/// A line of progress on Python's `sys.stderr` (a notebook shows it).
fn say(line: &str) {
    Python::attach(|py| {
        let Ok(stderr) = py.import("sys").and_then(|sys| sys.getattr("stderr")) else {
            return;
        };
        let _ = stderr.call_method1("write", (format!("{line}\n"),));
        let _ = stderr.call_method0("flush");
    });
}

/// Where the library's lines go: `sys.stderr`, or nowhere.
fn logger(progress: bool) -> impl Fn(&str) {
    move |line: &str| {
        if progress {
            say(line)
        }
    }
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

/// Python keyword arguments as the settings' JSON values.
fn settings_of(settings: &Bound<'_, PyDict>) -> PyResult<Vec<(String, Value)>> {
    settings
        .iter()
        .map(|(key, value)| {
            let key: String = key.extract()?;
            let value = json_value(&value).map_err(|what| {
                SasrecError::new_err(format!("`{key}`: cannot take {what}"))
            })?;
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

/// What the training loop hands back to Python: every step it looks for
/// Ctrl-C, every epoch it calls the callback; an exception raised by
/// either stops the run (its progress saved) and is raised again when the
/// run has stopped.
struct PythonHook<'a> {
    callback: Option<Py<PyAny>>,
    stop: &'a AtomicBool,
    raised: &'a Mutex<Option<PyErr>>,
}

impl PythonHook<'_> {
    fn stop_with(&self, err: PyErr) {
        let mut raised = self.raised.lock().expect("not poisoned");
        raised.get_or_insert(err);
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl EpochHook for PythonHook<'_> {
    fn training_started(&mut self) {}

    fn training_finished(&mut self, _steps: usize) {}

    fn step_finished(&mut self) {
        if let Err(err) = Python::attach(|py| py.check_signals()) {
            self.stop_with(err);
        }
    }

    fn epoch_finished(&mut self, record: &EpochRecord) {
        let result = Python::attach(|py| -> PyResult<()> {
            py.check_signals()?;
            if let Some(callback) = &self.callback {
                let text = serde_json::to_string(record).expect("records are JSON");
                let record = py.import("json")?.call_method1("loads", (text,))?;
                callback.call1(py, (record,))?;
            }
            Ok(())
        });
        if let Err(err) = result {
            self.stop_with(err);
        }
    }
}

/// The device asked for by name (`cpu`, `gpu`, `auto`) and adapter.
fn device_choice(device: &str, adapter: Option<String>) -> PyResult<DeviceChoice> {
    Ok(DeviceChoice {
        kind: device.parse().map_err(SasrecError::new_err)?,
        adapter,
        profiling: false,
    })
}

fn set_threads(threads: Option<usize>) -> PyResult<()> {
    match threads {
        Some(threads) => sasrec_api::set_threads(threads).map_err(error),
        None => Ok(()),
    }
}

/// Trains `job` on the device asked for, the GIL released; raises what the
/// hook caught, after saying how to go on.
fn run_job(
    py: Python<'_>,
    job: impl FnOnce(&dyn Fn(&str)) -> anyhow::Result<TrainJob> + Send,
    choice: DeviceChoice,
    progress: bool,
    callback: Option<Py<PyAny>>,
) -> PyResult<String> {
    let stop = AtomicBool::new(false);
    let raised = Mutex::new(None);
    let trained = py.detach(|| -> anyhow::Result<Trained> {
        let log = logger(progress);
        let job = job(&log)?;
        let hook = |stop, raised| {
            Box::new(PythonHook {
                callback,
                stop,
                raised,
            })
        };
        match Device::open(&choice, &log)? {
            Device::Cpu(b) => job.train(&b, &stop, Some(hook(&stop, &raised)), &log),
            Device::Gpu(b) => job.train(&b, &stop, Some(hook(&stop, &raised)), &log),
        }
    });
    let trained = trained.map_err(error)?;
    let out = trained.out.display().to_string();
    if trained.outcome == Outcome::Interrupted && progress {
        say(&format!("saved; continue with: sasrec.resume({out:?})"));
    }
    if let Some(err) = raised.into_inner().expect("not poisoned") {
        return Err(err);
    }
    if let (Some(report), true) = (&trained.report, progress) {
        let print = py.import("builtins")?.getattr("print")?;
        for line in report.lines() {
            print.call1((line,))?;
        }
    }
    Ok(out)
}

/// Trains a new run into `out`; returns its folder. `data` is an Arrow
/// stream (or None: the log is `settings["ratings"]`), `source` names it
/// in messages.
#[pyfunction]
#[pyo3(signature = (data, source, settings, out, force, device, adapter, threads, progress, callback))]
#[allow(clippy::too_many_arguments)]
fn train(
    py: Python<'_>,
    data: Option<Bound<'_, PyAny>>,
    source: String,
    settings: Bound<'_, PyDict>,
    out: PathBuf,
    force: bool,
    device: &str,
    adapter: Option<String>,
    threads: Option<usize>,
    progress: bool,
    callback: Option<Py<PyAny>>,
) -> PyResult<String> {
    set_threads(threads)?;
    let choice = device_choice(device, adapter)?;
    let settings = settings_of(&settings)?;
    let config = settings::run_config(&settings, data.is_some()).map_err(error)?;
    let batches = data.as_ref().map(arrow_batches).transpose()?;
    let interactions: Option<Interactions> = match batches {
        Some((schema, batches)) => Some(
            py.detach(|| {
                let batches = batches.into_iter().map(Ok::<_, Infallible>);
                read_record_batches(&schema, batches, &config.data.input, Path::new(&source))
            })
            .map_err(|e| error(e.into()))?,
        ),
        None => None,
    };
    run_job(
        py,
        move |log| TrainJob::new(config, &out, force, interactions.as_ref(), log),
        choice,
        progress,
        callback,
    )
}

/// Continues the run in `out`; returns its folder.
#[pyfunction]
#[pyo3(signature = (out, epochs, patience, no_patience, allow_changed_data, device, adapter, threads, progress, callback))]
#[allow(clippy::too_many_arguments)]
fn resume(
    py: Python<'_>,
    out: PathBuf,
    epochs: Option<usize>,
    patience: Option<usize>,
    no_patience: bool,
    allow_changed_data: bool,
    device: &str,
    adapter: Option<String>,
    threads: Option<usize>,
    progress: bool,
    callback: Option<Py<PyAny>>,
) -> PyResult<String> {
    set_threads(threads)?;
    let choice = device_choice(device, adapter)?;
    let patience = if no_patience { Some(None) } else { patience.map(Some) };
    run_job(
        py,
        move |log| {
            TrainJob::resume(
                &out,
                allow_changed_data,
                |train, done| sasrec_api::train::new_budget(train, epochs, patience, done),
                log,
            )
        },
        choice,
        progress,
        callback,
    )
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

/// A record batch of `columns`, all non-null.
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

/// The users (raw ids as text) as indices; unknown ones are an error, or
/// left out when not `strict`.
fn user_indices(run_catalog: &sasrec_api::catalog::Catalog, users: &[String], strict: bool) -> PyResult<Vec<u32>> {
    let mut indices = Vec::with_capacity(users.len());
    for user in users {
        match run_catalog.user(user) {
            Ok(u) => indices.push(u),
            Err(e) if strict => return Err(SasrecError::new_err(e)),
            Err(_) => {}
        }
    }
    Ok(indices)
}

#[pymethods]
impl Run {
    #[new]
    #[pyo3(signature = (path, device="auto", adapter=None, threads=None))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        device: &str,
        adapter: Option<String>,
        threads: Option<usize>,
    ) -> PyResult<Run> {
        set_threads(threads)?;
        let choice = device_choice(device, adapter)?;
        py.detach(|| -> anyhow::Result<Run> {
            let log = logger(false);
            let opened = Device::open(&choice, &log)?;
            let device = opened.name();
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
                device,
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

    /// The raw ids of the users with a history, in index order.
    fn user_ids(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        on_backend!(&self.loaded, |_b, run| {
            let catalog = &run.catalog;
            let ids = catalog
                .user_indices()
                .map(|u| raw_to_py(py, &catalog.raw_user(u)))
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
        if k == 0 {
            return Err(SasrecError::new_err("k must be at least 1"));
        }
        on_backend!(&self.loaded, |backend, run| {
            let catalog = &run.catalog;
            let indices = match &users {
                Some(users) => user_indices(catalog, users, strict)?,
                None => catalog.user_indices().collect(),
            };
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
        if k == 0 {
            return Err(SasrecError::new_err("k must be at least 1"));
        }
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
                top[0].iter().map(|&(item, logit)| (item, Some(logit))).collect()
            };
            let ids: Vec<RawId> = top.iter().map(|&(item, _)| catalog.raw_item(item)).collect();
            table(vec![
                ("item", id_array(&ids, catalog.item_kind())),
                (
                    "rank",
                    Arc::new(Int32Array::from_iter_values(1..=top.len() as i32)),
                ),
                (
                    "logit",
                    Arc::new(top.iter().map(|&(_, logit)| logit).collect::<Float32Array>()),
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
            let indices = match &users {
                Some(users) => user_indices(catalog, users, strict)?,
                None => catalog.user_indices().collect(),
            };
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

    /// The item vectors (rows of the tied item table): columns item, vector.
    fn item_vectors(&self) -> PyResult<ArrowTable> {
        on_backend!(&self.loaded, |backend, run| {
            let catalog = &run.catalog;
            let ids: Vec<RawId> = (1..=catalog.vocab.num_items() as u32)
                .map(|i| catalog.raw_item(i))
                .collect();
            table(vec![
                ("item", id_array(&ids, catalog.item_kind())),
                (
                    "vector",
                    vector_array(item_vectors(backend, &run.model), run.model.config.dim)?,
                ),
            ])
        })
    }

    /// The best checkpoint on a part of the split (`valid`, `test`) with
    /// cut-offs `k`, as JSON text.
    #[pyo3(signature = (part, k, progress))]
    fn evaluate(&self, py: Python<'_>, part: &str, k: Vec<usize>, progress: bool) -> PyResult<String> {
        let part: Part = part.parse().map_err(SasrecError::new_err)?;
        let dir = RunDir::new(&self.path);
        let result = on_backend!(&self.loaded, |backend, _run| py.detach(|| evaluate_run(
            backend,
            &dir,
            part,
            &k,
            None,
            false,
            &logger(progress)
        )))
        .map_err(error)?;
        let json = serde_json::json!({
            "part": part.name(),
            "users": result.users,
            "model": result.model,
            "most_popular": result.most_popular,
        });
        Ok(json.to_string())
    }

    /// The model's weights: (name, shape, float32 bytes), PyTorch's names.
    fn weights<'py>(
        &self,
        py: Python<'py>,
    ) -> Vec<(String, Vec<usize>, Bound<'py, PyBytes>)> {
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

/// The native module.
#[pymodule]
fn _sasrec(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add_function(wrap_pyfunction!(resume, m)?)?;
    m.add_class::<Run>()?;
    m.add_class::<ArrowTable>()?;
    m.add("SasrecError", m.py().get_type::<SasrecError>())?;
    Ok(())
}
