//! `cargo xtask bench serve`: a closed-loop load test of `sasrec serve`.
//!
//! A release `sasrec serve` on 127.0.0.1 (CPU backend) serves a
//! latest-small model (`$SASREC_BENCH_RUN`, else a 10-epoch run trained
//! once into `target/bench/serve-run`; latency does not depend on how long
//! a model trained). N client threads (1, 16, 64) each send
//! `POST /recommend {"user": ID, "k": 10}` for random users of the log and
//! send the next request as soon as the answer is read. Each level runs 2 s
//! of warm-up, then `$SASREC_BENCH_SECONDS` (default 10) measured; three
//! rounds, medians. Three server settings side by side: batching as
//! shipped (up to 64 requests, waiting up to 1 ms for more), batching of
//! what is queued only (no wait), and no batching (one request per forward
//! pass). The batch sizes come from the server's `GET /stats`.
//!
//! Then clients that hold connections without asking anything: 16 fast
//! clients as above against the default server, alone and beside 600
//! connections that are idle, send a header a byte at a time, or stop
//! halfway through a body (each reopened when the server closes it at its
//! timeout); the fast clients' p99 side by side, and how many connections
//! the server cut.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::util::{cargo, check, median, release_dir, root};

const CLIENTS: [usize; 3] = [1, 16, 64];
const ROUNDS: usize = 3;
/// (name, --max-batch, --batch-wait-us).
const SETTINGS: [(&str, usize, u64); 3] = [
    ("batched, wait 1 ms", 64, 1000),
    ("batched, no wait", 64, 0),
    ("one per pass", 1, 0),
];

/// Fast clients in the hostile comparison.
const FAST_CLIENTS: usize = 16;
/// Connections held beside them: idle, slow headers, half-sent bodies.
const HELD: [(Holder, usize); 3] = [
    (Holder::Idle, 400),
    (Holder::SlowHeader, 100),
    (Holder::HalfBody, 100),
];

/// One level's figures.
#[derive(Clone, Copy, Default)]
struct Figures {
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
    mean_batch: f64,
    largest_batch: f64,
}

/// Runs the load test and prints medians.
pub fn serve() -> Result<()> {
    check(cargo().args(["build", "--release", "-p", "sasrec-cli"]))?;
    let sasrec = release_dir().join("sasrec");
    let run = match std::env::var_os("SASREC_BENCH_RUN") {
        Some(run) => PathBuf::from(run),
        None => trained_run(&sasrec)?,
    };
    let seconds: f64 = std::env::var("SASREC_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    let bodies = request_bodies(&run)?;
    eprintln!(
        "run {}, {} users, {seconds} s per level",
        run.display(),
        bodies.len()
    );

    // figures[setting][clients][round]
    let mut figures = vec![vec![Vec::new(); CLIENTS.len()]; SETTINGS.len()];
    for round in 1..=ROUNDS {
        for (s, &(name, max_batch, wait_us)) in SETTINGS.iter().enumerate() {
            let server = Server::start(&sasrec, &run, max_batch, wait_us)?;
            for (c, &clients) in CLIENTS.iter().enumerate() {
                load(&server.base, &bodies, clients, 2.0)?;
                let before = server.stats()?;
                let (qps, mut latencies) = load(&server.base, &bodies, clients, seconds)?;
                let after = server.stats()?;
                let (mean_batch, largest_batch) = batches(&before, &after);
                let f = Figures {
                    qps,
                    p50_ms: percentile(&mut latencies, 0.50),
                    p99_ms: percentile(&mut latencies, 0.99),
                    mean_batch,
                    largest_batch,
                };
                eprintln!(
                    "round {round}, {name}, {clients:>2} clients: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, mean batch {:.1}, largest {:.0}",
                    f.qps, f.p50_ms, f.p99_ms, f.mean_batch, f.largest_batch
                );
                figures[s][c].push(f);
            }
            server.stop()?;
        }
    }
    let hostile = hostile_rounds(&sasrec, &run, &bodies, seconds)?;
    println!("sasrec serve, CPU, medians of {ROUNDS} rounds of {seconds} s:");
    println!(
        "{:<20} {:>7} {:>9} {:>9} {:>9} {:>10} {:>8}",
        "server", "clients", "req/s", "p50 ms", "p99 ms", "mean batch", "largest"
    );
    for (s, &(name, ..)) in SETTINGS.iter().enumerate() {
        for (c, &clients) in CLIENTS.iter().enumerate() {
            let runs = &figures[s][c];
            let med =
                |get: fn(&Figures) -> f64| median(&mut runs.iter().map(get).collect::<Vec<_>>());
            println!(
                "{name:<20} {clients:>7} {:>9.0} {:>9.2} {:>9.2} {:>10.1} {:>8.0}",
                med(|f| f.qps),
                med(|f| f.p50_ms),
                med(|f| f.p99_ms),
                med(|f| f.mean_batch),
                med(|f| f.largest_batch)
            );
        }
    }
    print_hostile(&hostile);
    Ok(())
}

/// The fast clients alone and beside the held connections, per round.
struct HostileRound {
    alone: Figures,
    beside: Figures,
    held: HoldReport,
}

/// Each round: a default server, [`FAST_CLIENTS`] clients alone, then the
/// same beside the [`HELD`] connections.
fn hostile_rounds(
    sasrec: &Path,
    run: &Path,
    bodies: &[String],
    seconds: f64,
) -> Result<Vec<HostileRound>> {
    let figures = |(qps, mut latencies): (f64, Vec<f64>)| Figures {
        qps,
        p50_ms: percentile(&mut latencies, 0.50),
        p99_ms: percentile(&mut latencies, 0.99),
        ..Figures::default()
    };
    let mut rounds = Vec::new();
    for round in 1..=ROUNDS {
        let server = Server::start(sasrec, run, 64, 0)?;
        load(&server.base, bodies, FAST_CLIENTS, 2.0)?;
        let alone = figures(load(&server.base, bodies, FAST_CLIENTS, seconds)?);
        let addr: SocketAddr = server.base.trim_start_matches("http://").parse()?;
        let stop = AtomicBool::new(false);
        let (beside, held) = std::thread::scope(|s| -> Result<(Figures, HoldReport)> {
            let holder = s.spawn(|| hold(addr, &stop));
            // The held connections open, then the fast clients warm up.
            std::thread::sleep(Duration::from_secs(1));
            let measured = load(&server.base, bodies, FAST_CLIENTS, 2.0)
                .and_then(|_| load(&server.base, bodies, FAST_CLIENTS, seconds));
            stop.store(true, Ordering::Relaxed);
            let held = holder.join().expect("holder thread")?;
            Ok((figures(measured?), held))
        })?;
        eprintln!(
            "round {round}, {FAST_CLIENTS} fast clients: alone {:.0} req/s, p99 {:.2} ms; beside {:.0} held connections {:.0} req/s, p99 {:.2} ms; cut {:?}",
            alone.qps, alone.p99_ms, held.mean_open, beside.qps, beside.p99_ms, held.cut
        );
        server.stop()?;
        rounds.push(HostileRound {
            alone,
            beside,
            held,
        });
    }
    Ok(rounds)
}

fn print_hostile(rounds: &[HostileRound]) {
    let med = |get: &dyn Fn(&HostileRound) -> f64| {
        median(&mut rounds.iter().map(get).collect::<Vec<_>>())
    };
    let counts: Vec<String> = HELD
        .iter()
        .map(|(kind, n)| format!("{n} {}", kind.name()))
        .collect();
    println!(
        "\n{FAST_CLIENTS} fast clients beside held connections ({}; reopened when cut), default server, medians:",
        counts.join(", ")
    );
    println!(
        "{:<28} {:>9} {:>9} {:>9}",
        "fast clients", "req/s", "p50 ms", "p99 ms"
    );
    for (name, get) in [
        (
            "alone",
            (|r: &HostileRound| r.alone) as fn(&HostileRound) -> Figures,
        ),
        ("beside the held ones", |r: &HostileRound| r.beside),
    ] {
        println!(
            "{name:<28} {:>9.0} {:>9.2} {:>9.2}",
            med(&|r| get(r).qps),
            med(&|r| get(r).p50_ms),
            med(&|r| get(r).p99_ms)
        );
    }
    let cut: Vec<String> = HELD
        .iter()
        .enumerate()
        .map(|(i, (kind, _))| format!("{} {:.0}", kind.name(), med(&|r| r.held.cut[i] as f64)))
        .collect();
    println!(
        "held open on average: {:.0}; closed by the server's timeouts per round: {}",
        med(&|r| r.held.mean_open),
        cut.join(", ")
    );
}

/// A connection that holds a server socket without asking anything.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Holder {
    /// Connects and sends nothing.
    Idle,
    /// Sends a header a byte every 100 ms, never ending it.
    SlowHeader,
    /// Sends a header announcing 1000 bytes of body, then one.
    HalfBody,
}

impl Holder {
    fn name(self) -> &'static str {
        match self {
            Holder::Idle => "idle",
            Holder::SlowHeader => "slow-header",
            Holder::HalfBody => "half-sent-body",
        }
    }

    /// What it sends on connecting.
    fn opening(self) -> &'static [u8] {
        match self {
            Holder::Idle => b"",
            Holder::SlowHeader => b"POST /recommend HTTP/1.1\r\nhost: bench\r\nx-slow: ",
            Holder::HalfBody => {
                b"POST /recommend HTTP/1.1\r\nhost: bench\r\ncontent-length: 1000\r\n\r\n{"
            }
        }
    }
}

/// What [`hold`] saw.
#[derive(Debug)]
struct HoldReport {
    /// Connections open, averaged over the ticks.
    mean_open: f64,
    /// Connections the server closed, per kind of [`HELD`].
    cut: [usize; 3],
}

/// Holds the [`HELD`] connections to `addr` until `stop`, reopening each
/// one the server closes; slow headers get a byte every tick (100 ms).
fn hold(addr: SocketAddr, stop: &AtomicBool) -> Result<HoldReport> {
    let open = |kind: Holder| -> Option<TcpStream> {
        let mut stream = TcpStream::connect(addr).ok()?;
        stream.write_all(kind.opening()).ok()?;
        stream.set_nonblocking(true).ok()?;
        Some(stream)
    };
    let mut held: Vec<(usize, Holder, Option<TcpStream>)> = HELD
        .iter()
        .enumerate()
        .flat_map(|(i, &(kind, n))| (0..n).map(move |_| (i, kind)))
        .map(|(i, kind)| (i, kind, open(kind)))
        .collect();
    let (mut cut, mut ticks, mut open_sum) = ([0usize; 3], 0usize, 0usize);
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        for (i, kind, stream) in &mut held {
            let alive = match stream {
                None => false,
                Some(s) => {
                    let unread = match s.read(&mut buf) {
                        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                        // Closed, or answered (408) before closing.
                        Ok(_) => false,
                    };
                    unread && (*kind != Holder::SlowHeader || s.write_all(b"a").is_ok())
                }
            };
            if !alive {
                if stream.is_some() {
                    cut[*i] += 1;
                }
                *stream = open(*kind);
            }
        }
        ticks += 1;
        open_sum += held.iter().filter(|h| h.2.is_some()).count();
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(HoldReport {
        mean_open: open_sum as f64 / ticks.max(1) as f64,
        cut,
    })
}

/// A 10-epoch latest-small run at the notebook's sizes in
/// target/bench/serve-run, trained once.
fn trained_run(sasrec: &Path) -> Result<PathBuf> {
    let run = root().join("target/bench/serve-run");
    if run.join("model.safetensors").exists() {
        return Ok(run);
    }
    let ratings = crate::fetch::ensure_dataset("latest-small")?;
    check(
        Command::new(sasrec)
            .args(["train", "--ratings"])
            .arg(&ratings)
            .args(["--dim", "64", "--max-len", "50", "--epochs", "10"])
            .args(["--device", "cpu", "--force", "--out"])
            .arg(&run),
    )?;
    Ok(run)
}

/// `{"user": ID, "k": 10}` for every user of the run's vocab.json.
fn request_bodies(run: &Path) -> Result<Vec<String>> {
    let path = run.join("vocab.json");
    let vocab: Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let users = vocab["users"]
        .as_array()
        .filter(|u| !u.is_empty())
        .with_context(|| format!("{} lists no users", path.display()))?;
    Ok(users
        .iter()
        .map(|user| format!(r#"{{"user": {user}, "k": 10}}"#))
        .collect())
}

/// `clients` threads sending requests back to back for `seconds`: the
/// requests per second and every request's latency in milliseconds.
fn load(base: &str, bodies: &[String], clients: usize, seconds: f64) -> Result<(f64, Vec<f64>)> {
    let url = format!("{base}/recommend");
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let per_client: Vec<Result<Vec<f64>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|client| {
                let url = &url;
                s.spawn(move || -> Result<Vec<f64>> {
                    let agent = ureq::Agent::new_with_defaults();
                    // A per-client linear congruential sequence of users.
                    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ client as u64;
                    let mut latencies = Vec::new();
                    while Instant::now() < until {
                        state = state
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1_442_695_040_888_963_407);
                        let body = &bodies[(state >> 33) as usize % bodies.len()];
                        let sent = Instant::now();
                        let mut response = agent
                            .post(url)
                            .header("content-type", "application/json")
                            .send(body.as_str())?;
                        response.body_mut().read_to_string()?;
                        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                    }
                    Ok(latencies)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut all = Vec::new();
    for latencies in per_client {
        all.extend(latencies?);
    }
    Ok((all.len() as f64 / elapsed, all))
}

/// Mean and largest batch size between two `GET /stats` answers.
fn batches(before: &Value, after: &Value) -> (f64, f64) {
    let count = |stats: &Value, key: &str| stats[key].as_f64().unwrap_or(0.0);
    let mean = (count(after, "requests") - count(before, "requests"))
        / (count(after, "batches") - count(before, "batches")).max(1.0);
    let mut largest = 0.0f64;
    if let Some(sizes) = after["batch_sizes"].as_object() {
        for (size, n) in sizes {
            let formed = n.as_f64().unwrap_or(0.0) - count(&before["batch_sizes"], size);
            if formed > 0.0 {
                largest = largest.max(size.parse().unwrap_or(0.0));
            }
        }
    }
    (mean, largest)
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() as f64 * q) as usize).min(values.len() - 1)]
}

/// A `sasrec serve` child on an ephemeral port.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(sasrec: &Path, run: &Path, max_batch: usize, wait_us: u64) -> Result<Server> {
        let mut child = Command::new(sasrec)
            .args(["serve", "--run"])
            .arg(run)
            .args(["--addr", "127.0.0.1:0", "--device", "cpu"])
            .args(["--max-batch", &max_batch.to_string()])
            .args(["--batch-wait-us", &wait_us.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting sasrec serve")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        let Some(base) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            bail!("sasrec serve printed no address ({line:?})");
        };
        Ok(Server {
            base: base.to_string(),
            child,
        })
    }

    fn stats(&self) -> Result<Value> {
        let body = ureq::get(format!("{}/stats", self.base))
            .call()?
            .body_mut()
            .read_to_string()?;
        Ok(serde_json::from_str(&body)?)
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) -> Result<()> {
        check(Command::new("kill").args(["-TERM", &self.child.id().to_string()]))?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("sasrec serve ended with {status}");
        }
        Ok(())
    }
}
