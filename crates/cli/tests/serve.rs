//! `sasrec serve` over real HTTP on an ephemeral port: the answers are
//! `sasrec recommend`'s, bad requests get 4xx with a JSON error, concurrent
//! requests share forward passes, and SIGTERM or Ctrl-C finish the requests
//! in flight before the server exits 0. Over raw sockets: clients that
//! hold connections open (idle, half-sent) are cut at their timeouts and
//! cannot keep the server from stopping, connections beyond the limit are
//! refused with 503, and running out of file descriptors pauses accepting
//! instead of ending the server.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{SASREC, sasrec, signal, text, trained_run};
use serde_json::{Value, json};

/// A running `sasrec serve` on 127.0.0.1:0; killed when dropped.
struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`, as the server printed it.
    base: String,
    agent: ureq::Agent,
    _stdout: BufReader<ChildStdout>,
}

impl Server {
    fn start(run: &Path, delay_ms: Option<u64>) -> Server {
        Server::start_with(run, delay_ms, &[], None)
    }

    /// A server with more flags, and at most `max_files` file descriptors
    /// (`ulimit -n`).
    fn start_with(
        run: &Path,
        delay_ms: Option<u64>,
        flags: &[&str],
        max_files: Option<u32>,
    ) -> Server {
        let mut cmd = match max_files {
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.args([
                    "-c",
                    &format!("ulimit -n {n} && exec \"$0\" \"$@\""),
                    SASREC,
                ]);
                sh
            }
            None => Command::new(SASREC),
        };
        cmd.args(["serve", "--run", run.to_str().unwrap()])
            .args(["--addr", "127.0.0.1:0", "--device", "cpu"])
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(ms) = delay_ms {
            cmd.env("SASREC_SERVE_DELAY_MS", ms.to_string());
        }
        let mut child = cmd.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let Some(base) = line.trim().strip_prefix("listening on ") else {
            let out = child.wait_with_output().unwrap();
            panic!("no address printed: {line:?}\n{}", text(&out).1);
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Server {
            base: base.to_string(),
            child: Some(child),
            agent,
            _stdout: stdout,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Whether the process is still running.
    fn alive(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// A raw TCP connection to the server.
    fn connect(&self) -> TcpStream {
        TcpStream::connect(self.base.strip_prefix("http://").unwrap()).unwrap()
    }

    /// Status and JSON body of `POST /recommend` with `body`.
    fn recommend(&self, body: &str) -> (u16, Value) {
        let response = self
            .agent
            .post(format!("{}/recommend", self.base))
            .header("content-type", "application/json")
            .send(body);
        read(response)
    }

    /// Status and JSON body of `GET path`.
    fn get(&self, path: &str) -> (u16, Value) {
        read(self.agent.get(format!("{}{path}", self.base)).call())
    }

    /// Waits (two minutes at most) for the server to exit; its status and
    /// standard error.
    fn wait_exit(mut self) -> (Option<i32>, String) {
        let mut child = self.child.take().unwrap();
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the server did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        (out.status.code(), text(&out).1)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut response = response.expect("the server answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = response.body_mut().read_to_string().unwrap();
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "status {status}: {body}"
    );
    (status, serde_json::from_str(&body).unwrap())
}

/// (item, logit) of a recommendation list.
fn top(list: &Value) -> Vec<(Value, f64)> {
    list["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            assert_eq!(r["rank"], i + 1);
            (r["item"].clone(), r["logit"].as_f64().unwrap())
        })
        .collect()
}

/// The same items in the same order, logits within 1e-5.
fn assert_same(got: &[(Value, f64)], want: &[(Value, f64)], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            g.0 == w.0 && (g.1 - w.1).abs() <= 1e-5,
            "{what}: {got:?} vs {want:?}"
        );
    }
}

/// `sasrec recommend --json` with `args`.
fn cli_json(run: &Path, args: &[&str]) -> Value {
    let mut all = vec!["recommend", "--run", run.to_str().unwrap(), "--json"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--device", "cpu"]);
    let out = sasrec(&all);
    assert!(out.status.success(), "{}", text(&out).1);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn answers_as_recommend_does_and_refuses_bad_requests_with_json_errors() {
    let (_dir, _, run) = trained_run("3");
    let server = Server::start(&run, None);

    assert_eq!(server.get("/healthz"), (200, json!({"status": "ok"})));
    let (status, model) = server.get("/model");
    assert_eq!(status, 200);
    assert_eq!(model["items"], 30);
    assert_eq!(model["users"], 40);
    assert_eq!(model["config"]["model"]["dim"], 16);
    assert!(model["test"]["test"]["ranking"]["at"].is_array(), "{model}");

    // A user, a list of items (ids as numbers or strings), seen items kept.
    let cases = [
        (r#"{"user": 5, "k": 6}"#, vec!["--user", "5", "--k", "6"]),
        (r#"{"user": "7"}"#, vec!["--user", "7"]),
        (
            r#"{"items": [101, "102", 117], "k": 4}"#,
            vec!["--items", "101,102,117", "--k", "4"],
        ),
        (
            r#"{"user": 5, "k": 20, "exclude_seen": false}"#,
            vec!["--user", "5", "--k", "20", "--keep-seen"],
        ),
    ];
    for (body, args) in cases {
        let (status, answer) = server.recommend(body);
        assert_eq!(status, 200, "{body}: {answer}");
        let want = cli_json(&run, &args);
        assert_same(&top(&answer), &top(&want), body);
        assert_eq!(answer["history_len"], want["history_len"], "{body}");
        assert_eq!(answer["user"], want["user"], "{body}");
    }
    // Seen items: user 5 rated 13 movies; kept, 20 items include some.
    let (_, kept) = server.recommend(r#"{"user": 5, "k": 30, "exclude_seen": false}"#);
    assert_eq!(top(&kept).len(), 30);
    let (_, left_out) = server.recommend(r#"{"user": 5, "k": 30}"#);
    assert_eq!(top(&left_out).len(), 30 - 13);

    let refused = [
        (r#"{"user": 999}"#, 404, "user 999 is not in"),
        (
            r#"{"user": "abc"}"#,
            404,
            "data.safetensors (after the run's filters; its user ids are integers)",
        ),
        (r#"{"user": [5]}"#, 400, "an id is a number or a string"),
        (
            r#"{"user": 5, "k": 0}"#,
            400,
            "k must be between 1 and 1000, got 0",
        ),
        (
            r#"{"user": 5, "k": 1001}"#,
            400,
            "k must be between 1 and 1000",
        ),
        (r#"{"user": 5, "k": 2.5}"#, 400, "not a recommend request"),
        (
            r#"{"user": 5, "items": [101]}"#,
            400,
            "either user or items, not both",
        ),
        (r#"{"k": 5}"#, 400, "give user (a user id) or items"),
        (r#"{"items": []}"#, 400, "items is empty"),
        (r#"{"usr": 5}"#, 400, "unknown field `usr`"),
        (r#"{"user": 5"#, 400, "not a recommend request: EOF"),
        ("", 400, "not a recommend request"),
    ];
    for (body, want_status, message) in refused {
        let (status, answer) = server.recommend(body);
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            status == want_status && error.contains(message),
            "{body}: {status} {answer}"
        );
    }
    // Unknown items are left out of the history and named.
    let (status, answer) = server.recommend(r#"{"items": [101, 999999, "x"], "k": 3}"#);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["unknown_items"], json!(["999999", "x"]));
    assert_eq!(answer["history_len"], 1);
    let (status, answer) = server.get("/nothing");
    assert!(
        status == 404
            && answer["error"]
                .as_str()
                .unwrap()
                .contains("no such endpoint")
    );
    let (status, answer) = server.get("/recommend");
    assert!(
        status == 405
            && answer["error"]
                .as_str()
                .unwrap()
                .contains("POST /recommend")
    );

    // Ctrl-C stops it cleanly.
    let (_, stats) = server.get("/stats");
    let served = stats["requests"].as_u64().unwrap();
    signal(server.pid(), "INT");
    let (code, stderr) = server.wait_exit();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("stopped after {served} requests")),
        "{stderr}"
    );
}

#[test]
fn concurrent_requests_share_forward_passes_and_sigterm_drains() {
    let (dir, _, run) = trained_run("3");
    // The answers of `recommend --users-file` for users 1..=16.
    let users = dir.path().join("users.txt");
    let ids: Vec<String> = (1..=16).map(|u| u.to_string()).collect();
    std::fs::write(&users, ids.join("\n")).unwrap();
    let recs = dir.path().join("recs.jsonl");
    let out = sasrec(&[
        "recommend",
        "--run",
        run.to_str().unwrap(),
        "--users-file",
        users.to_str().unwrap(),
        "--k",
        "5",
        "--out",
        recs.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    let rows: Vec<Value> = std::fs::read_to_string(&recs)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want = |user: u64| -> Vec<(Value, f64)> {
        rows.iter()
            .filter(|r| r["user"] == user)
            .map(|r| (r["item"].clone(), r["logit"].as_f64().unwrap()))
            .collect()
    };

    // Every batch sleeps a second first: requests sent meanwhile queue up
    // and go through the model together.
    let server = Server::start(&run, Some(1000));
    let answers: Vec<(u64, (u16, Value))> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=16u64)
            .map(|user| {
                let server = &server;
                s.spawn(move || {
                    (
                        user,
                        server.recommend(&format!(r#"{{"user": {user}, "k": 5}}"#)),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (user, (status, answer)) in &answers {
        assert_eq!(*status, 200, "{answer}");
        assert_same(&top(answer), &want(*user), &format!("user {user}"));
    }
    let (_, stats) = server.get("/stats");
    assert_eq!(stats["requests"], 16, "{stats}");
    let largest: u64 = stats["batch_sizes"]
        .as_object()
        .unwrap()
        .keys()
        .map(|n| n.parse().unwrap())
        .max()
        .unwrap();
    assert!(largest > 1, "no batch served two requests: {stats}");

    // SIGTERM while a request waits for the model: it is answered, then
    // the server exits 0 and accepts nothing more.
    std::thread::scope(|s| {
        let in_flight = s.spawn(|| server.recommend(r#"{"user": 3, "k": 5}"#));
        let started = Instant::now();
        while server.get("/stats").1["requests"] != 17 {
            assert!(started.elapsed() < Duration::from_secs(60), "never queued");
            std::thread::sleep(Duration::from_millis(5));
        }
        signal(server.pid(), "TERM");
        let (status, answer) = in_flight.join().unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_same(&top(&answer), &want(3), "user 3 during shutdown");
    });
    let base = server.base.clone();
    let (code, stderr) = server.wait_exit();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("SIGTERM: finishing the requests in flight")
            && stderr.contains("stopped after 17 requests"),
        "{stderr}"
    );
    assert!(ureq::get(format!("{base}/healthz")).call().is_err());
}

/// Reads what the server sends until it closes the connection, which it
/// must do within `limit`.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> String {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => {}
        // A close with unread bytes may reach us as a reset.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "the connection is still open after {limit:?} ({e}); got {:?}",
            String::from_utf8_lossy(&got)
        ),
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// `GET /healthz` on a new connection, retried for a minute while the
/// server is busy freeing connections.
fn wait_healthy(server: &Server) {
    let started = Instant::now();
    loop {
        let answer = server
            .agent
            .get(format!("{}/healthz", server.base))
            .call()
            .ok()
            .map(|r| r.status().as_u16());
        if answer == Some(200) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never healthy again: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn idle_slow_and_half_sent_connections_are_closed_at_their_timeouts() {
    let (_dir, _, run) = trained_run("1");
    let flags = [
        "--idle-timeout",
        "1",
        "--header-timeout",
        "1",
        "--body-timeout",
        "1",
        "--keep-alive-timeout",
        "1",
    ];
    let server = Server::start_with(&run, None, &flags, None);
    let (_, model) = server.get("/model");
    assert_eq!(model["connections"]["header_timeout_s"], 1.0, "{model}");

    let idle = server.connect();
    let mut half_header = server.connect();
    half_header
        .write_all(b"POST /recommend HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    let mut half_body = server.connect();
    half_body
        .write_all(b"POST /recommend HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"user\"")
        .unwrap();
    let mut kept_alive = server.connect();
    kept_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    // A header sent a byte at a time, never finished: busy, but past its
    // header timeout all the same.
    let mut dripping = server.connect();
    let drip = std::thread::spawn(move || {
        for &b in b"GET /healthz HTTP/1.1\r\nhost: a-very-slow-client\r\n" {
            if dripping.write_all(&[b]).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    });

    let limit = Duration::from_secs(30);
    for (name, mut stream) in [("idle", idle), ("half-sent header", half_header)] {
        let got = read_until_closed(&mut stream, limit);
        assert_eq!(got, "", "{name}");
    }
    let got = read_until_closed(&mut half_body, limit);
    assert!(
        got.starts_with("HTTP/1.1 408") && got.contains("--body-timeout"),
        "{got}"
    );
    let got = read_until_closed(&mut kept_alive, limit);
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with(r#"{"status":"ok"}"#),
        "{got}"
    );
    assert!(drip.join().unwrap(), "a dripping header was never cut");
    // The server goes on.
    assert_eq!(server.get("/healthz").0, 200);
}

#[test]
fn a_connection_over_the_limit_gets_503_and_the_next_is_served() {
    let (_dir, _, run) = trained_run("1");
    let server = Server::start_with(&run, None, &["--max-connections", "2"], None);
    let first = server.connect();
    let _second = server.connect();
    // Accepted after the two above (the queue is first in, first out).
    let mut third = server.connect();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let got = read_until_closed(&mut third, Duration::from_secs(30));
    assert!(
        got.starts_with("HTTP/1.1 503")
            && got.contains("application/json")
            && got.contains("too many connections")
            && got.contains("2 at once (--max-connections)"),
        "{got}"
    );
    drop(first);
    wait_healthy(&server);
    signal(server.pid(), "TERM");
    let (code, stderr) = server.wait_exit();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("refusing new ones with 503"), "{stderr}");
}

#[cfg(unix)]
#[test]
fn running_out_of_file_descriptors_pauses_accepting_and_the_server_goes_on() {
    let (_dir, _, run) = trained_run("1");
    let mut server = Server::start_with(&run, None, &[], Some(64));
    // More connections than the server has descriptors for.
    let held: Vec<TcpStream> = (0..100).map(|_| server.connect()).collect();
    std::thread::sleep(Duration::from_millis(500));
    assert!(server.alive(), "the server ended");
    drop(held);
    wait_healthy(&server);
    assert!(server.alive());
    signal(server.pid(), "TERM");
    let (code, stderr) = server.wait_exit();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("cannot accept connections") && stderr.contains("ulimit -n"),
        "{stderr}"
    );
}

#[test]
fn sigterm_with_half_sent_requests_exits_at_the_shutdown_timeout() {
    let (_dir, _, run) = trained_run("1");
    let flags = [
        "--idle-timeout",
        "600",
        "--header-timeout",
        "600",
        "--body-timeout",
        "600",
        "--shutdown-timeout",
        "1",
    ];
    let server = Server::start_with(&run, None, &flags, None);
    let mut half_header = server.connect();
    half_header
        .write_all(b"POST /recommend HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    let mut half_body = server.connect();
    half_body
        .write_all(b"POST /recommend HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
        .unwrap();
    assert_eq!(server.get("/healthz").0, 200);
    let started = Instant::now();
    signal(server.pid(), "TERM");
    let (code, stderr) = server.wait_exit();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(60)
            && stderr.contains("still open after --shutdown-timeout 1 s"),
        "{stderr}"
    );
    for mut stream in [half_header, half_body] {
        read_until_closed(&mut stream, Duration::from_secs(10));
    }
}
