//! A shop's event log through the binary: event types (kept, targets),
//! duplicates, times in the wrong unit, temporal-split warnings, run folders
//! that serve and evaluate without the log, unknown users and items, names
//! in output files, PNG plots, flat `runs` output, and the GPU notice.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{SASREC, SMALL, assert_error, json, sasrec, signal, text};
use serde_json::Value;

/// A shop log: `customer_id,sku,event_type,event_time` (ISO), views with
/// carts, purchases and double-logged views, from the data crate's generator.
fn write_shop(dir: &Path) -> PathBuf {
    let path = dir.join("shop.csv");
    let mut log = sasrec_data::synthetic::Transitions::new(150, 40, 1500, 3);
    log.string_ids = true;
    log.write_shop(&path).unwrap();
    path
}

/// The log's rows as (user, item, event, time text), in file order.
fn rows(path: &Path) -> Vec<[String; 4]> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            [f[0], f[1], f[2], f[3]].map(String::from)
        })
        .collect()
}

/// Each user's rows sorted by time (stable), users in order of first appearance.
fn by_user(rows: &[[String; 4]]) -> Vec<Vec<[String; 4]>> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<[String; 4]>> = HashMap::new();
    for row in rows {
        if !groups.contains_key(&row[0]) {
            order.push(row[0].clone());
        }
        groups.entry(row[0].clone()).or_default().push(row.clone());
    }
    order
        .into_iter()
        .map(|u| {
            let mut g = groups.remove(&u).unwrap();
            g.sort_by(|a, b| a[3].cmp(&b[3]));
            g
        })
        .collect()
}

/// Rows that repeat the previous row of their user (item and event type).
fn consecutive_duplicates(users: &[Vec<[String; 4]>]) -> usize {
    users
        .iter()
        .map(|g| g.windows(2).filter(|w| w[0][1..3] == w[1][1..3]).count())
        .sum()
}

fn run_in(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(SASREC)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// `data stats` counts the event types and the duplicates each dedup mode
/// removes, and always shows the time range.
#[test]
fn data_stats_counts_event_types_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_shop(dir.path());
    let all = rows(&log);
    let count = |event: &str| all.iter().filter(|r| r[2] == event).count();
    let users = by_user(&all);
    let consecutive = consecutive_duplicates(&users);
    assert!(consecutive > 10, "the generator writes duplicates");
    let repeats: usize = users
        .iter()
        .map(|g| {
            let mut seen = std::collections::HashSet::new();
            g.iter().filter(|r| !seen.insert((&r[1], &r[2]))).count()
        })
        .sum();

    let stats = |extra: &[&str]| {
        let mut args = vec!["data", "stats", "--ratings", log.to_str().unwrap()];
        args.extend(["--item-col", "sku"]);
        args.extend(extra);
        let out = sasrec(&args);
        assert!(out.status.success(), "{}", text(&out).1);
        text(&out).0
    };
    let default = stats(&[]);
    assert!(default.contains("event type `event_type`"), "{default}");
    let events = format!(
        "events        view {}, cart {}, purchase {}",
        thousands(count("view")),
        thousands(count("cart")),
        thousands(count("purchase"))
    );
    assert!(default.contains(&events), "{default}");
    assert!(
        default.contains(&format!("{consecutive} duplicates (consecutive)")),
        "{default}"
    );
    assert!(default.contains(" UTC to "), "the time range: {default}");
    assert!(default.contains(" days)"), "its span: {default}");
    let none = stats(&["--dedup", "none"]);
    assert!(none.contains("0 duplicates (none)"), "{none}");
    assert!(
        none.contains(&format!("interactions  {}", thousands(all.len()))),
        "{none}"
    );
    let every = stats(&["--dedup", "all"]);
    assert!(
        every.contains(&format!("{repeats} duplicates (all)")),
        "{every}"
    );

    // Keeping views and purchases drops the carts; purchases are the targets.
    let kept = stats(&[
        "--keep-events",
        "view,purchase",
        "--target-events",
        "purchase",
        "--dedup",
        "none",
    ]);
    assert!(
        kept.contains(&format!("{} by event type", thousands(count("cart")))),
        "{kept}"
    );
    assert!(
        kept.contains(&format!(
            "targets       {} of the interactions (purchase)",
            thousands(count("purchase"))
        )),
        "{kept}"
    );

    // Names that are no event type of the log, or no event column at all.
    let mut args = vec!["data", "stats", "--ratings", log.to_str().unwrap()];
    args.extend(["--item-col", "sku", "--target-events", "purchse"]);
    assert_error(
        &sasrec(&args),
        "no event type \"purchse\" in column `event_type`",
    );
    let mut args = vec!["data", "stats", "--ratings", log.to_str().unwrap()];
    args.extend(["--item-col", "sku", "--keep-events", "view"]);
    args.extend(["--target-events", "purchase"]);
    assert_error(
        &sasrec(&args),
        "target event type \"purchase\" is not among the kept",
    );
    let ratings = common::write_data(dir.path());
    let args = [
        "data",
        "stats",
        "--ratings",
        ratings.to_str().unwrap(),
        "--target-events",
        "purchase",
    ];
    assert_error(&sasrec(&args), "need an event column");
}

/// MovieLens has no duplicates: every dedup mode leaves latest-small as it is.
#[test]
fn latest_small_has_no_duplicates() {
    let Some(ratings) = sasrec_data::test_dataset(sasrec_data::KnownDataset::LatestSmall) else {
        return;
    };
    for mode in ["consecutive", "all"] {
        let args = ["data", "stats", "--ratings", ratings.to_str().unwrap()];
        let out = sasrec(&[&args[..], &["--dedup", mode]].concat());
        let stdout = text(&out).0;
        assert!(
            stdout.contains(&format!("0 duplicates ({mode})"))
                && stdout.contains("interactions  100,836"),
            "{stdout}"
        );
    }
}

/// Millisecond times read as seconds (and seconds read as milliseconds) are
/// refused, naming the unit they look like.
#[test]
fn times_in_another_unit_are_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let ms = dir.path().join("ms.csv");
    let log = |first: u64, step: u64| {
        let mut text = String::from("user_id,item_id,ts\n");
        for i in 0..20u64 {
            text.push_str(&format!("u{},i{},{}\n", i % 4, i % 5, first + i * step));
        }
        text
    };
    let text_ms = log(1_700_000_000_000, 60_000);
    std::fs::write(&ms, &text_ms).unwrap();
    let path = ms.to_str().unwrap();
    let out = sasrec(&["data", "stats", "--ratings", path]);
    let line = assert_error(
        &out,
        "the times look like milliseconds since 1970, not seconds",
    );
    assert!(
        line.contains("--time-unit ms") && line.contains("`ts`"),
        "{line}"
    );
    let out = sasrec(&["data", "stats", "--ratings", path, "--time-unit", "ms"]);
    assert!(text(&out).0.contains("2023-11-14"), "{}", text(&out).1);
    let out = sasrec(&["data", "stats", "--ratings", path, "--time-unit", "ns"]);
    assert_error(&out, "look like milliseconds since 1970, not nanoseconds");

    let seconds = dir.path().join("s.csv");
    std::fs::write(&seconds, log(1_700_000_000, 60)).unwrap();
    let path = seconds.to_str().unwrap();
    let out = sasrec(&["data", "stats", "--ratings", path, "--time-unit", "ms"]);
    assert_error(&out, "look like seconds since 1970, not milliseconds");
    // Microseconds overflow as seconds: the error says so.
    let us = dir.path().join("us.csv");
    std::fs::write(&us, text_ms.replace("1700000000000", "1700000000000000")).unwrap();
    let out = sasrec(&["data", "stats", "--ratings", us.to_str().unwrap()]);
    assert_error(&out, "--time-unit us");
}

/// Trains the small model on the shop log (purchases as targets) into
/// `run`, from `cwd` with the log's path relative to it.
fn train_shop(cwd: &Path, log: &str, run: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["train", "--ratings", log, "--item-col", "sku"];
    args.extend(["--out", run, "--epochs", "2"]);
    args.extend(SMALL);
    args.extend(extra);
    let out = run_in(cwd, &args);
    assert!(out.status.success(), "{}", text(&out).1);
    text(&out)
}

/// With --target-events, the held-out items are purchases, each after every
/// event before it; the run's log says what the filters did.
#[test]
fn target_events_hold_out_the_last_purchases() {
    let dir = tempfile::tempdir().unwrap();
    write_shop(dir.path());
    let (_, stderr) = train_shop(
        dir.path(),
        "shop.csv",
        "run",
        &["--target-events", "purchase"],
    );
    let all = rows(&dir.path().join("shop.csv"));
    let users = by_user(&all);
    // Leave-one-out on purchases: users with two purchases after their first event.
    let mut deduped = users.clone();
    for g in &mut deduped {
        g.dedup_by(|b, a| a[1..3] == b[1..3]);
    }
    let evaluated = deduped
        .iter()
        .filter(|g| {
            g.iter()
                .enumerate()
                .filter(|(j, r)| *j > 0 && r[2] == "purchase")
                .count()
                >= 2
        })
        .count();
    assert!(evaluated > 10, "{evaluated}");
    assert!(
        stderr.contains(&format!("valid {evaluated}, test {evaluated} users")),
        "{stderr}"
    );
    let removed = consecutive_duplicates(&users);
    assert!(
        stderr.contains(&format!(
            "dedup consecutive removed {removed} repeated events"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("targets purchase:"), "{stderr}");
    let config = json(&dir.path().join("run/config.json"));
    assert_eq!(
        config["data"]["target_events"],
        serde_json::json!(["purchase"])
    );
    assert_eq!(config["data"]["dedup"], "consecutive");
    assert_eq!(config["data"]["event_col"], Value::Null);
    // The stored split agrees: eval of the test users counts them.
    let out = sasrec(&[
        "eval",
        "--run",
        dir.path().join("run").to_str().unwrap(),
        "--json",
        "--device",
        "cpu",
    ]);
    let result: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        result["model"]["ranking"]["users"],
        evaluated,
        "{}",
        text(&out).1
    );
}

/// A temporal split with few users warns, with the data's time range;
/// --temporal-targets all scores every purchase in the window.
#[test]
fn temporal_split_warns_and_scores_every_target() {
    let dir = tempfile::tempdir().unwrap();
    write_shop(dir.path());
    let temporal = |targets: &str| {
        train_shop(
            dir.path(),
            "shop.csv",
            &format!("run-{targets}"),
            &[
                "--split",
                "temporal",
                "--valid-time-fraction",
                "0.7",
                "--test-time-fraction",
                "0.85",
                "--target-events",
                "purchase",
                "--temporal-targets",
                targets,
            ],
        )
        .1
    };
    let first = temporal("first");
    assert!(
        first.contains("warning: the temporal split validates on only"),
        "{first}"
    );
    assert!(first.contains("(the interactions run from 20"), "{first}");
    assert!(first.contains("--temporal-targets all"), "{first}");
    let all = temporal("all");
    // "... split temporal (...): train X, valid Y, test Z users"
    let tested = |log: &str| -> usize {
        let at = log.rfind(", test ").unwrap();
        log[at + 7..].split(' ').next().unwrap().parse().unwrap()
    };
    assert!(tested(&all) > tested(&first), "{first}\n{all}");
    let config = json(&dir.path().join("run-all/config.json"));
    assert_eq!(config["data"]["temporal_targets"], "all");
}

/// A running `sasrec serve` on an ephemeral port.
struct Server {
    child: std::process::Child,
    base: String,
    agent: ureq::Agent,
}

impl Server {
    fn start(run: &Path, cwd: &Path) -> Server {
        let mut child = Command::new(SASREC)
            .args(["serve", "--run", run.to_str().unwrap()])
            .args(["--addr", "127.0.0.1:0", "--device", "cpu"])
            .current_dir(cwd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
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
            child,
            agent,
        }
    }

    fn recommend(&self, body: &str) -> (u16, Value) {
        let mut response = self
            .agent
            .post(format!("{}/recommend", self.base))
            .header("content-type", "application/json")
            .send(body)
            .unwrap();
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&body).unwrap())
    }

    fn stop(mut self) {
        signal(self.child.id(), "TERM");
        let status = self.child.wait().unwrap();
        assert!(status.success());
    }
}

/// A run folder copied elsewhere, its log deleted, still recommends, serves
/// (over a real socket), exports and evaluates its stored split; its config
/// keeps the log's absolute path; --ratings still reads a log.
#[test]
fn a_copied_run_folder_serves_without_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_shop(dir.path());
    train_shop(
        dir.path(),
        "shop.csv",
        "run",
        &["--target-events", "purchase"],
    );
    let config = json(&dir.path().join("run/config.json"));
    assert_eq!(config["data"]["ratings"], log.to_str().unwrap());
    let before = sasrec(&[
        "eval",
        "--run",
        dir.path().join("run").to_str().unwrap(),
        "--json",
        "--device",
        "cpu",
    ]);
    assert!(before.status.success(), "{}", text(&before).1);

    let server_dir = tempfile::tempdir().unwrap();
    let copy = server_dir.path().join("deployed");
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(dir.path().join("run")).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_file() {
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
    }
    let kept = dir.path().join("moved.csv");
    std::fs::rename(&log, &kept).unwrap();
    let run = copy.to_str().unwrap();
    let user = rows(&kept)[0][0].clone();

    let out = run_in(
        server_dir.path(),
        &[
            "recommend",
            "--run",
            "deployed",
            "--user",
            &user,
            "--json",
            "--device",
            "cpu",
        ],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["recommendations"].as_array().unwrap().len(), 10);
    // The stored split evaluates as the log did.
    let after = run_in(
        server_dir.path(),
        &["eval", "--run", "deployed", "--json", "--device", "cpu"],
    );
    assert!(after.status.success(), "{}", text(&after).1);
    let (b, a): (Value, Value) = (
        serde_json::from_slice(&before.stdout).unwrap(),
        serde_json::from_slice(&after.stdout).unwrap(),
    );
    assert_eq!(b["model"], a["model"]);
    let out = run_in(
        server_dir.path(),
        &[
            "export", "--run", "deployed", "--out", "vectors", "--device", "cpu",
        ],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(server_dir.path().join("vectors/users.npy").exists());

    let server = Server::start(&copy, server_dir.path());
    let (status, body) = server.recommend(&format!(r#"{{"user": "{user}", "k": 5}}"#));
    assert_eq!(status, 200, "{body}");
    let top5: Vec<Value> = list["recommendations"].as_array().unwrap()[..5].to_vec();
    assert_eq!(body["recommendations"], Value::Array(top5));
    // Unknown items are left out and named; none known: most popular.
    let item = list["recommendations"][0]["item"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) =
        server.recommend(&format!(r#"{{"items": ["{item}", "NEW-SKU"], "k": 3}}"#));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unknown_items"], serde_json::json!(["NEW-SKU"]));
    assert_eq!(body["history_len"], 1);
    assert!(body["recommendations"][0]["logit"].is_number());
    let (status, body) = server.recommend(r#"{"items": ["NEW-SKU"], "k": 3}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["fallback"], "most-popular");
    let counts: Vec<u64> = body["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["popularity"].as_u64().unwrap())
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]) && counts[0] > 0,
        "{body}"
    );
    server.stop();

    // --ratings still reads a log (here the moved one) instead.
    let out = sasrec(&[
        "recommend",
        "--run",
        run,
        "--user",
        &user,
        "--json",
        "--device",
        "cpu",
        "--ratings",
        kept.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["recommendations"],
        list["recommendations"]
    );
    let out = sasrec(&[
        "eval",
        "--run",
        run,
        "--json",
        "--device",
        "cpu",
        "--ratings",
        dir.path().join("missing.csv").to_str().unwrap(),
    ]);
    assert_error(&out, "missing.csv");
}

/// Batch recommend skips unknown users (listed beside the output), --strict
/// refuses them; --items drops unknown items; --item-names adds a name
/// column to the output file.
#[test]
fn unknown_users_and_items_and_names_in_files() {
    let (dir, _ratings, run) = common::trained_run("1");
    let users = dir.path().join("users.txt");
    std::fs::write(&users, "1\nghost\n2\n999\n").unwrap();
    let movies = dir.path().join("movies.csv");
    let out_file = dir.path().join("recs.csv");
    let args = [
        "recommend",
        "--run",
        run.to_str().unwrap(),
        "--users-file",
        users.to_str().unwrap(),
        "--out",
        out_file.to_str().unwrap(),
        "--k",
        "3",
        "--device",
        "cpu",
        "--item-names",
        movies.to_str().unwrap(),
    ];
    let out = sasrec(&args);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(text(&out).1.contains("skipped 2 users"), "{}", text(&out).1);
    let sidecar = dir.path().join("recs.csv.unknown-users.txt");
    assert_eq!(std::fs::read_to_string(&sidecar).unwrap(), "ghost\n999\n");
    let csv = std::fs::read_to_string(&out_file).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("user,item,rank,logit,name"));
    let first = lines.next().unwrap();
    assert!(
        first.starts_with("1,") && first.contains("\"Film "),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 1 + 2 * 3);
    let strict = sasrec(&[&args[..], &["--strict"]].concat());
    assert_error(&strict, "line 2: user ghost is not in");

    let items = |list: &str| {
        let out = sasrec(&[
            "recommend",
            "--run",
            run.to_str().unwrap(),
            "--items",
            list,
            "--json",
            "--device",
            "cpu",
        ]);
        assert!(out.status.success(), "{}", text(&out).1);
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let some = items("101,5000,102");
    assert_eq!(some["unknown_items"], serde_json::json!(["5000"]));
    assert_eq!(some["history_len"], 2);
    let none = items("5000");
    assert_eq!(none["fallback"], "most-popular");
    assert!(none["recommendations"][0]["popularity"].as_u64().unwrap() > 0);
    let out = sasrec(&[
        "recommend",
        "--run",
        run.to_str().unwrap(),
        "--items",
        "101,5000",
        "--strict",
        "--device",
        "cpu",
    ]);
    assert_error(&out, "item ids not known to the model: 5000");
    // The table says which items were left out.
    let out = sasrec(&[
        "recommend",
        "--run",
        run.to_str().unwrap(),
        "--items",
        "101,5000",
        "--device",
        "cpu",
    ]);
    assert!(
        text(&out)
            .0
            .contains("unknown items (left out of the history): 5000"),
        "{}",
        text(&out).0
    );
}

/// `plot --out x.png` writes a PNG, an unknown extension is refused; `runs
/// --format csv|json` gives flat columns; no GPU notice unless asked for.
#[test]
fn png_plots_flat_runs_and_no_gpu_notice() {
    let (dir, _ratings, run) = common::trained_run("2");
    let png = dir.path().join("curves.png");
    let out = sasrec(&[
        "plot",
        "--run",
        run.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert!(width > 500 && height == 360, "{width}x{height}");
    let overlay = dir.path().join("runs.png");
    let out = sasrec(&[
        "plot",
        "--runs",
        run.to_str().unwrap(),
        "--out",
        overlay.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(std::fs::read(&overlay).unwrap().starts_with(b"\x89PNG"));
    let jpg = dir.path().join("runs.jpg");
    let out = sasrec(&[
        "plot",
        "--runs",
        run.to_str().unwrap(),
        "--out",
        jpg.to_str().unwrap(),
    ]);
    assert_error(&out, "plot writes .svg or .png files");
    assert!(!jpg.exists());

    let out = sasrec(&["runs", run.to_str().unwrap(), "--format", "json"]);
    let runs: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let row = &runs[0];
    assert!(
        row["valid_ndcg@10"].is_number() && row["test_hr@20"].is_number(),
        "{row}"
    );
    assert_eq!(row["max_len"], 10);
    assert_eq!(row["epochs_done"], 2);
    let out = sasrec(&["runs", run.to_str().unwrap(), "--format", "csv"]);
    let mut csv = csv::Reader::from_reader(out.stdout.as_slice());
    let header = csv.headers().unwrap().clone();
    let values = csv.records().next().unwrap().unwrap();
    assert_eq!(header.len(), values.len());
    let at = header
        .iter()
        .position(|h| h == "valid_ndcg@10")
        .expect("column");
    assert_eq!(
        values[at].parse::<f64>().unwrap(),
        row["valid_ndcg@10"].as_f64().unwrap()
    );
    assert_eq!(
        &values[header.iter().position(|h| h == "k").unwrap()],
        "10,20"
    );

    // The default device (auto) falls back to the CPU without a notice.
    let out = sasrec(&["recommend", "--run", run.to_str().unwrap(), "--user", "1"]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(!text(&out).1.contains("no GPU found"), "{}", text(&out).1);
}

/// `1234` as `1,234`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The event, dedup and temporal settings are TOML keys too (the flags'
/// names in snake_case), recorded in config.json.
#[test]
fn event_settings_are_toml_keys() {
    let dir = tempfile::tempdir().unwrap();
    write_shop(dir.path());
    let toml = dir.path().join("shop.toml");
    std::fs::write(
        &toml,
        "ratings = \"shop.csv\"\nitem_col = \"sku\"\nevent_col = \"event_type\"\n\
         keep_events = [\"view\", \"purchase\"]\ntarget_events = [\"purchase\"]\n\
         dedup = \"all\"\nsplit = \"temporal\"\nvalid_time_fraction = 0.5\n\
         test_time_fraction = 0.75\ntemporal_targets = \"all\"\n",
    )
    .unwrap();
    let mut args = vec![
        "train",
        "--config",
        "shop.toml",
        "--out",
        "run",
        "--epochs",
        "1",
    ];
    args.extend(SMALL);
    let out = run_in(dir.path(), &args);
    assert!(out.status.success(), "{}", text(&out).1);
    let data = &json(&dir.path().join("run/config.json"))["data"];
    assert_eq!(data["event_col"], "event_type");
    assert_eq!(data["keep_events"], serde_json::json!(["view", "purchase"]));
    assert_eq!(data["dedup"], "all");
    assert_eq!(data["temporal_targets"], "all");
    let out = run_in(
        dir.path(),
        &[
            "data",
            "stats",
            "--ratings",
            "shop.csv",
            "--item-col",
            "sku",
            "--dedup",
            "sometimes",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap refuses it: {}",
        text(&out).1
    );
}
