//! The connection side of `sasrec serve`: HTTP/1 over TCP with bounds that
//! no client can get around.
//!
//! - At most `--max-connections` connections are served at once; one more
//!   is answered `503` with a JSON error and closed.
//! - Every phase of a connection has a deadline: a new connection must
//!   start a request within `--idle-timeout`; after a response, the next
//!   request must start within `--keep-alive-timeout`; a request's headers
//!   must be complete `--header-timeout` after its first byte, and its body
//!   `--body-timeout` after its headers (`408` then). A connection past a
//!   deadline is closed.
//! - When the process runs out of file descriptors, accepting pauses and
//!   retries (the connections already open go on being served).
//! - On shutdown, accepting stops, idle connections close, requests in
//!   flight are answered; connections still open `--shutdown-timeout`
//!   later are dropped.
//!
//! hyper serves each connection (its own header-read timeout counts from
//! when it starts waiting, which would also cut idle keep-alive
//! connections at the header timeout, so the deadlines are kept here); the
//! router answers the requests.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Result, bail};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clap::Args;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, sleep, sleep_until, timeout};

/// The largest request body (a recommend request is a few hundred bytes).
pub const MAX_BODY: usize = 2 << 20;
/// The longest any timeout may be set to (an hour).
const MAX_TIMEOUT_S: f64 = 3600.0;
/// The most `--max-connections`.
const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;
/// Refusals in progress at most (each holds its socket for up to
/// [`REFUSAL_LINGER`] so that the client reads the answer); beyond, a
/// connection over the limit is closed at once.
const REFUSALS: usize = 64;
/// How long a refused connection is kept open to read what the client sent
/// (closing with unread bytes would reset the connection, and the client
/// might lose the answer).
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// Pause before accepting again after an error such as "too many open files".
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// The least time between two warnings of the same kind.
const WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// `sasrec serve`'s connection flags.
#[derive(Args, Debug, Clone)]
pub struct ConnectionArgs {
    /// Connections served at once; a connection beyond is answered 503
    /// (with a JSON error) and closed.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    max_connections: usize,
    /// Seconds a new connection may wait before its first request starts.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    idle_timeout: f64,
    /// Seconds a connection may wait after a response before the next
    /// request starts (0: close the connection after each response).
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    keep_alive_timeout: f64,
    /// Seconds from a request's first byte to the end of its headers.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    header_timeout: f64,
    /// Seconds from the end of a request's headers to the end of its body
    /// (408 after).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    body_timeout: f64,
    /// After SIGTERM or Ctrl-C: seconds to answer the requests in flight;
    /// connections still open then are dropped.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    shutdown_timeout: f64,
}

/// The bounds of [`ConnectionArgs`], checked.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// A new connection's wait for its first request.
    pub idle: Duration,
    /// The wait for the next request after a response (zero: no keep-alive).
    pub keep_alive: Duration,
    /// From a request's first byte to the end of its headers.
    pub header: Duration,
    /// From the end of the headers to the end of the body.
    pub body: Duration,
    /// How long shutdown waits for the requests in flight.
    pub shutdown: Duration,
}

impl ConnectionArgs {
    /// The limits, refusing values out of range.
    pub fn limits(&self) -> Result<Limits> {
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&self.max_connections) {
            bail!(
                "--max-connections must be between 1 and {MAX_CONNECTIONS_LIMIT}, got {}",
                self.max_connections
            );
        }
        let seconds = |flag: &str, value: f64, zero_allowed: bool| -> Result<Duration> {
            let low_ok = if zero_allowed {
                value >= 0.0
            } else {
                value > 0.0
            };
            if !(low_ok && value <= MAX_TIMEOUT_S) {
                let low = if zero_allowed { "0" } else { "more than 0" };
                bail!("--{flag} must be {low} to {MAX_TIMEOUT_S} seconds, got {value}");
            }
            Ok(Duration::from_secs_f64(value))
        };
        Ok(Limits {
            max_connections: self.max_connections,
            idle: seconds("idle-timeout", self.idle_timeout, false)?,
            keep_alive: seconds("keep-alive-timeout", self.keep_alive_timeout, true)?,
            header: seconds("header-timeout", self.header_timeout, false)?,
            body: seconds("body-timeout", self.body_timeout, false)?,
            shutdown: seconds("shutdown-timeout", self.shutdown_timeout, true)?,
        })
    }
}

impl Limits {
    /// The limits for `GET /model`, in seconds.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "max_connections": self.max_connections,
            "idle_timeout_s": self.idle.as_secs_f64(),
            "keep_alive_timeout_s": self.keep_alive.as_secs_f64(),
            "header_timeout_s": self.header.as_secs_f64(),
            "body_timeout_s": self.body.as_secs_f64(),
            "shutdown_timeout_s": self.shutdown.as_secs_f64(),
            "max_body_bytes": MAX_BODY,
        })
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting, lets the requests in flight finish (at most
/// `limits.shutdown`) and returns; the caller drops the runtime, and with
/// it the connections still open.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let limits = Arc::new(limits);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSALS));
    let refusal = refusal_bytes(limits.max_connections);
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    let mut full_warning = Warning::default();
    let mut accept_warning = Warning::default();
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // The client gave up before we took the connection.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors (or memory): the connections open
                // go on; accept again when some have closed.
                accept_warning.show(|| {
                    format!(
                        "warning: cannot accept connections ({e}) with {} open; retrying every {} ms (raise `ulimit -n` or lower --max-connections)",
                        limits.max_connections - connections.available_permits(),
                        ACCEPT_RETRY.as_millis()
                    )
                });
                sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        match connections.clone().try_acquire_owned() {
            Ok(permit) => {
                let stop = stopping.clone();
                tokio::spawn(connection(
                    stream,
                    router.clone(),
                    limits.clone(),
                    stop,
                    permit,
                ));
            }
            Err(_) => {
                full_warning.show(|| {
                    format!(
                        "warning: {} connections are open (--max-connections): refusing new ones with 503",
                        limits.max_connections
                    )
                });
                refuse(stream, &refusals, refusal);
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    let all = u32::try_from(limits.max_connections).expect("at most a million");
    if timeout(limits.shutdown, connections.acquire_many(all))
        .await
        .is_err()
    {
        let open = limits.max_connections - connections.available_permits();
        eprintln!(
            "closing {open} connection(s) still open after --shutdown-timeout {} s",
            limits.shutdown.as_secs_f64()
        );
    }
}

/// A warning shown at most once per [`WARNING_INTERVAL`].
#[derive(Default)]
struct Warning {
    last: Option<Instant>,
}

impl Warning {
    fn show(&mut self, message: impl FnOnce() -> String) {
        if self.last.is_none_or(|at| at.elapsed() >= WARNING_INTERVAL) {
            eprintln!("{}", message());
            self.last = Some(Instant::now());
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The whole answer to a connection over the limit.
fn refusal_bytes(max_connections: usize) -> &'static [u8] {
    let body = json!({
        "error": format!(
            "too many connections: the server serves {max_connections} at once (--max-connections); retry shortly"
        )
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // Made once per server.
    Box::leak(response.into_bytes().into_boxed_slice())
}

/// Answers a connection over the limit with `answer` and closes it, after
/// reading what the client sent for up to [`REFUSAL_LINGER`] (when fewer
/// than [`REFUSALS`] refusals are lingering already).
fn refuse(stream: TcpStream, refusals: &Arc<Semaphore>, answer: &'static [u8]) {
    // A new connection's send buffer is empty: the answer fits at once.
    let _ = stream.try_write(answer);
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let mut stream = stream;
        let _ = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_shutdown(cx)).await;
        let _ = timeout(REFUSAL_LINGER, async {
            let mut buf = [0u8; 4096];
            loop {
                if stream.readable().await.is_err() {
                    return;
                }
                match stream.try_read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        })
        .await;
        drop(permit);
    });
}

/// Serves one connection until it ends, passes a deadline, or shutdown
/// has closed it; `_permit` counts it among the open connections.
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: Arc<Limits>,
    mut stopping: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    // Answers are one small write each: send them without delay.
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let app = TowerToHyperService::new(router);
    let service = {
        let (activity, body_timeout) = (activity.clone(), limits.body);
        hyper::service::service_fn(move |request| {
            let (app, activity) = (app.clone(), activity.clone());
            async move {
                activity.request_started();
                let response = answer(request, &app, body_timeout).await;
                activity.request_answered();
                Ok::<_, Infallible>(response)
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(!limits.keep_alive.is_zero())
        // The deadlines are ours (see the module's documentation).
        .header_read_timeout(None);
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut stopped = *stopping.borrow();
    if stopped {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let deadline = activity.deadline(&limits);
        let expired = async {
            match deadline {
                Some(at) => sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // Ended by either side, or by an error (bad request, reset).
            _ = conn.as_mut() => return,
            () = expired => {
                if activity.deadline(&limits).is_some_and(|at| at <= Instant::now()) {
                    return;
                }
            }
            // A phase began: its deadline replaces the one slept on.
            () = activity.changed.notified() => {}
            changed = stopping.changed(), if !stopped => {
                stopped = true;
                if changed.is_ok() {
                    // Closes the connection when idle, else after its answer.
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Reads the request's body (at most [`MAX_BODY`] bytes, within
/// `body_timeout`), then has the router answer it.
async fn answer(
    request: Request<Incoming>,
    app: &TowerToHyperService<Router>,
    body_timeout: Duration,
) -> Response {
    let (parts, body) = request.into_parts();
    let read = timeout(body_timeout, Limited::new(body, MAX_BODY).collect()).await;
    let bytes = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            return closing_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {MAX_BODY} bytes"),
            );
        }
        Ok(Err(e)) => {
            return closing_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "reading the body: {}",
                    sasrec_model::bounded(&e.to_string(), 200)
                ),
            );
        }
        Err(_) => {
            return closing_error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s (--body-timeout)",
                    body_timeout.as_secs_f64()
                ),
            );
        }
    };
    match app
        .call(Request::from_parts(parts, Body::from(bytes)))
        .await
    {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// An error answer (`{"error": message}`) after which the connection closes.
fn closing_error(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONNECTION, "close")],
        axum::Json(json!({ "error": message })),
    )
        .into_response()
}

/// Where a connection stands, for its deadlines: shared by its reader
/// (which notes bytes arriving), its service (which notes requests) and
/// the task that enforces the deadlines (woken by `changed`).
struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

#[derive(Clone, Copy)]
enum Phase {
    /// Waiting for a request since `since` (the connection opened, or the
    /// last answer was made); `first_byte`: when a request began arriving.
    Waiting {
        since: Instant,
        answered: bool,
        first_byte: Option<Instant>,
    },
    /// A request is being read (its body) or answered.
    Busy,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            phase: Mutex::new(Phase::Waiting {
                since: Instant::now(),
                answered: false,
                first_byte: None,
            }),
            changed: Notify::new(),
        }
    }

    fn set(&self, phase: Phase) {
        *self.phase.lock().expect("never poisoned") = phase;
        self.changed.notify_one();
    }

    fn bytes_arrived(&self) {
        let mut phase = self.phase.lock().expect("never poisoned");
        if let Phase::Waiting {
            first_byte: first @ None,
            ..
        } = &mut *phase
        {
            *first = Some(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    fn request_started(&self) {
        self.set(Phase::Busy);
    }

    fn request_answered(&self) {
        self.set(Phase::Waiting {
            since: Instant::now(),
            answered: true,
            first_byte: None,
        });
    }

    /// When the current phase times out (`None` while a request is handled:
    /// its body has its own timeout, and the model's queue is bounded).
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        match *self.phase.lock().expect("never poisoned") {
            Phase::Busy => None,
            Phase::Waiting {
                first_byte: Some(at),
                ..
            } => Some(at + limits.header),
            Phase::Waiting {
                since,
                answered: false,
                ..
            } => Some(since + limits.idle),
            Phase::Waiting { since, .. } => Some(since + limits.keep_alive),
        }
    }
}

/// A connection's socket that tells its [`Activity`] when bytes arrive.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
