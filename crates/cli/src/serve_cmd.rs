//! `sasrec serve`: recommendations over HTTP (JSON), with concurrent
//! requests batched into one forward pass.
//!
//! Threads: the main thread owns the backend and the model and runs the
//! batching loop; one thread runs the HTTP server (hyper and an axum router
//! on a single-threaded tokio runtime: parsing and answering requests is
//! light, the model is the work; `http_server.rs` bounds the connections).
//! A request is checked and its ids looked up on the HTTP thread, then
//! queued as a [`Job`]; the batching loop takes the jobs queued so far
//! (waiting up to `--batch-wait-us` for more, up to `--max-batch`), runs one
//! forward pass over all their histories, and answers each through its own
//! channel.
//!
//! Endpoints: `POST /recommend`, `GET /healthz`, `GET /model`, `GET /stats`.
//! Errors are 4xx with a JSON body `{"error": "..."}`. SIGTERM or Ctrl-C
//! stops accepting connections, finishes the requests in flight (for up to
//! `--shutdown-timeout`), and exits 0.

use std::future::Future;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Args;
use sasrec_kernels::Backend;
use sasrec_model::{Query, SasRec, recommend_many};
use sasrec_run::RunDir;
use sasrec_run::read_json;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::args::DeviceArgs;
use crate::catalog::{Catalog, Ranked, Recommendations};
use crate::device::Device;
use crate::http_server::{ConnectionArgs, Limits};
use crate::run_loading::{LoadedRun, load_run};

/// The largest `k` a request may ask for.
pub const MAX_K: i64 = 1000;
/// `k` when a request gives none.
const DEFAULT_K: i64 = 10;
/// Requests waiting for the model at most; beyond, 503 (retry later).
const QUEUE: usize = 4096;
/// The largest `--max-batch`.
const MAX_BATCH_LIMIT: usize = 4096;
/// The longest `--batch-wait-us`.
const MAX_WAIT_US: u64 = 1_000_000;
/// Test hook: milliseconds the batching loop sleeps before each batch, so a
/// test can have requests in flight when it sends SIGTERM.
const DELAY_ENV: &str = "SASREC_SERVE_DELAY_MS";

/// `sasrec serve` flags.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Run folder written by `sasrec train`.
    #[arg(long, value_name = "DIR")]
    run: PathBuf,
    /// Address to listen on (port 0: any free port; the address bound is
    /// printed on stdout).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    addr: String,
    /// The most requests one forward pass serves.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_batch: usize,
    /// After the first request of a batch, how long to wait for more
    /// (microseconds; 0: take only those already queued, which under load
    /// still batches the requests that arrived during the previous pass).
    #[arg(long, value_name = "MICROSECONDS", default_value_t = 0)]
    batch_wait_us: u64,
    /// Read the users' histories from this log instead of the run folder's
    /// data.safetensors.
    #[arg(long, value_name = "PATH")]
    ratings: Option<PathBuf>,
    #[command(flatten)]
    connections: ConnectionArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Runs `sasrec serve` until SIGTERM or Ctrl-C.
pub fn run(args: ServeArgs) -> Result<()> {
    args.device.set_threads()?;
    if !(1..=MAX_BATCH_LIMIT).contains(&args.max_batch) {
        bail!(
            "--max-batch must be between 1 and {MAX_BATCH_LIMIT}, got {}",
            args.max_batch
        );
    }
    if args.batch_wait_us > MAX_WAIT_US {
        bail!(
            "--batch-wait-us must be at most {MAX_WAIT_US} (one second), got {}",
            args.batch_wait_us
        );
    }
    let limits = args.connections.limits()?;
    match args.device.open()? {
        Device::Cpu(b) => serve_on(&b, &args, limits),
        Device::Gpu(b) => serve_on(&b, &args, limits),
    }
}

fn serve_on<B: Backend>(backend: &B, args: &ServeArgs, limits: Limits) -> Result<()> {
    let LoadedRun { model, catalog, .. } =
        load_run(backend, &args.run, args.ratings.as_deref(), true)?;
    let run = RunDir::new(&args.run);
    // config.json and test.json as they are.
    let config: Value = read_json(&run.config())?;
    let test_path = run.file("test.json");
    let test: Option<Value> = if test_path.exists() {
        Some(read_json(&test_path)?)
    } else {
        None
    };
    let info = json!({
        "run": run.path(),
        "items": catalog.vocab.num_items(),
        "users": catalog.users(),
        "score": "logit = h_u . e_i (the user's final hidden state dotted with the item embedding)",
        "max_k": MAX_K,
        "max_batch": args.max_batch,
        "batch_wait_us": args.batch_wait_us,
        "connections": limits.to_json(),
        "config": config,
        "test": test,
    });
    let (items, users) = (catalog.vocab.num_items(), catalog.users());
    let stats = Arc::new(Stats::new(args.max_batch));
    let (jobs, queue) = mpsc::sync_channel(QUEUE);
    let state = Arc::new(AppState {
        catalog,
        info,
        stats: stats.clone(),
        jobs,
    });

    // Timers: the connections' deadlines and the retries of `accept`.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("starting the HTTP runtime")?;
    // Signal handlers go in before the address is printed: from then on a
    // SIGTERM drains rather than kills.
    let shutdown = {
        let _in_runtime = runtime.enter();
        shutdown_signal()?
    };
    let listener =
        TcpListener::bind(&args.addr).with_context(|| format!("listening on {}", args.addr))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let http = std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            // The runtime ends with this thread, dropping the connections
            // still open after the shutdown deadline.
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                crate::http_server::serve(listener, router(state), limits, shutdown).await;
                Ok::<_, std::io::Error>(())
            })
        })
        .context("starting the HTTP thread")?;

    eprintln!(
        "serving {} ({items} items, {users} users); batches of up to {} requests, waiting up to {} µs",
        args.run.display(),
        args.max_batch,
        args.batch_wait_us
    );
    println!("listening on http://{local}");
    std::io::stdout().flush()?;

    // Until the HTTP side is gone (its last sender with it).
    batch_loop(backend, &model, queue, args, &stats);
    http.join()
        .map_err(|_| anyhow::anyhow!("the HTTP thread panicked"))?
        .context("serving HTTP")?;
    let (requests, batches) = stats.totals();
    eprintln!("stopped after {requests} requests in {batches} batches");
    Ok(())
}

/// One request for the model.
struct Job {
    history: Vec<u32>,
    k: usize,
    exclude_seen: bool,
    reply: oneshot::Sender<Result<Vec<(u32, f32)>, String>>,
}

/// Runs batches until every sender is dropped.
fn batch_loop<B: Backend>(
    backend: &B,
    model: &SasRec<B>,
    queue: Receiver<Job>,
    args: &ServeArgs,
    stats: &Stats,
) {
    let wait = Duration::from_micros(args.batch_wait_us);
    let delay = std::env::var(DELAY_ENV)
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis);
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        let deadline = Instant::now() + wait;
        while jobs.len() < args.max_batch {
            // A zero timeout still takes what is queued.
            match queue.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        stats.record(jobs.len());
        if let Some(delay) = delay {
            std::thread::sleep(delay);
        }
        let queries: Vec<Query> = jobs
            .iter()
            .map(|job| Query {
                history: &job.history,
                k: job.k,
                exclude_seen: job.exclude_seen,
            })
            .collect();
        // A panic in the model fails this batch's requests, not the server.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            recommend_many(backend, model, &queries).map_err(|e| format!("{e:#}"))
        }))
        .unwrap_or_else(|_| Err("the model failed on this batch (see the server's log)".into()));
        drop(queries);
        match result {
            Ok(tops) => {
                for (job, top) in jobs.into_iter().zip(tops) {
                    // A client that hung up no longer waits.
                    let _ = job.reply.send(Ok(top));
                }
            }
            Err(message) => {
                for job in jobs {
                    let _ = job.reply.send(Err(message.clone()));
                }
            }
        }
    }
}

/// Resolves when SIGTERM or Ctrl-C arrives.
fn shutdown_signal() -> Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("handling Ctrl-C")?;
        Ok(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = interrupt.recv() => "Ctrl-C",
            };
            eprintln!("{name}: finishing the requests in flight, then stopping");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("Ctrl-C: finishing the requests in flight, then stopping");
        })
    }
}

/// What the handlers share.
struct AppState {
    catalog: Catalog,
    /// `GET /model`.
    info: Value,
    stats: Arc<Stats>,
    jobs: SyncSender<Job>,
}

/// Requests served and the batch sizes formed.
struct Stats {
    requests: AtomicU64,
    batches: AtomicU64,
    /// `sizes[n]`: batches of `n` requests.
    sizes: Vec<AtomicU64>,
}

impl Stats {
    fn new(max_batch: usize) -> Stats {
        Stats {
            requests: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            sizes: (0..=max_batch).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn record(&self, size: usize) {
        self.requests.fetch_add(size as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.sizes[size].fetch_add(1, Ordering::Relaxed);
    }

    fn totals(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.batches.load(Ordering::Relaxed),
        )
    }

    fn to_json(&self) -> Value {
        let (requests, batches) = self.totals();
        let sizes: serde_json::Map<String, Value> = self
            .sizes
            .iter()
            .enumerate()
            .filter_map(|(n, count)| {
                let count = count.load(Ordering::Relaxed);
                (count > 0).then(|| (n.to_string(), count.into()))
            })
            .collect();
        json!({ "requests": requests, "batches": batches, "batch_sizes": sizes })
    }
}

fn router(state: Arc<AppState>) -> axum::Router {
    axum::Router::new()
        .route("/recommend", post(recommend))
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route(
            "/model",
            get(|State(s): State<Arc<AppState>>| async move { Json(s.info.clone()) }),
        )
        .route(
            "/stats",
            get(|State(s): State<Arc<AppState>>| async move { Json(s.stats.to_json()) }),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint: POST /recommend, GET /healthz, GET /model, GET /stats",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "wrong method: POST /recommend; GET /healthz, /model, /stats",
            )
        })
        .with_state(state)
}

/// An error answer: a status and `{"error": message}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// The body of `POST /recommend`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecommendRequest {
    /// A user id of the log (number or string).
    user: Option<Value>,
    /// Item ids of the log, oldest first.
    items: Option<Vec<Value>>,
    /// How many items (default 10, at most 1000).
    k: Option<i64>,
    /// Leave out the history's items (default true).
    exclude_seen: Option<bool>,
}

async fn recommend(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Recommendations>, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let request: RecommendRequest = serde_json::from_slice(&body).map_err(|e| {
        let e = e.to_string();
        ApiError::bad_request(format!(
            "the body is not a recommend request: {}; expected e.g. {{\"user\": 1, \"k\": 10}} or {{\"items\": [1, 2], \"exclude_seen\": false}}",
            sasrec_model::bounded(&e, 200)
        ))
    })?;
    let k = request.k.unwrap_or(DEFAULT_K);
    if !(1..=MAX_K).contains(&k) {
        return Err(ApiError::bad_request(format!(
            "k must be between 1 and {MAX_K}, got {k}"
        )));
    }
    let exclude_seen = request.exclude_seen.unwrap_or(true);
    let catalog = &state.catalog;
    let not_found = |message: String| ApiError::new(StatusCode::NOT_FOUND, message);
    let mut unknown = Vec::new();
    let (user, history) = match (request.user, request.items) {
        (Some(user), None) => {
            let index = catalog.user(&id_text(&user, "user")?).map_err(not_found)?;
            (
                Some(catalog.raw_user(index)),
                catalog.history(index).to_vec(),
            )
        }
        (None, Some(items)) => {
            if items.is_empty() {
                return Err(ApiError::bad_request(
                    "items is empty: give at least one item id",
                ));
            }
            let ids = items
                .iter()
                .map(|v| id_text(v, "items"))
                .collect::<Result<Vec<_>, _>>()?;
            // New items are the normal case: left out, and named in the answer.
            let (history, not_known) = catalog.items(&ids);
            unknown = not_known;
            (None, history)
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give either user or items, not both"));
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "give user (a user id) or items (a list of item ids)",
            ));
        }
    };
    if history.is_empty() {
        // No known item: the most popular items, marked as such.
        let popular = catalog
            .most_popular(k as usize)
            .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e))?;
        let mut list = catalog.response(user, 0, exclude_seen, Ranked::Popular(popular), |_| None);
        list.unknown_items = unknown;
        return Ok(Json(list));
    }
    let history_len = history.len();
    let (reply, answer) = oneshot::channel();
    let job = Job {
        history,
        k: k as usize,
        exclude_seen,
        reply,
    };
    state.jobs.try_send(job).map_err(|e| match e {
        TrySendError::Full(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("busy: {QUEUE} requests are waiting for the model; retry shortly"),
        ),
        TrySendError::Disconnected(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping")
        }
    })?;
    let top = answer
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping"))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let mut list = catalog.response(user, history_len, exclude_seen, Ranked::Model(&top), |_| {
        None
    });
    list.unknown_items = unknown;
    Ok(Json(list))
}

/// An id from JSON as text: a number or a string (`7` and `"7"` are the
/// same id; the log's kind of ids decides how it is read).
fn id_text(value: &Value, field: &str) -> Result<String, ApiError> {
    match value {
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) => Ok(s.clone()),
        other => Err(ApiError::bad_request(format!(
            "{field}: an id is a number or a string, got {}",
            sasrec_model::bounded(&other.to_string(), 60)
        ))),
    }
}
