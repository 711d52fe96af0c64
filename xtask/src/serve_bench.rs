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

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::bench::{check, median};
use crate::{cargo, release_dir, root};

const CLIENTS: [usize; 3] = [1, 16, 64];
const ROUNDS: usize = 3;
/// (name, --max-batch, --batch-wait-us).
const SETTINGS: [(&str, usize, u64); 3] = [
    ("batched, wait 1 ms", 64, 1000),
    ("batched, no wait", 64, 0),
    ("one per pass", 1, 0),
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
    Ok(())
}

/// A 10-epoch latest-small run in target/bench/serve-run, trained once.
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
            .args(["--epochs", "10", "--device", "cpu", "--force", "--out"])
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
