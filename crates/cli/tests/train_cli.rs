//! The `sasrec` binary end to end, as a user runs it: train a small model on
//! a generated ratings file, evaluate, recommend, plot, interrupt and resume,
//! and get clear errors for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const SASREC: &str = env!("CARGO_BIN_EXE_sasrec");

/// 40 users walking 30 movies (ids 101..130) in cycles, one rating a minute,
/// plus movies.csv with titles.
fn write_data(dir: &Path) -> PathBuf {
    let mut csv = String::from("userId,movieId,rating,timestamp\r\n");
    for user in 1..=40u32 {
        for i in 0..(8 + user % 7) {
            let movie = 101 + (user * 3 + i) % 30;
            csv.push_str(&format!("{user},{movie},4.0,{}\r\n", 1_000_000 + 60 * i));
        }
    }
    let ratings = dir.join("ratings.csv");
    std::fs::write(&ratings, csv).unwrap();
    let mut movies = String::from("movieId,title,genres\n");
    for movie in 101..=130 {
        movies.push_str(&format!("{movie},\"Film {movie}, The (1999)\",Drama\n"));
    }
    std::fs::write(dir.join("movies.csv"), movies).unwrap();
    ratings
}

fn sasrec(args: &[&str]) -> Output {
    Command::new(SASREC)
        .args(args)
        .output()
        .expect("sasrec runs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SMALL: [&str; 16] = [
    "--max-len",
    "10",
    "--dim",
    "16",
    "--heads",
    "2",
    "--layers",
    "1",
    "--batch-size",
    "8",
    "--device",
    "cpu",
    "--lr",
    "0.01",
    "--seed",
    "1",
];

/// `sasrec train` of the small model on `ratings` into `run`.
fn train_args(ratings: &Path, run: &Path, epochs: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--ratings",
        ratings.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    args.extend(["--epochs", epochs].map(String::from));
    args.extend(SMALL.map(String::from));
    args
}

fn train(ratings: &Path, run: &Path, epochs: &str) -> Output {
    Command::new(SASREC)
        .args(train_args(ratings, run, epochs))
        .output()
        .expect("sasrec runs")
}

#[test]
fn train_eval_recommend_plot() {
    let dir = tempfile::tempdir().unwrap();
    let ratings = write_data(dir.path());
    let run = dir.path().join("run");

    let out = train(&ratings, &run, "4");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "train failed:\n{stderr}");
    for line in ["best epoch", "valid", "test ", "test popular", "curves"] {
        assert!(
            stdout.contains(line),
            "train output lacks {line:?}:\n{stdout}"
        );
    }
    for file in [
        "config.json",
        "vocab.json",
        "model.safetensors",
        "last.safetensors",
        "state.json",
        "curves.svg",
        "test.json",
    ] {
        assert!(run.join(file).exists(), "{file} missing");
    }
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 4);

    // The same folder again is refused rather than overwritten.
    let (_, stderr) = text(&train(&ratings, &run, "4"));
    assert!(stderr.contains("already holds a run"), "{stderr}");

    let out = sasrec(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--json",
        "--k",
        "5,10",
        "--device",
        "cpu",
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["model"]["ranking"]["users"], 40);
    let hr10 = json["model"]["ranking"]["at"][1]["hr"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&hr10));

    // User 5 rated movies 101 + (15 + i) % 30 for i < 13.
    let seen: Vec<u32> = (0..13).map(|i| 101 + (15 + i) % 30).collect();
    let out = sasrec(&[
        "recommend",
        "--run",
        run.to_str().unwrap(),
        "--user",
        "5",
        "--k",
        "6",
        "--device",
        "cpu",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let rows: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with(" rank"))
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 6, "{stdout}");
    for row in rows {
        let movie: u32 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(
            !seen.contains(&movie),
            "recommended already-rated movie {movie}"
        );
        assert!(
            row.contains(&format!("Film {movie}, The (1999)")),
            "no title in {row:?}"
        );
    }

    let out = sasrec(&[
        "recommend",
        "--run",
        run.to_str().unwrap(),
        "--items",
        "101,999999",
        "--device",
        "cpu",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out)
            .1
            .contains("item ids not known to the model: 999999"),
        "{}",
        text(&out).1
    );

    std::fs::remove_file(run.join("curves.svg")).unwrap();
    let out = sasrec(&["plot", "--run", run.to_str().unwrap()]);
    assert!(out.status.success() && run.join("curves.svg").exists());
}

#[test]
fn ctrl_c_saves_and_resume_finishes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let ratings = write_data(dir.path());
    let run = dir.path().join("run");
    let child = Command::new(SASREC)
        .args(train_args(&ratings, &run, "100000"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Wait for the first epoch, then press Ctrl-C.
    let started = Instant::now();
    while !run.join("state.json").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no epoch finished"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("sasrec train --resume --out"), "{stderr}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("state.json")).unwrap()).unwrap();
    let step = state["step"].as_u64().unwrap();
    assert!(
        step >= 5,
        "at least one epoch of 5 batches was saved, got step {step}"
    );

    // A resumed run keeps its saved settings: shorten the epoch budget in
    // config.json so that it ends two epochs after the saved one.
    let config_path = run.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    let done = state["epoch"].as_u64().unwrap();
    config["train"]["epochs"] = serde_json::json!(done + 2);
    std::fs::write(&config_path, serde_json::to_string(&config).unwrap()).unwrap();
    let out = sasrec(&[
        "train",
        "--resume",
        "--out",
        run.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("continuing at epoch {}, step {step}", done + 1)),
        "{stderr}"
    );
    assert!(stdout.contains("best epoch"), "{stdout}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count() as u64, done + 2);
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ratings.csv");
    std::fs::write(
        &bad,
        "userId,movieId,rating,timestamp\n1,10,4.0,100\n1,x,3.5,200\n",
    )
    .unwrap();
    let out = sasrec(&[
        "train",
        "--ratings",
        bad.to_str().unwrap(),
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("ratings.csv: line 3: field `movieId`"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let ratings = write_data(dir.path());
    let out = sasrec(&[
        "train",
        "--ratings",
        ratings.to_str().unwrap(),
        "--out",
        "x",
        "--dim",
        "10",
        "--heads",
        "3",
    ]);
    assert!(
        text(&out).1.contains("dim 10 is not a multiple of heads 3"),
        "{}",
        text(&out).1
    );

    let out = sasrec(&[
        "eval",
        "--run",
        dir.path().join("nothing").to_str().unwrap(),
    ]);
    assert!(text(&out).1.contains("config.json"), "{}", text(&out).1);
}
